"""A JobContext that drives a tqdm progress bar on stderr, for in-process runs."""

from __future__ import annotations

from tqdm import tqdm

from worker.context import JobContext


class ProgressBar:
    """A progress bar from 0 to 1 that a JobContext reports into; use as a context manager.

    Args:
        description: text shown before the bar.
        disable: hide the bar (for example when stderr is not a terminal and --quiet is given).
    """

    def __init__(self, description: str, disable: bool = False) -> None:
        self._bar = tqdm(
            total=1000,
            desc=description,
            disable=disable,
            leave=False,
            dynamic_ncols=True,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}",
        )
        self._position = 0

    def update(self, fraction: float, message: str) -> None:
        """Move the bar to ``fraction`` in [0, 1] and show ``message`` after it."""
        position = round(fraction * 1000)
        if position > self._position:
            self._bar.update(position - self._position)
            self._position = position
        if message:
            self._bar.set_postfix_str(message, refresh=False)

    def context(self, job_id: str = "local") -> JobContext:
        """Return a JobContext whose progress moves this bar."""
        return JobContext(job_id=job_id, on_progress=self.update)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._bar.close()
