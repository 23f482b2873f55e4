"""scripts/authors_ppo.py runs a gymnasium-0.29-era CleanRL script, file untouched, under
gymnasium 1.x and leaves a run directory the zoo's table reads. The script is a stand-in
(tests/data/cleanrl_style_script.py) that uses the two 0.29 forms the weight-clipping authors'
PPO script uses. Same-step autoreset is checked against what the stand-in logged under
gymnasium 0.29.1 itself (tests/data/gymnasium029_episodes.json); next-step, a 1.x mode only,
against the same loop written directly in gymnasium 1.x's terms."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from runners.base.rundir import RunDirectory, read_status
from runners.plots import find_runs, provenance

REPO = Path(__file__).resolve().parent.parent
LAUNCHER = REPO / "scripts" / "authors_ppo.py"
DATA = Path(__file__).resolve().parent / "data"
SEED, STEPS, ENVS = 6, 1200, 3  # the recording's: three envs, some episodes ending in the same step


def next_step_reference() -> list[list[float]]:
    """The stand-in's loop in gymnasium 1.x's own terms, next-step autoreset: each finished
    episode's statistics are in the infos of the step it ends, under the ``_episode`` mask."""

    def make():
        env = gym.wrappers.RecordEpisodeStatistics(gym.make("CartPole-v1"))
        return gym.wrappers.TransformObservation(env, lambda obs: np.clip(obs, -10.0, 10.0), None)

    envs = gym.vector.SyncVectorEnv([make] * ENVS, autoreset_mode=AutoresetMode.NEXT_STEP)
    envs.reset(seed=SEED)
    actions = np.random.default_rng(SEED)
    episodes, global_step = [], 0
    while global_step < STEPS:
        global_step += ENVS
        _, _, _, _, infos = envs.step(actions.integers(0, 2, size=ENVS))
        for env_index in np.flatnonzero(infos.get("_episode", [])):
            episode = infos["episode"]
            episodes.append(
                [global_step, int(env_index), float(episode["r"][env_index]), float(episode["l"][env_index])]
            )
    return episodes


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "weight-clipping"
    (root / "rl_experiments").mkdir(parents=True)
    shutil.copy(DATA / "cleanrl_style_script.py", root / "rl_experiments" / "ppo_continuous_action_clipped.py")
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


def script_args(seed: int = SEED) -> list[str]:
    return ["--", "--seed", str(seed), "--total-timesteps", str(STEPS)]


def test_same_step_logs_every_episode_as_gymnasium_029_did_and_the_run_reads_like_any_other(tmp_path, checkout):
    sweep = tmp_path / "sweep"
    run_dir = sweep / "CartPole-v1" / "authors_same_step" / f"seed_{SEED}"
    done = launch(checkout, run_dir, "--autoreset", "same-step", *script_args())
    assert done.returncode == 0, done.stderr

    recorded = json.loads((DATA / "gymnasium029_episodes.json").read_text())
    assert recorded["gymnasium"] == "0.29.1"
    logged = json.loads((run_dir / "episodes.json").read_text())  # the script's outputs land in the run
    assert logged["episodes"] == recorded["episodes"]  # step, env, return and length of every episode
    assert len({step for step, *_ in recorded["episodes"]}) < len(recorded["episodes"])  # some end together

    # a run directory like any other: complete, its env, variant and seed from the path, its config
    # the script's own parsed arguments, the checkout's commit as its provenance
    (run,) = find_runs(sweep)
    assert (run.env, run.variant, run.seed, run.state) == (
        "CartPole-v1",
        "authors_same_step",
        f"seed_{SEED}",
        "complete",
    )
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["seed"], config["total_timesteps"], config["autoreset"]) == (SEED, STEPS, "same-step")
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert provenance(run_dir)[:3] == [commit.stdout.strip()[:12], "true", "0"]
    assert read_status(run_dir)["global_step"] == STEPS

    again = launch(checkout, run_dir, "--autoreset", "same-step", *script_args())
    assert again.returncode == 0 and "is complete; nothing to do" in again.stdout
    assert len(list(run_dir.glob("events.*"))) == 1
    # a complete run of other arguments is refused, not mistaken for this one
    other = launch(checkout, run_dir, "--autoreset", "next-step", *script_args())
    assert other.returncode == 2 and "holds a complete run of other arguments" in other.stderr


def test_next_step_logs_each_episode_at_its_end_and_an_unfinished_run_starts_again(tmp_path, checkout):
    run_dir = tmp_path / "CartPole-v1" / "authors_next_step" / "seed_1"
    run_dir.mkdir(parents=True)  # what a killed attempt leaves
    program = "rl_experiments/ppo_continuous_action_clipped.py"
    (run_dir / "config.json").write_text(json.dumps({"program": program, "outputs": ["old.cleanrl_model"]}))
    (run_dir / "old.cleanrl_model").write_bytes(b"a model the killed attempt saved")
    (run_dir / "status.json").write_text(json.dumps({"state": "running", "pid": 1, "host": "elsewhere"}))
    (run_dir / "events.out.tfevents.0.stale").write_bytes(b"half a file")
    done = launch(checkout, run_dir, "--autoreset", "next-step", *script_args())
    assert done.returncode == 0, done.stderr
    assert json.loads((run_dir / "episodes.json").read_text())["episodes"] == next_step_reference()
    assert not (run_dir / "events.out.tfevents.0.stale").exists() and len(list(run_dir.glob("events.*"))) == 1
    assert not (run_dir / "old.cleanrl_model").exists()
    assert json.loads((run_dir / "config.json").read_text())["outputs"] == ["episodes.json"]
    assert read_status(run_dir)["state"] == "complete"


def test_bad_input_gets_one_line_and_no_foreign_or_live_directory_is_touched(tmp_path, checkout):
    clipzoo_run = tmp_path / "clipzoo_run"
    clipzoo_run.mkdir()
    (clipzoo_run / "run.yaml").write_text("seed: 1\n")
    live = tmp_path / "live"
    failing = tmp_path / "sweep" / "NoSuchEnv-v0" / "authors" / "seed_1"
    with RunDirectory(live).claim() as holder:  # a launcher (or trainer) at work on it
        holder.set_status("running", global_step=0)
        for argv, message in [
            ([str(tmp_path), str(tmp_path / "run")], "is not a checkout of mohmdelsayed/weight-clipping"),
            ([str(checkout), str(clipzoo_run)], "is not a run directory of the authors' script (run.yaml)"),
            ([str(checkout), str(live)], "is being trained by"),
            ([str(checkout), str(failing), "--", "--env-id", "NoSuchEnv-v0"], "the authors' script failed"),
        ]:
            failed = subprocess.run([sys.executable, str(LAUNCHER), *argv], capture_output=True, text=True)
            assert failed.returncode == 2, failed.stderr
            assert message in failed.stderr and "Traceback" not in failed.stderr
            assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    assert sorted(p.name for p in clipzoo_run.iterdir()) == ["run.yaml"]
    assert read_status(live)["state"] == "running"
    # the failed run is listed, as failed, where `clipzoo table` would leave it out with a note
    (run,) = find_runs(tmp_path / "sweep")
    assert run.state.startswith("failed")
