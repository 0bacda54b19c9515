"""JSON errors that name the field at fault.

Every error response has the shape ``{"detail": str, "field": str | null}``; validation errors
(422) add ``errors``, the list of every problem as ``{"loc", "msg", "type"}``, as FastAPI does.
``field`` is a dotted path such as ``image``, ``epsilon`` or ``params.sizes.0``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from worker.store.redis_client import TRANSIENT_REDIS_ERRORS

logger = logging.getLogger(__name__)

# Location prefixes that FastAPI puts before the field name: they give the part of the request,
# not the field.
_LOCATION_PREFIXES = {"body", "query", "path", "header", "form", "cookie"}


class ApiError(HTTPException):
    """An error returned as JSON with the offending field.

    Subclasses HTTPException so that FastAPI passes it through unchanged when it is raised while
    the request body is read (see app.limits).

    Args:
        status_code: HTTP status, 4xx or 5xx.
        detail: one sentence: what failed, on which value, what to do.
        field: dotted name of the request field at fault, or None.
        errors: optional list of {"loc", "msg", "type"} items.
    """

    def __init__(
        self,
        status_code: int,
        detail: str,
        field: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status_code, detail=detail, headers=headers)
        self.field = field
        self.errors = errors


def field_name(loc: Sequence[Any]) -> str:
    """Turn a FastAPI or pydantic ``loc`` into a dotted field name, without "body" and the like."""
    parts = [str(part) for part in loc]
    while parts and parts[0] in _LOCATION_PREFIXES:
        parts = parts[1:]
    return ".".join(parts)


def _clean(items: Iterable[dict[str, Any]], prefix: Sequence[str] = ()) -> list[dict[str, Any]]:
    cleaned = []
    for item in items:
        loc = [*prefix, *[part for part in item.get("loc", ())]]
        cleaned.append({"loc": loc, "msg": item.get("msg", ""), "type": item.get("type", "")})
    return cleaned


def validation_error(error: ValidationError, prefix: Sequence[str] = ()) -> ApiError:
    """Turn a pydantic ValidationError into a 422 ApiError naming the first field at fault.

    Args:
        error: the pydantic error.
        prefix: location to put before each field, for example ("params",).
    """
    items = _clean(error.errors(include_url=False, include_input=False), prefix)
    first = items[0]
    name = field_name(first["loc"]) or (".".join(prefix) or None)
    message = first["msg"]
    if len(items) > 1:
        message += f" (and {len(items) - 1} more problem(s), listed in 'errors')"
    return ApiError(422, f"{name}: {message}" if name else message, name, items)


def _body(detail: str, field: str | None, errors: list[dict[str, Any]] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"detail": detail, "field": field}
    if errors is not None:
        body["errors"] = errors
    return body


async def _api_error(request: Request, error: ApiError) -> JSONResponse:
    return JSONResponse(
        _body(str(error.detail), error.field, error.errors),
        status_code=error.status_code,
        headers=error.headers,
    )


async def _request_validation(request: Request, error: RequestValidationError) -> JSONResponse:
    items = _clean(error.errors())
    first = items[0] if items else {"loc": [], "msg": "invalid request"}
    name = field_name(first["loc"]) or None
    message = first["msg"]
    if name and first.get("type") == "missing":
        message = f"{name} is required"
    elif name:
        message = f"{name}: {message}"
    return JSONResponse(_body(message, name, items), status_code=422)


async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    return JSONResponse(
        _body(str(error.detail), None, None), status_code=error.status_code, headers=error.headers
    )


async def _redis_unavailable(request: Request, error: Exception) -> JSONResponse:
    logger.error("Redis unavailable on %s %s: %s", request.method, request.url.path, error)
    return JSONResponse(
        _body(f"the job store (Redis) is unavailable ({error}); try again later", None, None),
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(_body("internal server error; see the API log", None, None), 500)


def install_error_handlers(app: FastAPI) -> None:
    """Register the JSON error handlers on ``app``."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(HTTPException, _http_error)
    for error_type in TRANSIENT_REDIS_ERRORS:
        app.add_exception_handler(error_type, _redis_unavailable)
    app.add_exception_handler(Exception, _unexpected)
