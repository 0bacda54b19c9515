"""Bodies of the batch routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from worker.store.records import JobStatus


class BatchAccepted(BaseModel):
    """The response to POST /v1/batches (202): poll ``location``."""

    id: str
    count: int
    job_ids: list[str] = Field(description="One job per image, in upload order.")
    location: str


class BatchItem(BaseModel):
    """One image of a batch: its job and, once done, the audit's outcome."""

    index: int = Field(description="Position of the image in the upload (zip: archive order).")
    job_id: str
    status: JobStatus
    progress: float
    input_sha256: str | None
    verdict: str | None = None
    topk_intersection: float | None = None
    error: str | None = None


class TopkSummary(BaseModel):
    """Top-k intersection over the succeeded images of a batch (1 = saliency unchanged)."""

    count: int
    mean: float
    median: float
    min: float


class WorstImage(BaseModel):
    """An image whose saliency map moved most (lowest top-k intersection)."""

    index: int
    job_id: str
    topk_intersection: float
    verdict: str | None


class BatchAggregates(BaseModel):
    """Counts and statistics over a batch."""

    statuses: dict[str, int]
    verdicts: dict[str, int]
    topk_intersection: TopkSummary | None
    worst: list[WorstImage]


class BatchView(BaseModel):
    """A batch's jobs and aggregates; ``done`` once every job has a final status."""

    id: str
    type: str
    params: dict[str, Any]
    created_at: datetime
    count: int
    done: bool
    items: list[BatchItem]
    aggregates: BatchAggregates
