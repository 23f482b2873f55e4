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

Runs live in ``<sweep>/<env>/<variant>/seed_<n>/`` (``/`` in env ids becomes ``_``);
``manifest.json`` lists them with their options.
"""

from __future__ import annotations

import difflib
import itertools
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runners.agents import AGENTS, args_class, check_env_id
from runners.config import apply_overrides
from runners.errors import UsageError
from runners.files import atomic_write_text
from runners.rundir import read_status

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
    seeds = list(range(1, spec["seeds"] + 1)) if isinstance(spec["seeds"], int) else spec["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise UsageError(f"'seeds' in {path} must be a positive count or a non-empty list of integers")
    variants = spec["variants"]
    if not isinstance(variants, dict) or not variants:
        raise UsageError(f"'variants' in {path} must map variant names to options (at least one)")
    grid = spec.get("grid") or {}
    if not isinstance(grid, dict) or any(not isinstance(v, list) or not v for v in grid.values()):
        raise UsageError(f"'grid' in {path} must map option names to non-empty lists")
    resources = spec.get("resources") or {}
    for key in resources:
        if key not in RESOURCE_KEYS:
            raise UsageError(f"unknown resource {key!r} in {path}{_suggest(str(key), RESOURCE_KEYS)}")

    budget = spec.get("budget")
    if isinstance(budget, dict) and sorted(budget) != sorted(envs):
        raise UsageError(f"'budget' in {path} must give a budget for exactly the envs {envs}, got {sorted(budget)}")

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
    for env, (variant, options), seed in itertools.product(envs, expanded.items(), seeds):
        merged = {**options, "env_id": env, "seed": seed}
        if isinstance(budget, dict):
            merged["total_timesteps"] = budget[env]
        apply_overrides(agent_args, merged, f"{path} (variant {variant})")  # refuses unknown keys and bad types
        runs.append(SweepRun(env, variant, seed, directory / _safe(env) / variant / f"seed_{seed}", merged))
    return Sweep(str(spec["name"]), agent, directory, runs, dict(resources))


def write_manifest(sweep: Sweep) -> Path:
    """``manifest.json`` and each run's ``run.yaml`` (its options); deterministic for a given spec."""
    entries = []
    for run in sweep.runs:
        run.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.path / "run.yaml", yaml.safe_dump(run.options, sort_keys=True))
        entries.append({"env": run.env, "variant": run.variant, "seed": run.seed,
                        "path": str(run.path.relative_to(sweep.directory)), "options": run.options})
    manifest = {"name": sweep.name, "agent": sweep.agent, "resources": sweep.resources, "runs": entries}
    return atomic_write_text(sweep.directory / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def run_command(agent: str, run: SweepRun) -> list[str]:
    return [sys.executable, "-m", "runners.cli", "train", agent, "--config", str(run.path / "run.yaml"), "--run-dir", str(run.path)]


def run_states(sweep: Sweep) -> dict[SweepRun, dict]:
    return {run: read_status(run.path) or {"state": "pending"} for run in sweep.runs}


def run_local(sweep: Sweep, workers: int, poll_seconds: float = 2.0) -> list[SweepRun]:
    """Run every incomplete run, ``workers`` at a time, one thread each; returns the failed ones."""
    write_manifest(sweep)
    todo = [run for run, state in run_states(sweep).items() if state["state"] != "complete"]
    skipped = len(sweep.runs) - len(todo)
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    repo = Path(__file__).resolve().parent.parent

    def execute(run: SweepRun) -> int:
        with open(run.path / "stdout.log", "a") as log:
            return subprocess.run(run_command(sweep.agent, run), stdout=log, stderr=subprocess.STDOUT,
                                  env={**environment, "PYTHONPATH": str(repo)}, cwd=Path.cwd()).returncode

    print(f"sweep {sweep.name}: {len(sweep.runs)} runs, {skipped} already complete, {len(todo)} to run on {workers} workers")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(execute, run) for run in todo]
        shown = ""
        while not all(f.done() for f in futures):
            shown = _print_progress(sweep, shown)
            time.sleep(poll_seconds)
    _print_progress(sweep, shown)
    failed = [run for run, state in run_states(sweep).items() if state["state"] != "complete"]
    for run in failed:
        print(f"failed: {run.path} (log: {run.path / 'stdout.log'})")
    print(f"sweep {sweep.name}: {len(sweep.runs) - len(failed)}/{len(sweep.runs)} complete")
    return failed


def _print_progress(sweep: Sweep, shown: str) -> str:
    """Print runs done and the steps of the runs in flight, when that changed; returns the line."""
    states = run_states(sweep)
    done = sum(s["state"] == "complete" for s in states.values())
    running = [f"{run.env}/{run.variant}/seed_{run.seed} {s.get('global_step', 0):,}/{s.get('total_timesteps', 0):,}"
               for run, s in states.items() if s["state"] == "running"]
    line = f"{done}/{len(sweep.runs)} runs done" + (f"; running: {', '.join(running)}" if running else "")
    if line != shown:
        print(line, flush=True)
    return line


def status_table(sweep: Sweep) -> str:
    counts: dict[str, int] = {}
    lines = []
    for run, state in run_states(sweep).items():
        counts[state["state"]] = counts.get(state["state"], 0) + 1
        detail = state.get("error", "") if state["state"] == "failed" else f"{state.get('global_step', 0):,} steps"
        lines.append(f"{state['state']:<12} {run.path}  {detail}")
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return "\n".join(lines + [summary])


def load_manifest(directory: str | Path) -> Sweep:
    """The sweep a directory's ``manifest.json`` describes."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except FileNotFoundError:
        raise UsageError(f"{directory} has no manifest.json; is it a sweep directory?") from None
    runs = [SweepRun(e["env"], e["variant"], e["seed"], directory / e["path"], e["options"]) for e in manifest["runs"]]
    return Sweep(manifest["name"], manifest["agent"], directory, runs, manifest["resources"])
