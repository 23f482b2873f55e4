"""Final-score aggregates over seeds with rliable (Agarwal et al. 2021, "Deep RL at the edge of
the statistical precipice"): the mean and the interquartile mean (IQM) with stratified
percentile-bootstrap confidence intervals, and performance profiles.

Scores come as ``{variant: array (seeds, envs)}``, one column per environment. With one column
the stratified bootstrap is the ordinary bootstrap over seeds. The IQM (the mean of the middle
50% of runs, ``scipy.stats.trim_mean(x, 0.25)``) is reported from five seeds on, as rliable
advises: below that it trims nothing or almost nothing and equals the mean.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from rliable import library as rly
from rliable import metrics

IQM_MIN_SEEDS = 5
BOOTSTRAP_REPS = 2000


@contextmanager
def _quiet_arch():
    """rliable passes arch a RandomState, which arch now announces it will deprecate."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="arch")
        yield


@dataclass(frozen=True)
class Estimate:
    point: float
    low: float
    high: float


def interval_estimates(scores: dict[str, np.ndarray], level: float = 0.95, reps: int = BOOTSTRAP_REPS,
                       seed: int = 0) -> dict[str, dict[str, Estimate]]:
    """``{variant: {"mean": Estimate, "iqm": Estimate}}``; "iqm" only where a variant has >= 5 seeds."""
    estimates: dict[str, dict[str, Estimate]] = {}
    for variant, matrix in scores.items():
        matrix = np.asarray(matrix, dtype=float)
        if matrix.ndim != 2 or matrix.shape[0] < 1:
            raise ValueError(f"scores of {variant!r} must be a (seeds, envs) matrix, got shape {matrix.shape}")
        names = ["mean"] + (["iqm"] if matrix.shape[0] >= IQM_MIN_SEEDS else [])

        def aggregate(x: np.ndarray) -> np.ndarray:
            values = [metrics.aggregate_mean(x)]
            if "iqm" in names:
                values.append(metrics.aggregate_iqm(x))
            return np.array(values)

        if matrix.shape[0] == 1:  # nothing to resample: the interval is the point
            point = aggregate(matrix)
            estimates[variant] = {n: Estimate(p, p, p) for n, p in zip(names, point)}
            continue
        with _quiet_arch():
            points, intervals = rly.get_interval_estimates(
                {variant: matrix}, aggregate, reps=reps, confidence_interval_size=level,
                random_state=np.random.RandomState(seed))
        estimates[variant] = {n: Estimate(float(points[variant][i]), float(intervals[variant][0, i]),
                                          float(intervals[variant][1, i])) for i, n in enumerate(names)}
    return estimates


def performance_profiles(scores: dict[str, np.ndarray], thresholds: np.ndarray, reps: int = BOOTSTRAP_REPS,
                         seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{variant: (fraction of runs scoring > tau, band low, band high)}`` for each tau in ``thresholds``."""
    state = np.random.get_state()  # rliable's profile bootstrap draws from numpy's global generator
    np.random.seed(seed)
    try:
        with _quiet_arch():
            profiles, bands = rly.create_performance_profile(
                {k: np.asarray(v, dtype=float) for k, v in scores.items()}, np.asarray(thresholds, dtype=float), reps=reps)
    finally:
        np.random.set_state(state)
    return {k: (profiles[k], bands[k][0], bands[k][1]) for k in profiles}
