"""The plasticity probe of Lyle et al. 2023, section 2.2 (docs/metrics.md).

From a copy of the current network, fit the targets ``g(x) = a + sin(1e5 f(x; omega_0))``
on inputs from the agent's own data (omega_0 a fresh initialisation, ``a`` the network's
mean prediction per output) for a fixed number of steps with the agent's optimizer:

    plasticity = b - final loss,   b = mean over outputs of each output's target variance
                                        over the samples (the loss of predicting each output's mean)

Higher is more plastic; the loss of plasticity over training is ``P(theta_t) - P(theta_0)``.
The agent's network, optimizer and random streams are left exactly as they were.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from runners.base.rundir import isolated_rng

Predict = Callable[[nn.Module, Any], torch.Tensor]  # (network, inputs) -> (batch, outputs) predictions


def probe_targets(network: nn.Module, target_network: nn.Module, predict: Predict, inputs) -> torch.Tensor:
    """``a + sin(1e5 f(x; omega_0))`` with ``a`` the network's mean prediction of each output."""
    with torch.no_grad():
        offset = predict(network, inputs).mean(dim=0, keepdim=True)
        return offset + torch.sin(1e5 * predict(target_network, inputs))


def plasticity_probe(
    network: nn.Module,
    fresh_network: Callable[[], nn.Module],
    predict: Predict,
    inputs,
    make_optimizer: Callable[[Any], torch.optim.Optimizer],
    *,
    steps: int,
    targets: int = 1,
    seed: int = 0,
) -> dict[str, float]:
    """Mean over ``targets`` random target functions of the probe's final loss, baseline and plasticity.

    ``fresh_network()`` builds a newly initialised network of the same architecture (used
    for omega_0 and, with the current weights loaded, for the learner); ``make_optimizer``
    builds the agent's optimizer class and settings over the learner's parameters.
    """
    if steps < 0 or targets < 1:
        raise ValueError(f"the probe needs steps >= 0 and targets >= 1, got {steps} and {targets}")
    device = next(network.parameters()).device
    final_losses, baselines = [], []
    with isolated_rng(seed):
        for _ in range(targets):
            target = probe_targets(network, fresh_network().to(device), predict, inputs)
            learner = fresh_network().to(device)
            learner.load_state_dict(network.state_dict())
            optimizer = make_optimizer(learner.parameters())
            for _ in range(steps):
                optimizer.zero_grad(set_to_none=True)
                loss = (predict(learner, inputs) - target).square().mean()
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                final_losses.append((predict(learner, inputs) - target).square().mean().item())
            baselines.append(target.var(dim=0, unbiased=False).mean().item())
    baseline, final = float(np.mean(baselines)), float(np.mean(final_losses))
    return {"plasticity/final_loss": final, "plasticity/baseline": baseline, "plasticity/plasticity": baseline - final}
