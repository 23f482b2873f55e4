"""Defects that biased what DQN, Rainbow and the probes measure, each against a slow obvious reference."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import pytest
import torch
from tianshou.algorithm.algorithm_base import Algorithm
from tianshou.data import Batch, Collector, VectorReplayBuffer
from tianshou.env import DummyVectorEnv
from tianshou.utils.torch_utils import policy_within_training_step, torch_train_mode
from torch import nn

from agents import dqn, ppo_continuous, rainbow
from agents.diagnostics.plasticity import plasticity_probe
from agents.qlearning.replay import make_replay_buffer, seed_replay_buffer
from agents.qlearning.run import build_agent
from agents.qlearning.trainer import PluginOptimizerFactory
from envs.discrete import make_env

CARTPOLE = (
    "--env-id CartPole-v1 --num-envs 2 --batch-size 16 --buffer-size 1000 --learning-starts 100 "
    "--learning-rate 0.001 --n-step 3 --target-update-period 50 --eps-decay-steps 300 --log-every 100 "
    "--gradcov-samples 16 --probe-samples 32 --checkpoint-every 10000 --torch-threads 1"
).split()


# ---------------------------------------------------------------- 1. PER beta
def test_annealed_beta_reaches_the_importance_weights_of_the_samples():
    buffer = make_replay_buffer(64, 2, frame_stack=1, prioritized=dict(alpha=0.5, beta=0.4))
    for step in range(20):
        obs = np.full((2, 3), step, np.float32)
        buffer.add(
            Batch(
                obs=obs,
                act=[0, 0],
                rew=[0.0, 0.0],
                terminated=[False, False],
                truncated=[False, False],
                obs_next=obs + 1,
                info=Batch(),
            ),
            buffer_ids=[0, 1],
        )
    stored = buffer.sample_indices(0)
    td_errors = np.linspace(0.1, 3.0, len(stored))
    buffer.update_weight(stored, td_errors)
    args = rainbow.Args(beta=0.4, beta_final=1.0, beta_anneal_steps=1000)
    rainbow.anneal_beta(args, None, buffer, env_step=1000)  # the end of the anneal: beta 1

    np.random.seed(0)
    batch, indices = buffer.sample(256)
    priority = dict(zip(stored.tolist(), td_errors))
    by_hand = np.array([(priority[i] ** args.alpha) ** -args.beta_final for i in indices])  # (p_i^alpha)^-beta
    assert batch.weight == pytest.approx(by_hand / by_hand.max(), rel=1e-5)  # normalised by the batch's largest


# ---------------------------------------------------------------- 2. Rainbow acts with noise
def test_rainbow_behaviour_policy_acts_with_fresh_noise_and_no_epsilon():
    assert rainbow.Args().eps_start == rainbow.Args().eps_end == 0.0
    torch.manual_seed(0)
    args = rainbow.Args(noisy_std=5.0, num_atoms=11, eps_start=0.0, eps_end=0.0)
    algorithm, _ = build_agent(
        rainbow.SPEC,
        args,
        (4,),
        2,
        PluginOptimizerFactory(lambda p: torch.optim.Adam(p)),
        torch.device("cpu"),
        target_period=10,
    )
    envs = DummyVectorEnv([lambda: gym.make("CartPole-v1")])
    collector = Collector(algorithm, envs, VectorReplayBuffer(100, 1), exploration_noise=True)

    def first_action() -> tuple[int, np.ndarray]:
        collector.reset(gym_reset_kwargs={"seed": 0})
        collector.collect(n_step=1)
        newest = collector.buffer[collector.buffer.last_index[0]]
        return int(newest.act), newest.obs

    with policy_within_training_step(algorithm.policy):
        collects = [first_action() for _ in range(12)]
    assert all(np.array_equal(obs, collects[0][1]) for _, obs in collects)  # the same state every time
    assert len({action for action, _ in collects}) == 2  # yet the noise changes the greedy action

    obs = Batch(obs=collects[0][1][None], info=Batch())
    with torch_train_mode(algorithm.policy, enabled=False):  # evaluation outside training: the mean weights
        assert len({int(algorithm.policy(obs).act[0]) for _ in range(12)}) == 1


# ---------------------------------------------------------------- 3. probe baseline per output
def test_probe_without_fitting_scores_zero_whatever_the_output_offsets():
    def network() -> nn.Module:
        return nn.Linear(3, 2)

    current = network()
    with torch.no_grad():
        current.weight.zero_()
        current.bias.copy_(torch.tensor([0.0, 5.0]))  # e.g. a critic with a large bias next to a small output
    inputs = torch.randn(256, 3, generator=torch.Generator().manual_seed(0))
    result = plasticity_probe(
        current, network, lambda net, x: net(x), inputs, lambda p: torch.optim.Adam(p), steps=0, targets=3, seed=1
    )
    # each output's target is its constant prediction plus sin(...): predicting its mean costs its variance
    assert result["plasticity/plasticity"] == pytest.approx(0.0, abs=0.05)
    assert result["plasticity/final_loss"] == pytest.approx(result["plasticity/baseline"], abs=0.05)


# ---------------------------------------------------------------- 4. diagnostics leave learning alone
def final_weights(path) -> dict[str, torch.Tensor]:
    saved = torch.load(path / "model.pt", weights_only=False)
    return saved.get("network") or saved["agent"]


@pytest.mark.parametrize("agent", [dqn, rainbow])
def test_diagnostics_do_not_change_what_q_learning_learns(tmp_path, agent):
    common = [*CARTPOLE, "--total-timesteps", "600"]
    agent.main([*common, "--diagnostics-every", "0", "--heatmap-every", "0", "--run-dir", str(tmp_path / "off")])
    agent.main(
        [
            *common,
            "--diagnostics-every",
            "150",
            "--heatmap-every",
            "150",
            "--plasticity-probe-every",
            "300",
            "--plasticity-probe-steps",
            "2",
            "--plasticity-probe-samples",
            "32",
            "--run-dir",
            str(tmp_path / "on"),
        ]
    )
    off, on = final_weights(tmp_path / "off"), final_weights(tmp_path / "on")
    for name in off:
        assert torch.equal(off[name], on[name]), name


def test_diagnostics_do_not_change_what_ppo_learns(tmp_path):
    common = [
        "--env-id",
        "Hopper-v5",
        "--num-steps",
        "64",
        "--num-minibatches",
        "2",
        "--update-epochs",
        "1",
        "--gradcov-samples",
        "16",
        "--total-timesteps",
        "256",
        "--no-compile",
        "--torch-threads",
        "1",
    ]
    ppo_continuous.main(
        [*common, "--diagnostics-every", "0", "--heatmap-every", "0", "--run-dir", str(tmp_path / "off")]
    )
    ppo_continuous.main(
        [*common, "--diagnostics-every", "1", "--heatmap-every", "1", "--run-dir", str(tmp_path / "on")]
    )
    off, on = final_weights(tmp_path / "off"), final_weights(tmp_path / "on")
    for name in off:
        assert torch.equal(off[name], on[name]), name


# ---------------------------------------------------------------- 5. Atari episode length in agent steps
def test_atari_episode_length_counts_agent_steps_not_frames():
    env = make_env("ALE/Breakout-v5", training=True)()  # episodic life: a game spans several resets
    tap = env
    env.reset(seed=0)
    env.action_space.seed(0)
    agent_steps = 0
    while not tap.finished:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        agent_steps += 1
        if (terminated or truncated) and not tap.finished:
            env.reset()
    _, length, frames = tap.finished[0]
    env.close()
    assert length == agent_steps
    assert frames >= 4 * agent_steps  # 4 frames per agent step, plus reset no-ops and fire presses


# ---------------------------------------------------------------- 6. bootstrap states of frame-once storage
@dataclass
class Episode:
    next_obs: list[np.ndarray] = field(default_factory=list)  # what the env returned after each step
    terminated: list[bool] = field(default_factory=list)
    over: bool = False


@pytest.mark.parametrize("prioritized", [False, True])
@pytest.mark.parametrize("n_step", [1, 3])
def test_learner_bootstraps_from_the_observation_the_env_produced(prioritized, n_step):
    """Four envs feed frame stacks into frame-once storage (which wraps around); every sampled
    index's obs and n-step bootstrap obs_next, as Tianshou's target computation reads them,
    must be the env's own; a transition whose bootstrap state is not stored yet must not be sampled."""
    envs, stack, rng = 4, 4, np.random.default_rng(0)
    np.random.seed(0)
    buffer = make_replay_buffer(4 * 40, envs, stack, dict(alpha=0.6, beta=0.4) if prioritized else None, n_step=n_step)
    frame_counter = iter(range(1, 10**6))

    def new_frame() -> np.ndarray:
        return np.full((2,), next(frame_counter), np.float32)

    stacks = [np.stack([new_frame()] * stack) for _ in range(envs)]  # a reset repeats its first frame
    episodes = [Episode() for _ in range(envs)]
    where: dict[int, tuple[Episode, int, np.ndarray]] = {}  # buffer index -> (episode, step in it, obs)
    checked = 0
    for step in range(150):
        obs = np.stack(stacks)
        obs_next = np.stack([np.concatenate([s[1:], new_frame()[None]]) for s in stacks])
        ends = rng.random(envs)
        terminated, truncated = ends < 0.04, (ends >= 0.04) & (ends < 0.08)
        written = buffer.add(
            Batch(
                obs=obs,
                act=np.zeros(envs, int),
                rew=np.zeros(envs),
                terminated=terminated,
                truncated=truncated,
                obs_next=obs_next,
                info=Batch(),
            ),
            buffer_ids=list(range(envs)),
        )[0]
        for env, index in enumerate(written):
            episode = episodes[env]
            where[int(index)] = (episode, len(episode.next_obs), obs[env])
            episode.next_obs.append(obs_next[env])
            episode.terminated.append(bool(terminated[env]))
            if terminated[env] or truncated[env]:
                episode.over = True
                episodes[env] = Episode()
                stacks[env] = np.stack([new_frame()] * stack)
            else:
                stacks[env] = obs_next[env]
        if step < 20 or step % 7:
            continue
        seen = {}

        def record_bootstrap_obs(buf, bootstrap_indices):
            seen["obs_next"] = buf[bootstrap_indices].obs_next
            return torch.zeros(len(bootstrap_indices), 1)

        batch, indices = buffer.sample(400)
        Algorithm.compute_nstep_return(batch, buffer, indices, record_bootstrap_obs, gamma=0.99, n_step=n_step)
        for position, index in enumerate(indices):
            episode, t, true_obs = where[int(index)]
            assert np.array_equal(batch.obs[position], true_obs)
            last = len(episode.next_obs) - 1 if episode.over else None
            bootstrap = min(t + n_step - 1, last) if last is not None else t + n_step - 1
            assert bootstrap < len(episode.next_obs), f"index {index} sampled before its bootstrap state was stored"
            if not episode.terminated[bootstrap]:  # a terminal transition does not bootstrap
                assert np.array_equal(seen["obs_next"][position], episode.next_obs[bootstrap]), f"index {index}"
                checked += 1
    assert checked > 1000


# ---------------------------------------------------------------- 7. the step budget
def test_run_takes_exactly_the_requested_env_steps(tmp_path):
    # warm-up 100, then 950 env steps: nine 100-step log intervals and one of 50
    dqn.main(
        [
            *CARTPOLE,
            "--total-timesteps",
            "1050",
            "--diagnostics-every",
            "0",
            "--heatmap-every",
            "0",
            "--run-dir",
            str(tmp_path),
        ]
    )
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["global_step"] == 1050
    assert status["replay_ratio"] == 1.0  # 950 gradient steps over the 950 training env steps


# ---------------------------------------------------------------- target period
def test_target_period_is_gradient_steps_whatever_the_replay_ratio():
    from agents.qlearning.options import check_args

    args = dqn.Args(env_id="CartPole-v1", replay_ratio=4, target_update_period=7, total_timesteps=100_320)
    assert check_args(args)[2] == 7


# ---------------------------------------------------------------- 8. every seed its own replay stream
def filled_buffer(seed: int, prioritized: bool):
    buffer = make_replay_buffer(
        400, 2, frame_stack=1, prioritized=dict(alpha=0.6, beta=0.4) if prioritized else None, seed=seed
    )
    for step in range(150):
        obs = np.full((2, 3), step, np.float32)
        buffer.add(
            Batch(
                obs=obs,
                act=[0, 1],
                rew=[0.0, 1.0],
                terminated=[False, False],
                truncated=[False, False],
                obs_next=obs + 1,
                info=Batch(),
            ),
            buffer_ids=[0, 1],
        )
    if prioritized:
        stored = buffer.sample_indices(0)
        buffer.update_weight(stored, np.linspace(0.1, 3.0, len(stored)))
    return buffer


@pytest.mark.parametrize("prioritized", [False, True])
def test_seeds_draw_their_own_minibatches_and_a_seed_always_the_same(prioritized):
    def draws(seed: int, global_noise: bool) -> list[np.ndarray]:
        buffer, out = filled_buffer(seed, prioritized), []
        for _ in range(200):
            if global_noise:  # another consumer of numpy's global generator must not shift replay
                np.random.rand(3)
            out.append(buffer.sample_indices(32))
        return out

    seed_1, seed_2 = draws(1, False), draws(2, False)
    assert sum(np.array_equal(a, b) for a, b in zip(seed_1, seed_2)) == 0  # before: 200 of 200 (uniform)
    again = draws(1, True)
    assert all(np.array_equal(a, b) for a, b in zip(seed_1, again))


def test_every_stream_differs_between_seeds_and_repeats_for_a_seed():
    from agents.qlearning.streams import RandomStreams
    from runners.base.rng import stream_seed

    def draws(seed: int) -> dict[str, tuple]:
        streams, out = RandomStreams(seed), {}
        for name in RandomStreams.NAMES:
            np.random.seed(0), torch.manual_seed(0)  # the global state must not matter
            with getattr(streams, name).active():
                out[name] = (tuple(np.random.rand(4)), tuple(torch.rand(4).tolist()))
        for name in ("envs/0", "envs/1", "interventions", "diagnostics"):
            out[name] = (stream_seed(seed, name),)
        return out

    one, two = draws(1), draws(2)
    assert one == draws(1)
    assert all(one[name] != two[name] for name in one)
    assert len({value for name in one for value in one[name]}) == sum(len(v) for v in one.values())  # no two alike
    assert stream_seed(1, "envs/1") != stream_seed(2, "envs/0")  # before: both were seed 2


def test_exploration_and_network_init_ignore_the_global_generators():
    def build_and_act(global_seed: int):
        np.random.seed(global_seed), torch.manual_seed(global_seed)
        algorithm, network = build_agent(
            dqn.SPEC,
            dqn.Args(seed=3, eps_start=0.5),
            (4,),
            2,
            PluginOptimizerFactory(lambda p: torch.optim.Adam(p)),
            torch.device("cpu"),
            10,
        )
        obs = Batch(obs=np.zeros((64, 4), np.float32), info=Batch())
        with policy_within_training_step(algorithm.policy):
            act = algorithm.policy.add_exploration_noise(np.zeros(64, int), obs)
        return [p.detach().clone() for p in network.parameters()], act

    (weights_a, act_a), (weights_b, act_b) = build_and_act(0), build_and_act(1)
    assert all(torch.equal(a, b) for a, b in zip(weights_a, weights_b))
    assert np.array_equal(act_a, act_b) and 0 < act_a.sum() < 64


# ---------------------------------------------------------------- 9. Rainbow's diagnostics on the update's target
def test_rainbow_diagnostic_targets_are_the_updates_on_both_paths():
    """The gradient covariance's targets: the distribution at s_{t+n} (before, the lean path's
    diagnostics took Tianshou's at s_{t+1}); the same on the stock and the lean path, and equal
    to stock Rainbow's own ``_target_dist`` once its batch bootstraps at s_{t+n}."""
    args = rainbow.Args(num_atoms=11, n_step=3, prioritized=False)
    lean = build_rainbow(args, lean=True)
    stock = build_rainbow(args, lean=False)
    stock.load_state_dict(lean.state_dict())
    buffer = filled_cartpole_buffer()

    seed_replay_buffer(buffer, 5)
    lean_batch = rainbow.td_batch(lean, buffer, 64)
    seed_replay_buffer(buffer, 5)
    stock_batch = rainbow.td_batch(stock, buffer, 64)
    assert torch.equal(lean_batch["target"], stock_batch["target"])

    seed_replay_buffer(buffer, 5)
    indices = buffer.sample_indices(64)
    with torch.no_grad():
        reference = stock._target_dist(stock._preprocess_batch(buffer[indices], buffer, indices))
    assert torch.allclose(lean_batch["target"], reference, atol=1e-6)
    seed_replay_buffer(buffer, 5)
    at_next_state = buffer[buffer.sample_indices(64)]
    with (
        torch.no_grad()
    ):  # what the lean path's diagnostics computed before: Tianshou's batch, bootstrapping at s_{t+1}
        stale = rainbow.RainbowDQN._preprocess_batch(stock, at_next_state, buffer, indices)
        assert not torch.allclose(lean_batch["target"], stock._target_dist(stale), atol=1e-3)


def build_rainbow(args, lean: bool):
    args.lean_update = lean
    algorithm, _ = build_agent(
        rainbow.SPEC,
        args,
        (4,),
        2,
        PluginOptimizerFactory(lambda p: torch.optim.Adam(p)),
        torch.device("cpu"),
        target_period=10,
    )
    return algorithm


def filled_cartpole_buffer():
    envs = DummyVectorEnv([lambda: gym.make("CartPole-v1") for _ in range(2)])
    envs.seed([0, 1])
    buffer = make_replay_buffer(500, 2, frame_stack=1, n_step=3, seed=0)
    collector = Collector(build_rainbow(rainbow.Args(num_atoms=11), lean=True), envs, buffer, exploration_noise=True)
    collector.reset()
    collector.collect(n_step=300, random=True)
    return buffer


# ---------------------------------------------------------------- 10. target noise is its own
def test_after_a_sync_the_target_networks_noise_is_not_the_online_networks():
    algorithm = build_rainbow(rainbow.Args(num_atoms=11, n_step=1, prioritized=False), lean=True)
    buffer = filled_cartpole_buffer()
    noise = lambda module: [p.detach().clone() for n, p in module.named_parameters() if n.endswith(("eps_p", "eps_q"))]  # noqa: E731
    with policy_within_training_step(algorithm.policy):
        algorithm.update(buffer, 16)  # update 0 syncs the target network
    online, target = noise(algorithm.policy.model), noise(algorithm.model_old)
    assert online and not any(torch.equal(a, b) for a, b in zip(online, target))


# ---------------------------------------------------------------- 11. the warm-up is not the agent's
def test_random_warmup_games_are_not_logged_as_training_episodes(tmp_path):
    # 600 random steps on one CartPole: about 30 games end in the warm-up
    dqn.main(
        [
            *CARTPOLE,
            "--num-envs",
            "1",
            "--learning-starts",
            "600",
            "--buffer-size",
            "2000",
            "--total-timesteps",
            "800",
            "--diagnostics-every",
            "0",
            "--heatmap-every",
            "0",
            "--run-dir",
            str(tmp_path),
        ]
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0}).Reload()
    steps = [event.step for event in events.Scalars("charts/episodic_return")]
    assert steps and max(np.unique(steps, return_counts=True)[1]) == 1  # one env: at most one game ends per step
    assert min(steps) > 600


# ---------------------------------------------------------------- 12. checkpoint interval from step 0
def test_checkpoints_fall_at_multiples_of_the_interval_counted_from_zero(tmp_path, monkeypatch):
    from runners.base.rundir import RunDirectory

    saved = []
    original = RunDirectory.save_checkpoint
    monkeypatch.setattr(
        RunDirectory, "save_checkpoint", lambda self, state: (saved.append(state["global_step"]), original(self, state))
    )
    dqn.main(
        [
            *CARTPOLE,
            "--learning-starts",
            "400",
            "--buffer-size",
            "2000",
            "--checkpoint-every",
            "800",
            "--log-every",
            "200",
            "--total-timesteps",
            "2000",
            "--diagnostics-every",
            "0",
            "--heatmap-every",
            "0",
            "--run-dir",
            str(tmp_path),
        ]
    )
    assert saved == [800, 1600, 2000]  # before: 1200 and 2000 (counted from the end of the warm-up)
