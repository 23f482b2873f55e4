"""Weight norms, distance from initialisation and gradient norm (docs/metrics.md)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def trained_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def snapshot_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of theta_0, for ``distance_from_init``."""
    return {name: p.detach().clone() for name, p in trained_parameters(model).items()}


def _layer_of(parameter_name: str) -> str:
    return parameter_name.rpartition(".")[0] or parameter_name


def weight_norms(model: nn.Module) -> dict[str, float]:
    """Global L2 norm of all trained parameters and one per layer (weight and bias together)."""
    squares: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, p in trained_parameters(model).items():
            layer = _layer_of(name)
            squares[layer] = squares.get(layer, 0.0) + p.double().square().sum()
    metrics = {f"layers/{layer}/weight_norm": float(sq.sqrt()) for layer, sq in squares.items()}
    metrics["diagnostics/weight_norm"] = float(sum(squares.values()) ** 0.5)
    return metrics


def distance_from_init(model: nn.Module, initial: dict[str, torch.Tensor]) -> float:
    """``||theta - theta_0||_2`` over the parameters in the snapshot, trained or since frozen
    (plasticity injection's old head)."""
    params = dict(model.named_parameters())
    missing = sorted(set(initial) - set(params))
    if missing:
        raise ValueError(f"the init snapshot has parameters the model lacks: {missing[:5]}")
    with torch.no_grad():
        total = sum(
            (params[name].double() - theta0.to(params[name].device).double()).square().sum()
            for name, theta0 in initial.items()
        )
    return float(total) ** 0.5


def gradient_norm(parameters: Iterable[torch.Tensor]) -> float:
    """Global L2 norm of the gradients present (measure it before gradient clipping)."""
    grads = [p.grad.detach() for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.double()) for g in grads])))


class GradientNormMeter:
    """``diagnostics/grad_norm`` of a training loop that does not own its backward (Tianshou's
    update): asked with ``measure_next``, it takes the norm of the gradients present in the next
    optimizer step's pre-step hook (the raw norm: Tianshou clips no gradient there), and ``take``
    hands it over once."""

    def __init__(self) -> None:
        self.due = False
        self.last: float | None = None

    def attach(self, optimizer: torch.optim.Optimizer) -> GradientNormMeter:
        optimizer.register_step_pre_hook(self._before_step)
        return self

    def measure_next(self) -> None:
        self.due = True

    def take(self) -> float | None:
        value, self.last = self.last, None
        return value

    def _before_step(self, optimizer, args, kwargs) -> None:
        if self.due:
            self.last = gradient_norm(p for group in optimizer.param_groups for p in group["params"])
            self.due = False
