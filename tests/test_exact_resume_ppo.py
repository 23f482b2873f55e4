"""PPO resumes exactly: a run killed (kill -9, SIGTERM) and rerun with the same command ends
with bitwise the weights and TensorBoard scalars of the run never interrupted; each random
stream is its own, seeded by --seed."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents import ppo_continuous
from envs.continuous import make_vector_env
from runners.base.rng import GlobalStream, numpy_generator, stream_seed, torch_generator
from runners.base.rundir import read_status

REPO = Path(__file__).resolve().parent.parent
ITERATIONS = 8
# Two envs, short rollouts, and every stream in use: plug-ins (interventions), probes and the
# heatmap (diagnostics), weight clipping; eager, as compiling would dominate the test's time.
OPTIONS = [
    "--env-id",
    "Hopper-v5",
    "--num-envs",
    "2",
    "--num-steps",
    "64",
    "--num-minibatches",
    "2",
    "--update-epochs",
    "2",
    "--total-timesteps",
    str(ITERATIONS * 128),
    "--no-compile",
    "--wc-kappa",
    "2",
    "--heatmap-every",
    "5",
    "--gradcov-samples",
    "16",
    "--sp-every",
    "5",
    "--reg",
    "l2_init",  # its anchors (the initial weights) must come back from the checkpoint
    "--reset-last-layer-every",
    "7",
    "--plasticity-probe-every",
    "4",
    "--plasticity-probe-steps",
    "3",
    "--plasticity-probe-samples",
    "32",
    "--sharpness-every",
    "4",
    "--sharpness-samples",
    "32",
    "--sharpness-iterations",
    "3",
]
TIMING_TAGS = {"charts/SPS"}  # wall-clock rates; no other tag is measured in time


def scalars(run_dir: Path) -> dict[str, list[tuple[int, str]]]:
    """Every scalar as (step, value in hex: NaN equals NaN, nothing rounds), timing tags left out."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    return {
        tag: [(e.step, float(e.value).hex()) for e in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
        if tag not in TIMING_TAGS
    }


def assert_same_run(run_dir: Path, reference: Path) -> None:
    ours, theirs = (
        torch.load(run_dir / "model.pt", weights_only=False),
        torch.load(reference / "model.pt", weights_only=False),
    )
    assert ours["agent"].keys() == theirs["agent"].keys()
    for name, tensor in theirs["agent"].items():
        assert torch.equal(ours["agent"][name], tensor), name
    for ours_env, theirs_env in zip(ours["normalization"], theirs["normalization"], strict=True):
        for key, value in theirs_env.items():
            assert np.array_equal(ours_env[key], value), key
    resumed, whole = scalars(run_dir), scalars(reference)
    assert resumed.keys() == whole.keys()
    for tag, series in whole.items():
        assert resumed[tag] == series, tag
    for matrix in sorted((reference / "gradcov").glob("*.npz")):
        with np.load(matrix) as theirs_npz, np.load(run_dir / "gradcov" / matrix.name) as ours_npz:
            for key in theirs_npz.files:
                assert np.array_equal(ours_npz[key], theirs_npz[key]), (matrix.name, key)


def start(run_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / "agents" / "ppo_continuous.py"), *OPTIONS, *extra, "--run-dir", str(run_dir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_9_after_the_first_checkpoint(process: subprocess.Popen, run_dir: Path) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and not (run_dir / "checkpoint.pt").exists():
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)


def sigterm_during_iteration_3(process: subprocess.Popen, run_dir: Path) -> None:
    for line in process.stdout:  # the end of iteration 2 is printed; the signal lands in 3
        if line.startswith(f"step {256:>9,}/"):
            break
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)


@pytest.mark.slow
def test_kill_9_and_sigterm_then_the_same_command_end_bitwise_as_the_uninterrupted_run(tmp_path, clipzoo):
    # One test for both, so that one worker runs the three attempts: the uninterrupted run in
    # this process (whose global generators other tests have used), while the two attempts to
    # be interrupted run alongside it in their own processes.
    attempts = {
        "killed": (["--checkpoint-every", "1"], kill_9_after_the_first_checkpoint),
        # no periodic checkpoint before the end: the one the signal asks for is the only one
        "stopped": (["--checkpoint-every", "1000"], sigterm_during_iteration_3),
    }
    processes, watchers = {}, []
    for name, (extra, interrupt) in attempts.items():
        processes[name] = start(tmp_path / name, *extra)
        watchers.append(threading.Thread(target=interrupt, args=(processes[name], tmp_path / name)))
        watchers[-1].start()
    try:
        ppo_continuous.main([*OPTIONS, "--checkpoint-every", "1", "--run-dir", str(tmp_path / "whole")])
    finally:
        for watcher in watchers:
            watcher.join(timeout=180)

    # (a) kill -9 after the first checkpoint: the rerun resumes from the last one on disk
    run_dir = tmp_path / "killed"
    assert processes["killed"].returncode == -signal.SIGKILL
    saved = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert 0 < saved["iteration"] < ITERATIONS and not (run_dir / "model.pt").exists(), "killed mid-run"
    code, out, err = clipzoo("train", "ppo", *OPTIONS, "--checkpoint-every", "1", "--run-dir", str(run_dir))
    assert code == 0, err
    assert f"resuming {run_dir} from step {saved['global_step']}" in out
    assert_same_run(run_dir, tmp_path / "whole")
    code, out, _ = clipzoo("train", "ppo", *OPTIONS, "--checkpoint-every", "1", "--run-dir", str(run_dir))
    assert code == 0 and "already complete" in out  # a third time: nothing left to do

    # (b) SIGTERM mid-iteration: that iteration ends, is checkpointed, and the run exits
    run_dir = tmp_path / "stopped"
    assert processes["stopped"].returncode == 128 + signal.SIGTERM
    status = read_status(run_dir)
    saved = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert status["state"] == "interrupted" and status["signal"] == "SIGTERM"
    assert (
        2 <= saved["iteration"] < ITERATIONS
        and saved["global_step"] == status["global_step"] == 128 * saved["iteration"]
    )
    code, out, err = clipzoo("train", "ppo", *OPTIONS, "--checkpoint-every", "1000", "--run-dir", str(run_dir))
    assert code == 0, err
    assert f"resuming {run_dir} from step {saved['global_step']}" in out
    assert_same_run(run_dir, tmp_path / "whole")


PPO_STREAMS = ("network_init", "envs", "actions", "minibatches", "interventions", "diagnostics")


def test_each_stream_is_reproduced_by_its_seed_and_differs_between_seeds_and_streams():
    def draws(seed: int, name: str) -> tuple:
        return (
            stream_seed(seed, name),
            tuple(numpy_generator(seed, name).integers(0, 2**62, 4)),
            tuple(torch.randint(0, 2**62, (4,), generator=torch_generator(seed, name)).tolist()),
        )

    for name in PPO_STREAMS:
        assert draws(1, name) == draws(1, name), name
        assert all(a != b for a, b in zip(draws(1, name), draws(2, name))), name
    assert len({draws(1, name) for name in PPO_STREAMS}) == len(PPO_STREAMS)

    # the network's initial weights: its stream only, whatever the global generators hold
    def initial_weights(seed: int, global_seed: int) -> torch.Tensor:
        torch.manual_seed(global_seed)
        np.random.seed(global_seed)
        with GlobalStream(seed, "network_init").active():
            agent = ppo_continuous.Agent(11, 3)
        return torch.cat([p.detach().flatten() for p in agent.parameters()])

    assert torch.equal(initial_weights(1, 0), initial_weights(1, 123))
    assert not torch.equal(initial_weights(1, 0), initial_weights(2, 0))

    # env i of a run resets with the envs stream's seed + i: seed 1's second env is not seed 2's first
    def first_states(seed: int) -> np.ndarray:
        envs = make_vector_env("Hopper-v5", 2, 0.99)
        envs.reset(seed=stream_seed(seed, "envs"))
        states = np.stack([np.concatenate([env.unwrapped.data.qpos, env.unwrapped.data.qvel]) for env in envs.envs])
        envs.close()
        return states

    one, two = first_states(1), first_states(2)
    assert np.array_equal(one, first_states(1))
    assert not np.array_equal(one[1], two[0]) and not np.array_equal(one[0], one[1])


def test_a_checkpoint_of_an_older_version_is_refused_in_one_line(tmp_path, clipzoo):
    options = [*OPTIONS[: OPTIONS.index("--total-timesteps")], "--total-timesteps", "256", "--no-compile"]
    ppo_continuous.main([*options, "--run-dir", str(tmp_path)])
    old = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    del old["format"]
    torch.save(old, tmp_path / "checkpoint.pt")
    (tmp_path / "status.json").unlink()  # as if killed before completing
    code, _, err = clipzoo("train", "ppo", *options, "--run-dir", str(tmp_path))
    assert code == 2 and "is from an older ClipZoo PPO" in err and len(err.strip().splitlines()) == 1, err
