"""time_call: warm-up, repeats, synchronisation and the statistics over the repeats."""

from __future__ import annotations

import time

import pytest

from worker.hessian.timing import Timing, time_call


def test_calls_warmup_then_repeats() -> None:
    calls: list[int] = []

    def work() -> int:
        calls.append(len(calls))
        return len(calls)

    timing = time_call(work, warmup=2, repeats=3)
    assert len(calls) == 5
    assert len(timing.seconds) == 3
    assert timing.output == 5


def test_synchronize_brackets_each_repeat() -> None:
    events: list[str] = []
    time_call(
        lambda: events.append("call"),
        warmup=1,
        repeats=2,
        synchronize=lambda: events.append("sync"),
    )
    assert events == ["call", "sync", "call", "sync", "call", "sync"]


def test_statistics() -> None:
    timing = Timing(seconds=[0.3, 0.1, 0.2, 0.5], output=None)
    assert timing.median == pytest.approx(0.25)
    assert timing.min == 0.1
    assert timing.max == 0.5


def test_min_seconds_adds_repeats() -> None:
    calls: list[None] = []

    def sleep_briefly() -> None:
        calls.append(None)
        time.sleep(0.002)

    timing = time_call(sleep_briefly, warmup=0, repeats=2, min_seconds=0.02, max_repeats=1000)
    assert len(timing.seconds) > 2
    assert sum(timing.seconds) >= 0.02
    assert len(calls) == len(timing.seconds)


def test_max_repeats_caps_calls() -> None:
    timing = time_call(lambda: None, warmup=0, repeats=3, min_seconds=60.0, max_repeats=7)
    assert len(timing.seconds) == 7


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"warmup": -1, "repeats": 1}, "warmup"),
        ({"warmup": 0, "repeats": 0}, "repeats"),
        ({"warmup": 0, "repeats": 1, "min_seconds": -1.0}, "min_seconds"),
        ({"warmup": 0, "repeats": 5, "max_repeats": 4}, "max_repeats"),
    ],
)
def test_bad_counts_rejected(fields: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"{name} must be"):
        time_call(lambda: None, **fields)
