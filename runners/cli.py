"""The ``clipzoo`` command: ``clipzoo train <agent> [options]``; ``--help`` at any level."""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path

from runners.base.console import run_and_report
from runners.base.errors import UsageError
from runners.registry import AGENTS, agent_module, args_class

USAGE = """usage: clipzoo <command> ...

commands:
  train <agent> [options]   train one agent (agents: {agents}); `clipzoo train <agent> --help` lists its options
  plot DIR --metric TAG     mean and 95% bootstrap band across seeds, a panel per env, a colour per variant (+ CSV; --group-by);
                            repeat --metric for a row per metric
  table DIR --metric TAG    final value per env x variant (mean and, from 5 seeds, IQM, each with a 95% CI) as Markdown;
                            repeat --metric for a table per metric; --windows N adds the mean per window of env steps,
                            --csv FILE writes each run's values; --compare A B: B - A per env (CI, exact permutation p, Holm)
  holm CSV [CSV ...]        Holm's correction over the comparisons of several `table --compare --csv` files together
                            (a claim whose tests span sweeps or commands; --csv FILE writes them with the pooled p)
  heatmap RUN [RUN ...]     saved gradient covariance matrices side by side (--step N, --out FILE)
  sweep SPEC.yaml [...]     run envs x variants x seeds here (--workers N) or on SLURM (--backend slurm); several specs
                            form a queue (here: one pool of workers, in order; SLURM: an array job each); `sweep status DIR`

examples:
  clipzoo train ppo --env-id Hopper-v5 --wc-kappa 2 --total-timesteps 100000
  clipzoo train ppo --config ppo_hopper --seed 3 --run-dir runs/hopper_wc_s3
  clipzoo train dqn --env-id ALE/Pong-v5 --replay-ratio 8 --wc-kappa 2
  clipzoo train rainbow --config rainbow_atari_rr8 --env-id ALE/Breakout-v5
"""


def _usage() -> str:
    return USAGE.format(agents=", ".join(AGENTS))


def figures_parser(command: str):
    """The options of ``plot``, ``table``, ``holm`` or ``heatmap``."""
    import argparse

    from runners import plots

    parser = argparse.ArgumentParser(prog=f"clipzoo {command}")
    if command == "holm":
        parser.add_argument(
            "comparisons",
            nargs="+",
            help="comparisons CSVs, each written by `table --compare A B --csv FILE` (as FILE_compare.csv)",
        )
        parser.add_argument("--csv", default=None, help="also write every comparison with its pooled Holm p here")
        parser.add_argument(
            "--tests",
            type=int,
            default=None,
            help="the family's size: refuse files that hold another number of tests (a comparison that could "
            "not be computed counts in none, which would make the correction milder)",
        )
        return parser
    if command == "heatmap":
        parser.add_argument("runs", nargs="+", help="run directories")
        parser.add_argument("--step", type=int, default=None, help="env step (nearest saved matrix); default: the last")
        parser.add_argument(
            "--out",
            default=None,
            help="PNG path (default: heatmaps.png in the runs' common directory, or in the first run's)",
        )
        return parser
    parser.add_argument("sweep", help="sweep directory: <sweep>/<env>/<variant>/seed_<n>/")
    parser.add_argument(
        "--metric",
        required=True,
        action="append",
        help="scalar tag, e.g. charts/episodic_return; repeat it for several metrics",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=None,
        help="only this variant, named as its run directory (repeatable; default: every variant of the sweep)",
    )
    parser.add_argument(
        "--include-partial",
        action="store_true",
        help="include unfinished runs, each group cut at its common last step (default: complete runs only)",
    )
    parser.add_argument(
        "--last-fraction",
        type=float,
        default=0.1,
        help="a run's final value is the mean of the points it logged in this last share of the budget, in (0, 1] "
        "(plot: for --profile)",
    )
    parser.add_argument(
        "--bootstrap-reps",
        type=int,
        default=plots.BOOTSTRAP_REPS,
        help="resamples of every bootstrap interval and band, each seeded (default %(default)s); "
        "more for a figure to publish",
    )
    if command == "table":
        parser.add_argument(
            "--windows",
            type=int,
            default=None,
            help="also a table of each metric's mean in this many equal windows of env steps, from 0 to the "
            "runs' budget (sample efficiency), with each seed's whole-run mean and drop from its best window",
        )
        parser.add_argument(
            "--csv",
            default=None,
            help="also write each run's final value (and window means, with --windows) to this CSV, a row "
            "per run and metric; with --compare, the comparisons beside it, a row each (runs.csv: runs_compare.csv)",
        )
        parser.add_argument(
            "--compare",
            nargs=2,
            action="append",
            metavar=("A", "B"),
            default=None,
            help="also compare two variants (named as in the table), per env and metric: B - A of the final "
            "value and of the whole-run mean (the mean of the --windows window means, "
            f"{plots.DEFAULT_COMPARE_WINDOWS} without it), each with a stratified bootstrap 95%% CI, the "
            "exact two-sided permutation p, Holm's p over every comparison asked, P(B > A), the seed "
            "counts and the seeds per variant the observed difference would need for 80%% power; repeat it "
            "for several pairs",
        )
    if command == "plot":
        parser.add_argument(
            "--group-by",
            choices=("variant", "env"),
            default="variant",
            help="variant: a panel per env, a colour per variant; env: the other way round",
        )
        parser.add_argument(
            "--out",
            default=None,
            help="PNG path (default: <sweep>/<metric>.png, the metrics joined by '+'); the CSV goes beside it",
        )
        parser.add_argument(
            "--profile",
            action="store_true",
            help="also draw performance profiles of the final values (<out>_profile.png, one per metric when several)",
        )
    return parser


def figures(command: str, argv: list[str]) -> None:
    """``plot``, ``table``, ``holm`` and ``heatmap``: read run directories (``holm``: comparisons CSVs), write figures and tables."""
    from runners import plots

    args = figures_parser(command).parse_args(argv)
    if command == "holm":
        rows, tests = plots.pooled_holm(args.comparisons, args.tests)
        print(plots.pooled_holm_table(rows, tests), end="")
        if args.csv:
            print(f"wrote {plots.write_pooled_holm_csv(rows, args.csv)}")
        return
    if command == "heatmap":
        print(f"wrote {plots.heatmaps_side_by_side(args.runs, args.step, args.out or default_heatmap_path(args.runs))}")
        return
    args.metric = list(dict.fromkeys(args.metric))  # a metric named twice is shown once
    plots.check_last_fraction(args.last_fraction)
    if args.bootstrap_reps < 1:
        raise UsageError(f"--bootstrap-reps must be at least 1, got {args.bootstrap_reps}")
    compared = [name for pair in getattr(args, "compare", None) or [] for name in pair]
    left_out = [name for name in compared if args.variant and name not in args.variant]
    if left_out:
        raise UsageError(f"--compare: variant {left_out[0]!r} is left out by --variant; name it there too")
    found = plots.only_variants(plots.find_runs(args.sweep), args.variant)
    runs, notes = plots.select_runs(found, args.include_partial)
    pairs = plots.check_compare_pairs(args.compare, found, runs) if command == "table" else []
    runs_of = {}
    for metric in args.metric:
        runs_of[metric], absent = plots.groups_logging(runs, metric)
        notes += absent
    if command == "table":
        edges_of = None if args.windows is None else plots.window_edges(runs_of, args.windows)
        tables = [
            plots.final_table(runs_of[metric], metric, args.last_fraction, reps=args.bootstrap_reps)
            for metric in args.metric
        ]
        if edges_of:
            tables += [plots.window_table(runs_of[metric], metric, edges_of) for metric in args.metric]
        if pairs:
            windows = args.windows or plots.DEFAULT_COMPARE_WINDOWS
            rows, compare_notes = plots.comparisons(
                runs_of,
                pairs,
                args.last_fraction,
                edges_of or plots.window_edges(runs_of, windows),
                reps=args.bootstrap_reps,
            )
            tables.append(plots.compare_table(rows, compare_notes, args.last_fraction, windows, args.bootstrap_reps))
        print("\n".join(tables) + "".join(f"\n{note}" for note in notes), end="\n" if notes else "")
        if args.csv:
            print(f"wrote {plots.write_run_csv(runs_of, args.csv, args.last_fraction, edges_of)}")
            if pairs:
                print(
                    f"wrote {plots.write_compare_csv(rows, plots.compare_csv_path(args.csv), args.last_fraction, windows)}"
                )
        return
    for note in notes:
        print(note)
    slugs = [metric.replace("/", "_") for metric in args.metric]
    out = Path(args.out or Path(args.sweep) / ("+".join(slugs) + ".png"))
    curves = [
        curve for metric in args.metric for curve in plots.aggregate(runs_of[metric], metric, reps=args.bootstrap_reps)
    ]
    plots.plot_curves(curves, out, group_by=args.group_by)
    plots.write_csv(curves, out.with_suffix(".csv"))
    print(f"wrote {out} and {out.with_suffix('.csv')}")
    if args.profile:
        for metric, slug in zip(args.metric, slugs):
            profile = out.with_name(out.stem + ("" if len(slugs) == 1 else f"_{slug}") + "_profile.png")
            finals = plots.final_scores(runs_of[metric], metric, args.last_fraction)
            plots.plot_profiles(finals, metric, profile, reps=args.bootstrap_reps)
            print(f"wrote {profile}")


def default_heatmap_path(runs: list[str]) -> Path:
    """Next to the runs compared (their common directory, e.g. the sweep's env folder), never
    in the current directory: the first run's directory when the runs share nothing below it."""
    runs_resolved = [Path(run).resolve() for run in runs]
    common = Path(os.path.commonpath(runs_resolved))
    cwd = Path.cwd().resolve()
    shares_a_folder = common != cwd and common not in cwd.parents
    return (common if shares_a_folder else runs_resolved[0]) / "heatmaps.png"


def sweep_parser(status: bool = False):
    """The options of ``clipzoo sweep`` (or, with ``status``, of ``clipzoo sweep status``)."""
    import argparse

    from runners import sweep

    if status:
        parser = argparse.ArgumentParser(prog="clipzoo sweep status")
        parser.add_argument("directory")
        return parser
    parser = argparse.ArgumentParser(prog="clipzoo sweep", description="run a sweep spec (see runners/sweep.py)")
    parser.add_argument(
        "specs",
        nargs="+",
        metavar="spec",
        help="sweep spec (YAML); several form a queue (local: one pool, in order; slurm: an array job each)",
    )
    parser.add_argument("--backend", choices=("local", "slurm"), default="local")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="local: runs at a time (default: number of cores)"
    )
    parser.add_argument("--dir", default=None, help="sweep directory (default: sweeps/<name>)")
    parser.add_argument(
        "--dry-run", action="store_true", help="write the manifest (and the sbatch script) and print, run nothing"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=None,
        help="run only this env id of the spec, e.g. MinAtar/Seaquest-v1 (repeatable); the manifest still lists every run",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=None,
        help="run only this variant, named as its run directory (with a grid: adam+wc_wc_kappa2.0) (repeatable)",
    )
    parser.add_argument("--resubmit-failed", action="store_true", help="slurm: submit only failed or interrupted runs")
    parser.add_argument(
        "--activate", default=None, help="slurm: line that activates the environment (default: this interpreter's venv)"
    )
    for key in sweep.RESOURCE_KEYS:
        parser.add_argument(
            f"--{key.replace('_', '-')}", dest=key, default=None, help=f"slurm: overrides resources.{key} of the spec"
        )
    return parser


def sweep_command(argv: list[str]) -> None:
    """``clipzoo sweep SPEC.yaml [--backend local|slurm] ...`` or ``clipzoo sweep status DIR``."""
    from runners import sweep
    from runners.slurm import submit
    from runners.slurm_queue import queue_report

    if argv[:1] == ["status"]:
        loaded = sweep.load_manifest(sweep_parser(status=True).parse_args(argv[1:]).directory)
        print(sweep.status_table(loaded))
        report = queue_report(loaded)
        if report:
            print(report)
        return
    args = sweep_parser().parse_args(argv)
    if args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    if len(args.specs) > 1:
        for flag, given in (("--dir", args.dir), ("--env", args.env), ("--variant", args.variant)):
            if given:
                raise UsageError(f"{flag} applies to one spec; with {len(args.specs)} specs give each its own command")
    if args.dir and Path(args.dir).exists() and not Path(args.dir).is_dir():
        raise UsageError(f"--dir {args.dir} exists and is not a directory")
    queue = []
    for spec in args.specs:
        loaded = sweep.load_spec(spec, args.dir)
        same = [earlier for earlier, _ in queue if earlier.directory.resolve() == loaded.directory.resolve()]
        if same:
            raise UsageError(f"{spec} and an earlier spec of the queue both write to {loaded.directory}")
        queue.append((loaded, sweep.choose_runs(loaded, args.env, args.variant)))
    if args.backend == "slurm":
        flags = sweep.check_resources(
            {k: getattr(args, k) for k in sweep.RESOURCE_KEYS if getattr(args, k) is not None},
            lambda key: f"--{key.replace('_', '-')}",
        )
        for loaded, chosen in queue:  # an array job per spec; the scheduler keeps the cores busy
            submit(loaded, {**loaded.resources, **flags}, args.activate, args.dry_run, args.resubmit_failed, chosen)
        return
    if args.dry_run:
        for loaded, chosen in queue:
            sweep.write_manifest(loaded)
            for run in chosen:
                print(" ".join(sweep.run_command(loaded.agent, run)))
        return
    if sweep.run_queue(queue, args.workers):
        raise SystemExit(1)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        raise SystemExit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command in ("plot", "table", "holm", "heatmap"):
        run_and_report(lambda _: figures(command, rest))
        return
    if command == "sweep":
        run_and_report(lambda _: sweep_command(rest))
        return
    if command != "train":
        close = difflib.get_close_matches(command, ["train", "plot", "table", "holm", "heatmap", "sweep"], n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        print(f"error: unknown command {command!r}{hint}\n\n{_usage()}", file=sys.stderr)
        raise SystemExit(2)
    if not rest or rest[0] not in AGENTS:
        given = repr(rest[0]) if rest else "none"
        print(f"error: unknown agent {given}; choose one of {', '.join(AGENTS)}\n\n{_usage()}", file=sys.stderr)
        raise SystemExit(2)
    if any(flag in ("-h", "--help") for flag in rest[1:]):  # the options alone: no agent code to import
        from runners.base.config import parse_args

        run_and_report(lambda argv: parse_args(args_class(rest[0]), argv, prog=f"clipzoo train {rest[0]}"), rest[1:])
        return
    run_and_report(agent_module(rest[0]).main, rest[1:])


if __name__ == "__main__":
    main()
