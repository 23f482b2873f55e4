"""Weight clipping plug-in, checked against hand-computed bounds and clamps (docs/metrics.md)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import NatureCNN, TanhActorCritic
from tianshou.utils.net.discrete import NoisyLinear
from torch import nn

import agents.plugins.clipping as clipping_module
from agents.plugins.clipping import WeightClipping, count_outside_fused, count_outside_per_tensor, layer_fan_in


class ReversedRegistration(nn.Module):
    """Registers the bias-only tensor first, so parameters() order misleads a naive implementation."""

    def __init__(self) -> None:
        super().__init__()
        self.wide = nn.Linear(16, 2)
        self.narrow = nn.Linear(4, 16)

    def forward(self, x):
        return self.wide(self.narrow(x))


def fill(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def sgd_step_with_zero_grad(model: nn.Module, clipping: WeightClipping) -> torch.optim.Optimizer:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    clipping.attach(optimizer)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    return optimizer


def test_bias_uses_its_own_layers_fan_in():
    model = ReversedRegistration()
    clipping = WeightClipping(model, kappa=2.0)
    assert clipping.bounds() == {
        "wide.weight": pytest.approx(2 / 4),  # fan_in 16
        "wide.bias": pytest.approx(2 / 4),
        "narrow.weight": pytest.approx(2 / 2),  # fan_in 4
        "narrow.bias": pytest.approx(2 / 2),
    }
    fill(model, 3.0)
    sgd_step_with_zero_grad(model, clipping)
    assert torch.all(model.wide.bias == 0.5) and torch.all(model.narrow.bias == 1.0)
    assert torch.all(model.wide.weight == 0.5) and torch.all(model.narrow.weight == 1.0)


def test_conv_fan_in_respects_groups_and_kernel():
    assert layer_fan_in(nn.Conv2d(4, 8, kernel_size=3, groups=2)) == 2 * 9
    assert layer_fan_in(nn.Conv1d(3, 5, kernel_size=4)) == 12
    assert layer_fan_in(nn.Conv3d(6, 6, kernel_size=(1, 2, 3), groups=3)) == 2 * 6
    assert layer_fan_in(nn.Linear(7, 2)) == 7
    assert layer_fan_in(nn.LayerNorm(4)) is None
    clipping = WeightClipping(nn.Sequential(nn.Conv2d(4, 8, kernel_size=3, groups=2)), kappa=3.0)
    assert clipping.bounds()["0.weight"] == pytest.approx(3 / math.sqrt(18))


def test_hand_computed_sgd_step_and_clipped_fraction():
    model = nn.Linear(16, 1, bias=False)  # bound 2 / sqrt(16) = 0.5
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.4, -0.2] + [0.0] * 14]))
    clipping = WeightClipping(model, kappa=2.0, fraction_every=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    clipping.attach(optimizer)
    model.weight.grad = torch.tensor([[-0.3, 0.5] + [0.1] * 14])
    optimizer.step()  # before clamp: [0.7, -0.7, -0.1 x 14]
    expected = torch.tensor([[0.5, -0.5] + [-0.1] * 14])
    torch.testing.assert_close(model.weight.detach(), expected)
    assert clipping.pop_clipped_fraction() == pytest.approx(2 / 16)
    assert clipping.pop_clipped_fraction() is None  # window was reset


def test_clipped_fraction_is_averaged_over_the_window():
    model = nn.Linear(4, 1, bias=False)  # bound 2 / 2 = 1
    clipping = WeightClipping(model, kappa=2.0, fraction_every=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    clipping.attach(optimizer)
    with torch.no_grad():
        model.weight.zero_()
    model.weight.grad = torch.tensor([[-2.0, 0.0, 0.0, 0.0]])
    optimizer.step()  # 1 of 4 outside
    model.weight.grad = torch.tensor([[0.0, -5.0, 5.0, -0.5]])
    optimizer.step()  # w = [1, 5, -5, 0.5] -> 2 of 4 outside
    assert clipping.pop_clipped_fraction() == pytest.approx((1 / 4 + 2 / 4) / 2)
    torch.testing.assert_close(model.weight.detach(), torch.tensor([[1.0, 1.0, -1.0, 0.5]]))


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9),
        lambda p: torch.optim.Adam(p, lr=0.5),
        lambda p: torch.optim.RMSprop(p, lr=0.5),
        lambda p: torch.optim.AdamW(p, lr=0.5, foreach=True),
    ],
)
def test_every_optimizer_keeps_weights_in_bounds_and_leaves_the_rest_alone(make_optimizer):
    model = nn.Sequential(nn.Linear(8, 32), nn.LayerNorm(32), nn.Tanh(), nn.Linear(32, 2))
    clipping = WeightClipping(model, kappa=1.0)
    optimizer = make_optimizer(model.parameters())
    clipping.attach(optimizer)
    norm_before = [p.detach().clone() for p in model[1].parameters()]
    for _ in range(5):
        optimizer.zero_grad()
        loss = model(torch.randn(64, 8)).square().sum() * 100
        loss.backward()
        optimizer.step()
    for name, bound in clipping.bounds().items():
        assert model.get_parameter(name).abs().max() <= bound + 1e-7, name
    assert any(not torch.equal(a, b) for a, b in zip(norm_before, model[1].parameters())), (
        "LayerNorm should train unclipped"
    )
    assert set(clipping.bounds()) == {"0.weight", "0.bias", "3.weight", "3.bias"}


def test_paper_bound_clips_orthogonal_init_and_init_mode_does_not():
    torch.manual_seed(1)
    layer = nn.Linear(64, 64)
    nn.init.orthogonal_(layer.weight, math.sqrt(2))
    nn.init.zeros_(layer.bias)
    paper = WeightClipping(layer, kappa=1.0)
    assert layer.weight.abs().max() > paper.bounds()["weight"]  # init itself lies outside
    init = WeightClipping(layer, kappa=1.0, bound_mode="init")
    largest = layer.weight.abs().max().item()
    assert init.bounds()["weight"] == pytest.approx(largest)
    assert init.bounds()["bias"] == pytest.approx(largest)  # zero bias takes its layer weight's value
    before = layer.weight.detach().clone()
    init.clip_now()
    assert torch.equal(layer.weight, before)


def test_skip_last_layer_uses_declared_output_layers_or_the_last_affine_module():
    plain = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert set(WeightClipping(plain, skip_last_layer=True).bounds()) == {"0.weight", "0.bias"}
    actor_critic = TanhActorCritic()
    clipped = set(WeightClipping(actor_critic, skip_last_layer=True).bounds())
    assert clipped == {
        f"{head}.{i}.{kind}" for head in ("actor", "critic") for i in (0, 2) for kind in ("weight", "bias")
    }


def test_include_exclude_and_scales():
    model = TanhActorCritic()
    with pytest.raises(ValueError, match="log_std.*no layer fan_in"):
        WeightClipping(model, include=["log_std"])
    clipping = WeightClipping(model, kappa=2.0, include=["log_std"], exclude=["critic.*"], scales={"log_std": 0.25})
    assert clipping.bounds()["log_std"] == pytest.approx(0.5)
    assert not any(name.startswith("critic") for name in clipping.bounds())
    with torch.no_grad():
        model.log_std.fill_(-3.0)
    clipping.clip_now()
    assert torch.all(model.log_std == -0.5)


def test_noisy_layer_means_are_clipped_and_sigmas_only_on_request():
    net = nn.Sequential(NoisyLinear(9, 4))
    assert set(WeightClipping(net).bounds()) == {"0.mu_W", "0.mu_bias"}
    with_sigma = WeightClipping(net, kappa=2.0, include=["*sigma*"])
    assert with_sigma.bounds()["0.sigma_W"] == pytest.approx(2 / 3)


def test_clip_every_n_steps_and_clip_now():
    model = nn.Linear(4, 1)
    clipping = WeightClipping(model, kappa=1.0, clip_every=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    clipping.attach(optimizer)
    for step in range(1, 4):
        model.weight.grad = torch.full_like(model.weight, -1.0)
        model.bias.grad = torch.zeros_like(model.bias)
        optimizer.step()
        assert (model.weight.abs().max() <= 0.5 + 1e-7) == (step == 3), step
    model.weight.data.fill_(9.0)
    clipping.clip_now()
    assert torch.all(model.weight == 0.5)
    assert clipping.clamps == 2 and clipping.optimizer_steps == 3


def test_state_dict_restores_bounds_and_counters_exactly():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
    original = WeightClipping(model, kappa=2.0, bound_mode="init")
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    original.attach(optimizer)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    state = original.state_dict()
    with torch.no_grad():  # weights change after training; "init" bounds must come from the checkpoint
        model[0].weight.mul_(0.01)
    restored = WeightClipping(model, kappa=2.0, bound_mode="init")
    assert restored.bounds() != original.bounds()
    restored.load_state_dict(state)
    assert restored.bounds() == original.bounds()
    assert restored.optimizer_steps == 1 and restored.clamps == 1
    assert restored.pop_clipped_fraction() == pytest.approx(original.pop_clipped_fraction())
    with pytest.raises(ValueError, match="kappa: saved 2.0 vs 3.0"):
        WeightClipping(model, kappa=3.0, bound_mode="init").load_state_dict(state)


def test_nature_cnn_bounds_follow_each_layer():
    clipping = WeightClipping(NatureCNN(), kappa=2.0)
    bounds = clipping.bounds()
    assert bounds["trunk.0.weight"] == pytest.approx(2 / math.sqrt(4 * 64))
    assert bounds["trunk.2.bias"] == pytest.approx(2 / math.sqrt(32 * 16))
    assert bounds["trunk.4.weight"] == pytest.approx(2 / math.sqrt(64 * 9))
    assert bounds["head.0.weight"] == pytest.approx(2 / math.sqrt(3136))
    assert bounds["head.2.bias"] == pytest.approx(2 / math.sqrt(512))


@pytest.mark.parametrize("kappa", [0, -1.0, float("nan"), float("inf"), True, "2"])
def test_bad_kappa_is_refused(kappa):
    with pytest.raises(ValueError, match="kappa must be a finite number > 0"):
        WeightClipping(nn.Linear(2, 2), kappa=kappa)


def test_bad_configurations_are_refused_with_clear_messages():
    with pytest.raises(ValueError, match="bound_mode must be one of"):
        WeightClipping(nn.Linear(2, 2), bound_mode="fan_out")
    with pytest.raises(ValueError, match="found nothing to clip"):
        WeightClipping(nn.Sequential(nn.Tanh(), nn.LayerNorm(3)))
    with pytest.raises(ValueError, match="clip_every must be an integer >= 1"):
        WeightClipping(nn.Linear(2, 2), clip_every=0)
    with pytest.raises(ValueError, match="fraction_every must be an integer >= 1 or None"):
        WeightClipping(nn.Linear(2, 2), fraction_every=2.5)
    model = nn.Linear(2, 2)
    clipping = WeightClipping(model)
    optimizer = torch.optim.Adam(model.parameters())
    clipping.attach(optimizer)
    with pytest.raises(ValueError, match="already attached"):
        clipping.attach(optimizer)
    with pytest.raises(ValueError, match="updates none of the clipped parameters"):
        clipping.attach(torch.optim.Adam(nn.Linear(2, 2).parameters()))


def test_detach_stops_clipping():
    model = nn.Linear(4, 1)
    clipping = WeightClipping(model, kappa=1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    clipping.attach(optimizer)
    clipping.detach()
    model.weight.grad = torch.full_like(model.weight, -10.0)
    model.bias.grad = torch.zeros_like(model.bias)
    optimizer.step()
    assert model.weight.abs().max() > 5


def test_cuda_and_cpu_counting_paths_agree_with_a_loop():
    torch.manual_seed(3)
    params = [torch.randn(7, 5) * 2, torch.randn(3), torch.randn(4, 2, 3)]
    bounds = [1.0, 0.5, 1.5]
    expected = sum(abs(v) > b for p, b in zip(params, bounds) for v in p.flatten().tolist())
    assert count_outside_per_tensor(params, bounds) == expected
    assert count_outside_fused(params, bounds).item() == expected


def test_per_tensor_clamp_used_for_large_cpu_models_matches_the_multi_tensor_clamp(monkeypatch):
    models = [nn.Sequential(nn.Linear(5, 7), nn.Linear(7, 3)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    for model in models:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(4)
    WeightClipping(models[0], kappa=1.5).clip_now()
    monkeypatch.setattr(clipping_module, "FOREACH_CPU_MAX_ENTRIES", 0)
    WeightClipping(models[1], kappa=1.5).clip_now()
    for a, b in zip(*(m.parameters() for m in models)):
        assert torch.equal(a, b)


def test_fraction_every_samples_one_clamp_in_n():
    model = nn.Linear(4, 1, bias=False)
    clipping = WeightClipping(model, kappa=2.0, fraction_every=2)
    for value in (5.0, 0.0, 5.0, 5.0):  # clamps 0 and 2 are measured: both fully outside
        model.weight.data.fill_(value)
        clipping.clip_now()
    assert clipping.pop_clipped_fraction() == 1.0
    model.weight.data.fill_(5.0)
    clipping.clip_now()  # clamp 4: measured
    model.weight.data.fill_(0.0)
    clipping.clip_now()
    assert clipping.pop_clipped_fraction() == 1.0
    assert WeightClipping(model, fraction_every=None).pop_clipped_fraction() is None
