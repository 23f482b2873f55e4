"""Unit health from forward hooks: saturated tanh units, dormant and dead ReLU units (docs/metrics.md).

A unit is a feature of a 2-D activation ``(batch, units)`` or a channel (dim 1) of a
convolutional activation ``(batch, channels, *spatial)``; for a channel, every
(sample, position) pair counts as one input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager

import torch
from torch import nn

from agents.diagnostics.rank import effective_rank, srank

SATURATION_THRESHOLDS = (0.9, 0.95, 0.99)
DORMANCY_TAUS = (0.0, 0.025, 0.1)
# A tanh unit counts as saturated as a unit when |h| > 0.99 on >= 99% of probe inputs.
UNIT_SATURATION_THRESHOLD = 0.99
UNIT_SATURATION_SHARE = 0.99

TANH_TYPES: tuple[type[nn.Module], ...] = (nn.Tanh,)
RELU_TYPES: tuple[type[nn.Module], ...] = (nn.ReLU,)


def _percent(value: float) -> str:
    return f"{round(value * 100):d}"


def dormancy_tag(tau: float) -> str:
    return f"dormant_frac_{tau:g}"


def units_by_inputs(activation: torch.Tensor) -> torch.Tensor:
    """Reshape an activation to ``(inputs, units)``: units are dim 1, the rest are inputs."""
    if activation.ndim < 2:
        raise ValueError(f"activation must have a batch and a unit dimension, got shape {tuple(activation.shape)}")
    return activation.detach().movedim(1, -1).reshape(-1, activation.shape[1]).float()


@contextmanager
def record_activations(model: nn.Module, types: tuple[type[nn.Module], ...], feature_layers: Iterable[str] = ()):
    """Record the outputs of ``types`` modules (and the inputs of ``feature_layers``) during a forward.

    Yields ``(activations, features)``: dicts from module name to tensor. A module that
    runs more than once gets one entry per call (``name``, ``name#2``, ...).
    """
    activations: dict[str, torch.Tensor] = {}
    features: dict[str, torch.Tensor] = {}
    feature_layers = set(feature_layers)

    def store(table: dict, name: str, tensor: torch.Tensor) -> None:
        key, call = name, 1
        while key in table:
            call += 1
            key = f"{name}#{call}"
        table[key] = tensor.detach()

    handles = []
    for name, module in model.named_modules():
        if isinstance(module, types):
            handles.append(module.register_forward_hook(lambda m, i, out, name=name: store(activations, name, out)))
        if name in feature_layers:
            handles.append(
                module.register_forward_hook(lambda m, i, out, name=name: store(features, name, i[0].flatten(1)))
            )
    try:
        yield activations, features
    finally:
        for handle in handles:
            handle.remove()


def tanh_saturation(activations: dict[str, torch.Tensor]) -> dict[str, float]:
    """Saturation fractions per layer (``layers/<name>/...``) and over all layers (``diagnostics/...``)."""
    metrics: dict[str, float] = {}
    entries = units = 0
    saturated_entries = {t: 0.0 for t in SATURATION_THRESHOLDS}
    saturated_units = 0.0
    for name, activation in activations.items():
        h = units_by_inputs(activation).abs()
        for t in SATURATION_THRESHOLDS:
            count = float((h > t).sum())
            saturated_entries[t] += count
            metrics[f"layers/{name}/saturated_frac_{_percent(t)}"] = count / h.numel()
        share = (h > UNIT_SATURATION_THRESHOLD).float().mean(0)
        persistent = float((share >= UNIT_SATURATION_SHARE).sum())
        metrics[f"layers/{name}/saturated_units_frac"] = persistent / h.shape[1]
        saturated_units += persistent
        entries += h.numel()
        units += h.shape[1]
    if entries:
        for t in SATURATION_THRESHOLDS:
            metrics[f"diagnostics/saturated_frac_{_percent(t)}"] = saturated_entries[t] / entries
        metrics["diagnostics/saturated_units_frac"] = saturated_units / units
    return metrics


def redo_scores(activation: torch.Tensor) -> torch.Tensor:
    """Sokar et al.'s score ``E|h_i| / (mean_k E|h_k| + 1e-9)`` for every unit of one layer."""
    mean_abs = units_by_inputs(activation).abs().mean(0)
    return mean_abs / (mean_abs.mean() + 1e-9)


def relu_dormancy(activations: dict[str, torch.Tensor]) -> dict[str, float]:
    """Dormant fractions at each tau and dead fraction, per layer and over all units."""
    metrics: dict[str, float] = {}
    units = 0
    dormant = {tau: 0.0 for tau in DORMANCY_TAUS}
    dead = 0.0
    for name, activation in activations.items():
        score = redo_scores(activation)
        for tau in DORMANCY_TAUS:
            is_dormant = torch.isclose(score, torch.zeros_like(score)) if tau == 0 else score <= tau
            count = float(is_dormant.sum())
            dormant[tau] += count
            metrics[f"layers/{name}/{dormancy_tag(tau)}"] = count / score.numel()
        layer_dead = float((units_by_inputs(activation) == 0).all(0).sum())
        metrics[f"layers/{name}/dead_units_frac"] = layer_dead / score.numel()
        dead += layer_dead
        units += score.numel()
    if units:
        for tau in DORMANCY_TAUS:
            metrics[f"diagnostics/{dormancy_tag(tau)}"] = dormant[tau] / units
        metrics["diagnostics/dead_units_frac"] = dead / units
    return metrics


def representation_metrics(
    model: nn.Module, run_forward: Callable[[], object], feature_layers: Iterable[str] = ()
) -> dict[str, float]:
    """Run ``run_forward()`` (one forward pass on the probe batch) and measure its units.

    Tanh saturation and ReLU dormancy from the activation modules, plus effective rank
    and srank of the penultimate features, i.e. the inputs of ``feature_layers``
    (per layer, and ``diagnostics/effective_rank`` / ``srank`` averaged over heads).
    """
    with torch.no_grad(), record_activations(model, TANH_TYPES + RELU_TYPES, feature_layers) as (activations, features):
        run_forward()
    tanh = {n: a for n, a in activations.items() if isinstance(model.get_submodule(n.split("#")[0]), TANH_TYPES)}
    relu = {n: a for n, a in activations.items() if n not in tanh}
    metrics = {**tanh_saturation(tanh), **relu_dormancy(relu)}
    for name, phi in features.items():
        metrics[f"layers/{name}/effective_rank"] = effective_rank(phi)
        metrics[f"layers/{name}/srank"] = float(srank(phi))
    if features:
        for key in ("effective_rank", "srank"):
            values = [metrics[f"layers/{name}/{key}"] for name in features]
            metrics[f"diagnostics/{key}"] = sum(values) / len(values)
    return metrics
