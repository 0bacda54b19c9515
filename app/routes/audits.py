"""POST /v1/audits: one image and the audit parameters in, a queued job out."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Request, Response
from starlette.datastructures import FormData

from app.errors import ApiError
from app.forms import audit_params_from_form, files_of, multipart_form, request_body_schema
from app.schemas.errors import ERROR_RESPONSES
from app.schemas.jobs import JobAccepted, job_links
from app.services import Services, ServicesDep
from app.submission import submit_job, validate_params
from app.uploads import check_image, read_upload, store_images
from worker.jobs import get_job_type

router = APIRouter(prefix="/v1", tags=["audits"], responses=ERROR_RESPONSES)

# Threads that run single-audit submissions. A submission makes several short blocking calls
# (Redis, the broker, the disk), each of which passes the GIL between threads; with a few threads
# instead of the default 40, less CPU goes into those hand-overs (bench/service_load.py reports
# the API's CPU per submission). Batches have threads of their own (app.routes.batches), so a
# large batch does not hold these threads.
# app.factory creates the limiter in the event loop, as app.state.submission_limiter.
SUBMISSION_THREADS = 4


IMAGE_DESCRIPTION = "PNG, JPEG, TIFF, BMP, WebP or single-frame DICOM image."


def _submit_audit(form: FormData, response: Response, services: Services) -> JobAccepted:
    """Check the parameters, then the image, then store and enqueue (runs in a worker thread)."""
    job_type = get_job_type("audit")
    params = validate_params(job_type, audit_params_from_form(form, "image"), services)
    images = files_of(form, "image")
    if len(images) > 1:
        raise ApiError(422, f"image: give one image, got {len(images)}", "image")
    data = read_upload(images[0] if images else None, "image", services.settings.max_upload_bytes)
    checked = check_image(data, "image", services.settings)
    input_ids = store_images([checked], services.storage)
    job = submit_job(services, job_type, params, input_ids, [checked.sha256])
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobAccepted(id=job.id, type=job.type, status=job.status, links=job_links(job.id))


@router.post(
    "/audits",
    status_code=202,
    response_model=JobAccepted,
    openapi_extra=request_body_schema("image", IMAGE_DESCRIPTION, many=False),
)
async def create_audit(request: Request, response: Response, services: ServicesDep) -> JobAccepted:
    """Queue an audit of one image; poll the job at the Location header.

    Multipart fields: ``image`` (the file), ``model`` (required) and the optional audit
    parameters. The parameters are checked first, then the image is decoded as a check; nothing
    is stored unless both pass.
    """
    # The limits stop a request with thousands of parts early; up to them, the checks above
    # return 422 naming the field.
    too_many = "image: give one image; this request has more than 2 files"
    async with multipart_form(request, "image", 2, too_many) as form:
        return await anyio.to_thread.run_sync(
            _submit_audit, form, response, services, limiter=request.app.state.submission_limiter
        )
