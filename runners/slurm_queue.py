"""What SLURM has queued or running for a sweep, read from ``squeue``.

``squeue_tasks`` is the one place that calls squeue, so tests can stand in for a cluster.
Sweeps (run states) and the SLURM backend (submissions) both read it; it imports neither.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from runners.base.rundir import read_status


def squeue_tasks(job_ids: list[str]) -> dict[str, str] | None:
    """``{"<job>_<task>" or "<job>": state}`` of the given jobs in SLURM's queue (array tasks one
    by one), or None where squeue cannot be asked."""
    if not job_ids or shutil.which("squeue") is None:
        return None
    result = subprocess.run(
        ["squeue", "--noheader", "--array", "--jobs", ",".join(job_ids), "--format", "%i %T"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        # squeue refuses ids that have all left its memory; then none of them is queued
        return {} if "Invalid job id" in result.stderr else None
    return dict(line.split()[:2] for line in result.stdout.splitlines() if len(line.split()) >= 2)


def _submissions(sweep) -> list[dict]:
    jobs_file = sweep.directory / "slurm" / "jobs.json"
    try:
        return json.loads(jobs_file.read_text())
    except (OSError, ValueError):
        return []


@dataclass
class SweepQueue:
    """SLURM's view of a sweep: ``tasks`` maps run directories to their task's state."""

    tasks: dict[Path, str]
    jobs: dict[str, str]

    def job_alive(self, job: str) -> bool:
        return job in self.jobs or job.split("_")[0] in self.jobs


def sweep_queue(sweep) -> SweepQueue | None:
    """What SLURM has queued or running for this sweep's arrays and for the jobs its runs
    recorded; None when the sweep never used SLURM or squeue cannot be asked."""
    submissions = _submissions(sweep)
    recorded = {
        status["slurm_job"] for run in sweep.runs if (status := read_status(run.path)) and status.get("slurm_job")
    }
    ids = sorted({job["job_id"] for job in submissions} | {job.split("_")[0] for job in recorded})
    jobs = squeue_tasks(ids)
    if jobs is None:
        return None
    tasks = {}
    for job in submissions:
        tasks_file = (
            sweep.directory
            / "slurm"
            / job.get("tasks_file", job["script"].replace("array_", "tasks_").replace(".sbatch", ".txt"))
        )
        try:
            paths = tasks_file.read_text().splitlines()
        except OSError:
            continue
        for index, path in enumerate(paths):
            state = jobs.get(f"{job['job_id']}_{index}")
            if state:
                tasks[Path(path).resolve()] = f"{state} as {job['job_id']}_{index}"
    return SweepQueue(tasks, jobs)


def queue_report(sweep) -> str:
    """squeue's view of this sweep's job arrays, where squeue is available."""
    submissions = _submissions(sweep)
    jobs = squeue_tasks([job["job_id"] for job in submissions])
    if jobs is None:
        return ""
    lines = "\n".join(f"{task} {state}" for task, state in sorted(jobs.items()))
    return f"squeue:\n{lines}" if lines else "squeue: no tasks of this sweep are queued or running"
