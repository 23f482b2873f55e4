"""PPO agent: smoke runs, saved weights within bounds, resume, determinism, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents import ppo_continuous
from agents.plugins.clipping import WeightClipping
from agents.ppo_continuous import Agent, Args, NumpyActor, generalized_advantages, ppo_losses

TINY = (
    "--env-id Hopper-v5 --num-steps 256 --num-minibatches 4 --update-epochs 2 --gradcov-samples 32 --heatmap-every 2"
).split()
CLEANRL_TAGS = (
    "charts/episodic_return charts/episodic_length charts/SPS charts/learning_rate losses/value_loss "
    "losses/policy_loss losses/entropy losses/old_approx_kl losses/approx_kl losses/clipfrac "
    "losses/explained_variance"
).split()
DIAGNOSTIC_TAGS = (
    "diagnostics/approx_kl_mean diagnostics/saturated_frac_90 diagnostics/saturated_frac_95 "
    "diagnostics/saturated_frac_99 diagnostics/saturated_units_frac diagnostics/weight_norm "
    "diagnostics/distance_from_init diagnostics/grad_norm diagnostics/effective_rank wc/clipped_fraction "
    "gradcov/mean_offdiag"
).split()


def events(run_dir: Path) -> EventAccumulator:
    return EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0}).Reload()


def scalar_series(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    accumulator = events(run_dir)
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def test_smoke_run_with_weight_clipping_logs_everything_and_keeps_weights_in_bounds(tmp_path):
    # the default path: compiled loss
    ppo_continuous.main([*TINY, "--total-timesteps", "2048", "--wc-kappa", "1.5", "--run-dir", str(tmp_path)])
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "complete"
    accumulator = events(tmp_path)
    for tag in CLEANRL_TAGS + DIAGNOSTIC_TAGS:
        assert tag in accumulator.Tags()["scalars"], tag
    assert accumulator.Tags()["images"] == ["gradcov/heatmap"]
    assert len(accumulator.Images("gradcov/heatmap")) == 4 + 1  # every 2nd of 8 updates, plus the end of the run
    assert "hyperparameters/text_summary" in accumulator.Tags()["tensors"]
    assert sorted(p.name for p in (tmp_path / "gradcov").glob("*.npz"))[-1] == "step_0000002048.npz"

    saved = torch.load(tmp_path / "model.pt", weights_only=False)
    agent = Agent(11, 3)
    agent.load_state_dict(saved["agent"])
    bounds = WeightClipping(agent, kappa=1.5).bounds()
    assert bounds == pytest.approx(saved["clipping_bounds"])
    assert len(bounds) == 12  # weight and bias of six Linear layers; actor_logstd untouched
    for name, bound in bounds.items():
        assert agent.get_parameter(name).abs().max().item() <= bound + 1e-6, name
    # orthogonal init with gain sqrt(2) starts outside 1.5/sqrt(fan_in): the clamp was active
    assert max(v for _, v in scalar_series(tmp_path)["wc/clipped_fraction"]) > 0


@pytest.mark.parametrize(
    "plugins",
    [
        ["--reg", "singular", "--reg-delta", "1.25", "--optimizer", "madam", "--learning-rate", "0.01"],
        ["--reg", "l2_init", "--reg-delta", "1.25"],
    ],
)
def test_loss_penalties_give_the_same_numbers_compiled_and_eager(tmp_path, plugins):
    # penalties reach the gradients through module, tensor and parameter hooks, which the
    # compiled loss must honour, also after another run in this process compiled it without them
    options = [*TINY, "--total-timesteps", "512", *plugins]
    ppo_continuous.main([*options, "--compile", "--run-dir", str(tmp_path / "compiled")])
    ppo_continuous.main([*options, "--no-compile", "--run-dir", str(tmp_path / "eager")])
    compiled, eager = scalar_series(tmp_path / "compiled"), scalar_series(tmp_path / "eager")
    assert compiled["interventions/regularizer_penalty"][0][1] > 0
    for tag in ("interventions/regularizer_penalty", "losses/value_loss", "diagnostics/weight_norm"):
        assert [v for _, v in compiled[tag]] == pytest.approx([v for _, v in eager[tag]], rel=1e-4), tag


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--env-id", "Hoper-v5"], "unknown env id 'Hoper-v5'; did you mean Hopper-v5"),
        (
            ["--env-id", "BipedalWalker-v3"],
            "BipedalWalker-v3: cannot capture the state of BipedalWalker (gymnasium.envs.box2d.bipedal_walker)",
        ),
        (
            ["--env-id", "CartPole-v1"],
            "CartPole-v1 has a Discrete action space; this agent needs continuous (Box) actions",
        ),
        (["--wc-kappa", "0"], "--wc-kappa must be a finite number > 0, got 0.0"),
        (["--wc-kappa", "-2"], "--wc-kappa must be a finite number > 0, got -2.0"),
        (["--num-steps", "100", "--num-minibatches", "32"], "must split evenly into --num-minibatches 32"),
        (["--total-timesteps", "1000"], "less than one rollout"),
        (["--config", "ppo_hoper"], "unknown config preset 'ppo_hoper'; did you mean ppo_hopper"),
    ],
)
def test_bad_input_is_one_clear_line(clipzoo, arguments, message):
    code, _, err = clipzoo("train", "ppo", *arguments)
    assert code == 2 and message in err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err


def test_unknown_config_key_and_wrong_type_are_refused(tmp_path, clipzoo):
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("env_id: Hopper-v5\nlearning_rat: 0.001\n")
    code, _, err = clipzoo("train", "ppo", "--config", str(bad_key))
    assert code == 2 and "unknown config key 'learning_rat'" in err and "learning_rate" in err
    bad_type = tmp_path / "type.yaml"
    bad_type.write_text("num_steps: lots\n")
    code, _, err = clipzoo("train", "ppo", "--config", str(bad_type))
    assert code == 2 and "config key 'num_steps'" in err


def test_a_run_directory_from_another_config_is_refused_and_left_intact(tmp_path, clipzoo):
    ppo_continuous.main([*TINY, "--total-timesteps", "512", "--no-compile", "--run-dir", str(tmp_path)])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    code, _, err = clipzoo(
        "train", "ppo", *TINY, "--total-timesteps", "512", "--learning-rate", "0.001", "--run-dir", str(tmp_path)
    )
    assert code == 2
    assert "was made with a different config (learning_rate: 0.0003 in the run directory, 0.001 now)" in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_clipzoo_command_dispatches_to_the_agent(clipzoo):
    code, out, _ = clipzoo("train", "ppo", "--help")
    assert code == 0 and "--wc-kappa" in out and "weight clipping bound multiplier" in out
    code, _, err = clipzoo("train", "ppp")
    assert code == 2 and "unknown agent 'ppp'" in err


# ---------------------------------------------------------------- pieces against references
def test_numpy_rollout_actor_matches_the_torch_actor():
    agent = Agent(11, 3)
    with torch.no_grad():
        agent.actor_logstd.fill_(-0.5)
    actor = NumpyActor(agent)
    obs = np.random.default_rng(0).normal(size=(5, 11)).astype(np.float32)
    with torch.no_grad():
        expected = agent.actor_mean(torch.from_numpy(obs)).numpy()
    np.testing.assert_allclose(actor.mean(obs), expected, rtol=1e-5, atol=1e-6)
    samples = np.stack([actor.sample(obs[:1], np.random.default_rng(i)) for i in range(4000)])
    np.testing.assert_allclose(samples.std(0)[0], np.exp(-0.5), rtol=0.05)


def cleanrl_gae(rewards, values, dones, next_value, next_done, gamma, lam):
    """CleanRL's loop, in torch, as written in ppo_continuous_action.py."""
    rewards, values, dones = map(torch.as_tensor, (rewards, values, dones))
    next_value, next_done = torch.as_tensor(next_value).reshape(1, -1), torch.as_tensor(next_done)
    advantages = torch.zeros_like(rewards)
    lastgaelam = 0
    for t in reversed(range(rewards.shape[0])):
        if t == rewards.shape[0] - 1:
            nextnonterminal, nextvalues = 1.0 - next_done, next_value
        else:
            nextnonterminal, nextvalues = 1.0 - dones[t + 1], values[t + 1]
        delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
        advantages[t] = lastgaelam = delta + gamma * lam * nextnonterminal * lastgaelam
    return advantages.numpy()


def test_advantages_match_cleanrls_loop():
    rng = np.random.default_rng(1)
    rewards, values = rng.normal(size=(50, 3)).astype(np.float32), rng.normal(size=(50, 3)).astype(np.float32)
    dones = (rng.random((50, 3)) < 0.1).astype(np.float32)
    next_value, next_done = rng.normal(size=3).astype(np.float32), np.array([0, 1, 0], dtype=np.float32)
    ours = generalized_advantages(rewards, values, dones, next_value, next_done, 0.99, 0.95)
    np.testing.assert_allclose(
        ours, cleanrl_gae(rewards, values, dones, next_value, next_done, 0.99, 0.95), rtol=1e-5, atol=1e-6
    )


def test_per_sample_losses_average_to_cleanrls_minibatch_loss():
    torch.manual_seed(0)
    agent, args = Agent(11, 3), Args(ent_coef=0.01)
    obs, actions = torch.randn(64, 11), torch.randn(64, 3)
    logprobs, advantages, returns, values = torch.randn(64) - 4, torch.randn(64), torch.randn(64), torch.randn(64)
    terms = ppo_losses(agent, args, obs, actions, logprobs, advantages, returns, values)

    mean = agent.actor_mean(obs)
    normal = torch.distributions.Normal(mean, agent.actor_logstd.expand_as(mean).exp())
    newlogprob, entropy = normal.log_prob(actions).sum(1), normal.entropy().sum(1)
    ratio = (newlogprob - logprobs).exp()
    pg_loss = torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 0.8, 1.2)).mean()
    newvalue = agent.critic(obs).view(-1)
    v_clipped = values + torch.clamp(newvalue - values, -0.2, 0.2)
    v_loss = 0.5 * torch.max((newvalue - returns) ** 2, (v_clipped - returns) ** 2).mean()
    cleanrl_loss = pg_loss - 0.01 * entropy.mean() + v_loss * 0.5
    torch.testing.assert_close(terms["total"].mean(), cleanrl_loss)
    torch.testing.assert_close(terms["entropy"], entropy)


@pytest.mark.parametrize("preset", ["ppo_ant", "ppo_halfcheetah", "ppo_hopper", "ppo_humanoid", "ppo_walker2d"])
def test_every_preset_builds_its_environment(preset):
    from envs.continuous import make_vector_env
    from runners.base.config import load_config_file

    args = load_config_file(Args, preset)
    assert args.env_id.endswith("-v5") and args.total_timesteps == 1_000_000
    ppo_continuous.check_args(args)
    envs = make_vector_env(args.env_id, 1, args.gamma)
    obs, _ = envs.reset(seed=0)
    assert obs.shape[0] == 1 and np.all(np.abs(obs) <= 10.0)
    envs.close()
