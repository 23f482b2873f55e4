"""Figures and tables that aggregate seeds the way the papers do.

A sweep directory holds runs as ``<sweep>/<env>/<variant>/seed_<n>/`` (any run directory
with a ``config.json`` counts; env and variant come from its path, or the env from the
run's config when the path is shallower). Curves are aligned
on a common step grid, averaged across seeds, and drawn with a 95% percentile-bootstrap
confidence band of the mean; one panel per environment, one colour per variant.

Only complete runs count by default; every run left out gets a line saying why
(``select_runs``). With ``include_partial`` unfinished runs count too, and every run of
a group is cut at the group's common last step, so no mean mixes steps some seeds lack.
A group none of whose runs logs the metric (the baseline of a plug-in's own metric) is
left out with a line too (``groups_logging``).

``table --compare A B`` (``comparisons``, ``compare_table``) sets two variants side by side per
env: B - A of the final value and of the whole-run mean, with the statistics of
``runners.aggregates.compare`` and Holm's correction over every comparison asked; ``holm``
(``pooled_holm``) corrects the comparisons CSVs of several such commands together.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import itertools
import json
import logging
import math
import re
from collections import defaultdict
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from runners.aggregates import (
    BOOTSTRAP_REPS,
    EXACT_PERMUTATION_LIMIT,
    IQM_MIN_SEEDS,
    POWER,
    RANDOM_RELABELINGS,
    Difference,
    compare,
    holm,
    interval_estimates,
    performance_profiles,
    relabelings,
    seeds_for_power,
    smallest_p,
)
from runners.base.console import plural
from runners.base.errors import UsageError
from runners.base.files import atomic_write_bytes, atomic_write_text
from runners.base.rundir import effective_state, read_attempts, read_status
from runners.registry import gradient_covariance_module, heatmap_drawing

GRID_POINTS = 100


@dataclass(frozen=True)
class Run:
    path: Path
    env: str
    variant: str
    seed: str
    state: str = "complete"


def find_runs(sweep_dir: str | Path) -> list[Run]:
    """Every run directory below ``sweep_dir``, with env / variant / seed read from its path."""
    root = Path(sweep_dir)
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory")
    runs = []
    for config in sorted(root.rglob("config.json")):
        parts = config.parent.relative_to(root).parts
        # <env>/<variant>/<seed>; shallower layouts take the env from the run's config
        env = parts[-3] if len(parts) >= 3 else json.loads(config.read_text()).get("env_id", "-")
        variant = parts[-2] if len(parts) >= 2 else "-"
        status = effective_state(config.parent, read_status(config.parent)) or {}
        state = status.get("state", "without status.json")
        if status and state != "complete":
            state += f" at step {status.get('global_step', 0):,}" + (
                f" of {status['total_timesteps']:,}" if status.get("total_timesteps") else ""
            )
        runs.append(Run(config.parent, env, variant, parts[-1] if parts else config.parent.name, state))
    if not runs:
        raise UsageError(f"no runs (directories with a config.json) below {root}")
    return runs


def select_runs(runs: list[Run], include_partial: bool = False) -> tuple[list[Run], list[str]]:
    """(runs to aggregate, a line for each run left out or included unfinished)."""
    kept, notes = [], []
    for run in runs:
        if run.state == "complete":
            kept.append(run)
        elif include_partial:
            kept.append(run)
            notes.append(f"included partial run {run.path} ({run.state}); its group is cut at the common last step")
        else:
            notes.append(
                f"left out {run.path}: {run.state} (--include-partial to include it up to the common last step)"
            )
    for run in kept:
        inexact = [a for a in read_attempts(run.path) if a.get("exact") is False]
        if inexact:
            steps = ", ".join(f"{a.get('resumed_from_step'):,}" for a in inexact)
            notes.append(
                f"{run.path} was resumed without its replay buffer at step {steps} (--checkpoint-buffer never): "
                f"not the run an uninterrupted one would be"
            )
    if not kept:
        raise UsageError(f"no complete runs among the {len(runs)} found; --include-partial includes unfinished ones")
    return kept, notes


def groups_logging(runs: list[Run], tag: str) -> tuple[list[Run], list[str]]:
    """(runs of the env x variant groups that log ``tag``, a line for each group left out).

    A plug-in's own metric (``wc/clipped_fraction``) is absent from the baseline's runs: such a
    group is left out with a note. Within a group that logs it, a run that does not is an error
    (``read_scalar`` names it); so is a tag no run logs."""
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        groups[(run.env, run.variant)].append(run)
    kept, notes = [], []
    for (env, variant), members in groups.items():
        if any(_has_scalar(run.path, tag) for run in members):
            kept.extend(members)
        else:
            notes.append(f"left out {env}/{variant}: none of its {len(members)} runs logs {tag}")
    if not kept:
        read_scalar(runs[0].path, tag)  # refuses, listing the tags that exist
    return kept, notes


def _events(run: Path) -> EventAccumulator:
    """The run's events, read once per process while its event files stay as they are."""
    stamp = tuple(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(Path(run).glob("events.out.tfevents.*"))
    )
    return _read_events(str(run), stamp)


@functools.lru_cache(maxsize=512)
def _read_events(run: str, stamp: tuple) -> EventAccumulator:
    # A resumed run's event files restart at its checkpoint; TensorBoard warns for each one,
    # and drops the stale events as it should.
    with _quiet_tensorboard():
        return EventAccumulator(run, size_guidance={"scalars": 0}).Reload()


def _has_scalar(run: Path, tag: str) -> bool:
    return tag in _events(run).Tags()["scalars"] or _saved_covariance_summary(run, tag) is not None


def _saved_covariance_summary(run: Path, tag: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, values) of a ``gradcov/*`` summary recomputed from the matrices the run saved
    up to its last recorded step (a resumed run may have left later ones from before its
    checkpoint); None where it cannot be."""
    if not tag.startswith("gradcov/"):
        return None
    last_step = (read_status(Path(run)) or {}).get("global_step")
    files = [
        f
        for f in sorted((Path(run) / "gradcov").glob("step_*.npz"))
        if last_step is None or int(f.stem.split("_")[1]) <= last_step
    ]
    return _summaries_of(tuple((str(f), f.stat().st_mtime_ns) for f in files), tag)


@functools.lru_cache(maxsize=512)
def _summaries_of(files: tuple[tuple[str, int], ...], tag: str) -> tuple[np.ndarray, np.ndarray] | None:
    if not files:
        return None
    import torch  # the summaries are torch code; plotting loads torch only when it needs them

    summary = gradient_covariance_module().covariance_summary
    points = []
    for file, _ in files:
        with np.load(file) as saved:
            values = summary(torch.from_numpy(saved["covariance"]))
            if tag not in values:
                return None
            points.append((int(saved["step"]), values[tag]))
    steps, values = zip(*points)
    return np.array(steps, dtype=float), np.array(values, dtype=float)


def read_scalar(run: Path, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one tag; a missing tag is refused with the list of tags that exist.
    A ``gradcov/*`` summary is recomputed from the saved matrices where the event files lack
    it or hold fewer of its points (a run resumed after the summary was added)."""
    events = _events(run)
    tags = events.Tags()["scalars"]
    recomputed = _saved_covariance_summary(run, tag)
    if recomputed is not None and (tag not in tags or len(events.Scalars(tag)) < len(recomputed[0])):
        return recomputed
    if tag not in tags:
        listed = ", ".join(sorted(t for t in tags if not t.startswith("layers/")))
        raise UsageError(f"run {run} has no scalar {tag!r}; it has: {listed}")
    scalars = events.Scalars(tag)
    return np.array([s.step for s in scalars], dtype=float), np.array([s.value for s in scalars], dtype=float)


@contextlib.contextmanager
def _quiet_tensorboard():
    logger = logging.getLogger("tensorboard")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def bootstrap_interval(
    samples: np.ndarray, rng: np.random.Generator, level: float = 0.95, reps: int = BOOTSTRAP_REPS
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean over axis 0 (seeds), NaN-aware per column."""
    seeds = samples.shape[0]
    picks = rng.integers(0, seeds, size=(reps, seeds))
    means = np.nanmean(samples[picks], axis=1)  # (bootstrap, points)
    tail = (1 - level) / 2
    return np.nanquantile(means, tail, axis=0), np.nanquantile(means, 1 - tail, axis=0)


@dataclass
class Curve:
    metric: str
    env: str
    variant: str
    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    seeds: int


def aggregate(runs: list[Run], tag: str, seed: int = 0, reps: int = BOOTSTRAP_REPS) -> list[Curve]:
    """Mean and bootstrap band per (env, variant) on a grid up to the shortest run's last step."""
    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    for run in runs:
        groups[(run.env, run.variant)].append(read_scalar(run.path, tag))
    curves = []
    for (env, variant), series in sorted(groups.items()):
        end = min(steps[-1] for steps, _ in series)
        start = max(steps[0] for steps, _ in series)
        grid = np.linspace(start, end, GRID_POINTS) if end > start else np.array([end])
        aligned = np.stack([np.interp(grid, steps, values) for steps, values in series])
        low, high = bootstrap_interval(aligned, rng, reps=reps)
        curves.append(Curve(tag, env, variant, grid, aligned.mean(0), low, high, len(series)))
    return curves


def write_csv(curves: list[Curve], path: str | Path) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["metric", "env", "variant", "step", "mean", "ci_low", "ci_high", "seeds"])
    for c in curves:
        for row in zip(c.steps, c.mean, c.low, c.high):
            writer.writerow([c.metric, c.env, c.variant, int(row[0]), *(f"{v:.6g}" for v in row[1:]), c.seeds])
    return atomic_write_text(path, buffer.getvalue())


def seeds_label(count: int) -> str:
    return f"{count} seed" if count == 1 else f"{count} seeds"


def plot_curves(curves: list[Curve], path: str | Path, group_by: str = "variant") -> Path:
    """A row per metric; in a row, a panel per env and a colour per variant (``group_by="variant"``),
    or the other way round. Several metrics of one sweep side by side, as the papers' figures."""
    if group_by not in ("variant", "env"):
        raise UsageError(f"--group-by must be 'variant' or 'env', got {group_by!r}")
    colour_of = (lambda c: c.variant) if group_by == "variant" else (lambda c: c.env)
    panel_of = (lambda c: c.env) if group_by == "variant" else (lambda c: c.variant)
    metrics = list(dict.fromkeys(c.metric for c in curves))
    panels = sorted({panel_of(c) for c in curves})
    colours = {key: f"C{i % 10}" for i, key in enumerate(sorted({colour_of(c) for c in curves}))}
    crowded = len(colours) > 4  # a legend over the curves would hide them: put it beside the panel
    figure = Figure(figsize=((6.9 if crowded else 4.5) * len(panels), 3.4 * len(metrics)), dpi=110)
    for row, metric in enumerate(metrics):
        for column, panel in enumerate(panels):
            axes = figure.add_subplot(len(metrics), len(panels), row * len(panels) + column + 1)
            for c in (c for c in curves if c.metric == metric and panel_of(c) == panel):
                colour = colours[colour_of(c)]
                axes.plot(c.steps, c.mean, color=colour, label=f"{colour_of(c)} ({seeds_label(c.seeds)})")
                axes.fill_between(c.steps, c.low, c.high, color=colour, alpha=0.2, linewidth=0)
            if row == 0:
                axes.set_title(panel)
                axes.legend(fontsize=8, **({"loc": "upper left", "bbox_to_anchor": (1.02, 1)} if crowded else {}))
            if row == len(metrics) - 1:
                axes.set_xlabel("environment steps")
            if column == 0:
                axes.set_ylabel(metric)
    figure.tight_layout()
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def check_last_fraction(last_fraction: float) -> None:
    if not (0 < last_fraction <= 1):  # also refuses nan
        raise UsageError(f"--last-fraction must be in (0, 1], got {last_fraction}")


def _cut_at_group_end(runs: list[Run], tag: str) -> dict[Run, tuple[np.ndarray, np.ndarray, float]]:
    """Each run's (steps, values) of ``tag`` and the step its group ends at; in an env x variant
    group holding an unfinished run (``--include-partial``), cut at the group's common last step,
    so that no group statistic mixes steps some of its seeds lack. A group of complete runs is not
    cut (its end is inf): every run covered the budget, and a run's values must not depend on when
    another seed's last episode ended."""
    series = {run: read_scalar(run.path, tag) for run in runs}
    end_of: dict[tuple[str, str], float] = defaultdict(lambda: np.inf)
    partial = {(run.env, run.variant) for run in runs if run.state != "complete"}
    for run, (steps, _) in series.items():
        if (run.env, run.variant) in partial:
            end_of[(run.env, run.variant)] = min(end_of[(run.env, run.variant)], steps[-1])
    cut = {}
    for run, (steps, values) in series.items():
        end = end_of[(run.env, run.variant)]
        kept = steps <= end
        cut[run] = (steps[kept], values[kept], end)
    return cut


def run_budget(run: Run) -> float | None:
    """The env steps a run was given (its config's ``total_timesteps``), None when its config lacks one."""
    return json.loads((run.path / "config.json").read_text()).get("total_timesteps")


def run_finals(runs: list[Run], tag: str, last_fraction: float = 0.1) -> list[tuple[Run, float]]:
    """Each run's final value: the mean of the points it logged in the last ``last_fraction`` of
    its budget, the steps after (1 - last_fraction) x budget (``run_budget``; for a run without
    one, its env's, ``env_budgets``). A step past the budget counts, as in the last window of
    ``run_windows``, so with 10 windows of one budget the final value at 0.1 is the last window's
    mean. This is the rule's definition: a share of the logged points would weigh a seed's last
    episodes by how many it ended. In a group cut at its common last step E (``--include-partial``)
    the budget is taken to end at E."""
    check_last_fraction(last_fraction)
    env_budget_of = env_budgets({tag: runs})
    share = Fraction(str(last_fraction))  # exact: (1 - 0.3) x 700000 is 489999.99999999994 in floats
    finals = []
    for run, (steps, values, end) in _cut_at_group_end(runs, tag).items():
        budget = run_budget(run) or env_budget_of[run.env]
        cut = end < budget
        start = float((1 - share) * Fraction(end if cut else budget))
        in_last = (steps > start) | (start == 0)  # a window from 0 also holds step 0, as the first window does
        if not in_last.any():
            span = (
                f"of its group's common last step {end:,.0f} (its group is cut there: --include-partial)"
                if cut
                else "of its budget"
            )
            raise UsageError(
                f"{run.path} logged no point of {tag} in the last {last_fraction:g} {span}, after step "
                f"{start:,.0f}; a larger --last-fraction averages over more of it"
            )
        finals.append((run, float(values[in_last].mean())))
    return finals


def final_scores(runs: list[Run], tag: str, last_fraction: float = 0.1) -> dict[tuple[str, str], list[float]]:
    """Per (env, variant), the final values of its runs (``run_finals``)."""
    finals: dict[tuple[str, str], list[float]] = defaultdict(list)
    for run, value in run_finals(runs, tag, last_fraction):
        finals[(run.env, run.variant)].append(value)
    return dict(finals)


def env_budgets(runs_of: dict[str, list[Run]]) -> dict[str, float]:
    """Per env, its budget in env steps: the largest ``total_timesteps`` of its runs' configs (a
    run without one: the last step it logged a metric of ``runs_of``)."""
    budget_of: dict[str, float] = defaultdict(float)
    for tag, runs in runs_of.items():
        for run in runs:
            total = run_budget(run)
            budget_of[run.env] = max(budget_of[run.env], total if total else read_scalar(run.path, tag)[0][-1])
    return dict(budget_of)


def window_edges(runs_of: dict[str, list[Run]], windows: int) -> dict[str, np.ndarray]:
    """Per env, ``windows`` equal windows of env steps from 0 to its budget (``env_budgets``). One
    set of edges per env, shared by every metric, so tables and CSV agree."""
    if windows < 1:
        raise UsageError(f"--windows must be a positive number of windows, got {windows}")
    budget_of = env_budgets(runs_of)
    for env, budget in budget_of.items():
        if budget < windows:
            raise UsageError(
                f"--windows {windows} asks for more windows than {env}'s budget of {budget:,.0f} env steps"
            )
    return {env: np.linspace(0, budget, windows + 1) for env, budget in budget_of.items()}


def run_windows(runs: list[Run], tag: str, edges_of: dict[str, np.ndarray]) -> list[tuple[Run, np.ndarray]]:
    """Each run's mean of the points it logged in each window (lo, hi] of its env's edges (the
    first also holds step 0, the last any step past the budget), nan in a window without one;
    runs cut at their group's common last step (``_cut_at_group_end``)."""
    result = []
    for run, (steps, values, _) in _cut_at_group_end(runs, tag).items():
        edges = edges_of[run.env]
        window = np.digitize(steps, edges[1:-1], right=True)
        sums = np.bincount(window, weights=values, minlength=len(edges) - 1)
        counts = np.bincount(window, minlength=len(edges) - 1)
        with np.errstate(invalid="ignore"):  # 0 / 0: a window without a point is nan
            result.append((run, sums / counts))
    return result


def covered_windows(window_means: np.ndarray) -> np.ndarray:
    """Which windows of a (seeds, windows) table of window means (``run_windows``) every seed
    logged a point in: the only ones a whole-run mean may cover, so that no seed's figure
    covers steps another's lacks."""
    return ~np.isnan(window_means).any(axis=0)


def whole_run_mean(window_means: np.ndarray, covered: np.ndarray) -> float:
    """A run's whole-run mean (the area under its curve over env steps, divided by the steps):
    the mean of its window means over the ``covered`` windows, each window weighted alike.
    ``window_table`` and ``comparisons`` both use it."""
    return float(window_means[covered].mean())


def _seed_order(run: Run) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", run.seed)]  # seed_2 before seed_10


def steps_label(steps: float) -> str:
    """1500000 -> 1.5M, 10000 -> 10k."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if steps >= scale:
            return f"{steps / scale:.4g}{suffix}"
    return f"{steps:.4g}"


def window_table(runs: list[Run], tag: str, edges_of: dict[str, np.ndarray]) -> str:
    """Markdown, the sample-efficiency view: per env x variant, the mean over seeds of each
    window's mean (``run_windows``), then per seed the mean of its window means (the whole run,
    each window weighted alike) and its best window minus its last (a collapse shows as a
    large drop). Only windows in which every seed of the group logged a point count ("-" for
    the others), so that no seed's figure covers steps another's lacks; a note names a group
    that has such gaps."""
    groups: dict[tuple[str, str], list[tuple[Run, np.ndarray]]] = defaultdict(list)
    for run, means in run_windows(runs, tag, edges_of):
        groups[(run.env, run.variant)].append((run, means))
    edges = next(iter(edges_of.values()))
    shared = all(np.array_equal(edges, other) for other in edges_of.values())
    labels = (
        ", ".join(f"{steps_label(lo)}-{steps_label(hi)}" for lo, hi in itertools.pairwise(edges))
        if shared
        else f"{len(edges) - 1} equal windows of each env's budget"
    )
    lines = [
        f"| env | variant | mean {tag} per window ({labels}) | whole-run mean per seed | best window minus last, per seed | seeds |",
        "|---|---|---|---|---|---|",
    ]
    notes = []
    for (env, variant), members in sorted(groups.items()):
        members.sort(key=lambda member: _seed_order(member[0]))
        table = np.stack([means for _, means in members])
        covered = covered_windows(table)
        per_window = ", ".join(f"{column.mean():.4g}" if kept else "-" for column, kept in zip(table.T, covered))
        if covered.any():
            whole = ", ".join(f"{whole_run_mean(means, covered):.4g}" for _, means in members)
            drops = ", ".join(f"{means[covered].max() - means[covered][-1]:.4g}" for _, means in members)
        else:
            whole = drops = "-"
        if not covered.all():
            notes.append(
                f"{env}/{variant}: {tag} has points from every seed in {covered.sum()} of {len(covered)} windows; "
                "the whole-run means and drops cover those"
            )
        seeds = ", ".join(run.seed for run, _ in members)
        lines.append(f"| {env} | {variant} | {per_window} | {whole} | {drops} | {len(members)} ({seeds}) |")
    return "\n".join(lines) + "\n" + ("\n" + "\n".join(notes) + "\n" if notes else "")


def write_run_csv(
    runs_of: dict[str, list[Run]],
    path: str | Path,
    last_fraction: float = 0.1,
    edges_of: dict[str, np.ndarray] | None = None,
) -> Path:
    """One row per run and metric: its final value (``run_finals``) and, with ``edges_of``, its
    env's budget and its window means (``run_windows``; empty where it logged nothing), so
    others can recompute any statistic over seeds; then where the run came from
    (``provenance``: commit, clean tree, resumes, whether every resume was exact)."""
    windows = len(next(iter(edges_of.values()))) - 1 if edges_of else 0
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        [
            "metric",
            "env",
            "variant",
            "seed",
            f"final_last_{last_fraction:g}",
            *(["budget", *(f"window_{i + 1}_of_{windows}" for i in range(windows))] if windows else []),
            "commit",
            "clean_tree",
            "resumes",
            "resumed_exactly",
        ]
    )
    for metric, runs in runs_of.items():
        window_of = dict(run_windows(runs, metric, edges_of)) if windows else {}
        for run, final in sorted(
            run_finals(runs, metric, last_fraction),
            key=lambda item: (item[0].env, item[0].variant, _seed_order(item[0])),
        ):
            extra = (
                [f"{edges_of[run.env][-1]:.0f}", *("" if np.isnan(v) else f"{v:.6g}" for v in window_of[run])]
                if windows
                else []
            )
            writer.writerow([metric, run.env, run.variant, run.seed, f"{final:.6g}", *extra, *provenance(run.path)])
    return atomic_write_text(path, buffer.getvalue())


def provenance(run_dir: Path) -> list[str]:
    """(commit, clean tree, resumes, every resume exact) from the run's ``attempts.json``;
    empty fields for runs made before it was written. Several commits are joined by '+'."""
    attempts = read_attempts(run_dir)
    if not attempts:
        return ["", "", "", ""]
    commits = list(dict.fromkeys(str(a.get("commit") or "?")[:12] for a in attempts))
    resumes = [a for a in attempts if a.get("resumed_from_step") is not None]
    return [
        "+".join(commits),
        str(all(a.get("clean") for a in attempts)).lower(),
        str(len(resumes)),
        str(all(a.get("exact", True) for a in resumes)).lower(),
    ]


def final_table(
    runs: list[Run], tag: str, last_fraction: float = 0.1, seed: int = 0, reps: int = BOOTSTRAP_REPS
) -> str:
    """Markdown: per env x variant, the mean over seeds of each run's final value (``final_scores``)
    and, from five seeds on, the interquartile mean, each with a 95% percentile-bootstrap
    interval over seeds (rliable), and the seed count."""
    finals = final_scores(runs, tag, last_fraction)
    lines = [
        f"| env | variant | final {tag} (mean) | 95% CI | IQM | IQM 95% CI | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for (env, variant), values in sorted(finals.items()):
        estimate = interval_estimates({variant: np.array(values)[:, None]}, reps=reps, seed=seed)[variant]
        mean = estimate["mean"]
        iqm = (
            f"{estimate['iqm'].point:.4g} | [{estimate['iqm'].low:.4g}, {estimate['iqm'].high:.4g}]"
            if "iqm" in estimate
            else f"- | (needs {IQM_MIN_SEEDS} seeds)"
        )
        lines.append(
            f"| {env} | {variant} | {mean.point:.4g} | [{mean.low:.4g}, {mean.high:.4g}] | {iqm} | {len(values)} |"
        )
    return "\n".join(lines) + "\n"


DEFAULT_COMPARE_WINDOWS = 10  # the whole-run mean's windows when --compare comes without --windows
MIN_SEEDS_FOR_INTERVALS = 5


@dataclass(frozen=True)
class Comparison:
    """B - A on one env and metric, of the final value (``measure="final"``) or of the whole-run
    mean (``"whole-run mean"``); ``difference`` None where it cannot be computed (no window every
    seed of both logged), ``p_holm`` Holm-adjusted over every comparison of the command."""

    metric: str
    env: str
    a: str
    b: str
    measure: str
    difference: Difference | None
    p_holm: float = float("nan")


def unknown_variant(option: str, name: str, known: list[str]) -> UsageError:
    """The one-line refusal of a variant name no run directory has, with the closest known name."""
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return UsageError(f"{option}: no variant {name!r} in the sweep; {hint}variants: {', '.join(known)}")


def only_variants(runs: list[Run], names: list[str] | None) -> list[Run]:
    """The runs of the variants ``--variant`` names (every run when it names none); a name no run
    directory has is refused in one line with the closest variant name."""
    if not names:
        return runs
    known = sorted({run.variant for run in runs})
    for name in names:
        if name not in known:
            raise unknown_variant("--variant", name, known)
    return [run for run in runs if run.variant in names]


def check_compare_pairs(pairs: list[list[str]] | None, found: list[Run], kept: list[Run]) -> list[tuple[str, str]]:
    """The ``--compare A B`` pairs, each once; a name no run directory has is refused in one line
    with the closest variant name, as is a variant left with no runs by ``select_runs``."""
    known = sorted({run.variant for run in found})
    selected = {run.variant for run in kept}
    chosen = []
    for a, b in pairs or []:
        for name in (a, b):
            if name not in known:
                raise unknown_variant("--compare", name, known)
            if name not in selected:
                raise UsageError(
                    f"--compare: variant {name!r} has no complete runs; --include-partial includes unfinished ones"
                )
        if a == b:
            raise UsageError(f"--compare {a} {b}: name two different variants")
        chosen.append((a, b))
    return list(dict.fromkeys(chosen))


def comparisons(
    runs_of: dict[str, list[Run]],
    pairs: list[tuple[str, str]],
    last_fraction: float,
    edges_of: dict[str, np.ndarray],
    seed: int = 0,
    reps: int = BOOTSTRAP_REPS,
) -> tuple[list[Comparison], list[str]]:
    """(rows, notes): for each metric, pair and env with runs of both, B - A of each run's final value
    (``run_finals``, as in ``final_table``) and of its whole-run mean (``whole_run_mean`` over the
    windows of ``edges_of`` that every seed of A and B logged a point in), each by
    ``aggregates.compare``; p Holm-adjusted over every row."""
    rows, notes = [], []
    for tag, runs in runs_of.items():
        finals: dict[tuple[str, str], list[float]] = defaultdict(list)
        for run, value in run_finals(runs, tag, last_fraction):
            finals[(run.env, run.variant)].append(value)
        windows: dict[tuple[str, str], list[np.ndarray]] = defaultdict(list)
        for run, means in run_windows(runs, tag, edges_of):
            windows[(run.env, run.variant)].append(means)
        envs = sorted({run.env for run in runs})
        for a, b in pairs:
            for env in envs:
                missing = [name for name in (a, b) if (env, name) not in finals]
                if missing:
                    notes.append(f"{env}: no runs of {' or '.join(missing)} with {tag}; {a} v {b} not compared there")
                    continue
                rows.append(
                    Comparison(
                        tag, env, a, b, "final", compare(finals[(env, a)], finals[(env, b)], reps=reps, seed=seed)
                    )
                )
                table_a, table_b = np.stack(windows[(env, a)]), np.stack(windows[(env, b)])
                covered = covered_windows(np.concatenate([table_a, table_b]))
                difference = None
                if covered.any():
                    difference = compare(
                        [whole_run_mean(m, covered) for m in table_a],
                        [whole_run_mean(m, covered) for m in table_b],
                        reps=reps,
                        seed=seed,
                    )
                if not covered.all():
                    notes.append(
                        f"{env}: {a} v {b}: {tag} has points from every seed of both in {covered.sum()} of "
                        f"{len(covered)} windows; the whole-run means cover those"
                    )
                rows.append(Comparison(tag, env, a, b, "whole-run mean", difference))
    adjusted = holm([row.difference.p if row.difference else np.nan for row in rows])
    rows = [replace(row, p_holm=float(p)) for row, p in zip(rows, adjusted)]
    return rows, notes


def _few_seeds_notes(rows: list[Comparison]) -> list[str]:
    envs_of: dict[tuple[str, str, int, int], list[str]] = defaultdict(list)
    for row in rows:
        d = row.difference
        if (
            d
            and min(d.seeds_a, d.seeds_b) < MIN_SEEDS_FOR_INTERVALS
            and row.env not in envs_of[(row.a, row.b, d.seeds_a, d.seeds_b)]
        ):
            envs_of[(row.a, row.b, d.seeds_a, d.seeds_b)].append(row.env)
    notes = []
    for (a, b, n_a, n_b), envs in envs_of.items():
        count, smallest = relabelings(n_a, n_b), smallest_p(n_a, n_b)
        notes.append(
            f"{a} v {b} on {', '.join(envs)}: {n_a} v {n_b} seeds, under {MIN_SEEDS_FOR_INTERVALS} per variant: the 95% "
            f"intervals are little more than the range of the seeds, and the smallest p the exact permutation test "
            f"can give is {2 if n_a == n_b else 1}/C({n_a + n_b},{n_a}) = {2 if n_a == n_b else 1}/{count:,} = "
            f"{smallest:.4g}, before Holm's correction, which can only raise it"
        )
    return notes


def compare_table(
    rows: list[Comparison], notes: list[str], last_fraction: float, windows: int, reps: int = BOOTSTRAP_REPS
) -> str:
    """Markdown, a table per metric: per env and pair, B - A of the final value and of the whole-run
    mean, with the stratified-bootstrap 95% interval, the exact permutation p, Holm's p, P(B > A)
    and the seed counts; then a legend and the notes (few seeds, windows left out, pairs not compared)."""
    lines = []
    tested = sum(row.difference is not None for row in rows)
    for tag in dict.fromkeys(row.metric for row in rows):
        lines += [
            f"| env | A | B | {tag} | mean B − A | 95% CI | p | Holm p | P(B > A) | seeds A, B | seeds for {POWER:.0%} power |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in (row for row in rows if row.metric == tag):
            d = row.difference
            if d is None:
                lines.append(f"| {row.env} | {row.a} | {row.b} | {row.measure} | - | - | - | - | - | - | - |")
                continue
            p = f"{'' if d.exact else '~'}{d.p:.4g}"
            lines.append(
                f"| {row.env} | {row.a} | {row.b} | {row.measure} | {d.point:.4g} | [{d.low:.4g}, {d.high:.4g}] | "
                f"{p} | {row.p_holm:.4g} | {d.improvement:.3g} | {d.seeds_a}, {d.seeds_b} | "
                f"{_seeds_text(seeds_for_power(d.point, d.pooled_sd, tested))} |"
            )
        lines.append("")
    legend = (
        [
            f"B − A: final = mean of the points each run logged in the last {last_fraction * 100:g}% of the budget (as "
            f"above); whole-run mean = mean of its {windows} window means of env steps (the area under its curve); "
            f"95% CI: stratified bootstrap, each variant's seeds resampled apart ({reps:,} draws, seed 0); p: two-sided exact permutation test of the "
            f"difference of means over every relabeling of the seeds; Holm p: adjusted over the {tested} comparisons "
            f"asked; P(B > A): probability of improvement (rliable; ties count 1/2); {_POWER_LEGEND} {tested} tests"
        ]
        if rows
        else []
    )
    if any(row.difference and not row.difference.exact for row in rows):
        legend.append(
            f"~p: more than {EXACT_PERMUTATION_LIMIT:,} relabelings; estimated from {RANDOM_RELABELINGS:,} random ones"
        )
    return "\n".join(lines + legend + _few_seeds_notes(rows) + notes) + "\n"


_POWER_LEGEND = (
    f"seeds for {POWER:.0%} power: the seeds per variant at which a difference of this size, with this "
    "pooled spread over seeds, would reach Holm p < 0.05 in 4 of 5 reruns (rule point 4 of docs/reproductions.md; "
    "∞: no difference), over the"
)


def _seeds_text(n: float) -> str:
    return "-" if math.isnan(n) else "∞" if math.isinf(n) else f"{int(n):,}"


def _seeds_cell(n: float) -> str:
    """A seed count in a CSV cell: every digit, or inf / nan."""
    return str(n) if math.isnan(n) or math.isinf(n) else str(int(n))


def compare_csv_path(path: str | Path) -> Path:
    """Where ``--csv PATH`` puts the comparisons: ``runs.csv`` -> ``runs_compare.csv``."""
    path = Path(path)
    return path.with_name(f"{path.stem}_compare{path.suffix or '.csv'}")


COMPARE_COLUMNS = (
    "metric",
    "env",
    "a",
    "b",
    "measure",
    "mean_b_minus_a",
    "ci_low",
    "ci_high",
    "p",
    "p_holm",
    "p_exact",
    "relabelings",
    "probability_of_improvement",
    "seeds_a",
    "seeds_b",
    "pooled_sd",
    "seeds_for_power",
)


def write_compare_csv(rows: list[Comparison], path: str | Path, last_fraction: float, windows: int) -> Path:
    """A row per comparison (``comparisons``); empty cells where one could not be computed."""
    measure_of = {"final": f"final_last_{last_fraction:g}", "whole-run mean": f"whole_run_mean_{windows}_windows"}
    tested = sum(row.difference is not None for row in rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COMPARE_COLUMNS)
    for row in rows:
        d = row.difference
        values = (
            [
                repr(d.point),  # with pooled_sd in full: holm recomputes the seeds for power from them
                f"{d.low:.6g}",
                f"{d.high:.6g}",
                f"{d.p:.6g}",
                f"{row.p_holm:.6g}",
                str(d.exact).lower(),
                d.relabelings,
                f"{d.improvement:.6g}",
                d.seeds_a,
                d.seeds_b,
                repr(d.pooled_sd),
                _seeds_cell(seeds_for_power(d.point, d.pooled_sd, tested)),
            ]
            if d
            else [""] * 12
        )
        writer.writerow([row.metric, row.env, row.a, row.b, measure_of[row.measure], *values])
    return atomic_write_text(path, buffer.getvalue())


def _bad_cell(row: dict[str, str | None]) -> str | None:
    """What ``write_compare_csv`` cannot have written in a comparisons row (``column: value``, or
    the cell count); None for a good row."""
    if None in row or None in row.values():  # DictReader: extra cells under the key None, missing ones None
        cells = sum(value is not None for key, value in row.items() if key is not None) + len(row.get(None) or [])
        return f"{cells} cells, not {len(COMPARE_COLUMNS)}"
    figures = COMPARE_COLUMNS[COMPARE_COLUMNS.index("measure") + 1 :]
    if not row["p"]:  # a comparison that could not be computed: every figure blank
        filled = next((column for column in figures if row[column]), None)
        return None if filled is None else f"{filled}: {row[filled]!r} where p is blank"
    for column in figures:
        value = row[column]
        if column == "p_exact":
            good = value in ("true", "false")
        elif column in ("relabelings", "seeds_a", "seeds_b"):
            good = value.isdigit()
        else:
            try:
                number = float(value)
            except ValueError:
                good = False
            else:
                good = column not in ("p", "p_holm", "probability_of_improvement") or 0 <= number <= 1
        if not good:
            return f"{column}: {value!r}"
    return None


def read_compare_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a comparisons CSV (``write_compare_csv``); anything else is refused in one line."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path} is not a file (table --compare --csv FILE writes FILE_compare.csv)")
    reader = csv.DictReader(io.StringIO(path.read_text()))
    columns = tuple(reader.fieldnames or ())
    if columns == COMPARE_COLUMNS[:-2]:
        raise UsageError(
            f"{path} was written before comparisons CSVs had pooled_sd and seeds_for_power: "
            "rerun the table --compare --csv command that wrote it"
        )
    if columns != COMPARE_COLUMNS:
        raise UsageError(
            f"{path} is not a comparisons CSV of table --compare --csv (columns: {', '.join(COMPARE_COLUMNS)})"
        )
    rows = list(reader)
    if not rows:
        raise UsageError(f"{path} holds no comparison")
    for number, row in enumerate(rows, 2):
        if (bad := _bad_cell(row)) is not None:
            raise UsageError(f"{path}, line {number}: not a row of table --compare --csv ({bad})")
    return rows


def pooled_holm(paths: list[str | Path], expected_tests: int | None = None) -> tuple[list[dict[str, str]], int]:
    """Every comparison of the given comparisons CSVs (one per ``table --compare`` command), with
    ``p_holm_pooled``: Holm's correction over the tests of all of them together (a claim whose
    tests span several sweeps or commands is one family, rule point 3 of docs/reproductions.md);
    and the number of tests. A comparison that could not be computed stays blank and does not
    count, which makes the correction milder: ``expected_tests`` (the family's size) refuses a
    count that differs."""
    seen: dict[Path, str] = {}  # resolved path -> as given: one file under two spellings is still one
    for path in map(str, paths):
        resolved = Path(path).resolve()
        if resolved in seen:
            raise UsageError(f"{seen[resolved]} and {path} are one file: its tests would count twice")
        seen[resolved] = path
    rows = [{"file": str(path), **row} for path in paths for row in read_compare_csv(path)]
    raw = [float(row["p"]) if row["p"] else np.nan for row in rows]
    tests = int(np.count_nonzero(~np.isnan(raw)))
    if expected_tests is not None and tests != expected_tests:
        blank = [f"{r['file']}: {r['env']} {r['a']} v {r['b']} {r['measure']}" for r in rows if not r["p"]]
        raise UsageError(
            f"the files hold {tests} tests, not the {expected_tests} of --tests"
            + (f" ({len(blank)} could not be computed: {'; '.join(blank)})" if blank else "")
        )
    adjusted = holm(raw)
    for row, value in zip(rows, adjusted):
        row["p_holm_pooled"] = "" if np.isnan(value) else f"{value:.6g}"
        row["seeds_for_power_pooled"] = (
            _seeds_cell(seeds_for_power(float(row["mean_b_minus_a"]), float(row["pooled_sd"]), tests))
            if row["p"]
            else ""
        )
    return rows, tests


def pooled_holm_table(rows: list[dict[str, str]], tests: int) -> str:
    """Markdown: a row per comparison, its p, its Holm p within its own command and over all files."""
    lines = [
        "| file | metric | env | A | B | measure | mean B − A | 95% CI | p | Holm p (its command) | Holm p (pooled) | seeds A, B "
        f"| seeds for {POWER:.0%} power (pooled) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if not row["p"]:
            lines.append(
                f"| {row['file']} | {row['metric']} | {row['env']} | {row['a']} | {row['b']} | {row['measure']} | - | - | - | - | - | - | - |"
            )
            continue
        lines.append(
            f"| {row['file']} | {row['metric']} | {row['env']} | {row['a']} | {row['b']} | {row['measure']} | "
            f"{float(row['mean_b_minus_a']):.4g} | [{float(row['ci_low']):.4g}, {float(row['ci_high']):.4g}] | "
            f"{'' if row['p_exact'] == 'true' else '~'}{float(row['p']):.4g} | {float(row['p_holm']):.4g} | "
            f"{float(row['p_holm_pooled']):.4g} | {row['seeds_a']}, {row['seeds_b']} | "
            f"{_seeds_text(float(row['seeds_for_power_pooled']))} |"
        )
    files = len(dict.fromkeys(row["file"] for row in rows))
    lines += [
        "",
        f"Holm p (pooled): Holm's step-down correction over the {tests} tests of the {files} files together; "
        "Holm p (its command): over its own command's tests only, as that command printed it; "
        f"{_POWER_LEGEND} {tests} tests together",
    ]
    if any(row["p"] and row["p_exact"] != "true" for row in rows):
        lines.append(
            f"~p: more than {EXACT_PERMUTATION_LIMIT:,} relabelings; estimated from {RANDOM_RELABELINGS:,} random ones"
        )
    blank = sum(not row["p"] for row in rows)
    if blank:
        lines.append(f"{plural(blank, 'comparison')} could not be computed (-) and count in no correction")
    return "\n".join(lines) + "\n"


def write_pooled_holm_csv(rows: list[dict[str, str]], path: str | Path) -> Path:
    """The rows of ``pooled_holm``: a file column, the comparisons CSV's columns, then p_holm_pooled and
    seeds_for_power_pooled."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["file", *COMPARE_COLUMNS, "p_holm_pooled", "seeds_for_power_pooled"])
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def plot_profiles(
    finals: dict[tuple[str, str], list[float]],
    tag: str,
    path: str | Path,
    points: int = 101,
    reps: int = BOOTSTRAP_REPS,
) -> Path:
    """Performance profiles (Agarwal et al. 2021): per env, the fraction of a variant's runs whose
    final value exceeds tau, over tau from the lowest to the highest final value, with a 95% band."""
    envs = sorted({env for env, _ in finals})
    variants = sorted({variant for _, variant in finals})
    colours = {variant: f"C{i % 10}" for i, variant in enumerate(variants)}
    figure = Figure(figsize=(4.5 * len(envs), 3.4), dpi=110)
    for index, env in enumerate(envs):
        scores = {variant: np.array(values)[:, None] for (e, variant), values in finals.items() if e == env}
        everything = np.concatenate(list(scores.values()))
        thresholds = np.linspace(everything.min(), everything.max(), points)
        axes = figure.add_subplot(1, len(envs), index + 1)
        for variant, (fraction, low, high) in sorted(performance_profiles(scores, thresholds, reps=reps).items()):
            axes.plot(
                thresholds, fraction, color=colours[variant], label=f"{variant} ({seeds_label(len(scores[variant]))})"
            )
            axes.fill_between(thresholds, low, high, color=colours[variant], alpha=0.2, linewidth=0)
        axes.set_title(env)
        axes.set_xlabel(f"final {tag} > tau")
        if index == 0:
            axes.set_ylabel("fraction of runs")
        axes.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_covariance(run: Path, step: int | None) -> tuple[int, np.ndarray, np.ndarray]:
    """(step, matrix, cluster order) of the saved covariance at ``step`` (nearest saved), or the last one."""
    files = sorted((run / "gradcov").glob("step_*.npz"))
    if not files:
        raise UsageError(f"run {run} has no saved gradient covariance matrices (gradcov/step_*.npz)")
    saved = {int(f.stem.split("_")[1]): f for f in files}
    chosen = max(saved) if step is None else min(saved, key=lambda s: abs(s - step))
    data = np.load(saved[chosen])
    return chosen, data["covariance"], data["order"]


def heatmaps_side_by_side(runs: list[Path], step: int | None, path: str | Path) -> Path:
    figure = Figure(figsize=(3.6 * len(runs) + 0.8, 3.6), dpi=110)
    image = None
    for index, run in enumerate(runs):
        chosen, matrix, order = load_covariance(Path(run), step)
        axes = figure.add_subplot(1, len(runs), index + 1)
        drawing = heatmap_drawing()
        image = axes.imshow(
            drawing.reorder(matrix, order), cmap=drawing.COLORMAP, vmin=-1, vmax=1, interpolation="nearest"
        )
        axes.set_title(f"{'/'.join(Path(run).parts[-2:])}\nstep {chosen}", fontsize=8)
        axes.set_xticks([])
        axes.set_yticks([])
    figure.colorbar(image, ax=figure.axes, fraction=0.03)
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return atomic_write_bytes(path, buffer.getvalue())
