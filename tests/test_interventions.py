"""The interventions beside weight clipping, each against hand-computed numbers or a
slow reference: successive L2 / L2 Init / singular-value regularization, Shrink &
Perturb, last-layer reset, Madam, LayerNorm networks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from agents.interventions import Interval, LastLayerReset, LayerRegularizer, ShrinkAndPerturb, layer_depths
from agents.networks import QNetwork, RainbowNetwork
from agents.optimizers import Madam, make_optimizer
from agents.ppo_continuous import Agent, NumpyActor


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
    assert layer_depths(Agent(11, 3)) == {"critic.0": 1, "critic.2": 2, "critic.4": 3,
                                          "actor_mean.0": 1, "actor_mean.2": 2, "actor_mean.4": 3}
    assert layer_depths(Agent(11, 3, layer_norm=True)) == {"critic.0": 1, "critic.3": 2, "critic.6": 3,
                                                           "actor_mean.0": 1, "actor_mean.3": 2, "actor_mean.6": 3}
    assert layer_depths(QNetwork((4,), 2)) == {"trunk.0": 1, "trunk.2": 2, "head.0": 3}
    assert layer_depths(QNetwork((4, 84, 84), 6)) == {"trunk.0": 1, "trunk.2": 2, "trunk.4": 3, "head.0": 4, "head.2": 5}
    rainbow = RainbowNetwork((4,), 2, atoms=5, noisy_std=0.1, layer_norm=True)
    assert layer_depths(rainbow) == {"trunk.0": 1, "trunk.3": 2, "advantage.0": 3, "advantage.3": 4, "value.0": 3, "value.3": 4}
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


@pytest.mark.parametrize(("form", "reference"), [
    ("loss", lambda params: torch.optim.Adam(params, lr=0.01, weight_decay=2 * 0.05)),     # coupled L2: through Adam
    ("decoupled", lambda params: torch.optim.AdamW(params, lr=0.01, weight_decay=2 * 0.05)),  # decoupled: AdamW
])
def test_l2_forms_with_adam_match_torchs_adam_and_adamw(form, reference):
    ours = regression_trajectory(lambda params: torch.optim.Adam(params, lr=0.01),
                                 lambda model: LayerRegularizer(model, "l2", coef=0.05, form=form))
    theirs = regression_trajectory(reference, None)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=1e-6)
    other = regression_trajectory(lambda params: torch.optim.Adam(params, lr=0.01),
                                  lambda model: LayerRegularizer(model, "l2", coef=0.05, form="decoupled" if form == "loss" else "loss"))
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


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(kind="l1", coef=0.1), "regularizer must be one of"),
    (dict(kind="l2", coef=0.0), "coef must be"),
    (dict(kind="l2", coef=0.1, delta=-1.0), "delta must be"),
    (dict(kind="singular", coef=0.1, form="decoupled"), "only as a loss term"),
    (dict(kind="l2", coef=0.1, every=0), "interval must be"),
])
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
    plugin = ShrinkAndPerturb(model, lambda: nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)), Interval(1), shrink=0.0, sigma=1.0)
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
    kinds = [type(m).__name__ for m in QNetwork((4, 84, 84), 6, layer_norm=True).modules() if not isinstance(m, (nn.Sequential, QNetwork))]
    assert kinds == ["Conv2d", "GroupNorm", "ReLU", "Conv2d", "GroupNorm", "ReLU", "Conv2d", "GroupNorm", "ReLU", "Flatten",
                     "Linear", "LayerNorm", "ReLU", "Linear"]
    agent = Agent(5, 2, layer_norm=True)
    assert [type(m).__name__ for m in agent.critic] == ["Linear", "LayerNorm", "Tanh", "Linear", "LayerNorm", "Tanh", "Linear"]


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
