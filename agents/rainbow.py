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
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gymnasium as gym
import numpy as np
import torch
from tianshou.algorithm import RainbowDQN
from tianshou.algorithm.modelfree.c51 import C51Policy
from tianshou.algorithm.modelfree.reinforce import LossSequenceTrainingStats
from tianshou.utils.net.discrete import NoisyLinear

from agents.plugins.assembly import grown_for_plugins
from agents.plugins.interventions import idle_modules, share_noise
from agents.qlearning.lean_update import (
    LeanUpdateMixin,
    Transitions,
    next_observations,
    nstep_paths,
    nstep_returns,
    read_transitions,
)
from agents.qlearning.networks import RainbowNetwork
from agents.qlearning.options import RainbowArgs as Args
from agents.qlearning.run import AgentSpec
from agents.qlearning.run import main as run_qlearning
from agents.qlearning.streams import OwnExplorationStream, RandomStreams
from agents.qlearning.tianshou_internals import target_sync_counter


class NoisyBehaviourPolicy(OwnExplorationStream, C51Policy):
    """C51 policy whose behaviour (the collector's calls during training) acts with noisy
    weights, resampled for every action batch.

    The collector runs the policy in eval mode, where ``NoisyLinear`` uses its mean
    weights; this samples the noise and switches only the noisy layers to train mode for
    that call. Calls in train mode (the learning update) and outside training steps
    (evaluation) are Tianshou's. The noise comes from the run's noise stream.
    """

    def __init__(self, *args, noise_stream, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.noise_stream = noise_stream

    def forward(self, batch, state=None, model=None):
        noisy_layers = [m for m in self.model.modules() if isinstance(m, NoisyLinear)]
        if model is not None or self.training or not self.is_within_training_step or not noisy_layers:
            return super().forward(batch, state, model)
        modes = [layer.training for layer in noisy_layers]
        sample_noise(self.model, self.noise_stream)
        for layer in noisy_layers:
            layer.train()
        try:
            return super().forward(batch, state, model)
        finally:
            for layer, mode in zip(noisy_layers, modes):
                layer.train(mode)


def sample_noise(model: torch.nn.Module, stream) -> bool:
    """RainbowDQN._sample_noise on the run's noise stream: every noisy layer draws, in module order,
    except those of a plasticity injection that draw none (h_copy, which then takes h_new's, and
    h_new until the injection); whether any layer drew."""
    idle = idle_modules(model)
    layers = [m for m in model.modules() if isinstance(m, NoisyLinear) and id(m) not in idle]
    with stream.active():
        for layer in layers:
            layer.sample()
    share_noise(model)
    return bool(layers)


def target_distribution(algorithm: RainbowDQN, batch: Transitions) -> torch.Tensor:
    """C51's target: the target network's distribution at the n-step bootstrap state ``s_{t+n}``, for
    the online network's greedy action (double-Q), its atoms moved to ``sum_k gamma^k r + gamma^n z``
    and projected back onto the support (Bellemare et al. 2017, Alg. 1)."""
    support, online = algorithm.policy.support, algorithm.policy.model
    with torch.no_grad():
        atoms = nstep_returns(batch, support.expand(len(batch.indices), -1), algorithm.gamma)
        next_online = online(batch.obs_next)[0]
        greedy = (next_online * support).sum(2).argmax(1)
        next_dist = algorithm.model_old(batch.obs_next)[0] if algorithm.use_target_network else next_online
        next_dist = next_dist[torch.arange(len(greedy), device=greedy.device), greedy]
        target_atoms = atoms.clamp(algorithm.policy.v_min, algorithm.policy.v_max)
        return (
            (1 - (target_atoms.unsqueeze(1) - support.view(1, -1, 1)).abs() / algorithm.delta_z).clamp(0, 1)
            * next_dist.unsqueeze(1)
        ).sum(-1)


def cross_entropy(network: torch.nn.Module, obs, actions: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample C51 loss: cross-entropy of the target and the predicted distribution of the taken action."""
    dist = network(obs)[0]
    taken = dist[torch.arange(len(actions), device=dist.device), actions]
    return -(target * torch.log(taken + 1e-8)).sum(1)


class IndependentNoise:
    """Rainbow mixin: the noise of both networks comes from the run's noise stream, and the
    target network draws its own after each sync. ``NoisyLinear``'s noise is a parameter, so
    Tianshou's sync copies the online network's into the target; Fortunato et al. use
    independent noise for the two."""

    noise_stream = None  # set by build()

    def _sample_noise(self, model: torch.nn.Module) -> bool:
        return sample_noise(model, self.noise_stream)

    def _periodically_update_lagged_network_weights(self) -> None:
        syncing = self.use_target_network and target_sync_counter(self) % self.target_update_freq == 0
        super()._periodically_update_lagged_network_weights()
        if syncing:
            self._sample_noise(self.model_old)


class NStepBootstrapRainbowDQN(IndependentNoise, RainbowDQN):
    """Tianshou 2.0.1's Rainbow (the stock path) with the n-step target distribution taken where
    the n-step return bootstraps, ``s_{t+n}``. Stock C51 computes ``returns = sum_k gamma^k r_{t+k}
    + gamma^n z`` but projects the distribution it predicts at ``batch.obs_next = s_{t+1}``; the
    smallest fix is to hand ``_target_dist`` the right observation."""

    def _preprocess_batch(self, batch, buffer, indices):
        batch = super()._preprocess_batch(batch, buffer, indices)
        if self.n_step > 1:
            batch.obs_next = next_observations(buffer, nstep_paths(buffer, indices, self.n_step)[-1])
        return batch


class LeanRainbowDQN(IndependentNoise, LeanUpdateMixin, RainbowDQN):
    """Tianshou's Rainbow (C51 on noisy dueling networks, n-step, prioritized replay) with the lean update."""

    def _lean_step(self, batch: Transitions):
        # as RainbowDQN._update_with_batch: fresh noise, target sync, then C51's loss
        self._sample_noise(self.policy.model)
        if self.use_target_network:
            self._sample_noise(self.model_old)
        self._periodically_update_lagged_network_weights()
        losses = cross_entropy(self.policy.model, batch.obs, batch.act, target_distribution(self, batch))
        loss = (losses * batch.weight).mean()
        self.optim.step(loss)
        return LossSequenceTrainingStats(loss=loss.item()), losses.detach()


def network(args: Args, obs_shape, actions: int) -> RainbowNetwork:
    network = RainbowNetwork(
        obs_shape,
        actions,
        args.num_atoms,
        args.noisy_std,
        dueling=args.dueling,
        noisy=args.noisy,
        layer_norm=args.layer_norm,
    )
    return grown_for_plugins(args, network)


def algorithm(
    args: Args,
    network: RainbowNetwork,
    actions: int,
    optimizer_factory,
    device,
    target_period: int,
    streams: RandomStreams,
) -> RainbowDQN:
    """Tianshou's Rainbow around ``network`` (``agents.qlearning.run.build_agent`` makes the network)."""
    policy = NoisyBehaviourPolicy(
        model=network,
        action_space=gym.spaces.Discrete(actions),
        num_atoms=args.num_atoms,
        v_min=args.v_min,
        v_max=args.v_max,
        eps_training=args.eps_start,
        exploration_stream=streams.exploration,
        noise_stream=streams.noise,
    ).to(device)
    algorithm = (LeanRainbowDQN if args.lean_update else NStepBootstrapRainbowDQN)(
        policy=policy,
        optim=optimizer_factory,
        gamma=args.gamma,
        n_step_return_horizon=args.n_step,
        target_update_freq=target_period,
    )
    algorithm.noise_stream = streams.noise
    return algorithm


def prioritized(args: Args) -> dict | None:
    return dict(alpha=args.alpha, beta=args.beta) if args.prioritized else None


def anneal_beta(args: Args, algorithm, buffer, env_step: int) -> None:
    if args.prioritized:
        fraction = min(1.0, env_step / args.beta_anneal_steps) if args.beta_anneal_steps else 1.0
        buffer.set_beta(args.beta + fraction * (args.beta_final - args.beta))


def td_batch(algorithm: RainbowDQN, buffer, k: int) -> dict:
    """k replay samples with their projected n-step target distributions, computed as the update computes them
    (with the networks' current noise)."""
    device = algorithm.policy.support.device
    batch = read_transitions(buffer, buffer.sample_indices(k), algorithm.n_step, device)
    return {
        "obs": torch.as_tensor(np.asarray(batch.obs), device=device),
        "act": batch.act,
        "target": target_distribution(algorithm, batch),
    }


def per_sample_td_loss(network: RainbowNetwork, batch: dict) -> torch.Tensor:
    return cross_entropy(network, batch["obs"], batch["act"], batch["target"])


def expected_q(algorithm: RainbowDQN, network: RainbowNetwork, obs) -> torch.Tensor:
    return (network(obs)[0] * algorithm.policy.support).sum(2)


SPEC = AgentSpec(
    name="rainbow",
    network=network,
    algorithm=algorithm,
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
    from runners.base.console import run_and_report

    run_and_report(main)
