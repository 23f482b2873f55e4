"""Timing helpers for the benchmarks: interleaved repeats, medians, one process."""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch

REPO = str(Path(__file__).resolve().parent.parent)


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


# ---------------------------------------------------------------- device timing and host-device syncs
def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a timer measures work done, not work launched."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Tensor methods that hand a value to Python or numpy: on a GPU each one waits for every
# queued kernel (a host-device sync) and copies the result back.
HOST_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__", "__array__")
# Operators whose output size depends on the data: on a GPU they sync inside the kernel call.
SYNCING_OPS = (
    "aten::_local_scalar_dense",
    "aten::nonzero",
    "aten::masked_select",
    "aten::_unique2",
    "aten::unique_consecutive",
)


def _relative(file_name: str) -> str:
    for root in (f"site-packages{os.sep}", f"{REPO}{os.sep}"):
        if root in file_name:
            return file_name.split(root, 1)[1]
    return file_name


# Conversion helpers whose callers are the call sites worth naming.
PASS_THROUGH = (f"{os.sep}torch{os.sep}", f"tianshou{os.sep}data{os.sep}utils{os.sep}converter.py")


def _call_site() -> str:
    """``path:line`` of the first caller outside torch and conversion helpers, and the first line it went through."""
    frame, through = sys._getframe(2), None
    while frame is not None and any(part in frame.f_code.co_filename for part in PASS_THROUGH):
        through = through or f"{_relative(frame.f_code.co_filename)}:{frame.f_lineno}"
        frame = frame.f_back
    site = "<torch>" if frame is None else f"{_relative(frame.f_code.co_filename)}:{frame.f_lineno}"
    return f"{site} (via {through})" if through else site


def _caller_op(event) -> str:
    """The operator that ran a syncing op (``aten::item`` alone: a Python ``.item()`` or ``float(t)``)."""
    parent = event.cpu_parent
    while parent is not None and parent.name == "aten::item" and parent.cpu_parent is not None:
        parent = parent.cpu_parent
    return "Python" if parent is None or parent.name == "aten::item" else parent.name


@contextmanager
def host_read_audit(device: torch.device):
    """Count the host reads of tensors on ``device`` by call site, and the syncing operators.

    Yields a Counter that fills while the block runs: ``"path:line .method"`` for every
    host read (on a CPU run every tensor counts, since every tensor stands in for one
    that would be on the GPU), and ``"op <syncing op> <- <caller>"`` for every syncing
    operator seen by torch.profiler, with the operator that ran it (``.item()`` runs
    ``aten::_local_scalar_dense``; some CPU kernels, e.g. fused Adam's, read their step
    counter that way, which CUDA kernels do not).
    """
    counts: Counter = Counter()
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def counting(name: str, original):
        def read(self, *args, **kwargs):
            if self.device == device:
                counts[f"{_call_site()} .{name}"] += 1
            return original(self, *args, **kwargs)

        return read

    for name, original in originals.items():
        setattr(torch.Tensor, name, counting(name, original))
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
    for event in profile.events():
        if event.name in SYNCING_OPS:
            counts[f"op {event.name} <- {_caller_op(event)}"] += 1
