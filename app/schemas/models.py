"""Bodies of the model routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from worker.store.records import ModelStatus


class ModelView(BaseModel):
    """A model usable in audits: pass ``reference`` as the ``model`` parameter."""

    reference: str = Field(description="'builtin:NAME' or the registered model's id.")
    id: str | None = Field(description="The registered model's id; None for builtins.")
    builtin: bool
    created_at: datetime | None
    status: ModelStatus | None = Field(
        description="Registered models: 'unverified' until a worker loaded it, then 'verified' "
        "or 'invalid'. Builtins: None."
    )
    status_message: str = ""
    spec: dict[str, Any]
    spec_sha256: str
    weights_sha256: str


class ModelList(BaseModel):
    """Builtin models first, then registered models, oldest first."""

    models: list[ModelView]
