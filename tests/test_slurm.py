"""The SLURM backend against a real one-node cluster started here (Debian's slurm-wlm and munge).

The fixture installs and starts the cluster when this machine has none; it fails loudly
rather than skipping when SLURM cannot be started.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CLUSTER_NAME = "clipzoo-test"
TINY_DQN = {"num_envs": 2, "batch_size": 32, "buffer_size": 2000, "learning_starts": 200, "n_step": 1,
            "target_update_period": 100, "log_every": 100, "diagnostics_every": 3000, "heatmap_every": 6000,
            "gradcov_samples": 32, "probe_samples": 64, "checkpoint_every": 1000}


def sh(command: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command, shell=True, capture_output=True, text=True, timeout=timeout)


def cluster_config() -> str:
    host = socket.gethostname()
    return "\n".join([
        f"ClusterName={CLUSTER_NAME}", f"SlurmctldHost={host}", "AuthType=auth/munge", "ProctrackType=proctrack/linuxproc",
        "ReturnToService=2", "SlurmctldPidFile=/run/slurmctld.pid", "SlurmdPidFile=/run/slurmd.pid",
        "SlurmdSpoolDir=/var/spool/slurmd", "StateSaveLocation=/var/spool/slurmctld", "SlurmUser=root", "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none", "SchedulerType=sched/backfill", "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core", "SlurmctldLogFile=/var/log/slurm/slurmctld.log", "SlurmdLogFile=/var/log/slurm/slurmd.log",
        f"NodeName={host} CPUs={os.cpu_count()} RealMemory=8000 State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", "",
    ])


@pytest.fixture(scope="session")
def slurm_cluster():
    if "idle" in sh("sinfo -h -o %t").stdout:  # a cluster already answers
        return
    if os.geteuid() != 0:
        pytest.fail("no SLURM cluster answers and this user cannot start one (needs root)")
    if shutil.which("slurmctld") is None:
        install = sh("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge", timeout=600)
        if install.returncode != 0:
            pytest.fail(f"could not install slurm-wlm and munge: {install.stderr[-2000:]}")
    config = Path("/etc/slurm/slurm.conf")
    if config.exists() and f"ClusterName={CLUSTER_NAME}" not in config.read_text():
        pytest.fail(f"{config} belongs to another cluster, which does not answer; not overwriting it")
    for folder in ("/etc/slurm", "/var/spool/slurmd", "/var/spool/slurmctld", "/var/log/slurm", "/run/munge"):
        Path(folder).mkdir(parents=True, exist_ok=True)
    config.write_text(cluster_config())
    steps = [
        "[ -f /etc/munge/munge.key ] || mungekey --create || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1",
        "chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge; chmod 400 /etc/munge/munge.key",
        "pgrep -x munged || /usr/sbin/munged --force",
        "pgrep -x slurmctld || slurmctld",
        "pgrep -x slurmd || slurmd",
    ]
    for step in steps:
        result = sh(step)
        if result.returncode != 0:
            pytest.fail(f"starting SLURM failed at `{step}`: {result.stdout[-1000:]} {result.stderr[-1000:]}")
    deadline = time.time() + 60
    while time.time() < deadline:
        if "idle" in sh("sinfo -h -o %t").stdout:
            return
        time.sleep(1)
    pytest.fail(f"SLURM started but its node never became idle: {sh('sinfo; tail -20 /var/log/slurm/slurmctld.log').stdout}")


def write_spec(tmp_path: Path, name: str, budget: int, seeds: int, variants: dict) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "agent": "dqn", "envs": ["CartPole-v1"], "seeds": seeds, "budget": budget,
                                    "common": TINY_DQN, "variants": variants}))
    return path


def clipzoo(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runners.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def wait_for_states(run_dirs: list[Path], wanted: str, seconds: float) -> list[str]:
    deadline = time.time() + seconds
    states: list[str] = []
    while time.time() < deadline:
        states = [json.loads((d / "status.json").read_text())["state"] if (d / "status.json").exists() else "pending" for d in run_dirs]
        if all(s == wanted for s in states):
            break
        time.sleep(1)
    return states


def test_dry_run_writes_the_array_script_with_the_requested_resources(tmp_path):
    spec = write_spec(tmp_path, "dry", 800, 2, {"adam": {}, "adam+wc": {"wc_kappa": 2.0}})
    result = clipzoo("sweep", str(spec), "--backend", "slurm", "--dry-run", "--dir", str(tmp_path / "sweep"), "--time", "01:00:00",
                     "--mem", "4G", "--account", "lab", "--partition", "cpu", "--array-limit", "2", "--activate", "source env/bin/activate",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    script = result.stdout
    for line in ("#SBATCH --array=0-3%2", "#SBATCH --requeue", "#SBATCH --signal=B:USR1@120", "#SBATCH --time=01:00:00",
                 "#SBATCH --mem=4G", "#SBATCH --account=lab", "#SBATCH --partition=cpu", "source env/bin/activate",
                 "#SBATCH --output=", "%A_%a.out", 'scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"'):
        assert line in script, line
    tasks = (tmp_path / "sweep" / "slurm" / "tasks_0.txt").read_text().split()
    assert len(tasks) == 4 and all(Path(t, "run.yaml").exists() for t in tasks)


def test_sweep_completes_through_sbatch_and_failed_runs_can_be_resubmitted(tmp_path, slurm_cluster):
    spec = write_spec(tmp_path, "array", 800, 2, {"adam": {}, "adam+wc": {"wc_kappa": 2.0}})
    submitted = clipzoo("sweep", str(spec), "--backend", "slurm", "--dir", str(tmp_path / "sweep"), "--time", "00:20:00", cwd=tmp_path)
    assert submitted.returncode == 0 and "submitted job array" in submitted.stdout, submitted.stderr
    runs = [tmp_path / "sweep" / "CartPole-v1" / v / f"seed_{s}" for v in ("adam", "adam+wc") for s in (1, 2)]
    assert wait_for_states(runs, "complete", 300) == ["complete"] * 4
    status = clipzoo("sweep", "status", str(tmp_path / "sweep"), cwd=tmp_path)
    assert "4 complete" in status.stdout and "squeue:" in status.stdout

    record = json.loads((runs[1] / "status.json").read_text())
    (runs[1] / "status.json").write_text(json.dumps({**record, "state": "failed", "error": "node lost"}))
    again = clipzoo("sweep", str(spec), "--backend", "slurm", "--resubmit-failed", "--dir", str(tmp_path / "sweep"), cwd=tmp_path)
    assert "1 runs" in again.stdout, again.stdout + again.stderr
    assert (tmp_path / "sweep" / "slurm" / "tasks_1.txt").read_text().split() == [str(runs[1].resolve())]
    assert wait_for_states(runs, "complete", 300) == ["complete"] * 4


def test_a_warned_task_checkpoints_requeues_itself_and_resumes(tmp_path, slurm_cluster):
    spec = write_spec(tmp_path, "preempt", 6000, 1, {"adam": {}})
    submitted = clipzoo("sweep", str(spec), "--backend", "slurm", "--dir", str(tmp_path / "sweep"), cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads((tmp_path / "sweep" / "slurm" / "jobs.json").read_text())[0]["job_id"]
    run = tmp_path / "sweep" / "CartPole-v1" / "adam" / "seed_1"
    assert wait_for_states([run], "running", 120) == ["running"]
    time.sleep(4)
    sh(f"scancel --signal=USR1 --batch {job}_0")  # what --signal=B:USR1@120 does before the time limit
    assert wait_for_states([run], "interrupted", 120) == ["interrupted"]
    step = json.loads((run / "status.json").read_text())["global_step"]
    assert 0 < step < 6000
    assert wait_for_states([run], "complete", 420) == ["complete"]  # after SLURM's requeue delay
    output = "".join(p.read_text() for p in (tmp_path / "sweep" / "slurm").glob("*.out"))
    assert f"resuming {run.resolve()} from step {step}" in output and output.count("done: ") == 1
