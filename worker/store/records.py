"""Typed views of the records the store keeps in Redis hashes."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JOB_STATUSES: tuple[str, ...] = JobStatus.__args__
FINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})

ModelStatus = Literal["unverified", "verified", "invalid"]


def _optional_float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def _optional_json(value: str | None) -> Any:
    return json.loads(value) if value not in (None, "") else None


class JobRecord(BaseModel):
    """One job as stored under ``fragility:job:{id}``.

    Attributes:
        id: 32 hex digits.
        type: job type name from the registry.
        status: queued, running, succeeded, failed or cancelled; the last three are final.
        queue: Celery queue the job was sent to.
        params: validated parameters, as the client gave them (model ids are not yet resolved).
        inputs: ids of the stored input files, in order.
        input_sha256: hex SHA-256 of each input file, in the same order.
        batch_id: the batch the job belongs to, if any; batch_index is its position there.
        progress: fraction in [0, 1] of the current attempt.
        message: the runner's last progress message.
        created_at, started_at, finished_at: Unix times in seconds (started_at is the start of
            the latest attempt).
        attempts: deliveries that started running (more than 1 after a worker process was lost
            or after a retry that followed a Redis error).
        lost_attempts: deliveries whose worker process was lost before they finished; the job
            fails as WorkerLost when this reaches FRAGILITY_MAX_ATTEMPTS.
        cancel_requested: DELETE was called while the job was running.
        worker: "hostname:pid" of the process running the latest attempt.
        result: the runner's result (for an audit, the report.json content) once succeeded.
        error: {"type", "message"} once failed.
    """

    id: str
    type: str
    status: JobStatus
    queue: str
    params: dict[str, Any]
    inputs: list[str] = Field(default_factory=list)
    input_sha256: list[str] = Field(default_factory=list)
    batch_id: str | None = None
    batch_index: int | None = None
    progress: float = 0.0
    message: str = ""
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    lost_attempts: int = 0
    cancel_requested: bool = False
    worker: str | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    @property
    def is_final(self) -> bool:
        """True once the job succeeded, failed or was cancelled."""
        return self.status in FINAL_STATUSES

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> JobRecord:
        """Build a record from the strings of a Redis hash."""
        batch_index = fields.get("batch_index")
        return cls(
            id=fields["id"],
            type=fields["type"],
            status=fields["status"],
            queue=fields.get("queue", ""),
            params=json.loads(fields.get("params") or "{}"),
            inputs=json.loads(fields.get("inputs") or "[]"),
            input_sha256=json.loads(fields.get("input_sha256") or "[]"),
            batch_id=fields.get("batch_id") or None,
            batch_index=int(batch_index) if batch_index not in (None, "") else None,
            progress=float(fields.get("progress") or 0.0),
            message=fields.get("message", ""),
            created_at=float(fields["created_at"]),
            started_at=_optional_float(fields.get("started_at")),
            finished_at=_optional_float(fields.get("finished_at")),
            attempts=int(fields.get("attempts") or 0),
            lost_attempts=int(fields.get("lost_attempts") or 0),
            cancel_requested=fields.get("cancel_requested") == "1",
            worker=fields.get("worker") or None,
            result=_optional_json(fields.get("result")),
            error=_optional_json(fields.get("error")),
        )


class BatchRecord(BaseModel):
    """A batch: jobs of one type with shared parameters, one per uploaded image.

    Attributes:
        id: 32 hex digits.
        type: job type of every job in the batch.
        params: the shared parameters.
        created_at: Unix time in seconds.
        job_ids: the jobs in upload order (index i is the i-th image).
    """

    id: str
    type: str
    params: dict[str, Any]
    created_at: float
    job_ids: list[str]


class ModelRecord(BaseModel):
    """A registered model: a spec and a weights (or TorchScript) file in the storage directory.

    Attributes:
        id: 32 hex digits; clients use it as the model reference.
        created_at: Unix time in seconds.
        spec: the spec as stored, with "weights" pointing at the stored weights file.
        spec_sha256, weights_sha256: SHA-256 of the stored files.
        status: "unverified" until a worker has loaded it, then "verified", or "invalid" when
            loading failed (status_message contains the error).
        status_message: the loading error of an invalid model, else "".
    """

    id: str
    created_at: float
    spec: dict[str, Any]
    spec_sha256: str
    weights_sha256: str
    status: ModelStatus = "unverified"
    status_message: str = ""
