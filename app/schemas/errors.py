"""The error body every 4xx and 5xx response has."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ValidationItem(BaseModel):
    """One validation problem, as FastAPI reports it."""

    loc: list[Any]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """An error: what failed and which request field caused it."""

    detail: str
    field: str | None = None
    errors: list[ValidationItem] | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (404, 409, 413, 422, 503)
}
