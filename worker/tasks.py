"""The Celery task that runs one job of any registered type.

The message carries only the job id. The task loads the job record, claims it with a fresh
attempt token (JobStore.start), runs the job type's runner with a JobContext tied to the record,
and moves the record to its final status with one atomic transition. A second delivery of the
same message (after the pool process running it was killed) claims the job with a new token, so
the stale attempt can no longer write progress or finish it, and the job ends exactly once.

Registered models: the job names the model by id, and the worker maps the id to the stored
spec. Before the first job of a model runs, the worker loads it once (_check_registered_model)
and records "verified" or "invalid"; any exception from that load makes the model invalid. An
error the runner raises later (for example non-finite output on one client's image) fails only
that job. Reports and error messages name the model by its id, never by its storage path.

Failures:
- ValueError from the runner (ModelSpecError, ImageError, invalid parameters) is permanent: the
  job fails with the message and is not retried.
- A Redis error during the attempt (a connection error after the client's own retries, or an
  error reply such as OOM, MISCONF or READONLY) puts the job back to queued, and the task is
  retried with exponential backoff, at most MAX_TRANSIENT_RETRIES times. These retries do not
  count against FRAGILITY_MAX_ATTEMPTS, which counts lost worker processes only.
- Progress writes are best-effort (worker.store.progress). The final status write is retried
  for FINAL_WRITE_TIMEOUT_S; after that the message goes back to the queue, and its next
  delivery takes the job over.
- The soft time limit fails the job as timed out; the hard limit kills the pool process, and the
  worker's main process fails the job (JobTask.on_failure).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import socket
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, NoReturn

import redis
from celery import Task, signals
from celery.exceptions import Reject, SoftTimeLimitExceeded, TimeLimitExceeded

from fragility.settings import get_settings
from models.spec import ModelSpecError
from worker.celery_app import TASK_NAME, celery_app
from worker.context import JobCancelled
from worker.jobs import JOB_TYPES
from worker.store import JobRecord, JobStore, ModelStore, Storage, connect_redis
from worker.store.files import is_valid_id, new_id
from worker.store.progress import RecordedProgress

logger = logging.getLogger(__name__)

# Celery retries of a job after a Redis error during its attempt.
MAX_TRANSIENT_RETRIES = 5

# Workers retry a Redis command on connection errors 20 times, with backoff from 0.2 s doubling
# to at most 2 s. That is about 35 s of waiting, plus up to 5 s per try when a connection times
# out instead of being refused, so a job in progress rides out a Redis restart. The API gives up
# sooner.
WORKER_REDIS_RETRIES = 20

# Seconds an attempt keeps retrying the write of its final status while Redis refuses it, and
# the longest pause between two tries. After that the message goes back to the queue.
FINAL_WRITE_TIMEOUT_S = 300.0
FINAL_WRITE_MAX_DELAY_S = 10.0

# Pause before a message goes back to the queue because Redis refused the job's claim, so that a
# Redis that keeps refusing does not make the worker redeliver the message in a tight loop.
REQUEUE_MESSAGE_DELAY_S = 5.0


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


def _hide_model_dir(text: str, model_id: str, model_dir: Path) -> str:
    """Replace the storage paths of a registered model's files in ``text`` with its id."""
    for directory in (str(model_dir.resolve()), str(model_dir)):
        text = text.replace(f"{directory}/spec.json", model_id).replace(f"{directory}/", "")
    return text


def _name_model_by_id(report: dict[str, Any], model_id: str) -> None:
    """Put the registered model's id where an audit report names its model (in place)."""
    model = report.get("model")
    if isinstance(model, dict) and "reference" in model:
        model["reference"] = model_id
    params = report.get("params")
    if isinstance(params, dict) and "model" in params:
        params["model"] = model_id


def _report_with_model_id(result: dict[str, Any], work_dir: Path, model_id: str) -> dict[str, Any]:
    """Name the registered model by id in the result and in the attempt's report.json.

    The runner was given the stored spec's path, which the engine copies into the report. That
    path shows the server's storage layout, so it must not reach clients.
    """
    _name_model_by_id(result, model_id)
    report_path = work_dir / "report.json"
    if report_path.is_file():
        saved = json.loads(report_path.read_text(encoding="utf-8"))
        _name_model_by_id(saved, model_id)
        temporary = work_dir / "report.json.tmp"
        temporary.write_text(json.dumps(saved, indent=2) + "\n", encoding="utf-8")
        temporary.replace(report_path)
    return result


def _check_registered_model(
    model_id: str, model_dir: Path, model_store: ModelStore
) -> dict[str, str] | None:
    """Load a registered model that no worker has loaded yet and record verified or invalid.

    Any exception from loading marks the model invalid, because every later job would fail the
    same way. A MemoryError is the worker's problem, not the model's, and propagates.

    Returns:
        The job's error when the model is invalid, else None.
    """
    record = model_store.get(model_id)
    if record is not None and record.status == "verified":
        return None
    if record is not None and record.status == "invalid":
        # A job queued before an earlier job found the model invalid.
        message = record.status_message or f"model {model_id} is invalid"
        return {"type": "ModelSpecError", "message": message}

    from models.loading import load_model

    try:
        load_model(str(model_dir / "spec.json"), device="cpu")
    except (SoftTimeLimitExceeded, MemoryError):
        raise
    except ModelSpecError as error:
        message = _hide_model_dir(" ".join(str(error).split()), model_id, model_dir)
    except Exception as error:  # any other failure to load leaves the model just as unusable
        logger.warning("model %s: loading raised %s", model_id, type(error).__name__, exc_info=True)
        detail = _hide_model_dir(" ".join(str(error).split()), model_id, model_dir)
        message = (
            f"model {model_id} could not be loaded ({type(error).__name__}: {detail}); check "
            "the spec's format, arch, num_classes, channels and input_size against the weights "
            "file, and register a corrected model"
        )
    else:
        model_store.set_status(model_id, "verified")
        logger.info("model %s: loaded and marked verified", model_id)
        return None
    model_store.set_status(model_id, "invalid", message)
    logger.warning("model %s: marked invalid: %s", model_id, message)
    return {"type": "ModelSpecError", "message": message[:2000]}


class JobTask(Task):
    """Task base class: records a hard time limit, which kills the pool process mid-job."""

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        # Celery calls this in the worker's main process after a hard time limit killed the pool
        # process; the attempt had no chance to record anything.
        if isinstance(exc, TimeLimitExceeded) and args:
            job_id = args[0]
            store = _stores()[0]
            try:
                failed = store.finish(
                    job_id,
                    "",
                    "failed",
                    error=_error(exc, "TimeLimitExceeded"),
                    message="timed out",
                )
            except redis.RedisError as error:
                # NOTE: the message is acknowledged anyway, so this job stays running; nothing
                # retries this write, because it runs in the worker's main process.
                logger.error(
                    "job %s: hard time limit exceeded, and recording it failed: %s", job_id, error
                )
                return
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
    model_dir: Path | None = None
    if model_id is not None:
        model_dir = storage.model_dir(model_id)
        params["model"] = str(model_dir / "spec.json")
        model_error = _check_registered_model(model_id, model_dir, model_store)
        if model_error is not None:
            return "failed", None, model_error

    def job_error(error: BaseException) -> dict[str, str]:
        described = _error(error)
        if model_id is not None and model_dir is not None:
            described["message"] = _hide_model_dir(described["message"], model_id, model_dir)
        return described

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
    except (ValueError, FileNotFoundError) as error:
        # A registered model loaded in _check_registered_model, so a ModelSpecError here depends
        # on this job's input (for example non-finite output on its image): only the job fails.
        return "failed", None, job_error(error)
    except TypeError as error:
        # Usually a bug rather than a bad request, so the worker log gets the traceback.
        logger.warning("job %s: the runner raised TypeError", job.id, exc_info=True)
        return "failed", None, job_error(error)

    if job_store.current_token(job.id) != token:
        # A redelivery took the job over while this attempt ran; its output is not the job's.
        return "stale", None, None
    if model_id is not None:
        result = _report_with_model_id(result, work_dir, model_id)
    storage.publish_artifacts(job.id, work_dir)
    # Output of earlier attempts whose pool process was killed.
    storage.remove_work_dirs(job.id)
    return "succeeded", result, None


def _return_message(job_id: str, failure: str, error: redis.RedisError) -> NoReturn:
    """Give the message back to the broker after Redis refused a write that the job needs.

    Its next delivery claims the job again. A job this attempt had claimed is then found
    running, which counts as a lost attempt.
    """
    logger.error(
        "job %s: %s (%s: %s); returning the message to the queue in %.0f s",
        job_id,
        failure,
        type(error).__name__,
        error,
        REQUEUE_MESSAGE_DELAY_S,
    )
    time.sleep(REQUEUE_MESSAGE_DELAY_S)
    raise Reject(error, requeue=True)


def _record_final(job_store: JobStore, job_id: str, token: str, status: str, **fields: Any) -> bool:
    """Write the job's final status, retrying while Redis refuses it for FINAL_WRITE_TIMEOUT_S.

    Returns:
        What JobStore.finish returns: True when this call made the transition.

    Raises:
        Reject: Redis refused the write for FINAL_WRITE_TIMEOUT_S; the message goes back to the
            queue (see _return_message).
    """
    deadline = time.monotonic() + FINAL_WRITE_TIMEOUT_S
    delay = 0.5
    failures = 0
    while True:
        try:
            return job_store.finish(job_id, token, status, **fields)
        except redis.RedisError as error:
            failures += 1
            if time.monotonic() + delay > deadline:
                _return_message(
                    job_id, f"could not record status {status} after {failures} tries", error
                )
            if failures == 1:
                logger.warning(
                    "job %s: could not record status %s (%s: %s); retrying for up to %.0f s",
                    job_id,
                    status,
                    type(error).__name__,
                    error,
                    FINAL_WRITE_TIMEOUT_S,
                )
        time.sleep(delay)
        delay = min(2 * delay, FINAL_WRITE_MAX_DELAY_S)


def _retry_after_redis_error(
    task: JobTask, job_store: JobStore, job_id: str, token: str, error: redis.RedisError
) -> None:
    """Requeue the job and schedule a Celery retry, or fail it once the retries are used up.

    Raises:
        Retry: the retry is scheduled (Celery's control flow).
        Reject: Redis also refused the requeue (see _return_message).
    """
    retries = task.request.retries
    if retries >= MAX_TRANSIENT_RETRIES:
        logger.error(
            "job %s: Redis error after %d retries, failing the job: %s", job_id, retries, error
        )
        _record_final(job_store, job_id, token, "failed", error=_error(error))
        return
    logger.warning(
        "job %s: Redis error, retry %d of %d: %s", job_id, retries + 1, MAX_TRANSIENT_RETRIES, error
    )
    try:
        job_store.requeue(job_id, token, f"retrying after a Redis error: {error}")
    except redis.RedisError as requeue_error:
        _return_message(job_id, "could not requeue the job after a Redis error", requeue_error)
    # NOTE: if publishing the retry message fails, Celery drops this message and the job stays
    # queued without one. Only a Redis failure right after the requeue succeeded does that.
    raise task.retry(exc=error, countdown=min(60, 2**retries)) from None


@celery_app.task(name=TASK_NAME, bind=True, base=JobTask, max_retries=MAX_TRANSIENT_RETRIES)
def run_job(self: JobTask, job_id: str) -> None:
    """Run the job ``job_id`` and record its final status."""
    settings = get_settings()
    job_store, _, storage = _stores()
    token = new_id()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    try:
        started = job_store.start(job_id, token, worker, settings.max_attempts)
        job = job_store.get_job(job_id) if started.outcome == "run" else None
    except redis.RedisError as error:
        _return_message(job_id, "could not claim the job", error)
    if started.outcome != "run":
        logger.info("job %s: not run (%s %s)", job_id, started.outcome, started.detail)
        return
    if job is None:
        return
    logger.info("job %s: %s attempt %s started on %s", job_id, job.type, started.detail, worker)

    try:
        status, result, error = _run_attempt(job, token)
    except redis.RedisError as redis_error:
        storage.remove_work_dirs(job_id)
        _retry_after_redis_error(self, job_store, job_id, token, redis_error)
        return
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
    finished = _record_final(job_store, job_id, token, status, result=result, error=error)
    logger.info("job %s: %s (recorded: %s)", job_id, status, finished)
