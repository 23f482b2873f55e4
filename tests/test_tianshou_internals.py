"""The private parts of Tianshou that agents/qlearning/tianshou_internals.py reaches, checked on the real
objects: a Tianshou release that moves, renames or changes one fails here, by name."""

from __future__ import annotations

import importlib

import gymnasium as gym
import numpy as np
import pytest
import torch
from tianshou.data import Batch, Collector, PrioritizedVectorReplayBuffer, ReplayBuffer, VectorReplayBuffer
from tianshou.env import DummyVectorEnv
from tianshou.trainer import OffPolicyTrainerParams
from tianshou.utils.torch_utils import policy_within_training_step

from agents import dqn
from agents.plugins.assembly import agent_optimizer
from agents.qlearning import tianshou_internals as internals
from agents.qlearning.run import build_agent
from agents.qlearning.trainer import ExactBudgetTrainer, PluginOptimizerFactory


def transitions(count: int, envs: int = 1, start: int = 0) -> list[Batch]:
    return [
        Batch(
            obs=np.full((envs, 4), start + t, float),
            act=np.zeros(envs, int),
            rew=np.ones(envs),
            terminated=np.zeros(envs, bool),
            truncated=np.zeros(envs, bool),
            obs_next=np.full((envs, 4), start + t + 1, float),
            info=Batch(),
        )
        for t in range(count)
    ]


def test_a_plain_buffer_s_sampler_storage_and_insertion_point():
    buffer = ReplayBuffer(5)
    assert isinstance(internals.sampler(buffer), np.random.RandomState)
    assert internals.sampler(buffer).get_state()[1].tolist() == np.random.RandomState(42).get_state()[1].tolist()
    for batch in transitions(3):
        buffer.add(batch[0])
    assert internals.insertion_index(buffer) == 3
    assert internals.stored_batch(buffer).obs[:3, 0].tolist() == [0, 1, 2]
    assert internals.stored_indices(buffer).tolist() == list(range(5))
    for batch in transitions(3, start=3):
        buffer.add(batch[0])
    assert internals.insertion_index(buffer) == 1  # full: the oldest slot is next
    assert internals.stores_obs_next(buffer) and not internals.stores_obs_next(ReplayBuffer(5, ignore_obs_next=True))
    internals.set_sampler(buffer, np.random.RandomState(7))
    drawn = buffer.sample_indices(50)
    internals.set_sampler(buffer, np.random.RandomState(7))
    assert np.array_equal(buffer.sample_indices(50), drawn)  # sampling draws from it


def test_a_vector_buffer_s_offsets_and_a_prioritized_one_s_beta_and_weight_norm():
    assert internals.sub_buffer_offsets(VectorReplayBuffer(10, 2)).tolist() == [0, 5]
    buffers = [PrioritizedVectorReplayBuffer(8, 2, alpha=0.6, beta=0.4) for _ in range(2)]
    for buffer in buffers:
        for batch in transitions(4, envs=2):
            buffer.add(batch, buffer_ids=[0, 1])
        buffer.update_weight(np.arange(8), np.linspace(0.1, 2.0, 8))
    assert internals.normalises_weights(buffers[0]) is True
    internals.set_sampling_beta(buffers[1], 1.0)
    indices = np.arange(8)
    first, second = buffers[0].get_weight(indices), buffers[1].get_weight(indices)
    assert np.allclose(second, first ** (1.0 / 0.4))  # w = (p / p_min) ** -beta: the beta set is the one read


def small_dqn():
    args = dqn.Args(learning_rate=1e-3, n_step=1)
    factory = PluginOptimizerFactory(lambda params: agent_optimizer(args, params))
    torch.manual_seed(0)
    algorithm, network = build_agent(dqn.SPEC, args, (4,), 2, factory, torch.device("cpu"), target_period=3)
    return algorithm, network


def test_the_target_sync_counter_counts_updates_and_its_optimizer_is_the_plug_ins_torch_optimizer():
    algorithm, network = small_dqn()
    assert isinstance(internals.torch_optimizer(algorithm.optim), torch.optim.Optimizer)
    assert {id(p) for p in network.parameters()} <= {
        id(p) for group in internals.torch_optimizer(algorithm.optim).param_groups for p in group["params"]
    }
    buffer = VectorReplayBuffer(40, 1)
    for batch in transitions(20):
        buffer.add(batch, buffer_ids=[0])
    assert internals.target_sync_counter(algorithm) == 0
    with policy_within_training_step(algorithm.policy):
        for _ in range(5):
            algorithm.update(buffer=buffer, sample_size=4)
    assert internals.target_sync_counter(algorithm) == 5
    internals.set_target_sync_counter(algorithm, 2)
    target_before = [p.clone() for p in algorithm.model_old.parameters()]
    with policy_within_training_step(algorithm.policy):
        algorithm.update(buffer=buffer, sample_size=4)  # the 3rd update: 2 % 3 != 0, no sync
    assert all(torch.equal(a, b) for a, b in zip(target_before, algorithm.model_old.parameters()))
    with policy_within_training_step(algorithm.policy):
        algorithm.update(buffer=buffer, sample_size=4)  # counter 3: the sync comes first
    assert all(torch.equal(a, b) for a, b in zip(algorithm.model_old.parameters(), target_before)) is False


def test_the_collector_s_pending_step_and_the_trainer_s_counters():
    algorithm, _ = small_dqn()
    envs = DummyVectorEnv([lambda: gym.make("CartPole-v1") for _ in range(2)])
    collector = Collector(algorithm, envs, VectorReplayBuffer(200, 2), exploration_noise=True)
    collector.reset()
    collector.collect(n_step=10, random=True)
    pending = internals.pending_step(collector)
    assert pending["last_obs"].shape == (2, 4) and len(pending["last_info"]) == 2
    saved = {key: np.copy(value) if isinstance(value, np.ndarray) else value for key, value in pending.items()}
    collector.collect(n_step=10, random=True)
    assert not np.array_equal(internals.pending_step(collector)["last_obs"], saved["last_obs"])
    internals.restore_pending_step(collector, saved)
    assert np.array_equal(internals.pending_step(collector)["last_obs"], saved["last_obs"])
    params = OffPolicyTrainerParams(
        training_collector=collector,
        max_epochs=1,
        epoch_num_steps=20,
        collection_step_num_env_steps=10,
        batch_size=4,
        show_progress=False,
        verbose=False,
    )
    trainer = ExactBudgetTrainer(algorithm, params, training_env_steps=20)
    assert internals.trainer_env_step(trainer) == 0 and internals.trainer_logger(trainer) is not None
    trainer.run(reset_collectors=False)
    assert internals.trainer_env_step(trainer) == 20
    assert internals.update_step(trainer) == 2  # update steps: rounds of a collect and its gradient steps


@pytest.mark.parametrize(("owner", "method"), internals.OVERRIDDEN)
def test_every_overridden_private_method_is_tianshou_s(owner, method):
    module, _, name = owner.rpartition(".")
    assert method in vars(getattr(importlib.import_module(module), name)), f"{owner}.{method} is gone"
