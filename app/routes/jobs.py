"""/v1/jobs: the generic submission, status, cancellation and artifacts of any job."""

from __future__ import annotations

import mimetypes

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse

from app.errors import ApiError
from app.schemas.errors import ERROR_RESPONSES
from app.schemas.jobs import (
    Artifact,
    ArtifactList,
    CancelOutcome,
    JobAccepted,
    JobCreate,
    JobView,
    job_links,
)
from app.services import Services, ServicesDep
from app.submission import submit_job, validate_params
from worker.jobs import JOB_TYPES
from worker.store import JobRecord
from worker.store.files import is_valid_id

router = APIRouter(prefix="/v1", tags=["jobs"], responses=ERROR_RESPONSES)


def load_job(job_id: str, services: Services) -> JobRecord:
    """Return the job or raise 404; ids that cannot exist are 404 without a Redis lookup."""
    record = services.jobs.get_job(job_id) if is_valid_id(job_id) else None
    if record is None:
        raise ApiError(404, f"job {job_id!r} not found", "job_id")
    return record


@router.post("/jobs", status_code=202, response_model=JobAccepted)
def create_job(body: JobCreate, response: Response, services: ServicesDep) -> JobAccepted:
    """Submit a job of any registered type that takes no upload.

    Types that take an uploaded image (``input_files`` "one", such as ``audit``) are rejected
    with 422 on ``type``: submit them with POST /v1/audits or POST /v1/batches.
    """
    job_type = JOB_TYPES.get(body.type)
    if job_type is None:
        known = ", ".join(sorted(JOB_TYPES))
        raise ApiError(422, f"type: unknown job type {body.type!r}; known: {known}", "type")
    if job_type.input_files != "none":
        raise ApiError(
            422,
            f"type: job type {body.type!r} takes an uploaded image; submit it with "
            "POST /v1/audits (one image) or POST /v1/batches (many)",
            "type",
        )
    params = validate_params(job_type, body.params, services, prefix=("params",))
    job = submit_job(services, job_type, params)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobAccepted(id=job.id, type=job.type, status=job.status, links=job_links(job.id))


@router.get("/jobs/{job_id}", response_model=JobView)
async def get_job(job_id: str, services: ServicesDep) -> JobView:
    """Return the job's status, progress, timestamps, and its result or error."""
    fields = (
        await services.reader.hgetall(services.jobs.job_key(job_id))
        if is_valid_id(job_id)
        else None
    )
    if not fields:
        raise ApiError(404, f"job {job_id!r} not found", "job_id")
    return JobView.from_record(JobRecord.from_hash(fields))


@router.delete("/jobs/{job_id}", response_model=CancelOutcome)
def cancel_job(job_id: str, services: ServicesDep) -> CancelOutcome:
    """Cancel a job: a queued job never starts, a running one stops at its next step.

    Returns 409 for a job that already succeeded or failed.
    """
    load_job(job_id, services)
    outcome = services.jobs.cancel(job_id)
    if outcome == "missing":
        raise ApiError(404, f"job {job_id!r} not found", "job_id")
    if outcome in ("already_succeeded", "already_failed"):
        status = outcome.removeprefix("already_")
        raise ApiError(409, f"job {job_id} already {status}; there is nothing to cancel", "job_id")
    record = load_job(job_id, services)
    return CancelOutcome(id=job_id, outcome=outcome, job=JobView.from_record(record))


@router.get("/jobs/{job_id}/artifacts", response_model=ArtifactList)
def list_artifacts(job_id: str, services: ServicesDep) -> ArtifactList:
    """List the files the job wrote (report.json, PNG and NPY files); empty until it succeeded."""
    record = load_job(job_id, services)
    files = services.storage.list_artifacts(job_id) if record.status == "succeeded" else []
    return ArtifactList(
        job_id=job_id,
        status=record.status,
        artifacts=[
            Artifact(name=name, size_bytes=size, url=f"/v1/jobs/{job_id}/artifacts/{name}")
            for name, size in files
        ],
    )


@router.get("/jobs/{job_id}/artifacts/{name:path}", response_class=FileResponse)
def get_artifact(job_id: str, name: str, services: ServicesDep) -> Response:
    """Download one artifact by the name GET /v1/jobs/{id}/artifacts lists."""
    record = load_job(job_id, services)
    path = services.storage.artifact_path(job_id, name) if record.status == "succeeded" else None
    if path is None:
        raise ApiError(404, f"job {job_id} has no artifact {name!r}", "name")
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type)
