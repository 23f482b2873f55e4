"""Runs stay trustworthy: one trainer per run directory, dead runs detected, exact resumes,
signals honoured between gradient steps, aggregates that say what they include, bad input
in one line."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents import dqn, rainbow
from runners import cli, plots
from runners.errors import UsageError
from runners.rundir import RunDirectory, effective_state, read_status

REPO = Path(__file__).resolve().parent.parent
CARTPOLE = ["--env-id", "CartPole-v1", "--num-envs", "2", "--batch-size", "32", "--buffer-size", "2000",
            "--learning-starts", "200", "--learning-rate", "0.001", "--n-step", "1", "--target-update-period", "100",
            "--eps-decay-steps", "500", "--log-every", "100", "--diagnostics-every", "300", "--heatmap-every", "600",
            "--gradcov-samples", "32", "--probe-samples", "64", "--checkpoint-every", "200"]
RAINBOW_EXTRA = ["--num-atoms", "11", "--beta-anneal-steps", "1000"]
EPISODE_TAGS = {"charts/episodic_return", "charts/episodic_length"}  # episodes in flight restart on resume


def steps_by_tag(run_dir: Path) -> dict[str, list[int]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    return {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def start(agent: str, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runners.cli", "train", agent, *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and not condition():
        time.sleep(0.05)
    assert condition(), "timed out"


def cli_exit(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


# ---------------------------------------------------------------- resume reproduces the step sequence
@pytest.mark.parametrize(("agent", "how"), [("dqn", signal.SIGKILL), ("rainbow", signal.SIGTERM)])
def test_resume_logs_the_uninterrupted_runs_steps(tmp_path, agent, how):
    extra = RAINBOW_EXTRA if agent == "rainbow" else []
    options = [*CARTPOLE, *extra, "--total-timesteps", "1000"]
    (dqn if agent == "dqn" else rainbow).main([*options, "--run-dir", str(tmp_path / "whole")])
    reference = steps_by_tag(tmp_path / "whole")

    run = tmp_path / "resumed"
    process = start(agent, [*options, "--run-dir", str(run)])
    if how == signal.SIGKILL:  # just after a checkpoint, when the next steps are logged but not checkpointed
        wait_for(lambda: (run / "checkpoint.pt").exists())
        time.sleep(0.7)
    else:  # mid-epoch: a checkpoint at the next collect
        wait_for(lambda: "running" in (read_status(run) or {}).get("state", "") and (read_status(run) or {}).get("global_step", 0) > 300)
    process.send_signal(how)
    process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL if how == signal.SIGKILL else process.returncode == 128 + signal.SIGTERM
    interrupted_at = torch.load(run / "checkpoint.pt", weights_only=False)["global_step"]
    assert interrupted_at < 1000, "interrupted before the end"
    rerun = subprocess.run([sys.executable, "-m", "runners.cli", "train", agent, *options, "--run-dir", str(run)],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming {run} from step {interrupted_at}" in rerun.stdout

    resumed = steps_by_tag(run)
    assert set(resumed) == set(reference)
    for tag, steps in resumed.items():
        if tag in EPISODE_TAGS:  # games end where they end after a resume; before it, nothing may change
            assert [s for s in steps if s <= interrupted_at] == [s for s in reference[tag] if s <= interrupted_at], tag
            assert steps == sorted(steps), tag
        else:
            assert steps == reference[tag], tag


# ---------------------------------------------------------------- one trainer per run directory
def test_a_second_trainer_on_a_live_run_directory_is_refused_naming_the_holder(tmp_path):
    run = RunDirectory(tmp_path)
    with run.claim():
        run.set_status("running", global_step=0)
        result = subprocess.run([sys.executable, "-m", "runners.cli", "train", "dqn", *CARTPOLE, "--total-timesteps", "1000",
                                 "--run-dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert f"is being trained by pid {os.getpid()} on {socket.gethostname()}" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert read_status(tmp_path)["pid"] == os.getpid(), "the refused trainer left the status alone"
        assert effective_state(tmp_path, read_status(tmp_path))["state"] == "running"
    # the holder died without a word (kill -9): its lock is gone, the run is interrupted
    state = effective_state(tmp_path, read_status(tmp_path))
    assert state["state"] == "interrupted" and "is gone" in state["stale"]


def test_a_running_marker_of_a_finished_slurm_job_reads_as_interrupted(tmp_path):
    (tmp_path / "status.json").write_text(json.dumps({"state": "running", "host": "node7", "pid": 1, "slurm_job": "77_3"}))
    status = read_status(tmp_path)
    assert effective_state(tmp_path, status, lambda job: job == "77_3")["state"] == "running"
    assert effective_state(tmp_path, status, lambda job: False)["state"] == "interrupted"
    assert effective_state(tmp_path, status, lambda job: None)["state"] == "running", "cannot tell: leave it"
