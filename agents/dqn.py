"""DQN (Mnih et al. 2015) with double-Q and n-step options on Tianshou, with weight clipping
and plasticity diagnostics, at replay ratio 1 or high replay ratios (Elsayed et al. 2024, Sec. 4.4).

    clipzoo train dqn --env-id ALE/Pong-v5 --replay-ratio 8 --wc-kappa 2
    clipzoo train dqn --config dqn_cartpole
    python agents/dqn.py --env-id CartPole-v1 --total-timesteps 100000

Images get the Nature CNN, vector observations a 2 x 64 ReLU MLP (agents/qlearning/networks.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gymnasium as gym
import numpy as np
import torch
from tianshou.algorithm import DQN
from tianshou.algorithm.modelfree.dqn import DiscreteQLearningPolicy, SimpleLossTrainingStats

from agents.plugins.assembly import grown_for_plugins
from agents.qlearning.lean_update import (
    LeanUpdateMixin,
    Transitions,
    evaluation_module,
    nstep_returns,
    read_transitions,
)
from agents.qlearning.networks import QNetwork
from agents.qlearning.options import DQNArgs as Args
from agents.qlearning.run import AgentSpec
from agents.qlearning.run import main as run_qlearning
from agents.qlearning.streams import OwnExplorationStream, RandomStreams


def q_of_actions(network: torch.nn.Module, obs, actions: torch.Tensor) -> torch.Tensor:
    """Q(s, a) of the actions taken."""
    return network(obs)[0].gather(1, actions[:, None]).squeeze(1)


def bootstrap_returns(algorithm: DQN, batch: Transitions) -> torch.Tensor:
    """The n-step (double-)Q targets of a batch: ``sum_k gamma^k r + gamma^m max_a' Q'(s_{t+m}, a')``,
    the greedy action chosen by the online network when double-Q, evaluated by the target network."""
    online = algorithm.policy.model
    with torch.no_grad():
        target_network = evaluation_module(algorithm.model_old) if algorithm.use_target_network else online
        next_q = target_network(batch.obs_next)[0]
        if algorithm.is_double:
            greedy = (online(batch.obs_next)[0] if algorithm.use_target_network else next_q).argmax(1)
            bootstrap = next_q.gather(1, greedy[:, None])
        else:
            bootstrap = next_q.max(1, keepdim=True)[0]
        return nstep_returns(batch, bootstrap, algorithm.gamma).squeeze(1)


def td_loss(q: torch.Tensor, returns: torch.Tensor, huber_delta: float | None) -> torch.Tensor:
    """Per-sample TD loss: squared error, or Huber with threshold ``huber_delta``."""
    if huber_delta is not None:
        return torch.nn.functional.huber_loss(q, returns, delta=huber_delta, reduction="none")
    return (returns - q) ** 2


class LeanDQN(LeanUpdateMixin, DQN):
    """Tianshou's DQN (double-Q, n-step, Huber or squared loss) with the lean update (agents/qlearning/lean_update.py)."""

    def _lean_step(self, batch: Transitions):
        returns = bootstrap_returns(self, batch)
        # as DQN._update_with_batch, after the n-step targets (Tianshou computes them in preprocessing)
        self._periodically_update_lagged_network_weights()
        q = q_of_actions(self.policy.model, batch.obs, batch.act)
        losses = td_loss(q, returns, self.huber_loss_delta)
        # Tianshou weights the squared error by prioritized replay's importance weights, not the Huber loss
        loss = losses.mean() if self.huber_loss_delta is not None else (losses * batch.weight).mean()
        self.optim.step(loss)
        return SimpleLossTrainingStats(loss=loss.item()), (returns - q).detach()


def network(args: Args, obs_shape, actions: int) -> QNetwork:
    return grown_for_plugins(args, QNetwork(obs_shape, actions, layer_norm=args.layer_norm))


def algorithm(
    args: Args, network: QNetwork, actions: int, optimizer_factory, device, target_period: int, streams: RandomStreams
) -> DQN:
    """Tianshou's DQN around ``network`` (``agents.qlearning.run.build_agent`` makes the network)."""
    policy = EpsilonGreedyPolicy(
        model=network,
        action_space=gym.spaces.Discrete(actions),
        eps_training=args.eps_start,
        exploration_stream=streams.exploration,
    )
    return (LeanDQN if args.lean_update else DQN)(
        policy=policy,
        optim=optimizer_factory,
        gamma=args.gamma,
        n_step_return_horizon=args.n_step,
        target_update_freq=target_period,
        is_double=args.double_q,
        huber_loss_delta=args.huber_delta,
    )


class EpsilonGreedyPolicy(OwnExplorationStream, DiscreteQLearningPolicy):
    """Tianshou's Q-learning policy, its epsilon-greedy draws on the run's exploration stream."""


def td_batch(algorithm: DQN, buffer, k: int) -> dict:
    """k replay samples with their n-step targets, computed as the update computes them."""
    network = algorithm.policy.model
    batch = read_transitions(buffer, buffer.sample_indices(k), algorithm.n_step, next(network.parameters()).device)
    return {
        "obs": torch.as_tensor(np.asarray(batch.obs), device=batch.act.device),
        "act": batch.act,
        "returns": bootstrap_returns(algorithm, batch),
        "huber_delta": algorithm.huber_loss_delta,
    }


def per_sample_td_loss(network: QNetwork, batch: dict) -> torch.Tensor:
    return td_loss(q_of_actions(network, batch["obs"], batch["act"]), batch["returns"], batch["huber_delta"])


SPEC = AgentSpec(
    name="dqn",
    network=network,
    algorithm=algorithm,
    td_batch=td_batch,
    per_sample_td_loss=per_sample_td_loss,
    q_values=lambda algorithm, network, obs: network(obs)[0],
)


def main(argv: list[str] | None = None) -> Path:
    return run_qlearning(SPEC, Args, argv, prog="clipzoo train dqn")


if __name__ == "__main__":
    from runners.base.console import run_and_report

    run_and_report(main)
