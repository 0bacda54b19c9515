"""A JobContext whose progress goes to the job record and whose cancellation comes from it."""

from __future__ import annotations

import logging
import time

import redis

from worker.context import JobContext
from worker.store.jobs import JobStore

logger = logging.getLogger(__name__)

# At most one progress write and one cancellation read per this many seconds: runners report
# every attack step, which can be milliseconds apart.
MIN_INTERVAL_S = 0.1


class RecordedProgress:
    """Writes progress of one attempt to the job store and polls its cancellation flag.

    Progress is best-effort, so Redis trouble does not fail the job. A write that fails with any
    Redis error is skipped: a connection error after the client's own retries, or at once an
    error reply such as OOM or READONLY. The first failure is logged, then every 100th with the
    count. A failed cancellation read counts as "not cancelled".

    Args:
        store: the job store.
        job_id: the job.
        token: the attempt's token; writes stop once another attempt owns the job.
    """

    def __init__(self, store: JobStore, job_id: str, token: str) -> None:
        self.store = store
        self.job_id = job_id
        self.token = token
        self._last_write = 0.0
        self._last_poll = 0.0
        self._cancelled = False
        self._failures = 0

    def write(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - self._last_write < MIN_INTERVAL_S and fraction < 1.0:
            return
        self._last_write = now
        try:
            self.store.set_progress(self.job_id, self.token, fraction, message)
        except redis.RedisError as error:
            self._failures += 1
            if self._failures == 1 or self._failures % 100 == 0:
                logger.warning(
                    "job %s: progress write failed %d time(s), skipped: %s",
                    self.job_id,
                    self._failures,
                    error,
                )

    def is_cancelled(self) -> bool:
        now = time.monotonic()
        if self._cancelled or now - self._last_poll < MIN_INTERVAL_S:
            return self._cancelled
        self._last_poll = now
        try:
            self._cancelled = self.store.is_cancel_requested(self.job_id)
        except redis.RedisError as error:
            self._failures += 1
            if self._failures == 1 or self._failures % 100 == 0:
                logger.warning(
                    "job %s: cancellation check failed (%d Redis failure(s)): %s",
                    self.job_id,
                    self._failures,
                    error,
                )
        return self._cancelled

    def context(self) -> JobContext:
        """Return the JobContext to hand to the runner."""
        return JobContext(self.job_id, on_progress=self.write, is_cancelled=self.is_cancelled)
