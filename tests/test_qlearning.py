"""DQN and Rainbow: tiny-budget smoke runs, exact replay ratios, bounds, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents import dqn, rainbow
from agents.plugins.clipping import WeightClipping
from agents.qlearning.networks import QNetwork, RainbowNetwork
from envs.discrete import make_env

CARTPOLE = (
    "--env-id CartPole-v1 --num-envs 2 --batch-size 32 --buffer-size 2000 --learning-starts 200 "
    "--learning-rate 0.001 --n-step 1 --target-update-period 100 --eps-decay-steps 500 --log-every 100 "
    "--diagnostics-every 300 --heatmap-every 600 --gradcov-samples 32 --probe-samples 64 "
    "--checkpoint-every 200"
).split()
PONG = (
    "--env-id ALE/Pong-v5 --num-envs 2 --batch-size 16 --buffer-size 500 --learning-starts 64 "
    "--target-update-period 50 --log-every 50 --diagnostics-every 100 --heatmap-every 1000 "
    "--gradcov-samples 16 --probe-samples 32 --total-timesteps 164"
).split()


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0}).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def images(run_dir: Path) -> list[str]:
    return EventAccumulator(str(run_dir), size_guidance={"images": 0}).Reload().Tags()["images"]


def assert_saved_weights_within_bounds(run_dir: Path, network: torch.nn.Module, kappa: float) -> None:
    saved = torch.load(run_dir / "model.pt", weights_only=False)
    network.load_state_dict(saved["network"])
    bounds = WeightClipping(network, kappa=kappa).bounds()
    assert bounds == pytest.approx(saved["clipping_bounds"])
    for name, bound in bounds.items():
        assert network.get_parameter(name).abs().max().item() <= bound + 1e-6, name


@pytest.mark.parametrize("replay_ratio", [1, 4])
def test_cartpole_dqn_realises_the_replay_ratio_with_weights_in_bounds(tmp_path, replay_ratio, capfd):
    dqn.main(
        [
            *CARTPOLE,
            "--total-timesteps",
            "1000",
            "--replay-ratio",
            str(replay_ratio),
            "--wc-kappa",
            "1",
            "--run-dir",
            str(tmp_path),
        ]
    )
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "complete" and status["replay_ratio"] == replay_ratio
    series = scalars(tmp_path)
    assert {value for _, value in series["charts/replay_ratio"]} == {replay_ratio}
    for tag in (
        "charts/episodic_return",
        "losses/td_loss",
        "losses/q_values",
        "diagnostics/dormant_frac_0.025",
        "diagnostics/dead_units_frac",
        "diagnostics/weight_norm",
        "diagnostics/grad_norm",
        "wc/clipped_fraction",
        "charts/SPS",
        "charts/gradient_steps_per_second",
        "gradcov/mean_offdiag",
    ):
        assert tag in series, tag
    assert images(tmp_path) == ["gradcov/heatmap"]
    assert list((tmp_path / "gradcov").glob("*.npz"))
    assert_saved_weights_within_bounds(tmp_path, QNetwork((4,), 2), kappa=1)
    assert "Offpolicy gradient update" not in capfd.readouterr().err  # RR 4 x 2 envs would show Tianshou's bar


@pytest.mark.slow
def test_pong_rainbow_smoke_run_clips_noisy_means_not_sigmas(tmp_path):
    rainbow.main([*PONG, "--wc-kappa", "2", "--run-dir", str(tmp_path)])
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "complete"
    assert {value for _, value in scalars(tmp_path)["charts/replay_ratio"]} == {1.0}
    assert images(tmp_path) == ["gradcov/heatmap"]
    network = RainbowNetwork((4, 84, 84), 6, atoms=51, noisy_std=0.1)
    assert_saved_weights_within_bounds(tmp_path, network, kappa=2)
    assert not any("sigma" in name for name in WeightClipping(network).bounds())


@pytest.mark.parametrize(
    ("agent", "arguments", "message"),
    [
        ("dqn", ["--env-id", "ALE/Pongg-v5"], "unknown env id 'ALE/Pongg-v5'; did you mean ALE/Pong-v5"),
        ("dqn", ["--env-id", "Hopper-v5"], "Hopper-v5 has a Box action space; this agent needs discrete actions"),
        ("rainbow", ["--wc-kappa", "-1"], "--wc-kappa must be a finite number > 0, got -1.0"),
        ("dqn", ["--replay-ratio", "0.3333"], "--replay-ratio 0.3333 cannot be realised with whole gradient steps"),
        ("dqn", ["--target-update-period", "0"], "--target-update-period must be >= 1, got 0"),
        (
            "dqn",
            ["--env-id", "CartPole-v1", "--total-timesteps", "100005"],
            "--total-timesteps 100005 would run 100000 env steps: the 320-step warm-up, then collects of 10 env steps; use 100000 or 100010",
        ),
        ("dqn", ["--config", "dqn_cartpole", "--total-timesteps", "1000"], "leaves no training after the warm-up"),
        # the plasticity plug-ins' options, shared by every agent
        ("ppo", ["--reg-every", "target"], "--reg-every target: this agent has no target network"),
        ("ppo", ["--reg", "singular", "--reg-form", "decoupled"], "--reg singular acts on features"),
        ("dqn", ["--sp-shrink", "1.5"], "--sp-shrink must be in [0, 1], got 1.5"),
        ("rainbow", ["--reg", "l2", "--reg-coef", "0"], "--reg-coef must be a finite number > 0"),
        ("dqn", ["--adam-beta2", "1"], "--adam-beta2 must be in [0, 1)"),
        ("dqn", ["--reset-last-layer-every", "-3"], "--reset-last-layer-every must be >= 0 or 'target'"),
    ],
)
def test_bad_input_is_one_clear_line(clipzoo, agent, arguments, message):
    code, _, err = clipzoo("train", agent, *arguments)
    assert code == 2 and message in err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err


def test_atari_envs_use_frameskip_1_and_explicit_sticky_actions():
    train_env = make_env("ALE/Pong-v5", training=True, sticky_actions=0.25)()
    eval_env = make_env("ALE/Pong-v5", training=False)()
    ale = train_env.unwrapped
    assert ale._frameskip == 1 and ale.ale.getFloat("repeat_action_probability") == 0.25
    assert eval_env.unwrapped.ale.getFloat("repeat_action_probability") == 0.0

    def wrappers(env):
        names = []
        while hasattr(env, "env"):
            names.append(type(env).__name__)
            env = env.env
        return names

    assert {"EpisodicLifeEnv", "ClipRewardEnv"} <= set(wrappers(train_env))
    assert not {"EpisodicLifeEnv", "ClipRewardEnv"} & set(wrappers(eval_env))
    assert "AtariPreprocessing" in wrappers(train_env) and "FireResetEnv" in wrappers(train_env)
    obs, _ = train_env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8


@pytest.mark.parametrize(
    "preset",
    [
        "dqn_cartpole",
        "dqn_acrobot",
        "dqn_mountaincar",
        "dqn_lunarlander",
        "dqn_atari_rr1",
        "dqn_atari_rr4",
        "dqn_atari_rr8",
        "rainbow_atari_rr1",
        "rainbow_atari_rr4",
        "rainbow_atari_rr8",
    ],
)
def test_every_preset_passes_the_checks_and_builds_its_env(preset):
    from agents.qlearning.options import check_args
    from envs.discrete import check_discrete_env
    from runners.base.config import load_config_file

    args = load_config_file(rainbow.Args if preset.startswith("rainbow") else dqn.Args, preset)
    steps, gradient_steps, _ = check_args(args)
    assert gradient_steps == args.replay_ratio * steps
    check_discrete_env(args.env_id)
    env = make_env(args.env_id, training=True)()
    env.reset(seed=0)
    env.close()
