"""The ``clipzoo`` command: ``clipzoo train <agent> [options]``; ``--help`` at any level."""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

from runners.errors import RunInterrupted, UsageError

# agent name -> module with a ``main(argv)``; each module is a runnable single file too.
AGENTS = {
    "ppo": "agents.ppo_continuous",
    "dqn": "agents.dqn",
    "rainbow": "agents.rainbow",
}

USAGE = """usage: clipzoo <command> ...

commands:
  train <agent> [options]   train one agent (agents: {agents}); `clipzoo train <agent> --help` lists its options
  plot DIR --metric TAG     mean and 95% bootstrap band across seeds, a panel per env, a colour per variant (+ CSV; --group-by)
  table DIR --metric TAG    final value per env x variant (mean, 95% CI, seeds) as Markdown
  heatmap RUN [RUN ...]     saved gradient covariance matrices side by side (--step N)
  sweep SPEC.yaml           run envs x variants x seeds here (--workers N) or on SLURM (--backend slurm); `sweep status DIR`

examples:
  clipzoo train ppo --env-id Hopper-v5 --wc-kappa 2 --total-timesteps 100000
  clipzoo train ppo --config ppo_hopper --seed 3 --run-dir runs/hopper_wc_s3
  clipzoo train dqn --env-id ALE/Pong-v5 --replay-ratio 8 --wc-kappa 2
  clipzoo train rainbow --config rainbow_pong_rr8
"""


def run_and_report(entry: Callable[[list[str] | None], object], argv: list[str] | None = None) -> None:
    """Run an entry point; bad input prints one line and exits 2, never a traceback."""
    try:
        entry(argv)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except RunInterrupted as stop:  # checkpointed; not a success for scripts and schedulers
        print(stop, file=sys.stderr)
        raise SystemExit(stop.exit_code) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except BrokenPipeError:  # `clipzoo sweep status DIR | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None
    except OSError as error:  # a path the user gave that cannot be read or written
        print(f"error: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        raise SystemExit(2) from None


def _usage() -> str:
    return USAGE.format(agents=", ".join(AGENTS))


def figures(command: str, argv: list[str]) -> None:
    """``plot``, ``table`` and ``heatmap``: read run directories, write figures and tables."""
    import argparse

    from runners import plots

    parser = argparse.ArgumentParser(prog=f"clipzoo {command}")
    if command == "heatmap":
        parser.add_argument("runs", nargs="+", help="run directories")
        parser.add_argument("--step", type=int, default=None, help="env step (nearest saved matrix); default: the last")
        parser.add_argument("--out", default="heatmaps.png")
        args = parser.parse_args(argv)
        print(f"wrote {plots.heatmaps_side_by_side(args.runs, args.step, args.out)}")
        return
    parser.add_argument("sweep", help="sweep directory: <sweep>/<env>/<variant>/seed_<n>/")
    parser.add_argument("--metric", required=True, help="scalar tag, e.g. charts/episodic_return")
    parser.add_argument("--include-partial", action="store_true",
                        help="include unfinished runs, each group cut at its common last step (default: complete runs only)")
    if command == "table":
        parser.add_argument("--last-fraction", type=float, default=0.1, help="share of each run's last points averaged as its final value, in (0, 1]")
        args = parser.parse_args(argv)
        plots.check_last_fraction(args.last_fraction)
        runs, notes = plots.select_runs(plots.find_runs(args.sweep), args.include_partial)
        print(plots.final_table(runs, args.metric, args.last_fraction) + "".join(f"\n{note}" for note in notes), end="\n" if notes else "")
        return
    parser.add_argument("--group-by", choices=("variant", "env"), default="variant",
                        help="variant: a panel per env, a colour per variant; env: the other way round")
    parser.add_argument("--out", default=None, help="PNG path (default: <sweep>/<metric>.png); the CSV goes beside it")
    args = parser.parse_args(argv)
    out = Path(args.out or Path(args.sweep) / (args.metric.replace("/", "_") + ".png"))
    runs, notes = plots.select_runs(plots.find_runs(args.sweep), args.include_partial)
    for note in notes:
        print(note)
    curves = plots.aggregate(runs, args.metric)
    plots.plot_curves(curves, args.metric, out, group_by=args.group_by)
    plots.write_csv(curves, out.with_suffix(".csv"))
    print(f"wrote {out} and {out.with_suffix('.csv')}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        raise SystemExit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command in ("plot", "table", "heatmap"):
        run_and_report(lambda _: figures(command, rest))
        return
    if command == "sweep":
        from runners import sweep

        run_and_report(lambda _: sweep.main(rest))
        return
    if command != "train":
        close = difflib.get_close_matches(command, ["train", "plot", "table", "heatmap", "sweep"], n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        print(f"error: unknown command {command!r}{hint}\n\n{_usage()}", file=sys.stderr)
        raise SystemExit(2)
    if not rest or rest[0] not in AGENTS:
        given = repr(rest[0]) if rest else "none"
        print(f"error: unknown agent {given}; choose one of {', '.join(AGENTS)}\n\n{_usage()}", file=sys.stderr)
        raise SystemExit(2)
    module = importlib.import_module(AGENTS[rest[0]])
    run_and_report(module.main, rest[1:])


if __name__ == "__main__":
    main()
