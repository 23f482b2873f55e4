"""Exact resume of DQN and Rainbow: a run killed (kill -9, or SIGTERM inside an update block)
after a checkpoint and rerun with the same command ends with bitwise the weights and the
TensorBoard scalars of the same run never interrupted (timing tags excepted), on classic
control, LunarLander, MinAtar and Atari, with uniform and prioritized replay."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from runners.base.rundir import read_attempts, read_status

REPO = Path(__file__).resolve().parent.parent
TIMING_TAGS = {"charts/SPS", "charts/gradient_steps_per_second"}  # wall-clock rates differ between any two runs
SMALL = (
    "--batch-size 32 --learning-starts 200 --target-update-period 50 --eps-decay-steps 400 --log-every "
    "100 --diagnostics-every 300 --heatmap-every 0 --gradcov-samples 16 --probe-samples 32 "
    "--checkpoint-every 300"
).split()
RAINBOW = ["--num-atoms", "11", "--beta-anneal-steps", "600"]
CASES = {  # (agent, options, budget); uniform replay: the DQN cases, prioritized: the Rainbow ones
    "dqn-minatar-rr2": (
        "dqn",
        # ReDo too: its replay stream and its recycling resume with the run
        "--env-id MinAtar/Breakout-v1 --num-envs 2 --buffer-size 2000 --replay-ratio 2 --redo-every 40 --redo-tau 0.1".split(),
        400,
    ),
    "rainbow-minatar": (
        "rainbow",
        # prioritized replay, evaluation rounds and plasticity injection (before the checkpoint: the grown
        # heads and their state resume with the run)
        ["--env-id", "MinAtar/Breakout-v1", "--num-envs", "2", "--buffer-size", "2000", *RAINBOW, "--inject-at", "60"]
        + ["--eval-every", "250", "--eval-episodes", "1"],  # MinAtar games under a greedy policy run long
        400,
    ),
    "dqn-lunarlander": (  # a Box2D world: restored by replaying each env's episode in flight (envs/state.py)
        "dqn",
        "--env-id LunarLander-v3 --num-envs 2 --buffer-size 2000".split(),
        600,
    ),
    "dqn-atari": (
        "dqn",
        [
            "--env-id",
            "ALE/Pong-v5",
            "--num-envs",
            "1",
            "--buffer-size",
            "1000",
            "--batch-size",
            "8",
            "--learning-starts",
            "32",
            "--gradcov-samples",
            "8",
            "--probe-samples",
            "8",
            "--log-every",
            "50",
            "--checkpoint-every",
            "100",
            "--wc-kappa",
            "2",  # weight clipping on the Nature CNN too
        ],
        182,
    ),
}


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
        if tag not in TIMING_TAGS
    }


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "model.pt", weights_only=False)["network"]


def command(agent: str, options: list[str], budget: int, run_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "runners.cli",
        "train",
        agent,
        *SMALL,
        *options,
        "--total-timesteps",
        str(budget),
        "--run-dir",
        str(run_dir),
    ]


def run_here(agent: str, options: list[str], budget: int, run_dir: Path) -> None:
    """The same command in this process (its start-up paid once): a run's numbers do not depend on the process."""
    from agents import dqn, rainbow

    (dqn if agent == "dqn" else rainbow).main(command(agent, options, budget, run_dir)[5:])


def run_interrupted(agent, options, budget, run_dir, how: signal.Signals, capfd) -> int:
    """Start the run, interrupt it once it has checkpointed, rerun the same command; the step it resumed from."""
    process = subprocess.Popen(
        command(agent, options, budget, run_dir), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 300
    while not (run_dir / "checkpoint.pt").exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.02)
    time.sleep(0.2)  # land somewhere after the checkpoint: mid-collect or mid-update
    process.send_signal(how)
    process.communicate(timeout=300)
    status = read_status(run_dir)
    assert status["state"] in ("running", "interrupted") and status["global_step"] < budget, "not interrupted"
    resumed_from = torch.load(run_dir / "checkpoint.pt", weights_only=False)["global_step"]
    capfd.readouterr()
    run_here(agent, options, budget, run_dir)
    printed = capfd.readouterr().out
    assert f"resuming {run_dir} from step {resumed_from}" in printed
    assert "warm-up" not in printed, "a resume with the buffer saved refills nothing"
    return resumed_from


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_a_killed_run_resumes_to_the_uninterrupted_runs_weights_and_scalars(tmp_path, case, capfd):
    agent, options, budget = CASES[case]
    run_here(agent, options, budget, tmp_path / "whole")
    how = signal.SIGTERM if case == "dqn-minatar-rr2" else signal.SIGKILL  # SIGTERM: mid update block at RR 2
    resumed_from = run_interrupted(agent, options, budget, tmp_path / "resumed", how, capfd)
    assert 0 < resumed_from < budget

    whole, resumed = final_weights(tmp_path / "whole"), final_weights(tmp_path / "resumed")
    assert whole.keys() == resumed.keys()
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name
    assert scalars(tmp_path / "resumed") == scalars(tmp_path / "whole")
    assert read_status(tmp_path / "resumed")["resumed_exactly"] is True
    attempts = read_attempts(tmp_path / "resumed")
    assert [a["resumed_from_step"] for a in attempts] == [None, resumed_from]
    assert attempts[0].get("ended") == ("interrupted" if how == signal.SIGTERM else None)
    assert list((tmp_path / "resumed").rglob(".*.tmp")) == []


@pytest.mark.slow
def test_without_the_buffer_a_resume_says_it_is_not_exact(tmp_path, capfd):
    agent, options, budget = "dqn", ["--env-id", "CartPole-v1", "--num-envs", "2", "--buffer-size", "2000"], 500
    options = [*options, "--checkpoint-buffer", "never"]
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        command(agent, options, budget, run_dir), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    while not (run_dir / "checkpoint.pt").exists():
        assert process.poll() is None
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    capfd.readouterr()
    run_here(agent, options, budget, run_dir)
    assert (
        "this resume is not exact: the checkpoint holds no replay buffer (--checkpoint-buffer never)"
        in capfd.readouterr().out
    )
    assert read_status(run_dir)["resumed_exactly"] is False
    assert read_attempts(run_dir)[-1]["exact"] is False
