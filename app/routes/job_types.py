"""/v1/job-types: the registered analyses and the JSON schemas of their parameters."""

from __future__ import annotations

from fastapi import APIRouter

from app.errors import ApiError
from app.schemas.errors import ERROR_RESPONSES
from app.schemas.job_types import JobTypeList, JobTypeView
from app.services import ServicesDep
from fragility.settings import Settings
from worker.celery_app import time_limits
from worker.jobs import JOB_TYPES, JobType

router = APIRouter(prefix="/v1", tags=["job types"], responses=ERROR_RESPONSES)


def _view(job_type: JobType, settings: Settings) -> JobTypeView:
    soft, hard = time_limits(job_type, settings)
    return JobTypeView(
        name=job_type.name,
        description=job_type.description,
        input_files=job_type.input_files,
        submit_with="POST /v1/audits or POST /v1/batches"
        if job_type.input_files != "none"
        else "POST /v1/jobs",
        queue=job_type.queue,
        soft_time_limit_s=soft,
        time_limit_s=hard,
        params_schema=job_type.params_model.model_json_schema(),
    )


@router.get("/job-types", response_model=JobTypeList)
def list_job_types(services: ServicesDep) -> JobTypeList:
    """List every registered job type with its parameter schema."""
    return JobTypeList(
        job_types=[_view(JOB_TYPES[name], services.settings) for name in sorted(JOB_TYPES)]
    )


@router.get("/job-types/{name}", response_model=JobTypeView)
def get_job_type(name: str, services: ServicesDep) -> JobTypeView:
    """Show one job type."""
    if name not in JOB_TYPES:
        raise ApiError(404, f"job type {name!r} not found", "name")
    return _view(JOB_TYPES[name], services.settings)
