"""Job and batch records in Redis, with atomic status transitions and counters for /metrics.

Keys, all under a prefix (default "fragility"):

    {prefix}:job:{id}            hash, one JobRecord
    {prefix}:batch:{id}          hash, one BatchRecord without its job list
    {prefix}:batch:{id}:jobs     list of job ids in upload order
    {prefix}:job_counts          hash "type|status" -> jobs in that status now
    {prefix}:jobs_finished       hash "type|status" -> jobs that reached that final status
    {prefix}:job_durations       hash "type|le" / "type|sum" / "type|count", a histogram of
                                 start-to-finish seconds of the latest attempt
    {prefix}:undispatched        set of ids created but not yet handed to Celery

Run Redis with append-only persistence so these records survive a restart of Redis.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import redis

from worker.store import scripts
from worker.store.files import new_id
from worker.store.records import FINAL_STATUSES, BatchRecord, JobRecord

logger = logging.getLogger(__name__)


class StartOutcome(NamedTuple):
    """What JobStore.start decided.

    Attributes:
        outcome: one of
            "run": run the job, detail is the attempt number;
            "final": the job already has the final status in detail, so drop the message;
            "cancelled": it was cancelled before it started;
            "exhausted": it failed now after too many lost attempts;
            "missing": there is no such record.
        detail: see outcome.
    """

    outcome: str
    detail: str


class JobStore:
    """Reads and writes job and batch records; shared by the API and the workers.

    Args:
        client: a Redis client created with ``decode_responses=True`` (see connect_redis).
        prefix: first part of every key, so that several deployments can share one Redis.
    """

    def __init__(self, client: redis.Redis, prefix: str = "fragility") -> None:
        self.redis = client
        self.prefix = prefix
        self._counts_key = f"{prefix}:job_counts"
        self._finished_key = f"{prefix}:jobs_finished"
        self._durations_key = f"{prefix}:job_durations"
        self._undispatched_key = f"{prefix}:undispatched"
        self._start = client.register_script(scripts.START)
        self._finish = client.register_script(scripts.FINISH)
        self._fail_queued = client.register_script(scripts.FAIL_QUEUED)
        self._cancel = client.register_script(scripts.CANCEL)
        self._requeue = client.register_script(scripts.REQUEUE)
        self._progress = client.register_script(scripts.PROGRESS)

    def job_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def _batch_key(self, batch_id: str) -> str:
        return f"{self.prefix}:batch:{batch_id}"

    def _transition_keys(self, job_id: str) -> list[str]:
        return [self.job_key(job_id), self._counts_key, self._finished_key, self._durations_key]

    # Creation -----------------------------------------------------------------------------

    def _add_job(
        self,
        pipe: redis.client.Pipeline,
        job_type: str,
        queue: str,
        params: dict[str, Any],
        inputs: Sequence[str],
        input_sha256: Sequence[str],
        batch_id: str | None = None,
        batch_index: int | None = None,
    ) -> JobRecord:
        record = JobRecord(
            id=new_id(),
            type=job_type,
            status="queued",
            queue=queue,
            params=params,
            inputs=list(inputs),
            input_sha256=list(input_sha256),
            batch_id=batch_id,
            batch_index=batch_index,
            created_at=time.time(),
        )
        fields = {
            "id": record.id,
            "type": job_type,
            "status": "queued",
            "queue": queue,
            "params": json.dumps(params),
            "inputs": json.dumps(record.inputs),
            "input_sha256": json.dumps(record.input_sha256),
            "batch_id": batch_id or "",
            "batch_index": "" if batch_index is None else str(batch_index),
            "progress": "0",
            "message": "queued",
            "created_at": repr(record.created_at),
            "attempts": "0",
        }
        pipe.hset(self.job_key(record.id), mapping=fields)
        pipe.hincrby(self._counts_key, f"{job_type}|queued", 1)
        pipe.sadd(self._undispatched_key, record.id)
        return record

    def create_job(
        self,
        job_type: str,
        queue: str,
        params: dict[str, Any],
        inputs: Sequence[str] = (),
        input_sha256: Sequence[str] = (),
    ) -> JobRecord:
        """Store a new queued job and return it; call mark_dispatched once it is enqueued."""
        with self.redis.pipeline(transaction=True) as pipe:
            record = self._add_job(pipe, job_type, queue, params, inputs, input_sha256)
            pipe.execute()
        return record

    def create_batch(
        self,
        job_type: str,
        queue: str,
        params: dict[str, Any],
        inputs_per_job: Sequence[Sequence[str]],
        sha256_per_job: Sequence[Sequence[str]],
    ) -> tuple[BatchRecord, list[JobRecord]]:
        """Store a batch and one queued job per entry of ``inputs_per_job``, in one transaction."""
        batch_id = new_id()
        created_at = time.time()
        with self.redis.pipeline(transaction=True) as pipe:
            jobs = [
                self._add_job(pipe, job_type, queue, params, inputs, hashes, batch_id, index)
                for index, (inputs, hashes) in enumerate(
                    zip(inputs_per_job, sha256_per_job, strict=True)
                )
            ]
            pipe.hset(
                self._batch_key(batch_id),
                mapping={
                    "id": batch_id,
                    "type": job_type,
                    "params": json.dumps(params),
                    "created_at": repr(created_at),
                },
            )
            pipe.rpush(f"{self._batch_key(batch_id)}:jobs", *[job.id for job in jobs])
            pipe.execute()
        batch = BatchRecord(
            id=batch_id,
            type=job_type,
            params=params,
            created_at=created_at,
            job_ids=[job.id for job in jobs],
        )
        return batch, jobs

    def mark_dispatched(self, job_ids: Sequence[str]) -> None:
        """Record that the jobs' messages are in the broker."""
        if job_ids:
            self.redis.srem(self._undispatched_key, *job_ids)

    def fail_queued(self, job_id: str, message: str, kind: str = "NotEnqueued") -> bool:
        """Fail a job that is still queued (its message could not be sent); False otherwise."""
        error = json.dumps({"type": kind, "message": message})
        failed = self._fail_queued(
            keys=self._transition_keys(job_id), args=[repr(time.time()), error]
        )
        return bool(failed)

    def fail_undispatched(self, older_than_s: float) -> list[str]:
        """Fail queued jobs created over ``older_than_s`` ago whose message was never sent.

        A job lands here when the API process stopped between storing the record and enqueueing
        it; its client never got a 202. Returns the ids of the jobs failed.
        """
        failed = []
        now = time.time()
        for job_id in self.redis.smembers(self._undispatched_key):
            created = self.redis.hget(self.job_key(job_id), "created_at")
            if created is not None and now - float(created) < older_than_s:
                continue
            if created is not None and self.fail_queued(
                job_id, "the API stopped before it enqueued this job"
            ):
                failed.append(job_id)
            self.redis.srem(self._undispatched_key, job_id)
        return failed

    # Reading ------------------------------------------------------------------------------

    def get_job(self, job_id: str) -> JobRecord | None:
        """Return the job, or None when there is no job with that id."""
        fields = self.redis.hgetall(self.job_key(job_id))
        return JobRecord.from_hash(fields) if fields else None

    def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        """Return the jobs in the order of ``job_ids`` (None where missing), in one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self.job_key(job_id))
            replies = pipe.execute()
        return [JobRecord.from_hash(fields) if fields else None for fields in replies]

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        """Return the batch, or None when there is no batch with that id."""
        key = self._batch_key(batch_id)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(key)
            pipe.lrange(f"{key}:jobs", 0, -1)
            fields, job_ids = pipe.execute()
        if not fields:
            return None
        return BatchRecord(
            id=fields["id"],
            type=fields["type"],
            params=json.loads(fields["params"]),
            created_at=float(fields["created_at"]),
            job_ids=job_ids,
        )

    def is_cancel_requested(self, job_id: str) -> bool:
        """Return True once DELETE /v1/jobs/{id} was called for this job."""
        return self.redis.hget(self.job_key(job_id), "cancel_requested") == "1"

    def current_token(self, job_id: str) -> str | None:
        """Return the token of the attempt allowed to finish the job, or None."""
        return self.redis.hget(self.job_key(job_id), "token") or None

    # Transitions --------------------------------------------------------------------------

    def start(self, job_id: str, token: str, worker: str, max_attempts: int) -> StartOutcome:
        """Move a queued (or lost running) job to running under ``token``; see StartOutcome.

        Finding the job running means the delivery that claimed it was lost; it fails as
        WorkerLost once ``max_attempts`` deliveries were lost. Retries after a Redis error
        requeue the job first and do not count (see scripts.START).
        """
        # NOTE: nothing fails a running job whose message is gone for good, so it stays running.
        # Two causes: a Redis crash under appendfsync everysec (docker-compose.yml uses always),
        # and a hard time limit whose failure could not be recorded (JobTask.on_failure).
        error = json.dumps(
            {
                "type": "WorkerLost",
                "message": f"the worker process running this job was lost {max_attempts} "
                "time(s) (FRAGILITY_MAX_ATTEMPTS); the job is not retried again. Check the "
                "worker log for a crash or an out-of-memory kill",
            }
        )
        outcome, detail = self._start(
            keys=self._transition_keys(job_id),
            args=[token, repr(time.time()), worker, max_attempts, error],
        )
        return StartOutcome(outcome, detail)

    def set_progress(self, job_id: str, token: str, fraction: float, message: str) -> bool:
        """Write progress of the current attempt; False when ``token`` is no longer current."""
        written = self._progress(
            keys=[self.job_key(job_id)], args=[token, f"{fraction:.4f}", message[:200]]
        )
        return bool(written)

    def finish(
        self,
        job_id: str,
        token: str,
        status: str,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        message: str = "",
    ) -> bool:
        """Move a running job to a final status, once.

        Args:
            token: the attempt's token; "" finishes whichever attempt is running (used by the
                worker's main process after a hard time limit killed the attempt).
            status: "succeeded", "failed" or "cancelled".

        Returns:
            True when this call made the transition; False when the job was not running or
            another attempt owns it (the caller then drops its output).
        """
        if status not in FINAL_STATUSES:
            raise ValueError(f"status must be one of {sorted(FINAL_STATUSES)}, got {status!r}")
        fields: list[str] = ["message", message or status]
        if status == "succeeded":
            fields += ["progress", "1"]
        if result is not None:
            fields += ["result", json.dumps(result, default=str)]
        if error is not None:
            fields += ["error", json.dumps(error)]
        done = self._finish(
            keys=self._transition_keys(job_id), args=[token, status, repr(time.time()), *fields]
        )
        return bool(done)

    def requeue(self, job_id: str, token: str, message: str) -> bool:
        """Put a running job back to queued before a retry; False when ``token`` is stale."""
        return bool(
            self._requeue(
                keys=[self.job_key(job_id), self._counts_key], args=[token, message[:200]]
            )
        )

    def cancel(self, job_id: str) -> str:
        """Cancel a job: see scripts.CANCEL for the outcomes returned."""
        return self._cancel(keys=self._transition_keys(job_id), args=[repr(time.time())])

    # Counters -----------------------------------------------------------------------------

    def _read_pairs(self, key: str) -> dict[tuple[str, str], float]:
        pairs = {}
        for field, value in self.redis.hgetall(key).items():
            name, _, label = field.rpartition("|")
            pairs[(name, label)] = float(value)
        return pairs

    def status_counts(self) -> dict[tuple[str, str], int]:
        """Return {(type, status): jobs in that status now}."""
        return {key: int(value) for key, value in self._read_pairs(self._counts_key).items()}

    def finished_totals(self) -> dict[tuple[str, str], int]:
        """Return {(type, final status): jobs that ever reached it}."""
        return {key: int(value) for key, value in self._read_pairs(self._finished_key).items()}

    def duration_histograms(self) -> dict[str, dict[str, float]]:
        """Return {type: {"1": count, ..., "+Inf": count, "sum": seconds, "count": n}}."""
        histograms: dict[str, dict[str, float]] = {}
        for (job_type, label), value in self._read_pairs(self._durations_key).items():
            histograms.setdefault(job_type, {})[label] = value
        return histograms
