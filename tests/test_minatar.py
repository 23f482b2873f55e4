"""MinAtar: env ids and wrappers, the MinAtar networks, tiny runs of both agents with weight
clipping, diagnostics and the plug-ins, and the presets and sweep specs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from test_qlearning import assert_saved_weights_within_bounds, images, scalars

from agents import dqn, rainbow
from agents.plugins.clipping import WeightClipping
from agents.qlearning.networks import QNetwork, RainbowNetwork
from envs.discrete import check_discrete_env, make_env
from envs.minatar import register_minatar_envs

REPO = Path(__file__).resolve().parent.parent
BREAKOUT = (
    "--env-id MinAtar/Breakout-v1 --num-envs 2 --batch-size 16 --buffer-size 500 --learning-starts 64 "
    "--target-update-period 50 --log-every 50 --diagnostics-every 100 --heatmap-every 1000 "
    "--gradcov-samples 16 --probe-samples 32 --total-timesteps 164"
).split()


def test_observations_are_the_games_grids_channel_first_with_no_wrappers():
    env = make_env("MinAtar/Breakout-v1", training=True)()
    register_minatar_envs()
    bare = gym.make("MinAtar/Breakout-v1")
    obs, _ = env.reset(seed=3)
    bare_obs, _ = bare.reset(seed=3)
    assert obs.shape == (4, 10, 10) and obs.dtype == bool and env.observation_space.contains(obs)
    np.testing.assert_array_equal(obs, np.moveaxis(bare_obs, -1, 0))
    game = env.unwrapped.game
    assert game.sticky_action_prob == 0.1  # MinAtar's own default
    assert make_env("MinAtar/Breakout-v1", training=True, sticky_actions=0.0)().unwrapped.game.sticky_action_prob == 0.0
    # same seed, same actions: the same observations and unclipped rewards as the bare game
    for t in range(200):
        action = t % 3
        obs, reward, terminated, truncated, _ = env.step(action)
        bare_obs, bare_reward, bare_terminated, _, _ = bare.step(action)
        np.testing.assert_array_equal(obs, np.moveaxis(bare_obs, -1, 0))
        assert (reward, terminated) == (bare_reward, bare_terminated)
        if terminated:
            break
    assert check_discrete_env("MinAtar/Breakout-v1").n == 3 and check_discrete_env("MinAtar/Seaquest-v1").n == 6


def test_a_typo_in_a_minatar_id_gets_a_suggestion(clipzoo):
    code, _, err = clipzoo("train", "dqn", "--env-id", "MinAtar/Breakot-v1")
    assert code == 2 and "unknown env id 'MinAtar/Breakot-v1'; did you mean MinAtar/Breakout-v1" in err
    code, _, err = clipzoo("train", "dqn", "--env-id", "Minatar/Breakout-v1")  # outside the namespace
    assert code == 2 and "unknown env id 'Minatar/Breakout-v1'; did you mean MinAtar/Breakout-v1" in err


def test_only_a_minatar_env_imports_the_minatar_package():
    # it imports seaborn and scipy.stats: seconds of start-up no CartPole or Atari run should pay
    probe = (
        "import sys\n"
        "from envs.discrete import check_discrete_env, make_env\n"
        "for env_id in ('CartPole-v1', 'ALE/Pong-v5'):\n"
        "    check_discrete_env(env_id); make_env(env_id, training=True)().reset(seed=0)\n"
        "print('minatar' in sys.modules, 'seaborn' in sys.modules)\n"
        "check_discrete_env('MinAtar/Breakout-v1')\n"
        "print('minatar' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "True"]


def test_minatar_networks_are_the_papers():
    network = QNetwork((4, 10, 10), 3)
    conv, hidden, out = network.trunk[0], network.head[0], network.head[2]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride) == (4, 16, (3, 3), (1, 1))
    assert (hidden.in_features, hidden.out_features, out.out_features) == (16 * 8 * 8, 128, 3)
    assert sum(p.numel() for p in network.parameters()) == (4 * 9 * 16 + 16) + (1024 * 128 + 128) + (128 * 3 + 3)
    # the grid goes in as 0/1 floats (no /255), as the MinAtar paper's network takes it
    grid = np.random.default_rng(0).random((5, 4, 10, 10)) < 0.2
    x = torch.as_tensor(grid, dtype=torch.float32)
    expected = out(torch.relu(hidden(torch.relu(conv(x)).flatten(1))))
    torch.testing.assert_close(network(grid)[0], expected)
    rainbow_net = RainbowNetwork((4, 10, 10), 3, atoms=51, noisy_std=0.1)
    assert rainbow_net.advantage[0].in_features == 1024 and rainbow_net.advantage[0].out_features == 128
    dist = rainbow_net(grid)[0]
    assert dist.shape == (5, 3, 51)
    torch.testing.assert_close(dist.sum(2), torch.ones(5, 3))


@pytest.mark.parametrize("agent", [dqn, rainbow])
def test_tiny_minatar_runs_clip_and_log_diagnostics(tmp_path, agent):
    agent.main([*BREAKOUT, "--wc-kappa", "2", "--run-dir", str(tmp_path)])
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "complete"
    series = scalars(tmp_path)
    for tag in (
        "charts/episodic_return",
        "losses/td_loss",
        "diagnostics/dormant_frac_0.025",
        "diagnostics/srank",
        "diagnostics/weight_norm",
        "wc/clipped_fraction",
        "gradcov/mean_offdiag",
    ):
        assert tag in series, tag
    assert images(tmp_path) == ["gradcov/heatmap"]
    network = QNetwork((4, 10, 10), 3) if agent is dqn else RainbowNetwork((4, 10, 10), 3, atoms=51, noisy_std=0.1)
    assert_saved_weights_within_bounds(tmp_path, network, kappa=2)
    bounds = WeightClipping(network, kappa=2).bounds()
    conv_bound = bounds["trunk.0.weight"]
    assert conv_bound == pytest.approx(2 / np.sqrt(4 * 3 * 3))


def test_every_plug_in_runs_on_the_minatar_network(tmp_path):
    dqn.main(
        [
            *BREAKOUT,
            "--layer-norm",
            "--reg",
            "l2_init",
            "--reg-delta",
            "1.25",
            "--sp-every",
            "40",
            "--reset-last-layer-every",
            "target",
            "--wc-kappa",
            "2",
            "--plasticity-probe-every",
            "100",
            "--plasticity-probe-steps",
            "5",
            "--plasticity-probe-samples",
            "32",
            "--sharpness-every",
            "100",
            "--sharpness-iterations",
            "3",
            "--sharpness-samples",
            "16",
            "--run-dir",
            str(tmp_path / "a"),
        ]
    )
    rainbow.main(
        [
            *BREAKOUT,
            "--optimizer",
            "madam",
            "--learning-rate",
            "0.01",
            "--reg",
            "singular",
            "--run-dir",
            str(tmp_path / "b"),
        ]
    )
    series = scalars(tmp_path / "a")
    assert {"plasticity/plasticity", "sharpness/lambda_max", "diagnostics/srank"} <= set(series)
    assert all(np.isfinite(value) for _, value in series["losses/td_loss"])
    assert all(np.isfinite(value) for _, value in scalars(tmp_path / "b")["losses/td_loss"])


PRESETS = ["dqn_minatar_rr1", "dqn_minatar_rr8", "rainbow_minatar_rr1", "rainbow_minatar_rr8"]


@pytest.mark.parametrize("preset", PRESETS)
def test_minatar_presets_pass_the_checks(preset):
    from agents.qlearning.options import check_args
    from runners.base.config import load_config_file

    args = load_config_file(rainbow.Args if preset.startswith("rainbow") else dqn.Args, preset)
    steps, gradient_steps, target_period = check_args(args)
    assert gradient_steps == args.replay_ratio * steps and target_period == 1000  # gradient steps
    assert args.env_id == "MinAtar/Breakout-v1" and (args.batch_size, args.buffer_size) == (32, 100_000)


@pytest.mark.parametrize("agent", ["dqn", "rainbow"])
def test_minatar_sweep_is_the_preset_at_rr_1_and_8_with_and_without_wc(tmp_path, agent):
    from runners.sweep import load_spec

    sweep = load_spec(REPO / "configs" / "sweeps" / f"minatar_{agent}_rr.yaml", tmp_path)
    preset = yaml.safe_load((REPO / "configs" / f"{agent}_minatar_rr1.yaml").read_text())
    assert {run.env for run in sweep.runs} == {"MinAtar/Breakout-v1", "MinAtar/Seaquest-v1"}
    assert {run.seed for run in sweep.runs} == {1, 2, 3, 4, 5, 6} and len(sweep.runs) == 2 * 4 * 6
    assert {(run.options["replay_ratio"], run.options.get("wc_kappa")) for run in sweep.runs} == {
        (1, None),
        (1, 2.0),
        (8, None),
        (8, 2.0),
    }
    for run in sweep.runs:
        shared = {
            k: v
            for k, v in run.options.items()
            if k not in ("replay_ratio", "wc_kappa", "env_id", "seed", "total_timesteps")
        }
        assert shared == {k: v for k, v in preset.items() if k not in ("replay_ratio", "env_id", "total_timesteps")}
