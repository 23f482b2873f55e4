"""Seed sweeps: a YAML spec expands into runs (envs x variants x seeds), run locally by a
process pool; completed runs are skipped and interrupted ones resume from their checkpoints.

Spec (``clipzoo sweep SPEC.yaml``)::

    name: ppo_wc_mujoco            # sweep directory: sweeps/<name> unless --dir
    agent: ppo                     # ppo | dqn | rainbow
    envs: [Hopper-v5, Walker2d-v5]
    seeds: 3                       # 1..3, or a list [1, 2, 3]
    budget: 1000000                # total_timesteps of every run, or per env: {Hopper-v5: 1000000, ...}
    common: {checkpoint_every: 5}  # options for every run
    variants:                      # name -> options
      adam: {}
      adam+wc: {wc_kappa: 2.0}
    grid: {wc_kappa: [1, 2, 3]}    # optional: every variant x every combination
    resources: {cpus: 1, mem: 4G, time: "08:00:00"}   # for cluster backends

Several specs (``clipzoo sweep A.yaml B.yaml``) form a queue: one pool of workers runs them
in order, each in its own directory, so no core idles while one sweep's last runs finish.

Runs live in ``<sweep>/<env>/<variant>/seed_<n>/`` (``/`` in env ids becomes ``_``);
``manifest.json`` lists them with their options. Every run's options go through the
agent's own checks before anything is written or started. A run that a live process
is training, or whose SLURM task is queued, is never started or submitted again.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runners.base.config import apply_overrides
from runners.base.console import plural
from runners.base.errors import UsageError
from runners.base.files import atomic_write_text
from runners.base.rundir import duration, effective_state, read_status
from runners.registry import AGENTS, args_class, check_env_id, check_run_options
from runners.slurm_queue import sweep_queue

SPEC_KEYS = ("name", "agent", "envs", "seeds", "budget", "common", "variants", "grid", "resources")
RESOURCE_KEYS = ("cpus", "mem", "time", "gpus", "partition", "account", "array_limit")


@dataclass(frozen=True)
class SweepRun:
    env: str
    variant: str
    seed: int
    path: Path
    options: dict[str, Any] = field(hash=False)


@dataclass
class Sweep:
    name: str
    agent: str
    directory: Path
    runs: list[SweepRun]
    resources: dict[str, Any]


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3)
    return f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(choices)}"


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+=" else "_" for c in text)


def _unique_list(value, key: str, path: Path) -> None:
    duplicates = sorted({str(v) for v in value if value.count(v) > 1})
    if duplicates:
        raise UsageError(
            f"{key!r} in {path} lists {', '.join(duplicates)} more than once; two runs would share one directory"
        )


SLURM_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")  # minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]
SLURM_MEMORY = re.compile(r"^\d+[KMGT]?$")


def check_resources(resources: dict, name: Callable[[str], str]) -> dict:
    """Refuse resources SLURM would reject only after the array is submitted; ``name(key)`` says
    where each came from. Whole numbers may come as text (command-line flags)."""
    checked = {}
    for key, value in resources.items():
        if key not in RESOURCE_KEYS:
            raise UsageError(f"unknown resource {key!r} ({name(key)}){_suggest(str(key), RESOURCE_KEYS)}")
        if key in ("cpus", "gpus", "array_limit"):
            lowest = 0 if key == "gpus" else 1
            if isinstance(value, str) and value.isdigit():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise UsageError(f"{name(key)} must be a whole number >= {lowest}, got {value!r}")
        elif key == "time" and not SLURM_TIME.match(str(value)):
            raise UsageError(f"{name(key)} must be a SLURM time limit (minutes, HH:MM:SS or D-HH:MM:SS), got {value!r}")
        elif key == "mem" and not SLURM_MEMORY.match(str(value)):
            raise UsageError(f"{name(key)} must be a SLURM memory size such as 4G or 4000M, got {value!r}")
        checked[key] = value
    return checked


def load_spec(path: str | Path, directory: str | Path | None = None) -> Sweep:
    """Read, validate and expand a sweep spec; every error names the bad key or value."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise UsageError(f"cannot read sweep spec {path}: {error}") from None
    if not isinstance(spec, dict):
        raise UsageError(f"sweep spec {path} must be a mapping of {', '.join(SPEC_KEYS)}")
    for key in spec:
        if key not in SPEC_KEYS:
            raise UsageError(f"unknown sweep key {key!r} in {path}{_suggest(str(key), SPEC_KEYS)}")
    for key in ("name", "agent", "envs", "seeds", "variants"):
        if key not in spec:
            raise UsageError(f"sweep spec {path} needs {key!r}")
    agent = spec["agent"]
    if agent not in AGENTS:
        raise UsageError(f"unknown agent {agent!r} in {path}{_suggest(str(agent), AGENTS)}")
    envs = spec["envs"]
    if not isinstance(envs, list) or not envs:
        raise UsageError(f"'envs' in {path} must be a non-empty list of env ids")
    for env in envs:
        check_env_id(env)
    _unique_list(envs, "envs", path)
    count = spec["seeds"]
    seeds = list(range(1, count + 1)) if isinstance(count, int) and not isinstance(count, bool) else count
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise UsageError(f"'seeds' in {path} must be a positive count or a non-empty list of integers, got {count!r}")
    _unique_list(seeds, "seeds", path)
    variants = spec["variants"]
    if not isinstance(variants, dict) or not variants:
        raise UsageError(f"'variants' in {path} must map variant names to options (at least one)")
    grid = spec.get("grid") or {}
    if not isinstance(grid, dict) or any(not isinstance(v, list) or not v for v in grid.values()):
        raise UsageError(f"'grid' in {path} must map option names to non-empty lists")
    for key in ("common", "resources"):
        if not isinstance(spec.get(key) or {}, dict):
            raise UsageError(f"{key!r} in {path} must map option names to values, got {spec[key]!r}")
    for variant, options in variants.items():
        if not isinstance(options or {}, dict):
            raise UsageError(f"variant {variant!r} in {path} must map option names to values, got {options!r}")
    resources = spec.get("resources") or {}
    check_resources(resources, lambda key: f"resources.{key} in {path}")

    budget = spec.get("budget")
    if isinstance(budget, dict) and sorted(budget) != sorted(envs):
        raise UsageError(f"'budget' in {path} must give a budget for exactly the envs {envs}, got {sorted(budget)}")
    for value in budget.values() if isinstance(budget, dict) else [budget] if budget is not None else []:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(
                f"'budget' in {path} must be a positive whole number of env steps (or one per env), got {value!r}"
            )

    agent_args = args_class(agent)
    common = dict(spec.get("common") or {})
    if budget is not None and not isinstance(budget, dict):
        common["total_timesteps"] = budget
    expanded: dict[str, dict] = {}
    for variant, options in variants.items():
        combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())] if grid else [{}]
        for combo in combos:
            name = _safe(str(variant) + "".join(f"_{k}{v}" for k, v in combo.items()))
            if name in expanded:
                raise UsageError(f"variant name {name!r} occurs twice in {path} (after expansion and cleaning)")
            expanded[name] = {**common, **(options or {}), **combo}

    directory = Path(directory) if directory else Path("sweeps") / _safe(str(spec["name"]))
    runs = []
    notes: dict[str, int] = {}  # what the checks print (e.g. a log interval fitted to a short run), once each
    for env, (variant, options), seed in itertools.product(envs, expanded.items(), seeds):
        merged = {**options, "env_id": env, "seed": seed}
        if isinstance(budget, dict):
            merged["total_timesteps"] = budget[env]
        args = apply_overrides(agent_args, merged, f"{path} (variant {variant})")  # refuses unknown keys and bad types
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                check_run_options(agent, args)
        except UsageError as error:
            raise UsageError(f"{path}, variant {variant}, env {env}, seed {seed}: {error}") from None
        for note in printed.getvalue().splitlines():
            notes[note] = notes.get(note, 0) + 1
        runs.append(SweepRun(env, variant, seed, directory / _safe(env) / variant / f"seed_{seed}", merged))
    for note, count in notes.items():
        print(f"{note} ({plural(count, 'run')} of {len(runs)})")
    return Sweep(str(spec["name"]), agent, directory, runs, dict(resources))


def write_manifest(sweep: Sweep) -> Path:
    """``manifest.json`` and each run's ``run.yaml`` (its options); deterministic for a given spec."""
    entries = []
    for run in sweep.runs:
        run.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.path / "run.yaml", yaml.safe_dump(run.options, sort_keys=True))
        entries.append(
            {
                "env": run.env,
                "variant": run.variant,
                "seed": run.seed,
                "path": str(run.path.relative_to(sweep.directory)),
                "options": run.options,
            }
        )
    manifest = {"name": sweep.name, "agent": sweep.agent, "resources": sweep.resources, "runs": entries}
    return atomic_write_text(sweep.directory / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def choose_runs(sweep: Sweep, envs: list[str] | None = None, variants: list[str] | None = None) -> list[SweepRun]:
    """The sweep's runs of ``envs`` and ``variants`` (every one where None), in spec order; a
    name the spec does not have is refused. The manifest still lists every run."""
    for names, known, flag in (
        (envs, [r.env for r in sweep.runs], "--env"),
        (variants, [r.variant for r in sweep.runs], "--variant"),
    ):
        known = list(dict.fromkeys(known))
        for name in names or []:
            if name not in known:
                raise UsageError(f"{flag} {name}: sweep {sweep.name} has no such {flag[2:]}{_suggest(name, known)}")
    return [run for run in sweep.runs if (not envs or run.env in envs) and (not variants or run.variant in variants)]


def run_command(agent: str, run: SweepRun) -> list[str]:
    return [
        sys.executable,
        "-m",
        "runners.cli",
        "train",
        agent,
        "--config",
        str(run.path / "run.yaml"),
        "--run-dir",
        str(run.path),
    ]


def run_states(sweep: Sweep, runs: list[SweepRun] | None = None) -> dict[SweepRun, dict]:
    """Each run's state (of ``runs``, by default every run) as it really is: ``pending``,
    ``queued`` (a SLURM task waits for it), ``running`` (a live process trains it),
    ``complete``, ``failed``, or ``interrupted`` (this includes a ``running`` marker whose
    process or SLURM job is gone)."""
    queue = sweep_queue(sweep)  # None: no SLURM jobs, or squeue cannot be asked
    in_queue = queue.tasks if queue else {}
    states = {}
    for run in sweep.runs if runs is None else runs:
        state = effective_state(run.path, read_status(run.path), queue.job_alive if queue else lambda job: None)
        state = state or {"state": "pending"}
        # a complete run stays complete while its task's shell finishes; a requeued one is queued
        if state["state"] not in ("running", "complete") and run.path.resolve() in in_queue:
            state = {**state, "state": "queued", "queue": in_queue[run.path.resolve()]}
        states[run] = state
    return states


BUSY = ("running", "queued")


def run_local(
    sweep: Sweep, workers: int, poll_seconds: float = 2.0, chosen: list[SweepRun] | None = None
) -> list[SweepRun]:
    """Run every incomplete run (of ``chosen`` where given), ``workers`` at a time, one thread
    each; returns the runs (of ``chosen``) not complete (``run_queue`` of this sweep alone)."""
    return run_queue([(sweep, sweep.runs if chosen is None else chosen)], workers, poll_seconds)


def run_queue(queue: list[tuple[Sweep, list[SweepRun]]], workers: int, poll_seconds: float = 2.0) -> list[SweepRun]:
    """Run the incomplete runs of several sweeps (each with the runs chosen of it) in one pool of
    ``workers``, in the queue's order: a sweep's runs start as workers free up, after every run of
    the sweeps before it has started, so no core idles between two sweeps. Returns the runs not
    complete.

    The first Ctrl-C (SIGINT) or SIGTERM stops launching runs and passes the signal to the
    runs in flight, which checkpoint and mark themselves interrupted.
    """
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    repo = Path(__file__).resolve().parent.parent
    stopping = threading.Event()
    received: list[int] = []  # the signal that stopped the sweep
    children: dict[SweepRun, subprocess.Popen] = {}
    guard = threading.Lock()

    def execute(sweep: Sweep, run: SweepRun) -> int | None:
        with guard:
            if stopping.is_set():
                return None
            # another process may have taken the run since the sweep started
            if (effective_state(run.path, read_status(run.path)) or {}).get("state") == "running":
                return None
            with open(run.path / "stdout.log", "a") as log:
                # same process group: a terminal's Ctrl-C or a kill of the group reaches the runs too
                child = subprocess.Popen(
                    run_command(sweep.agent, run),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**environment, "PYTHONPATH": str(repo)},
                    cwd=Path.cwd(),
                )
            children[run] = child
        return child.wait()

    def stop(number, frame) -> None:
        if stopping.is_set():
            return
        received.append(number)
        stopping.set()
        print(
            f"\n{signal.Signals(number).name}: starting no more runs; the runs in flight checkpoint and stop",
            flush=True,
        )
        with guard:  # for a signal sent to the sweep alone; a second one to a run changes nothing
            for child in children.values():
                if child.poll() is None:
                    child.send_signal(number)

    todo: list[tuple[Sweep, SweepRun]] = []
    for sweep, chosen_runs in queue:
        write_manifest(sweep)
        states = run_states(sweep, chosen_runs)
        for run, state in states.items():
            if state["state"] in BUSY:
                print(f"not started: {run.path} is {state['state']} elsewhere ({_who(state)})")
        waiting = [run for run, state in states.items() if state["state"] not in ("complete", *BUSY)]
        todo += [(sweep, run) for run in waiting]
        skipped = sum(state["state"] == "complete" for state in states.values())
        print(
            f"sweep {sweep.name}: {len(states)} runs{_part(sweep, chosen_runs)}, {skipped} already complete, "
            f"{len(waiting)} to run on {workers} workers"
        )
    if len(queue) > 1:
        print(f"queue of {len(queue)} sweeps: {len(todo)} runs to run on {workers} workers, in this order")
    previous = {number: signal.signal(number, stop) for number in (signal.SIGINT, signal.SIGTERM)}
    in_queue = len(queue) > 1
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(execute, sweep, run) for sweep, run in todo]
            progress = [Progress(sweep, chosen_runs, workers, in_queue=in_queue) for sweep, chosen_runs in queue]
            while not all(f.done() for f in futures):
                for line in progress:
                    line.show()
                time.sleep(poll_seconds)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    unfinished_runs = []
    for sweep, chosen_runs in queue:
        Progress(sweep, chosen_runs, workers, in_queue=in_queue).show(final=True)
        states = run_states(sweep, chosen_runs)
        elsewhere = [run for run, state in states.items() if state["state"] in BUSY]  # another sweep's or job's
        unfinished = [run for run, state in states.items() if state["state"] not in ("complete", *BUSY)]
        for run in elsewhere:
            print(f"left to another process: {run.path} is {states[run]['state']} there ({_who(states[run])})")
        for run in unfinished:
            print(f"{states[run]['state']}: {run.path} (log: {run.path / 'stdout.log'})")
        others = f", {len(elsewhere)} running elsewhere" if elsewhere else ""
        complete = len(states) - len(unfinished) - len(elsewhere)
        print(f"sweep {sweep.name}: {complete}/{len(states)}{_part(sweep, chosen_runs)} complete{others}")
        unfinished_runs += unfinished
    if stopping.is_set():
        raise SystemExit(128 + received[0])
    return unfinished_runs


def _part(sweep: Sweep, chosen_runs: list[SweepRun]) -> str:
    return "" if len(chosen_runs) == len(sweep.runs) else f" ({len(chosen_runs)} of its {len(sweep.runs)} chosen)"


def _who(state: dict) -> str:
    if state["state"] == "queued":
        return f"SLURM: {state.get('queue')}"
    job = f", SLURM job {state['slurm_job']}" if state.get("slurm_job") else ""
    return f"pid {state.get('pid')} on {state.get('host')}{job}"


class Progress:
    """Progress lines of a local sweep: runs done, and each running run's step and ETA as the run
    itself reports them (status.json), with the sweep's ETA at the running runs' rates. A line
    is printed when a run starts or ends, and otherwise at most every ``every_seconds``."""

    def __init__(
        self,
        sweep: Sweep,
        chosen_runs: list[SweepRun],
        workers: int,
        every_seconds: float = 60.0,
        in_queue: bool = False,
    ) -> None:
        self.sweep, self.chosen_runs, self.workers, self.every_seconds = sweep, chosen_runs, workers, every_seconds
        # one of several sweeps: lines name the sweep, and one with no run in flight (waiting its
        # turn, or done) prints only when a run of it ends
        self.in_queue = in_queue
        self.shown_runs: tuple | None = None
        self.shown_at = 0.0

    def show(self, final: bool = False) -> None:
        """A line if something changed (``final``: the last line, always)."""
        states = run_states(self.sweep, self.chosen_runs)
        done = sum(s["state"] == "complete" for s in states.values())
        running = {run: s for run, s in states.items() if s["state"] == "running"}
        which = (done, tuple(sorted(str(run.path) for run in running)))
        if (
            not final
            and which == self.shown_runs
            and (time.time() - self.shown_at < self.every_seconds or (self.in_queue and not running))
        ):
            return
        if not final and self.in_queue and self.shown_runs is None and not running and done < len(states):
            return  # not started yet: its first line comes with its first run
        self.shown_runs, self.shown_at = which, time.time()
        parts = []
        for run, s in running.items():
            eta = f", ETA {duration(s['eta_seconds'])}" if "eta_seconds" in s else ""
            parts.append(
                f"{run.env}/{run.variant}/seed_{run.seed} {s.get('step', s.get('global_step', 0)):,}/"
                f"{s.get('total_timesteps', 0):,}{eta}"
            )
        line = f"{done}/{len(states)} runs done" + (f"; running: {', '.join(parts)}" if parts else "")
        print((f"{self.sweep.name}: " if self.in_queue else "") + line + self.sweep_eta(states), flush=True)

    def sweep_eta(self, states: dict) -> str:
        """The env steps left in every unfinished run over the running runs' summed rate (``workers`` of them at most)."""
        rates = [
            s["steps_per_second"] for s in states.values() if s["state"] == "running" and s.get("steps_per_second")
        ]
        if not rates:
            return ""
        left = sum(
            max(0, int(run.options.get("total_timesteps", 0)) - int(s.get("step", s.get("global_step", 0))))
            for run, s in states.items()
            if s["state"] != "complete"
        )
        unfinished = sum(s["state"] != "complete" for s in states.values())
        rate = sum(rates) / len(rates) * min(self.workers, unfinished)
        return f"; sweep ETA ~{duration(left / rate)} at the running runs' rates" if left else ""


def status_table(sweep: Sweep) -> str:
    counts: dict[str, int] = {}
    lines = []
    for run, state in run_states(sweep).items():
        counts[state["state"]] = counts.get(state["state"], 0) + 1
        detail = state.get("error", "") if state["state"] == "failed" else f"{state.get('global_step', 0):,} steps"
        if state.get("stale"):
            detail += f"; {state['stale']}"
        elif state["state"] in BUSY:
            detail += f"; {_who(state)}"
        lines.append(f"{state['state']:<12} {run.path}  {detail}")
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return "\n".join(lines + [summary])


def load_manifest(directory: str | Path) -> Sweep:
    """The sweep a directory's ``manifest.json`` describes."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
        runs = [
            SweepRun(e["env"], e["variant"], e["seed"], directory / e["path"], e["options"]) for e in manifest["runs"]
        ]
        return Sweep(manifest["name"], manifest["agent"], directory, runs, manifest["resources"])
    except (FileNotFoundError, NotADirectoryError):
        raise UsageError(f"{directory} has no manifest.json; is it a sweep directory?") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(
            f"{directory / 'manifest.json'} cannot be read ({type(error).__name__}: {error}); rerun the sweep spec to rewrite it"
        ) from None
