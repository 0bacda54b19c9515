"""Validate job parameters and model references, store jobs and enqueue them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from app.errors import ApiError, validation_error
from app.services import Services
from models.spec import BUILTIN_PREFIX, list_builtin_models, read_spec
from worker.jobs import JobType
from worker.store import BatchRecord, JobRecord
from worker.store.files import is_valid_id

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _builtin_models() -> dict[str, Path]:
    # The bundled models ship with the package and do not change while the API runs.
    return list_builtin_models()


@lru_cache(maxsize=32)
def _builtin_input_size(name: str) -> tuple[int, int]:
    return read_spec(_builtin_models()[name]).spec.input_size


def check_model_reference(
    reference: str, services: Services, field: str = "model"
) -> tuple[int, int] | None:
    """Accept "builtin:NAME" or the id of a usable registered model, and nothing else.

    A server path is never accepted over HTTP: the worker maps a registered id to its stored spec.

    Returns:
        The model's input size (height, width) from its spec, or None when the spec lacks it.

    Raises:
        ApiError: 422 naming ``field`` for an unknown builtin, an unknown id, a model whose weights
            failed to load in a worker, or any other text.
    """
    if reference.startswith(BUILTIN_PREFIX):
        name = reference[len(BUILTIN_PREFIX) :]
        builtins = _builtin_models()
        if name not in builtins:
            known = ", ".join(f"{BUILTIN_PREFIX}{n}" for n in builtins)
            raise ApiError(
                422, f"{field}: unknown builtin model {reference!r}; known: {known}", field
            )
        return _builtin_input_size(name)
    if is_valid_id(reference):
        record = services.models.get(reference)
        if record is None:
            raise ApiError(
                422,
                f"{field}: no registered model has id {reference!r}; list them with GET /v1/models",
                field,
            )
        if record.status == "invalid":
            raise ApiError(
                422,
                f"{field}: model {reference} failed to load in a worker: "
                f"{record.status_message}; register a corrected model",
                field,
            )
        size = record.spec.get("input_size")
        return (int(size[0]), int(size[1])) if isinstance(size, list) and len(size) == 2 else None
    raise ApiError(
        422,
        f"{field}: must be 'builtin:NAME' or the id of a registered model (see GET /v1/models), "
        f"got {reference!r}",
        field,
    )


def validate_params(
    job_type: JobType, raw: dict[str, Any], services: Services, prefix: Sequence[str] = ()
) -> dict[str, Any]:
    """Validate ``raw`` with the job type's parameter model and check any model reference.

    A parameter called ``model`` is taken to be a model reference (the audit's is).

    Returns:
        The parameters as given (not the defaults filled in), so that the record shows the
        request, and the worker re-validates with its own version of the model.

    Raises:
        ApiError: 422 naming the field.
    """
    try:
        validated: BaseModel = job_type.params_model.model_validate(raw)
    except ValidationError as error:
        raise validation_error(error, prefix) from None
    model = getattr(validated, "model", None)
    if isinstance(model, str):
        input_size = check_model_reference(model, services, ".".join([*prefix, "model"]))
        if input_size is not None:
            check_against_input_size(validated, model, input_size, prefix)
    return validated.model_dump(mode="json", exclude_unset=True)


def check_against_input_size(
    validated: BaseModel, model: str, input_size: tuple[int, int], prefix: Sequence[str] = ()
) -> None:
    """Check ``k`` and ``target_box``, where the parameters have them, against the model's input.

    The worker checks the same after loading the model; checking here turns a job that would
    fail into a 422.

    Raises:
        ApiError: 422 naming ``k`` or ``target_box``.
    """
    height, width = input_size
    pixels = height * width
    k = getattr(validated, "k", None)
    if isinstance(k, int) and k > pixels:
        field = ".".join([*prefix, "k"])
        raise ApiError(
            422,
            f"{field}: k={k} is over the {pixels} pixels of the {height}x{width} input of model "
            f"{model}; give k <= {pixels}, or omit it for 2% of the pixels",
            field,
        )
    box = getattr(validated, "target_box", None)
    if box is not None and (box[2] > height or box[3] > width):
        field = ".".join([*prefix, "target_box"])
        raise ApiError(
            422,
            f"{field}: {list(box)} does not fit the {height}x{width} input of model {model}; "
            f"give [top, left, bottom, right) with bottom <= {height} and right <= {width}",
            field,
        )


def _fail_not_enqueued(services: Services, job_ids: Sequence[str], error: Exception) -> None:
    for job_id in job_ids:
        services.jobs.fail_queued(job_id, f"could not be enqueued: {error}")


def submit_job(
    services: Services,
    job_type: JobType,
    params: dict[str, Any],
    inputs: Sequence[str] = (),
    input_sha256: Sequence[str] = (),
) -> JobRecord:
    """Store a job and enqueue its message.

    Raises:
        ApiError: 503 when the broker cannot be reached; the job is then failed, not left queued.
    """
    job = services.jobs.create_job(job_type.name, job_type.queue, params, inputs, input_sha256)
    try:
        services.dispatch(job.id, job_type)
    except Exception as error:  # kombu and redis raise several unrelated types here
        logger.error("job %s: could not be enqueued: %s", job.id, error)
        _fail_not_enqueued(services, [job.id], error)
        raise ApiError(503, f"the job could not be enqueued ({error}); try again later") from None
    services.jobs.mark_dispatched([job.id])
    logger.info("job %s: %s queued on %s", job.id, job_type.name, job_type.queue)
    return job


def submit_batch(
    services: Services,
    job_type: JobType,
    params: dict[str, Any],
    inputs_per_job: Sequence[Sequence[str]],
    sha256_per_job: Sequence[Sequence[str]],
) -> tuple[BatchRecord, list[JobRecord]]:
    """Store a batch and its jobs and enqueue every job.

    Raises:
        ApiError: 503 when the broker cannot be reached; the jobs not yet enqueued are failed.
    """
    batch, jobs = services.jobs.create_batch(
        job_type.name, job_type.queue, params, inputs_per_job, sha256_per_job
    )
    for position, job in enumerate(jobs):
        try:
            services.dispatch(job.id, job_type)
        except Exception as error:  # kombu and redis raise several unrelated types here
            logger.error("batch %s: job %s could not be enqueued: %s", batch.id, job.id, error)
            _fail_not_enqueued(services, [j.id for j in jobs[position:]], error)
            services.jobs.mark_dispatched([j.id for j in jobs])
            raise ApiError(
                503,
                f"batch {batch.id}: {len(jobs) - position} of {len(jobs)} jobs could not be "
                f"enqueued ({error}); they are marked failed",
            ) from None
    services.jobs.mark_dispatched([job.id for job in jobs])
    logger.info("batch %s: %d %s jobs queued", batch.id, len(jobs), job_type.name)
    return batch, jobs
