"""DQN (Mnih et al. 2015) with double-Q and n-step options on Tianshou, with weight clipping
and plasticity diagnostics, at replay ratio 1 or high replay ratios (Elsayed et al. 2024, Sec. 4.4).

    clipzoo train dqn --env-id ALE/Pong-v5 --replay-ratio 8 --wc-kappa 2
    clipzoo train dqn --config dqn_cartpole
    python agents/dqn.py --env-id CartPole-v1 --total-timesteps 100000

Images get the Nature CNN, vector observations a 2 x 64 ReLU MLP (agents/networks.py).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gymnasium as gym
import numpy as np
import torch
from tianshou.algorithm import DQN
from tianshou.algorithm.modelfree.dqn import DiscreteQLearningPolicy

from agents.lean_update import LeanDQN
from agents.networks import QNetwork
from agents.qlearning import AgentSpec, QLearningArgs
from agents.qlearning import main as run_qlearning


@dataclass
class Args(QLearningArgs):
    """DQN on Tianshou with optional weight clipping; defaults follow Tianshou's Atari DQN example."""

    double_q: bool = True
    """use double Q-learning targets (online argmax, target evaluation)"""
    huber_delta: float | None = None
    """Huber loss threshold for the TD error (unset: squared error, as Tianshou's example)"""


def network(args: Args, obs_shape, actions: int) -> QNetwork:
    return QNetwork(obs_shape, actions, layer_norm=args.layer_norm)


def build(args: Args, obs_shape, actions: int, optimizer_factory, device, target_period: int):
    network = SPEC.network(args, obs_shape, actions).to(device)
    policy = DiscreteQLearningPolicy(model=network, action_space=gym.spaces.Discrete(actions), eps_training=args.eps_start)
    algorithm = (LeanDQN if args.lean_update else DQN)(policy=policy, optim=optimizer_factory, gamma=args.gamma, n_step_return_horizon=args.n_step,
                                                       target_update_freq=target_period, is_double=args.double_q, huber_loss_delta=args.huber_delta)
    return algorithm, network


def td_batch(algorithm: DQN, buffer, k: int) -> dict:
    """k replay samples with their n-step double-Q targets, as the update computes them."""
    batch, indices = buffer.sample(k)
    with torch.no_grad():
        batch = algorithm._preprocess_batch(batch, buffer, indices)
    network = algorithm.policy.model
    device = next(network.parameters()).device
    return {
        "obs": torch.as_tensor(np.asarray(batch.obs), device=device),
        "act": torch.as_tensor(batch.act, device=device).long(),
        "returns": torch.as_tensor(batch.returns, device=device, dtype=torch.float32).flatten(),
        "huber_delta": algorithm.huber_loss_delta,
    }


def per_sample_td_loss(network: QNetwork, batch: dict) -> torch.Tensor:
    q = network(batch["obs"])[0].gather(1, batch["act"][:, None]).squeeze(1)
    if batch["huber_delta"] is not None:
        return torch.nn.functional.huber_loss(q, batch["returns"], delta=batch["huber_delta"], reduction="none")
    return (batch["returns"] - q) ** 2


SPEC = AgentSpec(
    name="dqn",
    network=network,
    build=build,
    td_batch=td_batch,
    per_sample_td_loss=per_sample_td_loss,
    q_values=lambda algorithm, network, obs: network(obs)[0],
)


def main(argv: list[str] | None = None) -> Path:
    return run_qlearning(SPEC, Args, argv, prog="clipzoo train dqn")


if __name__ == "__main__":
    from runners.cli import run_and_report

    run_and_report(main)
