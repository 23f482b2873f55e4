"""Every diagnostic against a slow, obvious reference written here (docs/metrics.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import NatureCNN, TanhActorCritic
from torch import nn

from agents.diagnostics import (
    approx_kl,
    clip_fraction,
    distance_from_init,
    effective_rank,
    gradient_norm,
    redo_scores,
    relu_dormancy,
    representation_metrics,
    snapshot_parameters,
    srank,
    tanh_saturation,
    weight_norms,
)


# ---------------------------------------------------------------- PPO statistics
def test_approx_kl_pair_and_clip_fraction_match_elementwise_loops():
    logratio = torch.randn(257) * 0.3
    old_ref = sum(-x for x in logratio.tolist()) / 257
    new_ref = sum((math.exp(x) - 1) - x for x in logratio.tolist()) / 257
    clip_ref = sum(abs(math.exp(x) - 1) > 0.2 for x in logratio.tolist()) / 257
    old, new = approx_kl(logratio)
    assert old.item() == pytest.approx(old_ref, rel=1e-5)
    assert new.item() == pytest.approx(new_ref, rel=1e-5)
    assert clip_fraction(logratio.exp(), 0.2).item() == pytest.approx(clip_ref)


def test_approx_kl_is_zero_for_an_unchanged_policy():
    old, new = approx_kl(torch.zeros(10))
    assert old.item() == 0 and new.item() == 0


# ---------------------------------------------------------------- unit health
def reference_unit_entries(activation: torch.Tensor) -> list[list[float]]:
    """For every unit (dim 1), the list of its values over all samples and positions."""
    units = [[] for _ in range(activation.shape[1])]
    for sample in activation:
        for unit, values in enumerate(sample):
            units[unit].extend(values.reshape(-1).tolist())
    return units


def test_tanh_saturation_matches_a_loop_over_units_and_samples():
    layers = {"a": torch.tanh(torch.randn(50, 7) * 3), "b": torch.tanh(torch.randn(20, 5) * 0.5)}
    layers["a"][:, 2] = 0.999  # one unit saturated on every input
    metrics = tanh_saturation(layers)
    total = {t: 0 for t in (90, 95, 99)}
    entries = persistent = units = 0
    for name, activation in layers.items():
        per_unit = reference_unit_entries(activation)
        for t in (90, 95, 99):
            count = sum(abs(v) > t / 100 for unit in per_unit for v in unit)
            total[t] += count
            assert metrics[f"layers/{name}/saturated_frac_{t}"] == pytest.approx(count / activation.numel())
        layer_persistent = sum(sum(abs(v) > 0.99 for v in unit) / len(unit) >= 0.99 for unit in per_unit)
        assert metrics[f"layers/{name}/saturated_units_frac"] == pytest.approx(layer_persistent / len(per_unit))
        persistent += layer_persistent
        entries += activation.numel()
        units += len(per_unit)
    for t in (90, 95, 99):
        assert metrics[f"diagnostics/saturated_frac_{t}"] == pytest.approx(total[t] / entries)
    assert metrics["diagnostics/saturated_units_frac"] == pytest.approx(persistent / units)
    assert persistent >= 1


def reference_redo(activation: torch.Tensor) -> list[float]:
    per_unit = reference_unit_entries(activation)
    mean_abs = [sum(abs(v) for v in unit) / len(unit) for unit in per_unit]
    layer_mean = sum(mean_abs) / len(mean_abs)
    return [m / (layer_mean + 1e-9) for m in mean_abs]


@pytest.mark.parametrize("shape", [(40, 12), (6, 5, 3, 4)], ids=["linear", "conv-per-channel"])
def test_redo_scores_and_dormancy_match_the_reference(shape):
    activation = torch.relu(torch.randn(shape))
    activation[:, 0] = 0.0  # dead
    activation[:, 1] *= 0.001  # dormant at tau 0.025 but alive
    activation[0, 2] = 0.0
    activation[:, 2] *= 0.05
    scores = reference_redo(activation)
    assert redo_scores(activation).tolist() == pytest.approx(scores, rel=1e-5, abs=1e-9)
    metrics = relu_dormancy({"layer": activation})
    units = len(scores)
    assert metrics["diagnostics/dormant_frac_0"] == pytest.approx(sum(abs(s) <= 1e-8 for s in scores) / units)
    assert metrics["diagnostics/dormant_frac_0.025"] == pytest.approx(sum(s <= 0.025 for s in scores) / units)
    assert metrics["diagnostics/dormant_frac_0.1"] == pytest.approx(sum(s <= 0.1 for s in scores) / units)
    dead = sum(all(v == 0 for v in unit) for unit in reference_unit_entries(activation))
    assert dead == 1
    assert metrics["diagnostics/dead_units_frac"] == pytest.approx(dead / units)
    assert metrics["layers/layer/dead_units_frac"] == pytest.approx(dead / units)


def test_representation_metrics_hooks_every_activation_module_and_the_feature_layers():
    model = TanhActorCritic()
    obs = torch.randn(128, 11) * 5
    metrics = representation_metrics(model, lambda: (model.actor(obs), model.critic(obs)), ["actor.4", "critic.4"])
    with torch.no_grad():
        actor_hidden = model.actor[:4](obs)
        first = torch.tanh(model.actor[0](obs))
    assert metrics["layers/actor.1/saturated_frac_90"] == pytest.approx((first.abs() > 0.9).float().mean().item())
    assert metrics["layers/actor.4/effective_rank"] == pytest.approx(effective_rank(actor_hidden))
    assert {name.split("/")[1] for name in metrics if name.startswith("layers/") and "saturated" in name} == {
        "actor.1",
        "actor.3",
        "critic.1",
        "critic.3",
    }
    assert not any("dormant" in name for name in metrics)  # no ReLU in this network
    cnn = NatureCNN()
    frames = torch.rand(8, 4, 84, 84)
    cnn_metrics = representation_metrics(cnn, lambda: cnn(frames), ["head.2"])
    assert "layers/trunk.1/dormant_frac_0.1" in cnn_metrics and "layers/head.1/dead_units_frac" in cnn_metrics
    assert "diagnostics/effective_rank" in cnn_metrics


def test_a_module_called_twice_is_recorded_per_call():
    shared = nn.Tanh()
    model = nn.ModuleDict({"act": shared})
    metrics = representation_metrics(model, lambda: (shared(torch.full((4, 3), 5.0)), shared(torch.zeros(4, 3))))
    assert metrics["layers/act/saturated_frac_99"] == 1.0
    assert metrics["layers/act#2/saturated_frac_99"] == 0.0
    assert metrics["diagnostics/saturated_frac_99"] == 0.5


# ---------------------------------------------------------------- weights and gradients
def test_weight_norms_and_distance_from_init_match_sums_of_squares():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    initial = snapshot_parameters(model)
    with torch.no_grad():
        model[0].weight.add_(0.5)
        model[2].bias.sub_(1.0)
    metrics = weight_norms(model)
    layer0 = sum(v * v for v in model[0].weight.flatten().tolist() + model[0].bias.tolist())
    layer2 = sum(v * v for v in model[2].weight.flatten().tolist() + model[2].bias.tolist())
    assert metrics["layers/0/weight_norm"] == pytest.approx(math.sqrt(layer0))
    assert metrics["layers/2/weight_norm"] == pytest.approx(math.sqrt(layer2))
    assert metrics["diagnostics/weight_norm"] == pytest.approx(math.sqrt(layer0 + layer2))
    assert distance_from_init(model, initial) == pytest.approx(math.sqrt(12 * 0.25 + 2 * 1.0))


def test_gradient_norm_is_the_global_l2_over_present_gradients():
    a, b, c = (nn.Parameter(torch.zeros(s)) for s in (3, 2, 4))
    a.grad = torch.tensor([1.0, 2.0, 2.0])
    b.grad = torch.tensor([0.0, 4.0])
    assert gradient_norm([a, b, c]) == pytest.approx(5.0)
    assert gradient_norm([c]) == 0.0


def test_the_gradient_norm_meter_measures_the_step_after_it_is_asked_and_hands_the_norm_over_once():
    from agents.diagnostics import GradientNormMeter

    weight = nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    meter = GradientNormMeter().attach(optimizer)

    def step(gradient: list[float]) -> None:
        weight.grad = torch.tensor(gradient)
        optimizer.step()

    step([3.0, 4.0])
    assert meter.take() is None  # not asked
    meter.measure_next()
    step([6.0, 8.0])  # measured before the step changes anything
    step([1.0, 0.0])  # not measured: one step per request
    assert meter.take() == pytest.approx(10.0) and meter.take() is None


# ---------------------------------------------------------------- ranks
def reference_singular_values(features: torch.Tensor) -> list[float]:
    return sorted(np.linalg.svd(features.double().numpy(), compute_uv=False).tolist(), reverse=True)


def test_effective_rank_and_srank_match_their_definitions():
    features = torch.randn(200, 16) @ torch.diag(torch.logspace(0, -3, 16))
    sigma = reference_singular_values(features)
    p = [s / sum(sigma) for s in sigma]
    assert effective_rank(features) == pytest.approx(math.exp(-sum(q * math.log(q) for q in p)), rel=1e-9)
    cumulative, expected = 0.0, None
    for k, s in enumerate(sigma, start=1):
        cumulative += s
        if cumulative >= 0.99 * sum(sigma):
            expected = k
            break
    assert srank(features) == expected


def test_ranks_of_degenerate_features():
    assert effective_rank(torch.ones(10, 4)) == pytest.approx(1.0)
    assert srank(torch.ones(10, 4)) == 1
    assert effective_rank(torch.eye(8)) == pytest.approx(8.0)
    assert srank(torch.eye(8)) == 8
    assert effective_rank(torch.zeros(5, 3)) == 0.0
    with pytest.raises(ValueError, match="matrix"):
        effective_rank(torch.zeros(5))
