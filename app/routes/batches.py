"""/v1/batches: many images with shared audit parameters, and their aggregate results."""

from __future__ import annotations

import statistics
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response, UploadFile
from starlette.datastructures import FormData

from app.errors import ApiError
from app.forms import audit_params_from_form, files_of, multipart_form, request_body_schema
from app.schemas.batches import (
    BatchAccepted,
    BatchAggregates,
    BatchItem,
    BatchView,
    TopkSummary,
    WorstImage,
)
from app.schemas.errors import ERROR_RESPONSES
from app.schemas.jobs import to_datetime
from app.services import Services, ServicesDep
from app.submission import submit_batch, validate_params
from app.uploads import (
    check_batch_pixels,
    check_image,
    expand_zip,
    is_zip,
    read_upload,
    store_images,
)
from worker.jobs import get_job_type
from worker.store import FINAL_STATUSES, BatchRecord, JobRecord
from worker.store.files import is_valid_id

router = APIRouter(prefix="/v1", tags=["batches"], responses=ERROR_RESPONSES)

# Images listed under aggregates.worst.
WORST_COUNT = 5

# Threads that check and store batches, each decoding every image of one batch. The limit bounds
# the API's CPU and memory spent on batches, and further batch requests wait for a thread.
# app.factory creates the limiter in the event loop, as app.state.batch_limiter.
BATCH_THREADS = 2
FILES_DESCRIPTION = "Several images, or one zip archive of images (archive order is kept)."


def _read_batch_files(files: list[UploadFile], services: Services) -> list[tuple[bytes, str]]:
    """Return (content, field name for errors) of every image: the files, or one zip's members."""
    settings = services.settings
    if not files:
        raise ApiError(422, "files is required: attach one or more images or one zip", "files")
    if len(files) == 1:
        data = read_upload(
            files[0],
            "files[0]",
            settings.max_batch_upload_bytes,
            "FRAGILITY_MAX_BATCH_UPLOAD_BYTES",
        )
        if is_zip(data):
            members = expand_zip(data, "files[0]", settings)
            return [(content, f"files[0][{i}]") for i, content in enumerate(members)]
        if len(data) > settings.max_upload_bytes:
            raise ApiError(
                413,
                f"files[0]: the file is over the upload limit of {settings.max_upload_bytes} "
                "bytes (FRAGILITY_MAX_UPLOAD_BYTES); send a smaller file or raise "
                "FRAGILITY_MAX_UPLOAD_BYTES",
                "files[0]",
            )
        return [(data, "files[0]")]
    if len(files) > settings.max_batch_images:
        raise ApiError(422, _too_many_files(settings.max_batch_images, len(files)), "files")
    return [
        (read_upload(upload, f"files[{i}]", settings.max_upload_bytes), f"files[{i}]")
        for i, upload in enumerate(files)
    ]


def _too_many_files(limit: int, count: int | None = None) -> str:
    counted = f"{count} files" if count is not None else f"more than {limit + 1} files"
    return (
        f"files: {counted} is over the batch limit of {limit} (FRAGILITY_MAX_BATCH_IMAGES); "
        "split the batch or raise FRAGILITY_MAX_BATCH_IMAGES"
    )


def _submit_batch(form: FormData, services: Services) -> tuple[BatchRecord, list[JobRecord]]:
    """Check the parameters and every image, then store and enqueue (runs in a worker thread)."""
    job_type = get_job_type("audit")
    params = validate_params(job_type, audit_params_from_form(form, "files"), services)
    files = _read_batch_files(files_of(form, "files"), services)
    check_batch_pixels([content for content, _ in files], "files", services.settings)
    checked = [check_image(content, field, services.settings) for content, field in files]
    input_ids = store_images(checked, services.storage)
    return submit_batch(
        services,
        job_type,
        params,
        [[input_id] for input_id in input_ids],
        [[image.sha256] for image in checked],
    )


@router.post(
    "/batches",
    status_code=202,
    response_model=BatchAccepted,
    openapi_extra=request_body_schema("files", FILES_DESCRIPTION, many=True),
)
async def create_batch(
    request: Request, response: Response, services: ServicesDep
) -> BatchAccepted:
    """Queue one audit per image with shared parameters; poll the batch at the Location header.

    Multipart fields: ``files`` (several images, or one zip archive of images), ``model``
    (required) and the optional audit parameters. Every image is decoded as a check before
    anything is stored: one bad image rejects the batch.
    """
    # One file over the limit still reaches _read_batch_files, which counts it in its error.
    limit = services.settings.max_batch_images
    async with multipart_form(request, "files", limit + 1, _too_many_files(limit)) as form:
        batch, jobs = await anyio.to_thread.run_sync(
            _submit_batch, form, services, limiter=request.app.state.batch_limiter
        )
    location = f"/v1/batches/{batch.id}"
    response.headers["Location"] = location
    return BatchAccepted(
        id=batch.id, count=len(jobs), job_ids=[job.id for job in jobs], location=location
    )


def _topk(result: dict[str, Any] | None) -> float | None:
    """Return the audit's headline top-k intersection from its report, if present."""
    metrics = (result or {}).get("metrics") or {}
    value = metrics.get("topk_intersection")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _item(index: int, job_id: str, record: JobRecord | None) -> BatchItem:
    if record is None:
        # Only possible if the job record was deleted by hand from Redis.
        return BatchItem(
            index=index,
            job_id=job_id,
            status="failed",
            progress=0.0,
            input_sha256=None,
            error="job record not found",
        )
    result = record.result or {}
    verdict = result.get("verdict")
    return BatchItem(
        index=index,
        job_id=job_id,
        status=record.status,
        progress=record.progress,
        input_sha256=record.input_sha256[0] if record.input_sha256 else None,
        verdict=verdict if isinstance(verdict, str) else None,
        topk_intersection=_topk(record.result),
        error=record.error.get("message") if record.error else None,
    )


def aggregate(items: list[BatchItem]) -> BatchAggregates:
    """Count statuses and verdicts and summarise the top-k intersection of succeeded images."""
    statuses: dict[str, int] = {}
    verdicts: dict[str, int] = {}
    for item in items:
        statuses[item.status] = statuses.get(item.status, 0) + 1
        if item.verdict is not None:
            verdicts[item.verdict] = verdicts.get(item.verdict, 0) + 1
    scored = [item for item in items if item.topk_intersection is not None]
    summary = None
    if scored:
        values = [item.topk_intersection for item in scored]
        summary = TopkSummary(
            count=len(values),
            mean=statistics.fmean(values),
            median=statistics.median(values),
            min=min(values),
        )
    worst = sorted(scored, key=lambda item: (item.topk_intersection, item.index))[:WORST_COUNT]
    return BatchAggregates(
        statuses=statuses,
        verdicts=verdicts,
        topk_intersection=summary,
        worst=[
            WorstImage(
                index=item.index,
                job_id=item.job_id,
                topk_intersection=item.topk_intersection,
                verdict=item.verdict,
            )
            for item in worst
        ],
    )


@router.get("/batches/{batch_id}", response_model=BatchView)
def get_batch(batch_id: str, services: ServicesDep) -> BatchView:
    """Return each image's job and status, and aggregates over the batch."""
    batch = services.jobs.get_batch(batch_id) if is_valid_id(batch_id) else None
    if batch is None:
        raise ApiError(404, f"batch {batch_id!r} not found", "batch_id")
    records = services.jobs.get_jobs(batch.job_ids)
    items = [
        _item(index, job_id, record)
        for index, (job_id, record) in enumerate(zip(batch.job_ids, records, strict=True))
    ]
    return BatchView(
        id=batch.id,
        type=batch.type,
        params=batch.params,
        created_at=to_datetime(batch.created_at),
        count=len(items),
        done=all(item.status in FINAL_STATUSES for item in items),
        items=items,
        aggregates=aggregate(items),
    )
