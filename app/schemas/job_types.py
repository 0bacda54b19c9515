"""Bodies of the job type routes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class JobTypeView(BaseModel):
    """A registered analysis and the JSON schema of its parameters."""

    name: str
    description: str
    input_files: str = Field(description="'none', or 'one' for types that take an upload.")
    submit_with: str = Field(description="The route that accepts jobs of this type.")
    queue: str
    soft_time_limit_s: int
    time_limit_s: int
    params_schema: dict[str, Any]


class JobTypeList(BaseModel):
    """Every registered job type, by name."""

    job_types: list[JobTypeView]
