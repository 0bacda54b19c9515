"""The handle an analysis uses to report progress and to notice cancellation."""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)


class JobCancelled(Exception):  # noqa: N818 (a control-flow signal, not an error)
    """Raised inside an analysis when its job was cancelled; the job ends as cancelled."""


class JobContext:
    """Progress reporting and cancellation for one job.

    The command line passes a context that drives a progress bar; the Celery task passes one that
    writes progress to the job record and checks the job store for whether the job was cancelled.

    Args:
        job_id: identifier used in log lines. Default "local" for in-process runs.
        on_progress: called with (fraction in [0, 1], short message). Default: no-op.
        is_cancelled: returns True once the job should stop. Default: never.
    """

    def __init__(
        self,
        job_id: str = "local",
        on_progress: Callable[[float, str], None] | None = None,
        is_cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self.job_id = job_id
        self._on_progress = on_progress
        self._is_cancelled = is_cancelled

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress as a fraction in [0, 1]; values outside are clipped."""
        if self._on_progress is not None:
            self._on_progress(min(1.0, max(0.0, float(fraction))), message)

    def check_cancelled(self) -> None:
        """Raise JobCancelled if the job was cancelled; analyses call this once per step."""
        if self._is_cancelled is not None and self._is_cancelled():
            logger.info("job %s: cancellation noticed, stopping", self.job_id)
            raise JobCancelled(self.job_id)

    def scaled(self, start: float, stop: float) -> JobContext:
        """Return a context whose progress 0..1 maps onto start..stop of this one."""

        def forward(fraction: float, message: str) -> None:
            self.progress(start + (stop - start) * fraction, message)

        return JobContext(self.job_id, forward, self._is_cancelled)
