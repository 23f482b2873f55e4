"""Final-score aggregates over seeds with rliable (Agarwal et al. 2021, "Deep RL at the edge of
the statistical precipice"): the mean and the interquartile mean (IQM) with stratified
percentile-bootstrap confidence intervals, and performance profiles.

Scores come as ``{variant: array (seeds, envs)}``, one column per environment. With one column
the stratified bootstrap is the ordinary bootstrap over seeds. The IQM (the mean of the middle
50% of runs, ``scipy.stats.trim_mean(x, 0.25)``) is reported from five seeds on, as rliable
advises: below that it trims nothing or almost nothing and equals the mean.
"""

from __future__ import annotations

import itertools
import math
import statistics
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

IQM_MIN_SEEDS = 5
BOOTSTRAP_REPS = 2000


# rliable (and through it arch and scipy.stats, 2 s to import) is imported where it is used:
# ``clipzoo plot`` without --profile needs none of it.


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


def interval_estimates(
    scores: dict[str, np.ndarray], level: float = 0.95, reps: int = BOOTSTRAP_REPS, seed: int = 0
) -> dict[str, dict[str, Estimate]]:
    """``{variant: {"mean": Estimate, "iqm": Estimate}}``; "iqm" only where a variant has >= 5 seeds."""
    from rliable import library as rly
    from rliable import metrics

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
        state = (
            np.random.get_state()
        )  # rliable's bootstrap draws from numpy's global generator, whatever random_state says
        np.random.seed(seed)
        try:
            with _quiet_arch():
                points, intervals = rly.get_interval_estimates(
                    {variant: matrix},
                    aggregate,
                    reps=reps,
                    confidence_interval_size=level,
                    random_state=np.random.RandomState(seed),
                )
        finally:
            np.random.set_state(state)
        estimates[variant] = {
            n: Estimate(float(points[variant][i]), float(intervals[variant][0, i]), float(intervals[variant][1, i]))
            for i, n in enumerate(names)
        }
    return estimates


def performance_profiles(
    scores: dict[str, np.ndarray], thresholds: np.ndarray, reps: int = BOOTSTRAP_REPS, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{variant: (fraction of runs scoring > tau, band low, band high)}`` for each tau in ``thresholds``."""
    from rliable import library as rly

    state = np.random.get_state()  # rliable's profile bootstrap draws from numpy's global generator
    np.random.seed(seed)
    try:
        with _quiet_arch():
            profiles, bands = rly.create_performance_profile(
                {k: np.asarray(v, dtype=float) for k, v in scores.items()},
                np.asarray(thresholds, dtype=float),
                reps=reps,
            )
    finally:
        np.random.set_state(state)
    return {k: (profiles[k], bands[k][0], bands[k][1]) for k in profiles}


# Two variants compared on one env: B - A over seeds. The interval resamples each variant's
# seeds independently (a stratified bootstrap, strata = variants) with a seeded numpy
# Generator, so a rerun prints the same numbers; the p-value enumerates every relabeling of
# the pooled seeds (Fisher's exact permutation test of the difference of means); Holm's step-down
# correction adjusts p over every comparison a command asks; the probability of improvement
# is rliable's (Mann-Whitney U / (n_A n_B), ties counting 1/2). For a test left inconclusive,
# ``seeds_for_power`` says how many seeds the observed difference would need (rule point 4 of
# docs/reproductions.md).

EXACT_PERMUTATION_LIMIT = 3_000_000  # relabelings enumerated exactly: 12 v 12 seeds is 2,704,156
RANDOM_RELABELINGS = 200_000  # beyond the limit: this many random relabelings, seeded
_CHUNK = 100_000


@dataclass(frozen=True)
class Difference:
    """B - A of the mean over seeds, its stratified-bootstrap interval, the two-sided
    permutation p-value (``exact``: over all ``relabelings``; else estimated from that many
    random ones) and P(B > A)."""

    point: float
    low: float
    high: float
    p: float
    relabelings: int
    exact: bool
    improvement: float
    seeds_a: int
    seeds_b: int
    pooled_sd: float


def _seeds(values, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=float).ravel()
    if len(values) < 1 or not np.isfinite(values).all():
        raise ValueError(f"{name} needs at least one finite value per seed, got {values}")
    return values


def bootstrap_difference(a, b, level: float = 0.95, reps: int = BOOTSTRAP_REPS, seed: int = 0) -> Estimate:
    """mean(B) - mean(A) with a percentile interval from resampling A's seeds and B's seeds,
    each within its own variant, independently (``reps`` draws of a ``default_rng(seed)``)."""
    a, b = _seeds(a, "A"), _seeds(b, "B")
    rng = np.random.default_rng(seed)
    picks_a = rng.integers(0, len(a), size=(reps, len(a)))
    picks_b = rng.integers(0, len(b), size=(reps, len(b)))
    draws = b[picks_b].mean(axis=1) - a[picks_a].mean(axis=1)
    tail = (1 - level) / 2
    return Estimate(float(b.mean() - a.mean()), float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail)))


def relabelings(seeds_a: int, seeds_b: int) -> int:
    """C(n_A + n_B, n_A): the ways to split the pooled seeds into groups of n_A and n_B."""
    return math.comb(seeds_a + seeds_b, seeds_a)


def smallest_p(seeds_a: int, seeds_b: int) -> float:
    """The smallest two-sided exact permutation p-value these seed counts allow: the observed split
    alone (1 / C), or with equal counts it and its mirror image, the labels swapped (2 / C)."""
    return (2 if seeds_a == seeds_b else 1) / relabelings(seeds_a, seeds_b)


def permutation_p_value(
    a, b, limit: int = EXACT_PERMUTATION_LIMIT, random_relabelings: int = RANDOM_RELABELINGS, seed: int = 0
) -> tuple[float, int, bool]:
    """(two-sided p, relabelings counted, exact): the share of the splits of the pooled seeds into
    n_A and n_B whose |mean(B) - mean(A)| is at least the observed one, over all
    C(n_A + n_B, n_A) splits (itertools.combinations) up to ``limit``; beyond it, over
    ``random_relabelings`` random ones, (hits + 1) / (draws + 1)."""
    a, b = _seeds(a, "A"), _seeds(b, "B")
    pooled = np.concatenate([a, b])
    total, n_a, n_b = pooled.sum(), len(a), len(b)
    observed = abs(b.mean() - a.mean())
    tolerance = 1e-9 * float(np.abs(pooled).max())  # a split as extreme up to rounding counts

    def extreme(sum_a: np.ndarray) -> int:
        return int(np.count_nonzero(np.abs((total - sum_a) / n_b - sum_a / n_a) >= observed - tolerance))

    count = relabelings(n_a, n_b)
    if count <= limit:
        hits = 0
        splits = itertools.combinations(range(n_a + n_b), n_a)
        while len(chunk := np.fromiter(itertools.islice(splits, _CHUNK), dtype=np.dtype((np.intp, n_a)))):
            hits += extreme(pooled[chunk].sum(axis=1))
        return hits / count, count, True
    rng = np.random.default_rng(seed)
    hits, left = 0, random_relabelings
    while left:
        size = min(left, _CHUNK)
        order = rng.permuted(np.tile(np.arange(n_a + n_b), (size, 1)), axis=1)
        hits += extreme(pooled[order[:, :n_a]].sum(axis=1))
        left -= size
    return (hits + 1) / (random_relabelings + 1), random_relabelings, False


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment: the i-th smallest of m p-values becomes the running maximum of
    min(1, (m - j + 1) p_(j)) over j <= i. NaN entries (no test) stay NaN and do not count in m."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return adjusted


def probability_of_improvement(a, b) -> float:
    """P(B > A) over a random seed of each (rliable): ties count 1/2."""
    from rliable import metrics

    a, b = _seeds(a, "A"), _seeds(b, "B")
    return float(metrics.probability_of_improvement(b[:, None], a[:, None]))


def pooled_sd(a, b) -> float:
    """The pooled standard deviation over seeds, sqrt(((n_A - 1) s_A^2 + (n_B - 1) s_B^2) / (n_A + n_B - 2));
    NaN with one seed per variant."""
    a, b = _seeds(a, "A"), _seeds(b, "B")
    dof = len(a) + len(b) - 2
    if dof == 0:
        return float("nan")
    return math.sqrt((((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()) / dof)


POWER = 0.8  # rule point 4: the seeds an effect needs are those that detect it 4 times in 5
SIGNIFICANCE = 0.05


def fewest_deciding_seeds(tests: int, level: float = SIGNIFICANCE) -> int:
    """The fewest seeds per variant whose smallest exact p, times Holm's largest factor ``tests``,
    is below ``level`` (rule point 5): 4 for one test, 5 for up to 6, 6 for up to 23."""
    return next(n for n in itertools.count(2) if tests * smallest_p(n, n) < level)


def seeds_for_power(
    difference: float, sd: float, tests: int, level: float = SIGNIFICANCE, power: float = POWER
) -> float:
    """Seeds per variant for a true difference ``difference`` between variants whose seeds spread
    by ``sd`` to be detected with probability ``power`` by a two-sided test at the strictest Holm
    level ``level / tests`` (normal approximation), and never fewer than ``fewest_deciding_seeds``:

        n = 2 (z_{1 - level / (2 tests)} + z_power)^2 sd^2 / difference^2

    Infinite for no difference, NaN where the spread is unknown (one seed a variant)."""
    if math.isnan(sd):
        return float("nan")
    if difference == 0:
        return math.inf
    z = statistics.NormalDist().inv_cdf
    n = 2 * (z(1 - level / (2 * tests)) + z(power)) ** 2 * sd**2 / difference**2
    return float(max(math.ceil(n), fewest_deciding_seeds(tests, level)))


def compare(a, b, level: float = 0.95, reps: int = BOOTSTRAP_REPS, seed: int = 0) -> Difference:
    """B - A over seeds: ``bootstrap_difference``, ``permutation_p_value``, ``probability_of_improvement``
    and the ``pooled_sd`` that ``seeds_for_power`` takes."""
    a, b = _seeds(a, "A"), _seeds(b, "B")
    estimate = bootstrap_difference(a, b, level, reps, seed)
    p, count, exact = permutation_p_value(a, b, seed=seed)
    return Difference(
        estimate.point,
        estimate.low,
        estimate.high,
        p,
        count,
        exact,
        probability_of_improvement(a, b),
        len(a),
        len(b),
        pooled_sd(a, b),
    )
