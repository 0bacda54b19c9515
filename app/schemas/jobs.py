"""Bodies of the job routes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from worker.store import JobRecord
from worker.store.records import JobStatus


def to_datetime(timestamp: float | None) -> datetime | None:
    """Convert a Unix time in seconds to an aware UTC datetime."""
    return datetime.fromtimestamp(timestamp, UTC) if timestamp is not None else None


class JobError(BaseModel):
    """Why a job failed: the exception type and its one-line message."""

    type: str
    message: str


class JobLinks(BaseModel):
    """URLs related to a job."""

    self: str
    artifacts: str
    batch: str | None = None


class JobView(BaseModel):
    """A job's state. ``result`` is set once it succeeded (for an audit, report.json)."""

    id: str
    type: str
    status: JobStatus
    progress: float = Field(description="Fraction in [0, 1] of the current attempt.")
    message: str = Field(description="The runner's last progress message.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int = Field(
        description="Deliveries that started running; >1 after a lost worker process or a retry "
        "after a Redis error."
    )
    lost_attempts: int = Field(
        0,
        description="Deliveries whose worker process was lost; the job fails as WorkerLost when "
        "this reaches FRAGILITY_MAX_ATTEMPTS.",
    )
    cancel_requested: bool
    params: dict[str, Any]
    input_sha256: list[str] = Field(description="SHA-256 of each input file, in order.")
    batch_id: str | None
    batch_index: int | None
    result: dict[str, Any] | None
    error: JobError | None
    links: JobLinks

    @classmethod
    def from_record(cls, record: JobRecord) -> JobView:
        """Build the view of a stored job."""
        return cls(
            id=record.id,
            type=record.type,
            status=record.status,
            progress=record.progress,
            message=record.message,
            created_at=to_datetime(record.created_at),
            started_at=to_datetime(record.started_at),
            finished_at=to_datetime(record.finished_at),
            attempts=record.attempts,
            lost_attempts=record.lost_attempts,
            cancel_requested=record.cancel_requested,
            params=record.params,
            input_sha256=record.input_sha256,
            batch_id=record.batch_id,
            batch_index=record.batch_index,
            result=record.result,
            error=JobError(**record.error) if record.error else None,
            links=job_links(record.id, record.batch_id),
        )


def job_links(job_id: str, batch_id: str | None = None) -> JobLinks:
    """Return the links of a job."""
    return JobLinks(
        self=f"/v1/jobs/{job_id}",
        artifacts=f"/v1/jobs/{job_id}/artifacts",
        batch=f"/v1/batches/{batch_id}" if batch_id else None,
    )


class JobAccepted(BaseModel):
    """The response to a job submission (202): poll ``links.self``."""

    id: str
    type: str
    status: JobStatus
    links: JobLinks


class JobCreate(BaseModel):
    """The body of POST /v1/jobs."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="A job type from GET /v1/job-types.")
    params: dict[str, Any] = Field(default_factory=dict, description="The type's parameters.")


class CancelOutcome(BaseModel):
    """The response to DELETE /v1/jobs/{id}.

    ``outcome`` is "cancelled" (the job was queued and will never start), "cancelling" (the job
    is running and stops at its next step) or "already_cancelled".
    """

    id: str
    outcome: str
    job: JobView


class Artifact(BaseModel):
    """One file a job wrote."""

    name: str
    size_bytes: int
    url: str


class ArtifactList(BaseModel):
    """The files of a job; empty until the job succeeded."""

    job_id: str
    status: JobStatus
    artifacts: list[Artifact]
