"""The Celery task that runs one job of any registered type.

The message carries only the job id. The task loads the job record, claims it with a fresh
attempt token (JobStore.start), runs the job type's runner with a JobContext tied to the record,
and moves the record to its final status with one atomic transition. A second delivery of the
same message (after the pool process running it was killed) claims the job with a new token, so
the stale attempt can no longer write progress or finish it, and the job ends exactly once.

Failures:
- ValueError from the runner (ModelSpecError, ImageError, invalid parameters) is permanent: the
  job fails with the message and is not retried.
- Redis connection errors are transient: the job goes back to queued and the task is retried
  with exponential backoff, at most MAX_TRANSIENT_RETRIES times.
- The soft time limit fails the job as timed out; the hard limit kills the pool process, and the
  worker's main process fails the job (JobTask.on_failure).
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
from functools import lru_cache
from typing import Any

from celery import Task, signals
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from fragility.settings import get_settings
from models.spec import ModelSpecError
from worker.celery_app import TASK_NAME, celery_app
from worker.context import JobCancelled
from worker.jobs import JOB_TYPES
from worker.store import JobRecord, JobStore, ModelStore, Storage, connect_redis
from worker.store.files import is_valid_id, new_id
from worker.store.progress import RecordedProgress
from worker.store.redis_client import TRANSIENT_REDIS_ERRORS

logger = logging.getLogger(__name__)

MAX_TRANSIENT_RETRIES = 5

# Workers retry a Redis command for about 35 s in total (backoff from 0.2 s, doubling, capped at
# 2 s), so that a job in progress rides out a Redis restart. The API gives up sooner.
WORKER_REDIS_RETRIES = 20


@lru_cache(maxsize=1)
def _stores() -> tuple[JobStore, ModelStore, Storage]:
    settings = get_settings()
    client = connect_redis(settings.redis_url, retries=WORKER_REDIS_RETRIES)
    return JobStore(client), ModelStore(client), Storage(settings.storage_dir)


@lru_cache(maxsize=1)
def _configure_torch_threads() -> None:
    threads = get_settings().torch_threads
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


# Imported by each pool process when it starts (see _preload), besides the runners' own modules:
# lazy imports of the model loader that take seconds on first use.
PRELOADED_MODULES = ("safetensors.torch", "torchvision")


@signals.worker_process_init.connect
def _preload(**kwargs: object) -> None:
    """Import the runners (and torch) in each pool process, after the fork and before any job.

    A soft time limit raises SoftTimeLimitExceeded wherever the job is, and one that lands in
    the middle of a first ``import torch`` leaves a half-initialised module behind that fails
    every later job of that process. Importing here keeps the slow imports outside every job's
    time limit, and makes the first job as fast as the next ones.
    """
    for job_type in JOB_TYPES.values():
        try:
            job_type.load_runner()
        except Exception:  # a broken analysis must not stop the others from running
            logger.exception("could not import the runner of job type %s", job_type.name)
    for module in PRELOADED_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as error:
            logger.info("not preloaded: %s (%s)", module, error)
    _configure_torch_threads()
    # NOTE: a soft time limit can still interrupt an import that a runner does lazily on first
    # use (pydicom, tifffile, jax). That process then fails later jobs that need the module.


def _registered_model_id(params: dict[str, Any]) -> str | None:
    """Return the registered model id that ``params['model']`` names, if it names one."""
    model = params.get("model")
    return model if isinstance(model, str) and is_valid_id(model) else None


def _error(error: BaseException, kind: str | None = None) -> dict[str, str]:
    message = " ".join(str(error).split()) or type(error).__name__
    return {"type": kind or type(error).__name__, "message": message[:2000]}


class JobTask(Task):
    """Task base class: records a hard time limit, which kills the pool process mid-job."""

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        # Celery calls this in the worker's main process after a hard time limit killed the pool
        # process; the attempt had no chance to record anything.
        if isinstance(exc, TimeLimitExceeded) and args:
            job_id = args[0]
            store = _stores()[0]
            failed = store.finish(
                job_id, "", "failed", error=_error(exc, "TimeLimitExceeded"), message="timed out"
            )
            logger.error("job %s: hard time limit exceeded (recorded: %s)", job_id, failed)


def _run_attempt(job: JobRecord, token: str) -> tuple[str, dict[str, Any] | None, dict | None]:
    """Run the runner of ``job`` once; return (final status, result, error)."""
    job_store, model_store, storage = _stores()
    job_type = JOB_TYPES.get(job.type)
    if job_type is None:
        known = ", ".join(sorted(JOB_TYPES))
        message = f"job type {job.type!r} is not registered in this worker (known: {known})"
        return "failed", None, {"type": "UnknownJobType", "message": message}

    params = dict(job.params)
    model_id = _registered_model_id(params)
    if model_id is not None:
        params["model"] = str(storage.model_dir(model_id) / "spec.json")
    progress = RecordedProgress(job_store, job.id, token)
    try:
        validated = job_type.params_model.model_validate(params)
        inputs = [storage.input_path(input_id) for input_id in job.inputs]
        work_dir = storage.work_dir(job.id, token)
        runner = job_type.load_runner()
        _configure_torch_threads()
        result = runner(validated, inputs, work_dir, progress.context())
    except JobCancelled:
        return "cancelled", None, None
    except SoftTimeLimitExceeded as error:
        return "failed", None, _error(error, "SoftTimeLimitExceeded")
    except ModelSpecError as error:
        if model_id is not None:
            model_store.set_status(model_id, "invalid", str(error))
        return "failed", None, _error(error)
    except (ValueError, TypeError, FileNotFoundError) as error:
        return "failed", None, _error(error)

    if model_id is not None:
        model_store.set_status(model_id, "verified")
    if job_store.current_token(job.id) != token:
        # A redelivery took the job over while this attempt ran; its output is not the job's.
        return "stale", None, None
    storage.publish_artifacts(job.id, work_dir)
    # Output of earlier attempts whose pool process was killed.
    storage.remove_work_dirs(job.id)
    return "succeeded", result, None


@celery_app.task(name=TASK_NAME, bind=True, base=JobTask, max_retries=MAX_TRANSIENT_RETRIES)
def run_job(self: JobTask, job_id: str) -> None:
    """Run the job ``job_id`` and record its final status."""
    settings = get_settings()
    job_store, _, storage = _stores()
    token = new_id()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    started = job_store.start(job_id, token, worker, settings.max_attempts)
    if started.outcome != "run":
        logger.info("job %s: not run (%s %s)", job_id, started.outcome, started.detail)
        return
    job = job_store.get_job(job_id)
    if job is None:
        return
    logger.info("job %s: %s attempt %s started on %s", job_id, job.type, started.detail, worker)

    try:
        status, result, error = _run_attempt(job, token)
    except TRANSIENT_REDIS_ERRORS as transient:
        logger.warning("job %s: transient error, retrying: %s", job_id, transient)
        storage.remove_work_dirs(job_id)
        if self.request.retries >= MAX_TRANSIENT_RETRIES:
            job_store.finish(job_id, token, "failed", error=_error(transient))
            return
        job_store.requeue(job_id, token, f"retrying after a transient error: {transient}")
        raise self.retry(exc=transient, countdown=min(60, 2**self.request.retries)) from None
    except Exception as unexpected:
        # A bug or an environment problem (CUDA out of memory, a full disk): fail the job with
        # the message instead of leaving it running, and keep the traceback in the worker log.
        logger.exception("job %s: runner raised an unexpected error", job_id)
        status, result, error = "failed", None, _error(unexpected)

    if status == "stale":
        logger.warning("job %s: attempt %s superseded by a redelivery", job_id, started.detail)
        return
    if status != "succeeded":
        storage.remove_work_dirs(job_id)
    if error is not None:
        logger.warning("job %s: failed with %s: %s", job_id, error["type"], error["message"])
    finished = job_store.finish(job_id, token, status, result=result, error=error)
    logger.info("job %s: %s (recorded: %s)", job_id, status, finished)
