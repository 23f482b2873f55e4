"""What a new user meets in the first hour: the demo sweeps, --help, short runs, and runs
that write nothing outside their run directory."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from runners.sweep import load_spec, write_manifest

REPO = Path(__file__).resolve().parent.parent
DEMO_SPECS = sorted((REPO / "configs" / "sweeps").glob("tiny_*.yaml"))


def clipzoo(*args: str, cwd: Path = REPO, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runners.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def scalars(run: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run), size_guidance={"scalars": 0}).Reload()
    return [(s.step, s.value) for s in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


@pytest.mark.parametrize("spec", DEMO_SPECS, ids=lambda p: p.stem)
def test_each_demo_specs_variants_differ_in_their_options_and_act_on_what_they_learn(tmp_path, spec):
    sweep = load_spec(spec, tmp_path)
    variants = {
        run.variant: run.options
        for run in sweep.runs
        if run.seed == sweep.runs[0].seed and run.env == sweep.runs[0].env
    }
    assert len(variants) >= 2
    for (a, options_a), (b, options_b) in itertools.combinations(variants.items(), 2):
        assert options_a != options_b, f"{spec.name}: variants {a} and {b} resolve to the same options"
    if sweep.agent in ("dqn", "rainbow"):
        for name, options in variants.items():
            # epsilon must be near its end value well before the budget runs out, or the runs act at random
            training = options["total_timesteps"] - options.get("learning_starts", 320)
            assert options.get("eps_decay_steps", 1_000_000) <= training / 2, (
                f"{spec.name} {name}: epsilon still decaying"
            )


def test_tiny_dqn_replay_ratios_show_in_the_logs(tmp_path):
    """Seed 1 of both variants, cut to 700 steps: the realised replay ratios are the two asked
    for, and the returns differ (the greedy actions follow different Q-functions)."""
    from agents.dqn import main as train_dqn

    sweep = load_spec(REPO / "configs" / "sweeps" / "tiny_dqn.yaml", tmp_path)
    write_manifest(sweep)
    returns, ratios = {}, {}
    for run in (r for r in sweep.runs if r.seed == 1):
        train_dqn(
            [
                "--config",
                str(run.path / "run.yaml"),
                "--run-dir",
                str(run.path),
                "--total-timesteps",
                "700",
                "--eps-decay-steps",
                "200",
                "--diagnostics-every",
                "0",
                "--heatmap-every",
                "0",
            ]
        )
        returns[run.variant] = [value for _, value in scalars(run.path, "charts/episodic_return")]
        ratios[run.variant] = scalars(run.path, "charts/replay_ratio")[-1][1]
    assert ratios == {"rr1": pytest.approx(1.0), "rr4": pytest.approx(4.0)}
    assert returns["rr1"] != returns["rr4"]


def test_a_short_dqn_run_fits_its_log_interval_and_logs_every_diagnostic(tmp_path, capsys):
    from agents.dqn import main as train_dqn

    train_dqn(
        [
            "--env-id",
            "CartPole-v1",
            "--total-timesteps",
            "600",
            "--num-envs",
            "2",
            "--learning-starts",
            "200",
            "--buffer-size",
            "1000",
            "--gradcov-samples",
            "32",
            "--probe-samples",
            "64",
            "--run-dir",
            str(tmp_path),
        ]
    )
    printed = capsys.readouterr().out
    assert "--log-every 5000 is longer than the 400 env steps after the warm-up; logging every 400 env steps" in printed
    assert "warm-up: filling the replay buffer with 200 random env steps" in printed
    assert "(2 env steps and 2 gradient steps per collect)" in printed
    assert f"{Path(sys.executable).parent}" in printed.split("TensorBoard:")[1].splitlines()[0]
    assert [step for step, _ in scalars(tmp_path, "diagnostics/grad_norm")] == [600]
    assert [step for step, _ in scalars(tmp_path, "charts/replay_ratio")] == [600]


def test_one_env_step_per_collect_is_singular(tmp_path, capsys):
    from agents.dqn import main as train_dqn

    train_dqn(
        [
            "--env-id",
            "CartPole-v1",
            "--total-timesteps",
            "260",
            "--num-envs",
            "1",
            "--learning-starts",
            "200",
            "--log-every",
            "20",
            "--gradcov-samples",
            "32",
            "--probe-samples",
            "64",
            "--run-dir",
            str(tmp_path),
        ]
    )
    assert "(1 env step and 1 gradient step per collect)" in capsys.readouterr().out


@pytest.mark.parametrize("agent", ["ppo", "dqn", "rainbow"])
def test_train_help_lists_config_and_the_core_options_first_and_the_plug_ins_apart(agent, capsys):
    from runners.registry import agent_module

    with pytest.raises(SystemExit) as exit_info:
        agent_module(agent).main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    positions = [text.index(heading) for heading in ("core options", "algorithm options", "plug-in options")]
    assert positions == sorted(positions)
    core = text[text.index("core options") : text.index("algorithm options")]
    for flag in ("--config", "--env-id", "--total-timesteps", "--seed", "--run-dir", "--wc-kappa"):
        assert flag in core, flag
    assert ("--replay-ratio" in core) == (agent != "ppo")
    plug_ins = text[text.index("plug-in options") :]
    assert "--wc-bound-mode" in plug_ins and "--layer-norm" in plug_ins and "--sharpness-every" in plug_ins


def test_every_preset_in_the_top_level_help_exists():
    result = clipzoo("--help", timeout=60)
    presets = re.findall(r"--config (\S+)", result.stdout)
    assert presets
    for preset in presets:
        assert (REPO / "configs" / f"{preset}.yaml").is_file(), preset


def test_heatmaps_go_next_to_the_runs_not_into_the_current_directory(tmp_path, monkeypatch):
    runs = []
    for name in ("adam", "adam_wc"):
        run = tmp_path / "sweep" / "CartPole-v1" / name / "seed_1"
        (run / "gradcov").mkdir(parents=True)
        np.savez(run / "gradcov" / "step_0000001000.npz", covariance=np.eye(4), order=np.arange(4), step=1000)
        runs.append(run)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = clipzoo("heatmap", *map(str, runs), cwd=elsewhere, timeout=120)
    assert result.returncode == 0, result.stderr
    assert list(elsewhere.iterdir()) == []
    assert (tmp_path / "sweep" / "CartPole-v1" / "heatmaps.png").is_file()


def test_mujoco_warnings_leave_no_log_file_in_the_current_directory(tmp_path, monkeypatch):
    from envs.continuous import make_vector_env

    monkeypatch.chdir(tmp_path)
    with pytest.warns(RuntimeWarning, match="MuJoCo: .*settotalmass"):
        make_vector_env("HalfCheetah-v5", 1, 0.99).close()  # its XML uses a deprecated attribute
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_quickstart_in_a_fresh_clone_writes_only_its_run_directory(tmp_path):
    """README's quickstart command, with a tiny budget and no compile, in a clone of this repository."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout")
    clone = tmp_path / "clipzoo"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    readme = (clone / "README.md").read_text()
    command = re.search(r"&& \.venv/bin/clipzoo (train ppo [^\n`]+)", readme).group(1).split()
    command[command.index("--total-timesteps") + 1] = "256"
    before = sorted(p.name for p in clone.iterdir())
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "runners.cli",
            *command,
            "--num-steps",
            "128",
            "--num-minibatches",
            "2",
            "--update-epochs",
            "1",
            "--no-compile",
        ],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(clone), "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = clone / command[command.index("--run-dir") + 1]
    assert "TensorBoard:" in result.stdout and (run_dir / "status.json").is_file()
    assert sorted(p.name for p in clone.iterdir()) == sorted(before + ["runs"])
    assert [p.name for p in (clone / "runs").iterdir()] == [run_dir.name]
    status = subprocess.run(
        ["git", "status", "--porcelain", "--ignored"], cwd=clone, capture_output=True, text=True, check=True
    )
    assert [line for line in status.stdout.splitlines() if "__pycache__" not in line] == ["!! runs/"]
