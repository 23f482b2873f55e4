"""Rainbow (Hessel et al. 2018: distributional C51, dueling, noisy nets, prioritized replay,
n-step) on Tianshou, with weight clipping and plasticity diagnostics, at replay ratio 1 or
high replay ratios (Elsayed et al. 2024, Sec. 4.4).

    clipzoo train rainbow --env-id ALE/Pong-v5 --replay-ratio 8 --wc-kappa 2
    python agents/rainbow.py --env-id ALE/Breakout-v5

Weight clipping clips the online network's weights and noisy-layer means; the noisy
sigmas only with --wc-include-noisy-sigma.

Exploration is by the noisy layers alone, as in the paper: the behaviour policy acts with
noisy weights, a fresh noise sample for every action batch (one collect step of all
envs), and epsilon is 0 by default (--eps-start/--eps-end still add epsilon-greedy on
top, e.g. with --no-noisy). Tianshou's collector puts the policy in eval mode, where its
noisy layers use their means; ``NoisyBehaviourPolicy`` samples the noise for acting only.
The learning update is Tianshou's: noise resampled for the online and target networks
before each gradient step; evaluation outside training acts with the means.
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
from tianshou.algorithm import RainbowDQN
from tianshou.algorithm.modelfree.c51 import C51Policy
from tianshou.utils.net.discrete import NoisyLinear

from agents.lean_update import LeanRainbowDQN, next_observations, nstep_paths
from agents.networks import RainbowNetwork
from agents.qlearning import AgentSpec, QLearningArgs
from agents.qlearning import main as run_qlearning


@dataclass
class Args(QLearningArgs):
    """Rainbow on Tianshou with optional weight clipping; defaults follow Tianshou's Atari Rainbow example,
    except exploration: noisy layers with epsilon 0, as in the Rainbow paper."""

    learning_rate: float = 0.0000625
    """learning rate of the optimizer (Rainbow paper, Adam)"""
    adam_eps: float = 1.5e-4
    """Adam epsilon (Rainbow paper)"""
    num_atoms: int = 51
    """atoms of the return distribution"""
    v_min: float = -10.0
    """smallest atom"""
    v_max: float = 10.0
    """largest atom"""
    noisy_std: float = 0.1
    """initial sigma scale of the noisy layers"""
    dueling: bool = True
    """separate value and advantage streams"""
    noisy: bool = True
    """noisy linear layers in the head"""
    prioritized: bool = True
    """prioritized replay"""
    alpha: float = 0.5
    """prioritization exponent"""
    beta: float = 0.4
    """initial importance-sampling exponent"""
    beta_final: float = 1.0
    """importance-sampling exponent after the anneal"""
    beta_anneal_steps: int = 5_000_000
    """env steps over which beta anneals linearly"""
    eps_start: float = 0.0
    """epsilon-greedy on top of the noisy layers at the start of training (Rainbow paper: 0, exploration by noise)"""
    eps_end: float = 0.0
    """epsilon-greedy on top of the noisy layers after the decay (Rainbow paper: 0)"""
    wc_include_noisy_sigma: bool = False
    """also clip the noisy layers' sigma parameters (bound from their layer's fan_in)"""


class NoisyBehaviourPolicy(C51Policy):
    """C51 policy whose behaviour (the collector's calls during training) acts with noisy
    weights, resampled for every action batch.

    The collector runs the policy in eval mode, where ``NoisyLinear`` uses its mean
    weights; this samples the noise and switches only the noisy layers to train mode for
    that call. Calls in train mode (the learning update) and outside training steps
    (evaluation) are Tianshou's.
    """

    def forward(self, batch, state=None, model=None):
        noisy_layers = [m for m in self.model.modules() if isinstance(m, NoisyLinear)]
        if model is not None or self.training or not self.is_within_training_step or not noisy_layers:
            return super().forward(batch, state, model)
        modes = [layer.training for layer in noisy_layers]
        for layer in noisy_layers:
            layer.sample()
            layer.train()
        try:
            return super().forward(batch, state, model)
        finally:
            for layer, mode in zip(noisy_layers, modes):
                layer.train(mode)


class NStepBootstrapRainbowDQN(RainbowDQN):
    """Tianshou 2.0.1's Rainbow with the n-step target distribution taken where the n-step
    return bootstraps, ``s_{t+n}``. Stock C51 computes ``returns = sum_k gamma^k r_{t+k} +
    gamma^n z`` but projects the distribution it predicts at ``batch.obs_next = s_{t+1}``;
    the smallest fix is to hand ``_target_dist`` the right observation."""

    def _preprocess_batch(self, batch, buffer, indices):
        batch = super()._preprocess_batch(batch, buffer, indices)
        if self.n_step > 1:
            batch.obs_next = next_observations(buffer, nstep_paths(buffer, indices, self.n_step)[-1])
        return batch


def network(args: Args, obs_shape, actions: int) -> RainbowNetwork:
    return RainbowNetwork(obs_shape, actions, args.num_atoms, args.noisy_std, dueling=args.dueling, noisy=args.noisy,
                          layer_norm=args.layer_norm)


def build(args: Args, obs_shape, actions: int, optimizer_factory, device, target_period: int):
    network = SPEC.network(args, obs_shape, actions).to(device)
    policy = NoisyBehaviourPolicy(model=network, action_space=gym.spaces.Discrete(actions), num_atoms=args.num_atoms,
                       v_min=args.v_min, v_max=args.v_max, eps_training=args.eps_start).to(device)
    algorithm = (LeanRainbowDQN if args.lean_update else NStepBootstrapRainbowDQN)(
        policy=policy, optim=optimizer_factory, gamma=args.gamma, n_step_return_horizon=args.n_step, target_update_freq=target_period)
    return algorithm, network


def prioritized(args: Args) -> dict | None:
    return dict(alpha=args.alpha, beta=args.beta) if args.prioritized else None


def anneal_beta(args: Args, algorithm, buffer, env_step: int) -> None:
    if args.prioritized:
        fraction = min(1.0, env_step / args.beta_anneal_steps) if args.beta_anneal_steps else 1.0
        buffer.set_beta(args.beta + fraction * (args.beta_final - args.beta))


def td_batch(algorithm: RainbowDQN, buffer, k: int) -> dict:
    """k replay samples with their projected n-step target distributions, as the update computes them."""
    batch, indices = buffer.sample(k)
    with torch.no_grad():
        batch = algorithm._preprocess_batch(batch, buffer, indices)
        target = algorithm._target_dist(batch)
    device = target.device
    return {"obs": torch.as_tensor(np.asarray(batch.obs), device=device),
            "act": torch.as_tensor(batch.act, device=device).long(), "target": target}


def per_sample_td_loss(network: RainbowNetwork, batch: dict) -> torch.Tensor:
    """Cross-entropy between the projected target and the predicted distribution of the taken action."""
    dist = network(batch["obs"])[0]
    taken = dist[torch.arange(dist.shape[0], device=dist.device), batch["act"]]
    return -(batch["target"] * torch.log(taken + 1e-8)).sum(1)


def expected_q(algorithm: RainbowDQN, network: RainbowNetwork, obs) -> torch.Tensor:
    return (network(obs)[0] * algorithm.policy.support).sum(2)


SPEC = AgentSpec(
    name="rainbow",
    network=network,
    build=build,
    td_batch=td_batch,
    per_sample_td_loss=per_sample_td_loss,
    q_values=expected_q,
    prioritized=prioritized,
    on_training_step=anneal_beta,
    clipping_include=lambda args: ["*sigma_W", "*sigma_bias"] if args.wc_include_noisy_sigma else [],
)


def main(argv: list[str] | None = None) -> Path:
    return run_qlearning(SPEC, Args, argv, prog="clipzoo train rainbow")


if __name__ == "__main__":
    from runners.cli import run_and_report

    run_and_report(main)
