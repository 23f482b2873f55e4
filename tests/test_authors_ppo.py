"""scripts/authors_ppo.py runs a gymnasium-0.29-era CleanRL script, file untouched, under
gymnasium 1.x and leaves a run directory the zoo's table reads. The script here is a stand-in
that uses the two 0.29 forms the weight-clipping authors' PPO script uses (TransformObservation
without an observation space, episodes read from infos["final_info"] as a list of per-env
dicts), on CartPole with seeded random actions. The reference is the same loop written
directly against gymnasium 1.x, for each autoreset mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from runners.plots import find_runs, provenance

REPO = Path(__file__).resolve().parent.parent
LAUNCHER = REPO / "scripts" / "authors_ppo.py"

STAND_IN = """
import dataclasses

import gymnasium as gym
import numpy as np
import tyro
from torch.utils.tensorboard import SummaryWriter
from weight_clipping import BOUND  # importable only if the script's own folder is on the path


@dataclasses.dataclass
class Args:
    env_id: str = "CartPole-v1"
    seed: int = 1
    total_timesteps: int = 600


def make_env(env_id):
    def thunk():
        env = gym.wrappers.RecordEpisodeStatistics(gym.make(env_id))
        return gym.wrappers.TransformObservation(env, lambda obs: np.clip(obs, -BOUND, BOUND))

    return thunk


if __name__ == "__main__":
    args = tyro.cli(Args)
    writer = SummaryWriter(f"runs/{args.env_id}__{args.seed}")
    envs = gym.vector.SyncVectorEnv([make_env(args.env_id) for _ in range(2)])
    envs.reset(seed=args.seed)
    actions = np.random.default_rng(args.seed)
    global_step = 0
    while global_step < args.total_timesteps:
        global_step += 2
        _, _, _, _, infos = envs.step(actions.integers(0, 2, size=2))
        if "final_info" in infos:
            for info in infos["final_info"]:
                if info and "episode" in info:
                    writer.add_scalar("charts/episodic_return", info["episode"]["r"], global_step)
                    writer.add_scalar("charts/episodic_length", info["episode"]["l"], global_step)
    writer.close()
"""


def reference_episodes(mode: AutoresetMode, seed: int, steps: int) -> dict[str, list[tuple[int, float]]]:
    """The stand-in's loop in gymnasium 1.x's own terms: where each mode puts the finished episodes."""

    def make():
        env = gym.wrappers.RecordEpisodeStatistics(gym.make("CartPole-v1"))
        return gym.wrappers.TransformObservation(env, lambda obs: np.clip(obs, -10.0, 10.0), None)

    envs = gym.vector.SyncVectorEnv([make, make], autoreset_mode=mode)
    envs.reset(seed=seed)
    actions = np.random.default_rng(seed)
    episodes = {"charts/episodic_return": [], "charts/episodic_length": []}
    global_step = 0
    while global_step < steps:
        global_step += 2
        _, _, _, _, infos = envs.step(actions.integers(0, 2, size=2))
        ended = infos.get("final_info", {}) if mode == AutoresetMode.SAME_STEP else infos
        for env_index in np.flatnonzero(ended.get("_episode", [])):
            episodes["charts/episodic_return"].append((global_step, float(ended["episode"]["r"][env_index])))
            episodes["charts/episodic_length"].append((global_step, float(ended["episode"]["l"][env_index])))
    return episodes


def logged_episodes(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    return {
        tag: [(e.step, pytest.approx(e.value)) for e in events.Scalars(tag)]
        for tag in ("charts/episodic_return", "charts/episodic_length")
    }


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "weight-clipping"
    (root / "rl_experiments").mkdir(parents=True)
    (root / "rl_experiments" / "ppo_continuous_action_clipped.py").write_text(STAND_IN)
    (root / "rl_experiments" / "weight_clipping.py").write_text("BOUND = 10.0\n")
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "stand-in"], check=True)
    return root


def launch(checkout: Path, run_dir: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(LAUNCHER), str(checkout), str(run_dir), *options], capture_output=True, text=True
    )


@pytest.mark.parametrize("mode", ["same-step", "next-step"])
def test_the_script_runs_unchanged_and_logs_every_episode_where_gymnasium_1x_ends_it(tmp_path, checkout, mode):
    sweep = tmp_path / "sweep"
    run_dir = sweep / "CartPole-v1" / f"authors_{mode}" / "seed_3"
    done = launch(checkout, run_dir, "--autoreset", mode, "--", "--seed", "3", "--total-timesteps", "600")
    assert done.returncode == 0, done.stderr

    autoreset = AutoresetMode.SAME_STEP if mode == "same-step" else AutoresetMode.NEXT_STEP
    expected = reference_episodes(autoreset, seed=3, steps=600)
    assert len(expected["charts/episodic_return"]) > 20
    assert logged_episodes(run_dir) == expected
    other = reference_episodes(AutoresetMode.NEXT_STEP if mode == "same-step" else AutoresetMode.SAME_STEP, 3, 600)
    assert other != expected  # the mode decides what is logged: a launcher ignoring it would fail above

    # a run directory like any other: complete, its env, variant and seed from the path, its config
    # the script's own parsed arguments, the checkout's commit as its provenance
    (run,) = find_runs(sweep)
    assert (run.env, run.variant, run.seed, run.state) == ("CartPole-v1", f"authors_{mode}", "seed_3", "complete")
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["seed"], config["total_timesteps"], config["autoreset"]) == (3, 600, mode)
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert provenance(run_dir)[:3] == [commit.stdout.strip()[:12], "true", "0"]
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("events.")) == [
        "attempts.json",
        "config.json",
        "status.json",
    ]

    again = launch(checkout, run_dir, "--autoreset", mode, "--", "--seed", "3", "--total-timesteps", "600")
    assert again.returncode == 0 and "is complete; nothing to do" in again.stdout
    assert len(list(run_dir.glob("events.*"))) == 1


def test_an_unfinished_run_starts_again_and_bad_input_gets_one_line(tmp_path, checkout):
    run_dir = tmp_path / "CartPole-v1" / "authors" / "seed_1"
    run_dir.mkdir(parents=True)
    (run_dir / "status.json").write_text(json.dumps({"state": "running", "pid": 1, "host": "elsewhere"}))
    (run_dir / "events.out.tfevents.0.stale").write_bytes(b"half a file")
    done = launch(checkout, run_dir, "--", "--total-timesteps", "200")
    assert done.returncode == 0, done.stderr
    assert [p.name for p in run_dir.glob("events.*")] != ["events.out.tfevents.0.stale"]
    assert len(list(run_dir.glob("events.*"))) == 1
    assert json.loads((run_dir / "status.json").read_text())["state"] == "complete"

    for argv, message in [
        ([str(tmp_path), str(tmp_path / "run")], "is not a checkout of mohmdelsayed/weight-clipping"),
        ([str(checkout), str(tmp_path / "bad"), "--", "--env-id", "NoSuchEnv-v0"], "the authors' script failed"),
    ]:
        failed = subprocess.run([sys.executable, str(LAUNCHER), *argv], capture_output=True, text=True)
        assert failed.returncode == 2
        assert message in failed.stderr and "Traceback" not in failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1
