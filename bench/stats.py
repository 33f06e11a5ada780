"""Timing samples, bounded in count and in time."""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Samples:
    """Wall-clock durations of repeated calls, in seconds."""

    seconds: tuple[float, ...]

    @property
    def count(self) -> int:
        return len(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def minimum(self) -> float:
        return min(self.seconds)

    @property
    def maximum(self) -> float:
        return max(self.seconds)

    @property
    def p95(self) -> float:
        """Nearest-rank 95th percentile."""
        ordered = sorted(self.seconds)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def timed(call: Callable[[], object]) -> float:
    """Seconds one call takes; garbage left by earlier calls is collected first, untimed."""
    gc.collect()
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def repeat(call: Callable[[], object], *, count: int, budget: float) -> Samples:
    """Time `call` up to `count` times, stopping early once `budget` seconds have passed."""
    deadline = time.monotonic() + budget
    samples: list[float] = []
    for _ in range(count):
        samples.append(timed(call))
        if time.monotonic() >= deadline:
            break
    return Samples(tuple(samples))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"
