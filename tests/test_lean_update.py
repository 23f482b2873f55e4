"""The lean update (agents/qlearning/lean_update.py) against Tianshou's stock update: same batches, same
losses, parameters and priorities after N gradient steps."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from tianshou.data import Batch
from tianshou.utils.torch_utils import policy_within_training_step

from agents import dqn, rainbow
from agents.dqn import LeanDQN
from agents.plugins.assembly import agent_optimizer
from agents.qlearning.lean_update import nstep_returns, read_transitions
from agents.qlearning.replay import make_replay_buffer
from agents.qlearning.run import build_agent
from agents.qlearning.trainer import PluginOptimizerFactory
from agents.rainbow import LeanRainbowDQN

NUM_ENVS = 3


def filled_buffer(obs_shape, frame_stack: int = 1, prioritized: dict | None = None, steps: int = 120, n_step: int = 1):
    """Random transitions from 3 envs with terminations, truncations and unfinished episodes."""
    rng = np.random.default_rng(0)
    buffer = make_replay_buffer(NUM_ENVS * steps, NUM_ENVS, frame_stack, prioritized, n_step=n_step)
    stacked = (frame_stack, *obs_shape[1:]) if frame_stack > 1 else obs_shape
    for _ in range(steps):
        obs = rng.random((NUM_ENVS, *stacked)) < 0.3
        obs_next = rng.random((NUM_ENVS, *stacked)) < 0.3
        terminated = rng.random(NUM_ENVS) < 0.08
        truncated = ~terminated & (rng.random(NUM_ENVS) < 0.04)
        buffer.add(
            Batch(
                obs=obs,
                act=rng.integers(0, 3, NUM_ENVS),
                rew=rng.normal(size=NUM_ENVS),
                terminated=terminated,
                truncated=truncated,
                obs_next=obs_next,
                info=Batch(),
            ),
            buffer_ids=np.arange(NUM_ENVS),
        )
    return buffer


def build(agent, lean: bool, obs_shape, **options):
    args = agent.Args(lean_update=lean, learning_rate=1e-3, **options)
    factory = PluginOptimizerFactory(lambda params: agent_optimizer(args, params, fused=lean))
    torch.manual_seed(0)
    algorithm, _ = build_agent(agent.SPEC, args, obs_shape, 3, factory, torch.device("cpu"), target_period=4)
    assert isinstance(algorithm, LeanDQN | LeanRainbowDQN) == lean
    return algorithm


def train(algorithm, buffer, updates: int, batch_size: int = 16):
    np.random.seed(1)  # prioritized replay samples from numpy's global stream
    torch.manual_seed(1)  # noisy layers
    with policy_within_training_step(algorithm.policy):
        return [algorithm.update(buffer=buffer, sample_size=batch_size).loss for _ in range(updates)]


CASES = {
    "dqn_double_1step": (dqn, dict(double_q=True, n_step=1), (4,), 1, None),
    "dqn_huber_3step_minatar": (dqn, dict(double_q=False, n_step=3, huber_delta=1.0), (4, 10, 10), 1, None),
    "dqn_double_3step_prioritized": (dqn, dict(double_q=True, n_step=3), (4, 10, 10), 1, dict(alpha=0.5, beta=0.4)),
    "dqn_frame_stack_3step": (dqn, dict(double_q=True, n_step=3), (4, 10, 10), 4, None),
    "rainbow_prioritized_3step": (
        rainbow,
        dict(n_step=3, v_min=-5.0, v_max=5.0),
        (4, 10, 10),
        1,
        dict(alpha=0.5, beta=0.4),
    ),
    "rainbow_uniform_2step_no_target": (rainbow, dict(n_step=2, prioritized=False), (4,), 1, None),
}


@pytest.mark.parametrize("case", CASES)
def test_lean_update_gives_the_stock_numbers(case):
    agent, options, obs_shape, frame_stack, prioritized = CASES[case]
    buffer = filled_buffer(obs_shape, frame_stack, prioritized, n_step=options["n_step"])
    results = {}
    for lean in (False, True):
        algorithm = build(agent, lean, obs_shape, **options)
        if case.endswith("no_target"):
            algorithm.target_update_freq, algorithm.model_old = 0, None
        own_buffer = copy.deepcopy(buffer)
        losses = train(algorithm, own_buffer, updates=30)
        results[lean] = losses, algorithm.policy.model.state_dict(), own_buffer
    (stock_losses, stock_params, stock_buffer), (lean_losses, lean_params, lean_buffer) = results[False], results[True]
    np.testing.assert_allclose(lean_losses, stock_losses, rtol=1e-4, atol=1e-6)
    for name, value in stock_params.items():
        torch.testing.assert_close(lean_params[name], value, rtol=1e-4, atol=1e-5, msg=name)
    if prioritized:
        np.testing.assert_allclose(lean_buffer.weight._value, stock_buffer.weight._value, rtol=1e-4, atol=1e-5)
    assert max(stock_losses) > 0 and len(set(np.round(stock_losses, 6))) > 20  # the updates did something


def test_nstep_returns_match_a_direct_walk_over_the_buffer():
    """Reference: follow each path step by step, stop at an episode end or the newest transition."""
    buffer = filled_buffer((4,), steps=60)
    indices = buffer.sample_indices(64)
    gamma, n_step = 0.9, 3
    batch = read_transitions(buffer, indices, n_step, torch.device("cpu"))
    bootstrap = torch.randn(64, 1)
    returns = nstep_returns(batch, bootstrap, gamma).squeeze(1).numpy()
    newest = set(buffer.unfinished_index())
    for row, start in enumerate(indices):
        expected, index = 0.0, start
        for k in range(n_step):
            expected += gamma**k * buffer.rew[index]
            if buffer.done[index] or index in newest or k == n_step - 1:
                break
            index = buffer.next(np.array([index]))[0]
        if not buffer.terminated[index]:
            expected += gamma ** (k + 1) * bootstrap[row, 0].item()
        assert returns[row] == pytest.approx(expected, rel=1e-5, abs=1e-5), (row, start)


def test_the_new_data_nan_check_agrees_with_tianshous_hasnull():
    from agents.qlearning.replay import _any_null

    rng = np.random.default_rng(0)
    clean = Batch(
        obs=rng.normal(size=(10, 3)).astype(np.float32),
        act=np.arange(10),
        done=np.zeros(10, bool),
        rew=rng.normal(size=10),
        info=Batch(tag=np.array(["a"] * 10, dtype=object)),
    )
    cases = [("obs", (4, 1), np.nan), ("rew", 7, np.nan), ("info", 2, None)]
    for key, position, bad_value in cases:
        batch = copy.deepcopy(clean)
        target = batch.info.tag if key == "info" else batch[key]
        target[position] = bad_value
        row = position[0] if isinstance(position, tuple) else position
        for indices in (np.array([row, 0]), np.array([1, 3]) if row not in (1, 3) else np.array([0, 5])):
            assert _any_null(batch, indices) == batch[indices].hasnull() == (row in indices), (key, indices)


def test_rainbow_projects_the_target_distribution_of_the_state_where_the_n_step_return_bootstraps():
    """Tianshou 2.0.1's C51 takes the target distribution at s_{t+1} whatever n is; both of our
    Rainbow paths take it at s_{t+n} (or where the episode ended first)."""
    buffer = filled_buffer((4,), n_step=3)
    indices = buffer.sample_indices(64)
    expected = []
    for index in indices:  # walk each path by hand, one transition at a time
        last = int(index)
        for _ in range(2):
            if buffer.done[last] or last in buffer.unfinished_index():
                break
            last = int(buffer.next(last))
        expected.append(buffer[last].obs_next)
    expected = np.stack(expected)
    stock = build(rainbow, False, (4,), n_step=3, prioritized=False)
    batch = stock._preprocess_batch(buffer[indices], buffer, indices)
    np.testing.assert_array_equal(np.asarray(batch.obs_next), expected)
    lean = read_transitions(buffer, indices, 3, torch.device("cpu"))
    np.testing.assert_array_equal(lean.obs_next, expected)
    assert not np.array_equal(np.asarray(buffer[indices].obs_next), expected), "the paths are long enough to tell"
