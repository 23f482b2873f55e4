"""SLURM backend of ``clipzoo sweep``: one job array per submission, one task per run.

Each task runs one run directory. ``--signal=B:USR1@<lead>`` warns the batch shell before
the time limit; it forwards the signal to the run, which checkpoints and exits, and then
requeues its own task, which resumes from that checkpoint. Task output goes to
``<sweep>/slurm/<job>_<task>.out`` (appended across requeues). A requeued task waits for
SLURM's begin-time delay (about two minutes) before it runs again; meanwhile it is
``queued``.

What SLURM has queued or running for a sweep comes from ``runners/slurm_queue.py``; a
submission leaves out every run that is queued or running.
"""

from __future__ import annotations

import itertools
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from runners.base.errors import UsageError
from runners.base.files import atomic_write_text
from runners.sweep import BUSY, Sweep, SweepRun, run_states, write_manifest

SIGNAL_LEAD_SECONDS = 120


def default_activation() -> str:
    """A line that puts this interpreter's environment first on PATH in the batch script."""
    activate = Path(sys.prefix) / "bin" / "activate"
    return (
        f"source {shlex.quote(str(activate))}"
        if activate.exists()
        else f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH"
    )


def array_script(sweep: Sweep, runs: list[SweepRun], tasks_file: Path, resources: dict, activation: str) -> str:
    slurm_dir = sweep.directory.resolve() / "slurm"
    limit = resources.get("array_limit")
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=clipzoo-{sweep.name}",
        f"#SBATCH --array=0-{len(runs) - 1}" + (f"%{limit}" if limit else ""),
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        f"#SBATCH --signal=B:USR1@{SIGNAL_LEAD_SECONDS}",
        f"#SBATCH --output={slurm_dir}/%A_%a.out",
        f"#SBATCH --error={slurm_dir}/%A_%a.err",
        f"#SBATCH --cpus-per-task={resources.get('cpus', 1)}",
    ]
    for key, flag in (
        ("mem", "mem"),
        ("time", "time"),
        ("partition", "partition"),
        ("account", "account"),
        ("gpus", "gpus"),
    ):
        if resources.get(key):
            lines.append(f"#SBATCH --{flag}={resources[key]}")
    lines += [
        "set -u",
        activation,
        f"export OMP_NUM_THREADS={resources.get('cpus', 1)}",
        f'RUN=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(str(tasks_file.resolve()))})',
        f"cd {shlex.quote(str(Path.cwd().resolve()))}",
        f'python -m runners.cli train {sweep.agent} --config "$RUN/run.yaml" --run-dir "$RUN" &',
        "child=$!",
        "# before the time limit: let the run checkpoint, then put this task back in the queue",
        'requeue() { kill -USR1 "$child"; wait "$child"; scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"; exit 0; }',
        "trap requeue USR1",
        'wait "$child"',
        "",
    ]
    return "\n".join(lines)


def submit(
    sweep: Sweep,
    resources: dict,
    activation: str | None,
    dry_run: bool,
    only_failed: bool,
    chosen: list[SweepRun] | None = None,
) -> str | None:
    """Write the array script for the runs (of ``chosen`` where given) that need it and submit
    it; returns the job id.

    Runs that are running or queued are left out; ``only_failed``: failed and interrupted
    runs only (a killed run counts as interrupted)."""
    write_manifest(sweep)
    chosen_runs = sweep.runs if chosen is None else chosen
    states = run_states(sweep, chosen_runs)
    wanted = ("failed", "interrupted") if only_failed else ("pending", "failed", "interrupted")
    runs = [run for run, state in states.items() if state["state"] in wanted]
    busy = [run for run, state in states.items() if state["state"] in BUSY]
    if busy:
        print(
            f"sweep {sweep.name}: leaving out {len(busy)} runs that are running or queued "
            f"({', '.join(f'{run.env}/{run.variant}/seed_{run.seed}' for run in busy[:5])}{', ...' if len(busy) > 5 else ''})"
        )
    if not runs:
        which = "run" if len(chosen_runs) == len(sweep.runs) else "chosen run"
        reason = (
            f"no failed or interrupted {which}s" if only_failed else f"every {which} is complete, running or queued"
        )
        print(f"sweep {sweep.name}: nothing to submit ({reason})")
        return None
    slurm_dir = sweep.directory / "slurm"
    slurm_dir.mkdir(parents=True, exist_ok=True)
    # a fresh number: the tasks file of a submitted array must never be overwritten
    number = next(
        n
        for n in itertools.count()
        if not (slurm_dir / f"array_{n}.sbatch").exists() and not (slurm_dir / f"tasks_{n}.txt").exists()
    )
    tasks_file = atomic_write_text(
        slurm_dir / f"tasks_{number}.txt", "".join(f"{run.path.resolve()}\n" for run in runs)
    )
    script = atomic_write_text(
        slurm_dir / f"array_{number}.sbatch",
        array_script(sweep, runs, tasks_file, resources, activation or default_activation()),
    )
    if dry_run:
        print(script.read_text(), end="")
        print(f"# written to {script}; not submitted (--dry-run)")
        return None
    if shutil.which("sbatch") is None:
        raise UsageError("sbatch is not on PATH; run on a SLURM login node, or use --dry-run to only write the script")
    result = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    if result.returncode != 0:
        raise UsageError(f"sbatch refused {script}: {result.stderr.strip()}")
    job_id = result.stdout.strip().split(";")[0]
    jobs_file = slurm_dir / "jobs.json"
    jobs = json.loads(jobs_file.read_text()) if jobs_file.exists() else []
    atomic_write_text(
        jobs_file,
        json.dumps(
            jobs + [{"job_id": job_id, "script": script.name, "tasks": len(runs), "tasks_file": tasks_file.name}],
            indent=2,
        )
        + "\n",
    )
    print(f"submitted job array {job_id}: {len(runs)} runs ({script})")
    return job_id
