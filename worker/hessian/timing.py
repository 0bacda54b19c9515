"""Wall-clock timing of one call: warm-up calls, then repeats, with median, min and max."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Timing:
    """Seconds per call over the timed repeats, and the output of the last call.

    Attributes:
        seconds: wall-clock seconds of each timed call, in call order.
        output: what the last timed call returned.
    """

    seconds: list[float]
    output: Any

    @property
    def median(self) -> float:
        """Median seconds per call."""
        return statistics.median(self.seconds)

    @property
    def min(self) -> float:
        """Fastest call in seconds."""
        return min(self.seconds)

    @property
    def max(self) -> float:
        """Slowest call in seconds."""
        return max(self.seconds)


def time_call(
    function: Callable[[], Any],
    *,
    warmup: int,
    repeats: int,
    min_seconds: float = 0.0,
    max_repeats: int | None = None,
    synchronize: Callable[[], None] | None = None,
) -> Timing:
    """Call ``function`` ``warmup`` times untimed, then at least ``repeats`` times timed.

    Timing goes on past ``repeats`` until the timed calls add up to ``min_seconds`` or
    ``max_repeats`` calls have run, so that a call of microseconds gets enough samples for its
    median to survive an occasional preemption by other processes.

    Args:
        function: the work to time; its return value of the last call is kept.
        warmup: untimed calls first (kernel selection, caches, JIT compilation), >= 0.
        repeats: minimum number of timed calls, >= 1.
        min_seconds: minimum total of the timed calls in seconds. Default 0 (exactly
            ``repeats`` calls).
        max_repeats: maximum number of timed calls, >= repeats. Default: ``repeats``.
        synchronize: called before starting and before stopping each clock, for example
            ``torch.cuda.synchronize``, so that asynchronous device work is inside the window.

    Raises:
        ValueError: when warmup < 0, repeats < 1, min_seconds < 0 or max_repeats < repeats.
    """
    if max_repeats is None:
        max_repeats = repeats
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup!r}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats!r}")
    if min_seconds < 0:
        raise ValueError(f"min_seconds must be >= 0, got {min_seconds!r}")
    if max_repeats < repeats:
        raise ValueError(f"max_repeats must be >= repeats ({repeats}), got {max_repeats!r}")

    def wait() -> None:
        if synchronize is not None:
            synchronize()

    for _ in range(warmup):
        function()
    wait()

    seconds: list[float] = []
    output: Any = None
    while len(seconds) < repeats or (sum(seconds) < min_seconds and len(seconds) < max_repeats):
        # Free the previous output first, so that two Hessians never coexist in memory.
        output = None
        start = time.perf_counter()
        output = function()
        wait()
        seconds.append(time.perf_counter() - start)
    return Timing(seconds=seconds, output=output)
