"""The SLURM backend against a real cluster: the one that answers ``sinfo``.

The tests install and start nothing. Without a cluster the ones that submit jobs are
skipped (the reason shows in pytest's summary); ``scripts/test-cluster.sh start`` starts
a one-node cluster on this machine (root), ``scripts/test-cluster.sh stop`` removes it.
Every job a test submits is cancelled when the test ends, whatever its outcome. Jobs run
this checkout's code: sbatch passes on the submitting environment, PYTHONPATH included.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
TINY_DQN = {
    "num_envs": 2,
    "batch_size": 32,
    "buffer_size": 2000,
    "learning_starts": 200,
    "n_step": 1,
    "target_update_period": 100,
    "log_every": 100,
    "diagnostics_every": 3000,
    "heatmap_every": 6000,
    "gradcov_samples": 32,
    "probe_samples": 64,
    "checkpoint_every": 100,
}


def sh(command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(command, shell=True, capture_output=True, text=True, timeout=timeout)


# one pytest worker runs them all, one after another: the test cluster has a single node
pytestmark = pytest.mark.xdist_group("slurm")
NODE_UP = {"idle", "mix", "alloc", "comp"}  # a node busy with another test's job is still a cluster


def cluster_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        states = sh("sinfo -h -o %t", timeout=15).stdout.split()
    except subprocess.TimeoutExpired:
        return False
    return any(state.rstrip("*~#!%$@^-") in NODE_UP for state in states)


@pytest.fixture(scope="session")
def slurm_cluster():
    if not cluster_answers():
        pytest.skip("no SLURM cluster answers `sinfo` (scripts/test-cluster.sh start makes one on this machine)")


@pytest.fixture
def cancel_jobs(slurm_cluster):
    """Sweep directories whose submitted jobs are cancelled when the test ends."""
    sweeps: list[Path] = []
    yield sweeps
    for sweep in sweeps:
        jobs_file = sweep / "slurm" / "jobs.json"
        if jobs_file.exists():
            ids = [job["job_id"] for job in json.loads(jobs_file.read_text())]
            sh(f"scancel --full {' '.join(ids)}")
            deadline = time.time() + 30  # let the tasks' processes end before tmp_path goes
            while time.time() < deadline and sh(f"squeue -h --jobs {','.join(ids)}").stdout.strip():
                time.sleep(0.5)


def write_spec(tmp_path: Path, name: str, budget: int, seeds: int, variants: dict) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "agent": "dqn",
                "envs": ["CartPole-v1"],
                "seeds": seeds,
                "budget": budget,
                "common": TINY_DQN,
                "variants": variants,
            }
        )
    )
    return path


def clipzoo(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runners.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def wait_for_states(run_dirs: list[Path], wanted: str, seconds: float) -> list[str]:
    deadline = time.time() + seconds
    states: list[str] = []
    while time.time() < deadline:
        states = [
            json.loads((d / "status.json").read_text())["state"] if (d / "status.json").exists() else "pending"
            for d in run_dirs
        ]
        if all(s == wanted for s in states):
            break
        time.sleep(0.2)
    return states


def wait_until_left_the_queue(sweep_dir: Path, seconds: float) -> str:
    """squeue's lines for the sweep's arrays once they are gone, or what is still there at the
    deadline: a task stays listed (COMPLETING) for a moment after its run wrote "complete"."""
    ids = ",".join(job["job_id"] for job in json.loads((sweep_dir / "slurm" / "jobs.json").read_text()))
    deadline = time.time() + seconds
    while (listed := sh(f"squeue -h --array --jobs {ids}").stdout.strip()) and time.time() < deadline:
        time.sleep(0.5)
    return listed


def test_dry_run_writes_the_array_script_with_the_requested_resources(tmp_path):
    spec = write_spec(tmp_path, "dry", 800, 2, {"adam": {}, "adam+wc": {"wc_kappa": 2.0}})
    result = clipzoo(
        "sweep",
        str(spec),
        "--backend",
        "slurm",
        "--dry-run",
        "--dir",
        str(tmp_path / "sweep"),
        "--time",
        "01:00:00",
        "--mem",
        "4G",
        "--account",
        "lab",
        "--partition",
        "cpu",
        "--array-limit",
        "2",
        "--activate",
        "source env/bin/activate",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    script = result.stdout
    for line in (
        "#SBATCH --array=0-3%2",
        "#SBATCH --requeue",
        "#SBATCH --signal=B:USR1@120",
        "#SBATCH --time=01:00:00",
        "#SBATCH --mem=4G",
        "#SBATCH --account=lab",
        "#SBATCH --partition=cpu",
        "source env/bin/activate",
        "#SBATCH --output=",
        "%A_%a.out",
        'scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"',
    ):
        assert line in script, line
    tasks = (tmp_path / "sweep" / "slurm" / "tasks_0.txt").read_text().split()
    assert len(tasks) == 4 and all(Path(t, "run.yaml").exists() for t in tasks)


def test_sweep_completes_through_sbatch_and_failed_runs_can_be_resubmitted(tmp_path, cancel_jobs):
    spec = write_spec(tmp_path, "array", 400, 1, {"adam": {}, "adam+wc": {"wc_kappa": 2.0}})
    cancel_jobs.append(tmp_path / "sweep")
    submitted = clipzoo(
        "sweep", str(spec), "--backend", "slurm", "--dir", str(tmp_path / "sweep"), "--time", "00:20:00", cwd=tmp_path
    )
    assert submitted.returncode == 0 and "submitted job array" in submitted.stdout, submitted.stderr
    runs = [tmp_path / "sweep" / "CartPole-v1" / v / "seed_1" for v in ("adam", "adam+wc")]
    assert wait_for_states(runs, "complete", 300) == ["complete"] * 2
    status = clipzoo("sweep", "status", str(tmp_path / "sweep"), cwd=tmp_path)
    assert "2 complete" in status.stdout and "squeue:" in status.stdout
    # a run whose task is still listed counts as busy and is left out, so wait for the array to go
    assert wait_until_left_the_queue(tmp_path / "sweep", 60) == ""

    record = json.loads((runs[1] / "status.json").read_text())
    (runs[1] / "status.json").write_text(json.dumps({**record, "state": "failed", "error": "node lost"}))
    again = clipzoo(
        "sweep", str(spec), "--backend", "slurm", "--resubmit-failed", "--dir", str(tmp_path / "sweep"), cwd=tmp_path
    )
    assert "submitted job array" in again.stdout and ": 1 runs" in again.stdout, again.stdout + again.stderr
    assert (tmp_path / "sweep" / "slurm" / "tasks_1.txt").read_text().split() == [str(runs[1].resolve())]
    assert wait_for_states(runs, "complete", 300) == ["complete"] * 2


def test_a_warned_task_checkpoints_requeues_itself_and_resumes(tmp_path, cancel_jobs):
    # log_every 100 makes the trainer's epochs (and so the checkpoint points) 100 steps apart
    spec = write_spec(tmp_path, "preempt", 1200, 1, {"adam": {}})
    cancel_jobs.append(tmp_path / "sweep")
    submitted = clipzoo("sweep", str(spec), "--backend", "slurm", "--dir", str(tmp_path / "sweep"), cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads((tmp_path / "sweep" / "slurm" / "jobs.json").read_text())[0]["job_id"]
    run = tmp_path / "sweep" / "CartPole-v1" / "adam" / "seed_1"
    assert wait_for_states([run], "running", 120) == ["running"]
    sh(f"scancel --signal=USR1 --batch {job}_0")  # what --signal=B:USR1@120 does before the time limit
    assert wait_for_states([run], "interrupted", 120) == ["interrupted"]
    step = json.loads((run / "status.json").read_text())["global_step"]
    assert 0 < step < 1200
    assert wait_for_states([run], "complete", 240) == ["complete"]  # after the requeue wait (AuthInfo cred_expire)
    output = "".join(p.read_text() for p in (tmp_path / "sweep" / "slurm").glob("*.out"))
    assert f"resuming {run.resolve()} from step {step}" in output and output.count("done: ") == 1
