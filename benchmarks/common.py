"""Timing helpers for the benchmarks: interleaved repeats, medians, one process."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def seconds_per_call(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def interleaved_medians(candidates: dict[str, Callable[[], object]], calls: int, repeats: int = 7) -> dict[str, float]:
    """Median seconds per call of each candidate, alternating them so drift hits all alike."""
    for fn in candidates.values():
        seconds_per_call(fn, max(1, calls // 10))  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            samples[name].append(seconds_per_call(fn, calls))
    return {name: statistics.median(values) for name, values in samples.items()}
