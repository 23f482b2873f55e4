"""The interventions beside weight clipping, each against hand-computed numbers or a
slow reference: successive L2 / L2 Init / singular-value regularization, Shrink &
Perturb, last-layer reset, ReDo, plasticity injection, Madam, LayerNorm networks."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from agents.plugins.assembly import PlasticityPlugins
from agents.plugins.clipping import WeightClipping
from agents.plugins.interventions import (
    Interval,
    LastLayerReset,
    LayerRegularizer,
    PlasticityInjection,
    ReDo,
    ShrinkAndPerturb,
    layer_depths,
    redo_layers,
    with_injectable_heads,
)
from agents.plugins.optimizers import Madam, make_optimizer
from agents.plugins.options import PlasticityArgs, check_plasticity_args
from agents.ppo_continuous import Agent, NumpyActor
from agents.ppo_continuous import Args as PPOArgs
from agents.qlearning.networks import QNetwork, RainbowNetwork
from runners.base.errors import UsageError
from runners.base.rundir import isolated_rng


def two_layer(first=((1.0, -2.0), (0.5, 0.0)), second=((3.0, -1.0),)) -> nn.Sequential:
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(first))
        model[0].bias.copy_(torch.tensor([0.5, -0.5]))
        model[2].weight.copy_(torch.tensor(second))
        model[2].bias.copy_(torch.tensor([2.0]))
    return model


def close(tensor: torch.Tensor, expected) -> bool:
    return torch.allclose(tensor.detach(), torch.tensor(expected, dtype=tensor.dtype), atol=1e-5)


def step_with_zero_task_loss(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """A step whose only gradient is the penalty's: the task loss is 0 * output."""
    optimizer.zero_grad()
    (0.0 * model(torch.ones(1, 2)).sum()).backward()
    optimizer.step()


# ---------------------------------------------------------------- layers
def test_layers_are_counted_along_the_forward_path_per_tower():
    assert layer_depths(Agent(11, 3)) == {
        "critic.0": 1,
        "critic.2": 2,
        "critic.4": 3,
        "actor_mean.0": 1,
        "actor_mean.2": 2,
        "actor_mean.4": 3,
    }
    assert layer_depths(Agent(11, 3, layer_norm=True)) == {
        "critic.0": 1,
        "critic.3": 2,
        "critic.6": 3,
        "actor_mean.0": 1,
        "actor_mean.3": 2,
        "actor_mean.6": 3,
    }
    assert layer_depths(QNetwork((4,), 2)) == {"trunk.0": 1, "trunk.2": 2, "head.0": 3}
    assert layer_depths(QNetwork((4, 84, 84), 6)) == {
        "trunk.0": 1,
        "trunk.2": 2,
        "trunk.4": 3,
        "head.0": 4,
        "head.2": 5,
    }
    rainbow = RainbowNetwork((4,), 2, atoms=5, noisy_std=0.1, layer_norm=True)
    assert layer_depths(rainbow) == {
        "trunk.0": 1,
        "trunk.3": 2,
        "advantage.0": 3,
        "advantage.3": 4,
        "value.0": 3,
        "value.3": 4,
    }
    assert rainbow.output_layers == ("advantage.3", "value.3")


# ---------------------------------------------------------------- L2, L2 Init, successive
def test_successive_l2_loss_form_with_sgd_by_hand():
    # lambda 0.1, delta 2: layer 1 weighs 0.2, layer 2 weighs 0.4; SGD lr 0.5 on the penalty
    # alone: theta <- theta - 0.5 * 2 * w * theta, i.e. x0.8 in layer 1 and x0.6 in layer 2.
    model = two_layer()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    regularizer = LayerRegularizer(model, "l2", coef=0.1, delta=2.0).attach(optimizer)
    assert regularizer.penalty() == pytest.approx(0.2 * (1 + 4 + 0.25 + 0.25 + 0.25) + 0.4 * (9 + 1 + 4))
    step_with_zero_task_loss(model, optimizer)
    assert close(model[0].weight, [[0.8, -1.6], [0.4, 0.0]])
    assert model[0].bias.tolist() == pytest.approx([0.4, -0.4])
    assert close(model[2].weight, [[1.8, -0.6]])
    assert model[2].bias.tolist() == pytest.approx([1.2])


def test_l2_init_pulls_towards_the_initial_values_by_hand():
    model = two_layer()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.25)
    LayerRegularizer(model, "l2_init", coef=0.2, delta=1.0).attach(optimizer)
    initial = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    step_with_zero_task_loss(model, optimizer)
    # theta_0 + 1 - 0.25 * 2 * 0.2 * 1 = theta_0 + 0.9
    for p, p0 in zip(model.parameters(), initial):
        assert torch.allclose(p, p0 + 0.9)


def test_penalty_only_every_nth_update():
    model = two_layer()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    LayerRegularizer(model, "l2", coef=0.1, delta=1.0, every=3).attach(optimizer)
    values = []
    for _ in range(7):
        step_with_zero_task_loss(model, optimizer)
        values.append(model[2].bias.item())
    # updates 0, 3 and 6 carry the penalty (x0.9 each): t mod tau == 0 (Teo et al. Eq. 2)
    assert values == pytest.approx([1.8, 1.8, 1.8, 1.62, 1.62, 1.62, 1.458])


def regression_trajectory(make, regularize, steps=6) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    optimizer = make(model.parameters())
    if regularize:
        regularize(model).attach(optimizer)
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    for _ in range(steps):
        optimizer.zero_grad()
        (model(x) - y).square().mean().backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize(
    ("form", "reference"),
    [
        ("loss", lambda params: torch.optim.Adam(params, lr=0.01, weight_decay=2 * 0.05)),  # coupled L2: through Adam
        ("decoupled", lambda params: torch.optim.AdamW(params, lr=0.01, weight_decay=2 * 0.05)),  # decoupled: AdamW
    ],
)
def test_l2_forms_with_adam_match_torchs_adam_and_adamw(form, reference):
    ours = regression_trajectory(
        lambda params: torch.optim.Adam(params, lr=0.01),
        lambda model: LayerRegularizer(model, "l2", coef=0.05, form=form),
    )
    theirs = regression_trajectory(reference, None)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=1e-6)
    other = regression_trajectory(
        lambda params: torch.optim.Adam(params, lr=0.01),
        lambda model: LayerRegularizer(model, "l2", coef=0.05, form="decoupled" if form == "loss" else "loss"),
    )
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(other, theirs))  # the two forms really differ


def test_loss_form_penalty_is_in_the_gradient_before_clipping():
    model = two_layer()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    LayerRegularizer(model, "l2", coef=0.1).attach(optimizer)
    (0.0 * model(torch.ones(1, 2)).sum()).backward()
    assert close(model[2].weight.grad, [[0.6, -0.2]])  # 2 * 0.1 * theta, already in .grad


def test_singular_value_penalty_gradient_matches_autograd_reference():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2))
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    reference = [p.detach().clone().requires_grad_() for p in model.parameters()]

    def reference_loss():
        h = torch.tanh(torch.tanh(x @ reference[0].T + reference[1]) @ reference[2].T + reference[3])
        out = h @ reference[4].T + reference[5]
        singular = torch.linalg.svdvals(h)
        # penultimate features come out of layer 2: weight lambda * delta**2
        return (out - y).square().mean() + 0.01 * 1.5**2 * (singular[0] ** 2 - singular[-1] ** 2)

    reference_loss().backward()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    regularizer = LayerRegularizer(model, "singular", coef=0.01, delta=1.5).attach(optimizer)
    (model(x) - y).square().mean().backward()
    for ours, theirs in zip(model.parameters(), reference):
        assert torch.allclose(ours.grad, theirs.grad, atol=1e-5)
    h = model[:4](x).detach()
    singular = torch.linalg.svdvals(h)
    assert regularizer.penalty() == pytest.approx(0.01 * 2.25 * (singular[0] ** 2 - singular[-1] ** 2).item(), rel=1e-4)
    with regularizer.paused():  # probes' passes carry no penalty
        model.zero_grad()
        (model(x) - y).square().mean().backward()
    clean = [p.grad.clone() for p in model.parameters()]
    assert not torch.allclose(clean[0], reference[0].grad, atol=1e-5)


def test_l2_init_anchor_survives_a_checkpoint():
    model = two_layer()
    regularizer = LayerRegularizer(model, "l2_init", coef=0.1)
    state = regularizer.state_dict()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3)
    resumed = LayerRegularizer(model, "l2_init", coef=0.1)  # built on the trained weights
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    resumed.attach(optimizer)
    resumed.load_state_dict(state)
    step_with_zero_task_loss(model, optimizer)
    # pulled towards the saved theta_0 = b, from 3b: 3b - 0.5 * 0.2 * 2b = 2.8b
    assert model[2].bias.item() == pytest.approx(2.8 * 2.0)
    with pytest.raises(ValueError, match="does not match"):
        LayerRegularizer(model, "l2", coef=0.1).load_state_dict(state)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(kind="l1", coef=0.1), "regularizer must be one of"),
        (dict(kind="l2", coef=0.0), "coef must be"),
        (dict(kind="l2", coef=0.1, delta=-1.0), "delta must be"),
        (dict(kind="singular", coef=0.1, form="decoupled"), "only as a loss term"),
        (dict(kind="l2", coef=0.1, every=0), "interval must be"),
    ],
)
def test_regularizer_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LayerRegularizer(two_layer(), **kwargs)


# ---------------------------------------------------------------- schedules, Shrink & Perturb, resets
def test_interval_after_target_syncs():
    plain, after_sync = Interval(3), Interval(3, offset=1)
    assert [n for n in range(1, 11) if plain.due(n)] == [3, 6, 9]
    # Tianshou syncs at the start of updates 0, 3, 6 (0-based); events follow updates 3 and 6
    assert [n for n in range(1, 11) if after_sync.due(n)] == [4, 7, 10]


def constant_fresh_model():
    return two_layer(first=((10.0, 10.0), (10.0, 10.0)), second=((20.0, 20.0),))


def test_shrink_and_perturb_by_hand():
    model = two_layer()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    plugin = ShrinkAndPerturb(model, constant_fresh_model, Interval(2), shrink=0.5, sigma=0.1).attach(optimizer)
    step_with_zero_task_loss(model, optimizer)
    assert model[0].weight.tolist() == [[1.0, -2.0], [0.5, 0.0]]  # not due yet
    step_with_zero_task_loss(model, optimizer)
    # 0.5 * theta + 0.1 * fresh
    assert close(model[0].weight, [[1.5, 0.0], [1.25, 1.0]])
    assert model[0].bias.tolist() == pytest.approx([0.5 * 0.5 + 0.1 * 0.5, 0.5 * -0.5 + 0.1 * -0.5])
    assert close(model[2].weight, [[3.5, 1.5]])
    assert plugin.metrics() == {"interventions/shrink_perturb_events": 1.0}


def test_fresh_draws_are_reproducible_and_leave_the_runs_random_streams_alone():
    model = two_layer()
    plugin = ShrinkAndPerturb(
        model, lambda: nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)), Interval(1), shrink=0.0, sigma=1.0
    )
    torch.manual_seed(5)
    before = torch.get_rng_state()
    first = plugin._fresh()[0].weight.clone()
    assert torch.equal(torch.get_rng_state(), before)
    again = plugin._fresh()[0].weight
    assert torch.equal(first, again)  # event n always draws the same values (resume-safe)


def test_last_layer_reset_gives_fresh_values_and_fresh_optimizer_state_then_trains_them():
    model = two_layer()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    plugin = LastLayerReset(model, constant_fresh_model, Interval(3)).attach(optimizer)
    x = torch.tensor([[2.0, -1.0]] * 4)  # both hidden units active

    def train_step():
        optimizer.zero_grad()
        (model(x) - 1.0).square().mean().backward()
        optimizer.step()

    for _ in range(3):
        train_step()
    assert model[2].weight.tolist() == [[20.0, 20.0]] and model[2].bias.tolist() == [2.0]  # bias of the fresh model
    assert model[2].weight not in optimizer.state and model[2].bias not in optimizer.state
    first_layer = model[0].weight.detach().clone()
    assert not torch.equal(first_layer, two_layer()[0].weight)  # the rest was trained and kept
    train_step()
    assert optimizer.state[model[2].weight]["step"].item() == 1  # a new Adam state
    assert optimizer.state[model[0].weight]["step"].item() == 4
    # Adam's first step moves every entry by lr against its gradient's sign: the new layer is trained
    assert close(model[2].weight, [[19.9, 19.9]])
    assert plugin.metrics() == {"interventions/last_layer_resets": 1.0}


# ---------------------------------------------------------------- optimizers
def test_madam_step_by_hand():
    weight = nn.Parameter(torch.tensor([0.5, -0.2, 0.0]))
    optimizer = Madam([weight], lr=0.1, p_scale=3.0, g_bound=10.0)
    weight.grad = torch.tensor([1.0, 1.0, 1.0])
    optimizer.step()
    # v_hat = g^2 after bias correction, so g_hat = sign(g) = 1; w <- w exp(-0.1 sign(w))
    assert weight.tolist() == pytest.approx([0.5 * math.exp(-0.1), -0.2 * math.exp(0.1), 0.0])
    assert optimizer.state[weight]["max"] == pytest.approx(3 * math.sqrt((0.25 + 0.04) / 3))
    weight.grad = torch.tensor([-1.0, 0.0, 0.0])
    optimizer.param_groups[0]["lr"] = 5.0
    optimizer.step()  # exp(+5) growth is clamped at p_scale * rms(initial)
    assert weight[0].item() == pytest.approx(3 * math.sqrt((0.25 + 0.04) / 3))
    assert weight[1].item() == pytest.approx(-0.2 * math.exp(0.1))  # zero gradient, no change


def test_make_optimizer_passes_lyles_adam_settings():
    params = [nn.Parameter(torch.zeros(2))]
    adam = make_optimizer(params, "adam", 1e-3, adam_eps=1e-4, adam_beta2=0.9)
    assert adam.param_groups[0]["eps"] == 1e-4 and adam.param_groups[0]["betas"] == (0.9, 0.9)
    assert isinstance(make_optimizer(params, "madam", 0.01, adam_beta2=0.99), Madam)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_optimizer(params, "rmsprop", 1e-3)


# ---------------------------------------------------------------- LayerNorm networks
def test_layer_norm_follows_every_hidden_layer():
    kinds = [
        type(m).__name__
        for m in QNetwork((4, 84, 84), 6, layer_norm=True).modules()
        if not isinstance(m, (nn.Sequential, QNetwork))
    ]
    assert kinds == [
        "Conv2d",
        "GroupNorm",
        "ReLU",
        "Conv2d",
        "GroupNorm",
        "ReLU",
        "Conv2d",
        "GroupNorm",
        "ReLU",
        "Flatten",
        "Linear",
        "LayerNorm",
        "ReLU",
        "Linear",
    ]
    agent = Agent(5, 2, layer_norm=True)
    assert [type(m).__name__ for m in agent.critic] == [
        "Linear",
        "LayerNorm",
        "Tanh",
        "Linear",
        "LayerNorm",
        "Tanh",
        "Linear",
    ]


def test_numpy_actor_mirrors_the_layer_norm_actor():
    torch.manual_seed(0)
    agent = Agent(7, 3, layer_norm=True)
    with torch.no_grad():
        for module in agent.actor_mean:
            if isinstance(module, nn.LayerNorm):  # non-trivial gains and offsets
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    obs = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    expected = agent.actor_mean(torch.as_tensor(obs)).detach().numpy()
    assert np.allclose(NumpyActor(agent).mean(obs), expected, atol=1e-5)


# ---------------------------------------------------------------- ReDo (Sokar et al. 2023)
REDO_INPUTS = torch.tensor([[1.0, 1.0], [2.0, 1.0], [1.0, 2.0], [0.5, 0.5]])  # positive inputs


def mlp_2_3_2() -> nn.Sequential:
    """Hidden unit 0 is h = x0, unit 1 is relu(-x0 - x1) = 0 (dead), unit 2 is h = 0.02 x0 (nearly dormant)."""
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, -1.0], [0.02, 0.0]]))
        model[0].bias.zero_()
        model[2].weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
        model[2].bias.copy_(torch.tensor([0.5, -0.5]))
    return model


def constant_mlp_2_3_2() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight.fill_(7.0)
        model[0].bias.fill_(0.25)
        model[2].weight.fill_(9.0)
        model[2].bias.fill_(9.0)
    return model


def adam_with_moments(model: nn.Module, value: float = 1.0) -> torch.optim.Optimizer:
    """Adam (lr 0: one step leaves the weights) whose moments are all ``value``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=0.0)
    model(REDO_INPUTS[:, : model[0].in_features] if isinstance(model, nn.Sequential) else REDO_INPUTS).sum().backward()
    optimizer.step()
    for state in optimizer.state.values():
        state["exp_avg"].fill_(value)
        state["exp_avg_sq"].fill_(value)
    return optimizer


@pytest.mark.parametrize(("tau", "recycled"), [(0.025, [1]), (0.1, [1, 2])])
def test_redo_by_hand_on_a_2_3_2_mlp(tau, recycled):
    model = mlp_2_3_2()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = adam_with_moments(model)
    plugin = ReDo(model, constant_mlp_2_3_2, Interval(1000), tau=tau, sample_inputs=lambda: REDO_INPUTS).attach(
        optimizer
    )
    # E|h| = (1.125, 0, 0.0225), mean 0.3825: scores 2.941, 0, 0.0588
    assert plugin.scores()[0].tolist() == pytest.approx([1.125 / 0.3825, 0.0, 0.0225 / 0.3825], rel=1e-5)
    output = model(REDO_INPUTS).detach()
    plugin.apply_now()
    kept = [unit for unit in range(3) if unit not in recycled]
    weight, bias, next_weight, next_bias = model[0].weight, model[0].bias, model[2].weight, model[2].bias
    assert torch.equal(weight[recycled], torch.full((len(recycled), 2), 7.0)) and torch.equal(
        bias[recycled], torch.full((len(recycled),), 0.25)
    )
    assert torch.equal(weight[kept], before[0][kept]) and torch.equal(bias[kept], before[1][kept])
    assert torch.equal(next_weight[:, recycled], torch.zeros(2, len(recycled)))  # outgoing weights zeroed
    assert torch.equal(next_weight[:, kept], before[2][:, kept]) and torch.equal(next_bias, before[3])
    for param, touched in ((weight, (recycled,)), (bias, (recycled,)), (next_weight, (slice(None), recycled))):
        for moment in ("exp_avg", "exp_avg_sq"):
            state = optimizer.state[param][moment]
            assert torch.all(state[touched] == 0), (param.shape, moment)
            assert int((state == 0).sum()) == state[touched].numel()  # every other entry keeps its moment
    assert torch.all(optimizer.state[next_bias]["exp_avg"] == 1.0)
    assert plugin.metrics() == {"redo/recycled_frac": len(recycled) / 3, "redo/recycled_units": float(len(recycled))}
    if recycled == [1]:  # a dead unit contributed exactly 0 before and does now: the output is bitwise the same
        assert torch.equal(model(REDO_INPUTS), output)


def test_redo_runs_after_every_nth_step_and_draws_each_events_network_on_its_own_stream():
    model = mlp_2_3_2()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    drawn = []

    def fresh():
        drawn.append(torch.rand(1).item())
        return nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))

    plugin = ReDo(model, fresh, Interval(2), tau=0.025, sample_inputs=lambda: REDO_INPUTS, seed=3).attach(optimizer)
    assert plugin.metrics() == {}  # nothing to report before the first event
    torch.manual_seed(11)
    outer = torch.get_rng_state()
    for _ in range(4):
        step_with_zero_task_loss(model, optimizer)
    assert torch.equal(torch.get_rng_state(), outer)  # the run's own stream is untouched
    assert plugin.events == 2 and len(drawn) == 1  # event 2 found no dormant unit and drew nothing
    ReDo(mlp_2_3_2(), fresh, Interval(2), tau=0.025, sample_inputs=lambda: REDO_INPUTS, seed=3)._fresh()
    assert drawn[1] == drawn[0]  # event 0 of the same seed draws the same network, whatever ran before


def tiny_conv() -> nn.Sequential:
    """1x3x3 inputs -> 3 channels of 2x2 -> flattened (12 columns, channel c = columns 4c..4c+3) -> 2 outputs; channel 1 is dead."""
    model = nn.Sequential(nn.Conv2d(1, 3, 2), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, -1.0, 0.5]).view(3, 1, 1, 1).expand(3, 1, 2, 2))
        model[0].bias.copy_(torch.tensor([0.0, -1.0, 0.1]))
        model[3].weight.copy_(torch.arange(24.0).view(2, 12) + 1)
    return model


def test_redo_recycles_conv_channels_and_their_flattened_columns():
    model = tiny_conv()
    before = [p.detach().clone() for p in model.parameters()]
    inputs = torch.rand(5, 1, 3, 3) + 0.1
    optimizer = torch.optim.Adam(model.parameters(), lr=0.0)
    model(inputs).sum().backward()
    optimizer.step()
    for state in optimizer.state.values():
        state["exp_avg"].fill_(1.0)
    fresh = lambda: nn.Sequential(nn.Conv2d(1, 3, 2), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))  # noqa: E731
    plugin = ReDo(model, fresh, Interval(1000), tau=0.0, sample_inputs=lambda: inputs).attach(optimizer)
    (layer,) = plugin.layers
    assert layer.units == 3 and [(n.name, n.per_unit) for n in layer.next_layers] == [("3", 4)]
    expected_fresh = plugin._fresh()  # event 0's draw
    output = model(inputs).detach()
    plugin.apply_now()
    assert (
        torch.equal(model[0].weight[1], expected_fresh[0].weight[1]) and model[0].bias[1] == expected_fresh[0].bias[1]
    )
    assert torch.equal(model[0].weight[[0, 2]], before[0][[0, 2]]) and torch.equal(
        model[0].bias[[0, 2]], before[1][[0, 2]]
    )
    assert torch.equal(model[3].weight[:, 4:8], torch.zeros(2, 4))
    assert torch.equal(model[3].weight[:, :4], before[2][:, :4]) and torch.equal(
        model[3].weight[:, 8:], before[2][:, 8:]
    )
    exp_avg = optimizer.state[model[3].weight]["exp_avg"]
    assert torch.all(exp_avg[:, 4:8] == 0) and torch.all(exp_avg[:, :4] == 1) and torch.all(exp_avg[:, 8:] == 1)
    assert torch.all(optimizer.state[model[0].weight]["exp_avg"][1] == 0) and torch.all(
        optimizer.state[model[0].weight]["exp_avg"][[0, 2]] == 1
    )
    assert torch.equal(model(inputs), output)
    assert plugin.metrics()["redo/recycled_frac"] == pytest.approx(1 / 3)


def test_redo_scores_after_the_layer_norm_and_nonlinearity_and_recycles_the_norms_gain_and_shift():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([1.0, 0.0, 1.0]))  # unit 1: LN output -1 on every input ...
        model[1].bias.copy_(torch.tensor([0.0, -1.0, 0.0]))  # ... so |pre-activation| = 1 but relu gives 0
    before = [p.detach().clone() for p in model.parameters()]
    inputs = torch.randn(64, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    fresh = lambda: nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3), nn.ReLU(), nn.Linear(3, 2))  # noqa: E731
    plugin = ReDo(model, fresh, Interval(1000), tau=0.025, sample_inputs=lambda: inputs).attach(optimizer)
    (layer,) = plugin.layers
    assert layer.norms == ("1",) and isinstance(layer.activation, nn.ReLU)
    scores = plugin.scores()[0]
    assert scores[1] == 0 and scores[0] > 0.025 and scores[2] > 0.025
    expected_fresh = plugin._fresh()
    plugin.apply_now()
    assert model[1].weight.tolist() == [1.0, 1.0, 1.0] and model[1].bias.tolist() == [0.0, 0.0, 0.0]  # LayerNorm's init
    assert torch.equal(model[0].weight[1], expected_fresh[0].weight[1]) and torch.equal(
        model[0].weight[[0, 2]], before[0][[0, 2]]
    )
    assert torch.equal(model[3].weight[:, 1], torch.zeros(2)) and torch.equal(
        model[3].weight[:, [0, 2]], before[4][:, [0, 2]]
    )


def test_recycled_weights_are_clipped_after_recycling():
    model = mlp_2_3_2()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    huge = lambda: (
        nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
        .requires_grad_(True)
        .apply(  # noqa: E731
            lambda m: [p.data.fill_(10.0) for p in m.parameters(recurse=False)]
        )
    )
    ReDo(model, huge, Interval(1), tau=0.025, sample_inputs=lambda: REDO_INPUTS).attach(optimizer)
    clipping = WeightClipping(model, kappa=1.0).attach(optimizer)  # attached after the plug-ins, as every agent does
    optimizer.zero_grad()
    (model(REDO_INPUTS) - 1.0).square().mean().backward()
    optimizer.step()
    assert clipping.max_violation() == 0.0
    assert model[0].weight[1].tolist() == pytest.approx(
        [1 / math.sqrt(2)] * 2
    )  # the fresh 10s, clamped to kappa / sqrt(fan_in)
    assert model[0].bias[1].item() == pytest.approx(1 / math.sqrt(2))


def test_redo_on_noisy_dueling_layers_recycles_mu_and_resets_sigma():
    torch.manual_seed(0)
    network = RainbowNetwork((4,), 2, atoms=3, noisy_std=0.5)
    with torch.no_grad():
        network.trunk[2].weight[7].zero_()
        network.trunk[2].bias[7] = -1.0  # trunk unit 7: relu(-1) = 0
        network.advantage[0].mu_W[5] = -network.advantage[0].mu_W[5].abs()  # features are >= 0: unit 5 of the
        network.advantage[0].mu_bias[5] = -1.0  # advantage stream is dead (scored with the mean weights)
    before = {name: p.detach().clone() for name, p in network.named_parameters()}
    inputs = torch.randn(256, 4)
    optimizer = torch.optim.Adam(network.parameters(), lr=0.0)
    plugin = ReDo(
        network,
        lambda: RainbowNetwork((4,), 2, atoms=3, noisy_std=0.5),
        Interval(1000),
        tau=0.0,
        sample_inputs=lambda: inputs,
    ).attach(optimizer)
    dead = {layer.name: score == 0 for layer, score in zip(plugin.layers, plugin.scores())}
    assert dead["trunk.2"][7] and dead["advantage.0"][5]  # and whatever else a random init leaves dead
    fresh = dict(plugin._fresh().named_parameters())
    network.eval()
    output = network(inputs)[0]
    plugin.apply_now()
    after = dict(network.named_parameters())
    # expected: every dead unit's rows (weight and bias; noisy: mu and sigma) from the fresh network, then its
    # columns of every layer it feeds (the trunk's last layer feeds both streams; noisy: mu and sigma) at 0
    expected = {name: value.clone() for name, value in before.items()}
    incoming = {
        "trunk.0": ("weight", "bias"),
        "trunk.2": ("weight", "bias"),
        "advantage.0": ("mu_W", "sigma_W", "mu_bias", "sigma_bias"),
        "value.0": ("mu_W", "sigma_W", "mu_bias", "sigma_bias"),
    }
    outgoing = {
        "trunk.0": ["trunk.2.weight"],
        "trunk.2": ["advantage.0.mu_W", "advantage.0.sigma_W", "value.0.mu_W", "value.0.sigma_W"],
        "advantage.0": ["advantage.2.mu_W", "advantage.2.sigma_W"],
        "value.0": ["value.2.mu_W", "value.2.sigma_W"],
    }
    for layer, mask in dead.items():
        for local in incoming[layer]:
            expected[f"{layer}.{local}"][mask] = fresh[f"{layer}.{local}"][mask]
    for layer, mask in dead.items():
        for name in outgoing[layer]:
            expected[name][:, mask] = 0
    for name in before:
        assert torch.equal(after[name], expected[name]), name
    assert torch.all(after["advantage.0.sigma_W"][5][~dead["trunk.2"]] == 0.5 / math.sqrt(64))  # sigma back at its init
    assert torch.equal(network(inputs)[0], output)  # dead units, zero outgoing weights: the same distributions
    assert plugin.metrics()["redo/recycled_units"] == float(sum(int(m.sum()) for m in dead.values()))


def test_redo_layers_of_the_zoos_networks():
    def structure(model):
        return [
            (
                layer.name,
                layer.units,
                type(layer.activation).__name__,
                layer.norms,
                [(n.name, n.per_unit) for n in layer.next_layers],
            )
            for layer in redo_layers(model)
        ]

    assert structure(QNetwork((4, 84, 84), 6))[2:] == [
        ("trunk.4", 64, "ReLU", (), [("head.0", 49)]),
        ("head.0", 512, "ReLU", (), [("head.2", 1)]),
    ]
    assert structure(QNetwork((4, 10, 10), 3, layer_norm=True)) == [  # MinAtar: 16 channels of 8 x 8
        ("trunk.0", 16, "ReLU", ("trunk.1",), [("head.0", 64)]),
        ("head.0", 128, "ReLU", ("head.1",), [("head.3", 1)]),
    ]
    assert structure(RainbowNetwork((4,), 2, 3, 0.5))[1:3] == [
        ("trunk.2", 64, "ReLU", (), [("advantage.0", 1), ("value.0", 1)]),
        ("advantage.0", 64, "ReLU", (), [("advantage.2", 1)]),
    ]
    assert structure(Agent(5, 2, layer_norm=True)) == [
        ("critic.0", 64, "Tanh", ("critic.1",), [("critic.3", 1)]),
        ("critic.3", 64, "Tanh", ("critic.4",), [("critic.6", 1)]),
        ("actor_mean.0", 64, "Tanh", ("actor_mean.1",), [("actor_mean.3", 1)]),
        ("actor_mean.3", 64, "Tanh", ("actor_mean.4",), [("actor_mean.6", 1)]),
    ]
    with pytest.raises(ValueError, match="no activation follows"):
        redo_layers(nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1)))


def test_redo_through_the_plug_ins_on_ppos_two_towers():
    torch.manual_seed(0)
    agent = Agent(3, 2)
    with torch.no_grad():
        agent.critic[0].weight[3].zero_()
        agent.critic[0].bias[3] = 0.0  # tanh(0) = 0 on every input
    observations = torch.randn(40, 3)
    args = PPOArgs(redo_every=1, redo_tau=0.0, redo_samples=16)
    plugins = PlasticityPlugins(
        agent,
        args,
        lambda: Agent(3, 2),
        seed=5,
        sample_inputs=PlasticityPlugins.rollout_inputs(lambda: observations, args),
        forward=lambda net, x: (net.critic(x), net.actor_mean(x)),
    )
    optimizer = torch.optim.Adam(agent.parameters(), lr=0.0)
    plugins.attach(optimizer)
    assert plugins.describe() == "redo (every 1 gradient step, tau 0)"
    agent.critic(observations).sum().backward()
    optimizer.step()
    assert plugins.metrics() == {"redo/recycled_frac": 1 / 256, "redo/recycled_units": 1.0}
    assert agent.critic[0].weight[3].abs().sum() > 0 and torch.all(agent.critic[2].weight[:, 3] == 0)


def redo_training(steps: int, resume_after: int | None = None) -> list[torch.Tensor]:
    """6 Adam steps of a 3-8-8-1 ReLU net with ReDo (tau 0.5: several units each event) every 2 steps, on rollout-style
    inputs; with ``resume_after``, everything is saved after that step and restored into new objects."""
    observations = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))
    targets = torch.randn(64, 1, generator=torch.Generator().manual_seed(2))

    def build(seed):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
        args = PPOArgs(redo_every=2, redo_tau=0.5, redo_samples=16)
        fresh = lambda: nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))  # noqa: E731
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        plugins = PlasticityPlugins(
            model, args, fresh, seed=7, sample_inputs=PlasticityPlugins.rollout_inputs(lambda: observations, args)
        )
        return model, optimizer, plugins.attach(optimizer)

    model, optimizer, plugins = build(0)
    recycled = []
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        (model(observations) - targets).square().mean().backward()
        optimizer.step()
        recycled.append(plugins.metrics().get("redo/recycled_units"))
        if step == resume_after:
            saved = [model.state_dict(), optimizer.state_dict(), plugins.state_dict()]
            model, optimizer, plugins = build(1)  # other initial weights: everything must come from the checkpoint
            model.load_state_dict(saved[0])
            optimizer.load_state_dict(saved[1])
            plugins.load_state_dict(saved[2])
    assert all(count for count in recycled[1::2])  # every event recycled something
    return [p.detach().clone() for p in model.parameters()], recycled


def test_redo_state_resumes_exactly():
    uninterrupted, recycled = redo_training(6)
    resumed, recycled_resumed = redo_training(6, resume_after=3)
    assert recycled == recycled_resumed
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted, resumed))


def test_plug_ins_with_redo_off_never_sample_and_leave_training_bitwise_unchanged():
    def never():
        raise AssertionError("ReDo is off: no inputs are drawn")

    plain = regression_trajectory(lambda params: torch.optim.Adam(params, lr=0.01), None)
    with_plugins = regression_trajectory(
        lambda params: torch.optim.Adam(params, lr=0.01),
        lambda model: PlasticityPlugins(model, PPOArgs(), lambda: None, seed=0, sample_inputs=never),
    )
    assert all(torch.equal(a, b) for a, b in zip(plain, with_plugins))


# ---------------------------------------------------------------- plasticity injection (Nikishin et al. 2023)
class TrunkHead(nn.Module):
    """A trunk layer, then a two-layer head: what plasticity injection grows (``injection_heads``)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
        self.output_layers = ("net.4",)
        self.injection_heads = {"net": 2}

    def forward(self, x):
        return self.net(x)


def grown_trunk_head() -> TrunkHead:
    return with_injectable_heads(TrunkHead())


INJECTION_DATA = (
    torch.randn(32, 3, generator=torch.Generator().manual_seed(2)),
    torch.randn(32, 2, generator=torch.Generator().manual_seed(3)),
)


def regression_step(forward, optimizer) -> None:
    x, y = INJECTION_DATA
    optimizer.zero_grad()
    (forward(x) - y).square().mean().backward()
    optimizer.step()


def test_injection_leaves_the_output_bitwise_and_then_trains_the_new_head_and_the_trunk_only():
    torch.manual_seed(0)
    network = with_injectable_heads(QNetwork((4, 10, 10), 3))  # MinAtar: conv trunk, two-layer head
    assert network.output_layers == ("head.2", "head.new.2", "head.copy.2")
    optimizer = torch.optim.Adam(network.parameters(), lr=0.01)
    plugin = PlasticityInjection(network, lambda: with_injectable_heads(QNetwork((4, 10, 10), 3)), at=3).attach(
        optimizer
    )
    clipping = WeightClipping(network, kappa=1.0).attach(optimizer)
    x, y = torch.rand(16, 4, 10, 10, generator=torch.Generator().manual_seed(4)), torch.randn(16, 3)

    def step() -> None:
        optimizer.zero_grad()
        (network(x)[0] - y).square().mean().backward()
        optimizer.step()

    for _ in range(3):
        step()
    assert not plugin.injected and plugin.metrics() == {}  # injected at the start of step 4, after step 3's clamp
    output = network(x)[0].detach()
    seen = []
    optimizer.register_step_pre_hook(lambda *_: seen.append((plugin.injected, network(x)[0].detach())))
    step()
    (injected, injected_output), *_ = seen
    assert injected and torch.equal(injected_output, output)  # bitwise: h_new - h_copy is exactly 0
    state = {name: tensor.clone() for name, tensor in network.state_dict().items()}
    for _ in range(3):
        step()
    changed = {name for name, tensor in network.state_dict().items() if not torch.equal(tensor, state[name])}
    assert changed == {
        "trunk.0.weight",
        "trunk.0.bias",
        *(f"head.new.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")),
    }
    new = network.head.new[0].weight
    # step 4's gradient was computed before the injection, through h_old: that step trains the trunk
    # only (h_old's gradient is dropped); h_new's first update is step 5's, with a fresh Adam state
    assert optimizer.state[new]["step"].item() == 3 and optimizer.state[network.trunk[0].weight]["step"].item() == 7
    assert clipping.max_violation() < 1e-7  # the clamp runs on h_new too (to float32's rounding of the bound)
    metrics = plugin.metrics()
    assert metrics["interventions/plasticity_injections"] == 1.0 and metrics["interventions/injected_head_shift"] > 0
    assert plugin.metrics()["interventions/plasticity_injections"] == 0.0  # one event, logged once
    assert plugin.describe() == "plasticity_injection (after gradient step 3; heads: head)"


def test_injection_trains_like_the_three_explicit_heads_of_nikishin_et_al():
    torch.manual_seed(0)
    model = grown_trunk_head()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    plugin = PlasticityInjection(model, grown_trunk_head, at=4, seed=9).attach(optimizer)
    for _ in range(5):  # injected at the start of step 5's update, whose gradient trains the trunk only
        regression_step(model, optimizer)
    # the reference, written out: the trunk as it is after step 5 and h_old as it was after step 4, frozen;
    # h_new the plug-in's fresh draw of the head and h_copy a frozen copy of it; Adam on the trunk (its
    # state goes on) and on h_new (from scratch)
    layers = [model.net._modules[str(i)] for i in range(5)]
    trunk = nn.Sequential(*[copy.deepcopy(layer) for layer in layers[:2]])
    h_old = nn.Sequential(*[copy.deepcopy(layer) for layer in layers[2:]]).requires_grad_(False)
    with isolated_rng(9 * 1_000_003):
        h_new = grown_trunk_head().net.old_head()
    h_copy = copy.deepcopy(h_new).requires_grad_(False)
    assert all(torch.equal(a, b) for a, b in zip(model.net.new.parameters(), h_new.parameters()))
    reference_optimizer = torch.optim.Adam([*trunk.parameters(), *h_new.parameters()], lr=0.01)
    for mine, theirs in zip([p for layer in layers[:2] for p in layer.parameters()], trunk.parameters()):
        reference_optimizer.state[theirs] = {key: value.clone() for key, value in optimizer.state[mine].items()}

    def explicit(x):
        z = trunk(x)
        return h_old(z) + (h_new(z) - h_copy(z))

    for _ in range(6):
        regression_step(model, optimizer)
        regression_step(explicit, reference_optimizer)
    x = INJECTION_DATA[0]
    assert torch.equal(explicit(x), model(x))  # bitwise: the same computation
    for mine, theirs in zip([*layers[:2], *model.net.new], [*trunk, *h_new]):
        assert all(torch.equal(a, b) for a, b in zip(mine.parameters(), theirs.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(model.net.copy.parameters(), h_copy.parameters()))
    assert plugin.metrics()["interventions/injected_head_shift"] == pytest.approx(
        float(torch.cat([(a - b).flatten() for a, b in zip(h_new.parameters(), h_copy.parameters())]).norm()), rel=1e-5
    )


def test_a_target_network_sync_and_a_checkpoint_carry_the_injection():
    torch.manual_seed(0)
    online = grown_trunk_head()
    optimizer = torch.optim.Adam(online.parameters(), lr=0.01)
    PlasticityInjection(online, grown_trunk_head, at=1).attach(optimizer)
    target = copy.deepcopy(online)  # as Tianshou builds a target network
    for _ in range(3):
        regression_step(online, optimizer)
    for target_param, param in zip(target.parameters(), online.parameters(), strict=True):  # Tianshou's full sync
        target_param.data.copy_(param.data)
    assert target.net.is_injected and torch.equal(target(INJECTION_DATA[0]), online(INJECTION_DATA[0]))
    restored = grown_trunk_head()
    restored.load_state_dict(online.state_dict())
    assert restored.net.is_injected and not restored.net._modules["2"].weight.requires_grad  # h_old frozen again
    assert all(p.requires_grad for p in restored.net.new.parameters())
    assert not any(p.requires_grad for p in restored.net.copy.parameters())


def injection_training(resume_after: int | None = None) -> tuple[torch.Tensor, dict]:
    def build(seed):
        torch.manual_seed(seed)
        model = grown_trunk_head()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01, fused=True)
        plugins = PlasticityPlugins(model, PPOArgs(inject_at=3), grown_trunk_head, seed=4).attach(optimizer)
        WeightClipping(model, kappa=2.0).attach(optimizer)
        return model, optimizer, plugins

    model, optimizer, plugins = build(0)
    for step in range(1, 9):
        regression_step(model, optimizer)
        if step == resume_after:
            saved = [model.state_dict(), optimizer.state_dict(), plugins.state_dict()]
            model, optimizer, plugins = build(1)
            model.load_state_dict(saved[0])
            optimizer.load_state_dict(saved[1])
            plugins.load_state_dict(saved[2])
    assert plugins.interventions["plasticity_injection"].injected
    return model(INJECTION_DATA[0]), model.state_dict()


@pytest.mark.parametrize("resume_after", [2, 3, 5])  # before, at (saved after step 3, injected in step 4) and after it
def test_injection_resumes_exactly(resume_after):
    output, state = injection_training()
    resumed_output, resumed_state = injection_training(resume_after)
    assert torch.equal(output, resumed_output)
    assert all(torch.equal(state[name], resumed_state[name]) for name in state)


def test_numpy_actor_mirrors_the_injected_actor():
    torch.manual_seed(0)
    make = lambda: with_injectable_heads(Agent(4, 2))  # noqa: E731
    agent = make()
    optimizer = torch.optim.Adam(agent.parameters(), lr=0.01)
    plugin = PlasticityInjection(agent, make, at=1).attach(optimizer)
    obs = torch.randn(8, 4)
    for _ in range(3):
        optimizer.zero_grad()
        (agent.actor_mean(obs).square().mean() + agent.critic(obs).square().mean()).backward()
        optimizer.step()
    assert plugin.injected and list(plugin.heads) == ["critic", "actor_mean"]
    assert agent.output_layers == (
        "actor_mean.4",
        "critic.4",
        "critic.new.2",
        "critic.copy.2",
        "actor_mean.new.2",
        "actor_mean.copy.2",
    )
    assert np.allclose(NumpyActor(agent).mean(obs.numpy()), agent.actor_mean(obs).detach().numpy(), atol=1e-6)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(redo_every=-1), "--redo-every must be >= 0 or 'target'"),
        (dict(redo_every="target"), "--redo-every target: this agent has no target network"),
        (dict(redo_tau=1.0), "--redo-tau must be in"),
        (dict(redo_tau=float("nan")), "--redo-tau must be in"),
        (dict(redo_every=10, redo_samples=0), "--redo-samples must be >= 1"),
        (dict(redo_every=10, redo_samples=5000), "--redo-samples 5000 exceeds the batch size"),
        (dict(redo_every=10, optimizer="madam"), "--redo-every with --optimizer madam"),
        (dict(inject_at=-5), "--inject-at must be >= 0"),
        (dict(inject_at=100, optimizer="madam"), "--inject-at with --optimizer madam"),
        (dict(inject_at=100, reset_last_layer_every=10), "--inject-at with --reset-last-layer-every"),
        (dict(inject_at=100, sp_every=10), "--inject-at with --sp-every"),
        (dict(inject_at=100, redo_every=10), "--inject-at with --redo-every"),
        (dict(inject_at=100, reg="singular"), "--inject-at with --reg singular"),
    ],
)
def test_redo_and_injection_options_are_checked(options, message):
    with pytest.raises(UsageError, match=message) as error:
        check_plasticity_args(
            PlasticityArgs(**options), has_target_network=False, samples_available=(2048, "the batch size")
        )
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------- ReDo and injection in every agent
@pytest.mark.parametrize(("agent_name", "plugin"), [("dqn", "redo"), ("rainbow", "redo"), ("rainbow", "inject")])
def test_q_agents_recycle_or_inject(tmp_path, agent_name, plugin, capsys):
    from test_qlearning import CARTPOLE, scalars

    from agents import dqn, rainbow

    agent = dqn if agent_name == "dqn" else rainbow
    redo_every = "50" if agent_name == "dqn" else "target"
    options = {
        "redo": ["--redo-every", redo_every, "--redo-tau", "0.1", "--redo-samples", "64"],
        "inject": ["--inject-at", "150"],
    }[plugin]
    agent.main(
        [*CARTPOLE, "--total-timesteps", "600", *options, "--layer-norm", "--wc-kappa", "2", "--run-dir", str(tmp_path)]
    )
    logged = scalars(tmp_path)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    if plugin == "redo":
        assert "redo (" in capsys.readouterr().out
        assert all(0 <= value <= 1 for _, value in logged["redo/recycled_frac"])
        redo = checkpoint["plugins"]["redo"]
        assert redo["events"] == (8 if redo_every == "50" else 3)
        assert redo["inputs"]["generator"] is not None  # ReDo's replay stream is checkpointed
    else:
        assert "plasticity_injection (after gradient step 150; heads: advantage, value)" in capsys.readouterr().out
        assert sum(value for _, value in logged["interventions/plasticity_injections"]) == 1.0
        assert checkpoint["plugins"]["plasticity_injection"]["updates"] == 400
        network = torch.load(tmp_path / "model.pt", weights_only=False)["network"]
        assert network["advantage.injected"] == 1 and network["value.injected"] == 1


def test_until_the_injection_a_run_learns_bitwise_as_it_does_without_the_plug_in(tmp_path):
    """h_new and h_copy are built but idle before the injection (Rainbow's: they draw no noise either):
    the network the run learns and every number of its learning are those of a run without --inject-at."""
    from test_qlearning import CARTPOLE, scalars

    from agents import rainbow

    base = [*CARTPOLE, "--total-timesteps", "400"]
    rainbow.main([*base, "--run-dir", str(tmp_path / "plain")])
    rainbow.main([*base, "--inject-at", "1000000", "--run-dir", str(tmp_path / "grown")])
    plain = torch.load(tmp_path / "plain" / "model.pt", weights_only=False)["network"]
    grown = torch.load(tmp_path / "grown" / "model.pt", weights_only=False)["network"]
    assert all(torch.equal(plain[name], grown[name]) for name in plain)
    assert {name.split(".")[1] for name in set(grown) - set(plain)} == {"new", "copy", "injected"}
    learning = lambda tags: {t: v for t, v in tags.items() if t.startswith(("losses/", "charts/episodic"))}  # noqa: E731
    assert learning(scalars(tmp_path / "plain")) == learning(scalars(tmp_path / "grown"))


def test_redos_sampling_scoring_and_draws_change_no_training_number(tmp_path, monkeypatch):
    """Everything ReDo does but the recycling itself (replay sampling on its own stream, the eval-mode scoring
    pass, the fresh network's draw) leaves a DQN run bitwise as it is without ReDo."""
    from test_qlearning import CARTPOLE, scalars

    from agents import dqn

    base = [*CARTPOLE, "--total-timesteps", "600"]
    dqn.main([*base, "--run-dir", str(tmp_path / "plain")])
    monkeypatch.setattr(ReDo, "_recycle", lambda self, dormant, fresh: None)
    dqn.main([*base, "--redo-every", "50", "--redo-tau", "0.1", "--run-dir", str(tmp_path / "redo")])
    plain, redo = scalars(tmp_path / "plain"), scalars(tmp_path / "redo")
    assert any(v for _, v in redo.pop("redo/recycled_units")) and redo.pop(
        "redo/recycled_frac"
    )  # units were found dormant
    timing = {"charts/SPS", "charts/gradient_steps_per_second"}
    assert set(plain) == set(redo)
    for tag in set(plain) - timing:
        assert plain[tag] == redo[tag], tag
    first = torch.load(tmp_path / "plain" / "model.pt", weights_only=False)["network"]
    second = torch.load(tmp_path / "redo" / "model.pt", weights_only=False)["network"]
    assert all(torch.equal(first[key], second[key]) for key in first)


@pytest.mark.parametrize("plugin", ["redo", "inject"])
def test_ppo_recycles_or_injects(tmp_path, plugin):
    from test_ppo import TINY, scalar_series

    from agents import ppo_continuous

    options = {
        "redo": ["--redo-every", "8", "--redo-tau", "0.1", "--redo-samples", "128"],
        "inject": ["--inject-at", "10"],
    }[plugin]
    ppo_continuous.main(
        [*TINY, "--no-compile", "--total-timesteps", "768", *options, "--layer-norm", "--wc-kappa", "2"]
        + ["--run-dir", str(tmp_path)]
    )
    logged = scalar_series(tmp_path)
    plugins = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["plugins"]
    if plugin == "redo":
        assert len(logged["redo/recycled_frac"]) == 3 and plugins["redo"]["events"] == 3
    else:
        assert sum(v for _, v in logged["interventions/plasticity_injections"]) == 1.0
        assert plugins["plasticity_injection"]["updates"] == 24
