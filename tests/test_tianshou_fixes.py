"""Each workaround for Tianshou 2.0.1, with a test that fails when the workaround is removed."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from tianshou.data import Batch, VectorReplayBuffer
from tianshou.trainer import OffPolicyTrainer, OffPolicyTrainerParams

from agents.qlearning.options import collection_plan
from agents.qlearning.replay import CheckedReplayBuffer, make_replay_buffer
from agents.qlearning.run import build_agent
from agents.qlearning.trainer import QuietOffPolicyTrainer
from runners.base.errors import UsageError


def transitions(n: int, start: int = 0, obs_shape=(3,)) -> Batch:
    obs = np.arange(start, start + n, dtype=np.float32)[:, None] * np.ones(obs_shape, dtype=np.float32)
    return Batch(
        obs=obs,
        act=np.zeros(n, dtype=np.int64),
        rew=np.ones(n, dtype=np.float32),
        terminated=np.zeros(n, dtype=bool),
        truncated=np.zeros(n, dtype=bool),
        obs_next=obs + 1,
        info=Batch(),
    )


def fill(buffer, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        buffer.add(transitions(1, i), buffer_ids=[0])


# ---------------------------------------------------------------- NaN scan after every collect
@pytest.mark.parametrize(
    ("buffer_class", "scans_everything"), [(VectorReplayBuffer, True), (CheckedReplayBuffer, False)]
)
def test_nan_check_looks_only_at_transitions_added_since_the_last_check(buffer_class, scans_everything):
    buffer = buffer_class(total_size=500, buffer_num=1)
    fill(buffer, 300)
    assert not buffer.hasnull()
    buffer._meta.obs[5] = np.nan  # an old transition, already checked once
    fill(buffer, 10, start=300)
    assert buffer.hasnull() is scans_everything


def test_nan_in_new_transitions_is_still_caught_once():
    buffer = CheckedReplayBuffer(total_size=50, buffer_num=1)
    fill(buffer, 20)
    bad = transitions(1, 20)
    bad.rew[0] = np.nan
    buffer.add(bad, buffer_ids=[0])
    assert buffer.hasnull()
    assert not buffer.hasnull()


def test_frame_stacked_buffer_stores_each_frame_once():
    buffer = make_replay_buffer(1000, 2, frame_stack=4)
    frame = (84, 84)
    for i in range(50):
        for env in range(2):
            buffer.add(
                Batch(
                    obs=np.full((1, 4, *frame), i, np.uint8),
                    act=[0],
                    rew=[0.0],
                    terminated=[False],
                    truncated=[False],
                    obs_next=np.full((1, 4, *frame), i + 1, np.uint8),
                    info=Batch(),
                ),
                buffer_ids=[env],
            )
    assert buffer._meta.obs.shape[1:] == frame and buffer._meta.obs.dtype == np.uint8
    assert "obs_next" not in buffer._meta.keys()
    bytes_per_transition = buffer._meta.obs.nbytes / buffer.maxsize
    assert bytes_per_transition == 84 * 84  # 1M transitions: 7.06 GB of frames, not 28 GB of stacks
    sample, _ = buffer.sample(8)
    assert sample.obs.shape == (8, 4, *frame)  # stacks rebuilt when sampling


# ---------------------------------------------------------------- progress bar shown when disabled
def tiny_trainer(trainer_class):
    from agents import dqn
    from agents.qlearning.trainer import PluginOptimizerFactory

    factory = PluginOptimizerFactory(lambda params: torch.optim.Adam(params, lr=1e-3))
    algorithm, _ = build_agent(dqn.SPEC, dqn.Args(), (4,), 2, factory, torch.device("cpu"), target_period=10)
    from tianshou.data import Collector
    from tianshou.env import DummyVectorEnv

    envs = DummyVectorEnv([lambda: gym.make("CartPole-v1")])
    collector = Collector(algorithm, envs, VectorReplayBuffer(100, 1))
    params = OffPolicyTrainerParams(
        training_collector=collector,
        max_epochs=1,
        epoch_num_steps=10,
        collection_step_num_env_steps=10,
        show_progress=False,
        verbose=False,
    )
    return trainer_class(algorithm, params)


@pytest.mark.parametrize(("trainer_class", "prints"), [(OffPolicyTrainer, True), (QuietOffPolicyTrainer, False)])
def test_progress_bar_stays_off_when_disabled(trainer_class, prints, capfd):
    trainer = tiny_trainer(trainer_class)
    # what the trainer does for a collect that triggers 20 or more gradient steps
    for _ in trainer._pbar(range(40), desc="Offpolicy gradient update", position=0, leave=False, disable=False):
        pass
    assert ("Offpolicy gradient update" in capfd.readouterr().err) is prints


# ---------------------------------------------------------------- gradient-step rounding
def test_stock_rounding_misses_the_requested_ratio_and_our_plan_does_not():
    assert round(0.25 * 10) / 10 == 0.2  # what Tianshou does with 10-step collects
    steps, gradient_steps = collection_plan(0.25, num_envs=10)
    assert (steps, gradient_steps) == (20, 5) and gradient_steps / steps == 0.25
    assert collection_plan(1, 10) == (10, 10)
    assert collection_plan(8, 1) == (1, 8)
    assert collection_plan(4, 3) == (3, 12)
    assert collection_plan(0.1, 10) == (10, 1)


@pytest.mark.parametrize("ratio", [0.3333, 0.0, -1.0])
def test_unrealisable_replay_ratios_are_refused(ratio):
    with pytest.raises(UsageError, match="replay-ratio"):
        collection_plan(ratio, 10)


# ---------------------------------------------------------------- Atari wrapper and numpy >= 2.3
def test_our_atari_stack_works_where_tianshous_wrapper_crashes():
    from tianshou.env.atari.atari_wrapper import WarpFrame

    from envs.discrete import make_env

    env = make_env("ALE/Pong-v5", training=True)()
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    env.close()
    if np.lib.NumpyVersion(np.__version__) >= "2.3.0":
        with pytest.raises(TypeError):
            WarpFrame(gym.make("ALE/Pong-v5", frameskip=1))
