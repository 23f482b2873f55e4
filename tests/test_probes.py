"""Plasticity probe and Hessian sharpness against hand computations and dense references;
every agent runs every plug-in and probe from the command line, and the probes leave the
run's numbers unchanged."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from test_ppo import TINY, scalar_series
from test_qlearning import CARTPOLE, scalars
from torch import nn

from agents import dqn, ppo_continuous, rainbow
from agents.diagnostics.plasticity import plasticity_probe
from agents.diagnostics.sharpness import hessian_spectrum


# ---------------------------------------------------------------- plasticity probe
def linear(weight, bias) -> nn.Linear:
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([weight]))
        layer.bias.copy_(torch.tensor([bias]))
    return layer


INPUTS = torch.tensor([[0.3, -1.2], [1.0, 0.4], [-0.7, 0.9], [2.0, 0.1]])


def probe_by_hand(lr: float, steps: int) -> dict[str, float]:
    """omega_0 = (1e-5, 2e-5; 0), so g(x) = a + sin(x1 + 2 x2); SGD on the mean squared error."""
    x = INPUTS.double().numpy()
    w, b = np.array([0.5, -1.0]), 0.2
    a = (x @ w + b).mean()
    g = a + np.sin(x[:, 0] + 2 * x[:, 1])
    for _ in range(steps):
        residual = x @ w + b - g
        w, b = w - lr * 2 * (residual[:, None] * x).mean(0), b - lr * 2 * residual.mean()
    final = ((x @ w + b - g) ** 2).mean()
    baseline = g.var()
    return {"plasticity/final_loss": final, "plasticity/baseline": baseline, "plasticity/plasticity": baseline - final}


@pytest.mark.parametrize("steps", [0, 1, 5])
def test_plasticity_probe_by_hand_and_leaves_everything_untouched(steps):
    network = linear([0.5, -1.0], 0.2)
    # the first fresh network is omega_0, the second the learner (loaded with the current weights)
    fresh = iter([linear([1e-5, 2e-5], 0.0), linear([9.0, 9.0], 9.0)])
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    streams = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    metrics = plasticity_probe(
        network,
        lambda: next(fresh),
        lambda net, x: net(x),
        INPUTS,
        lambda params: torch.optim.SGD(params, lr=0.1),
        steps=steps,
        seed=3,
    )
    expected = probe_by_hand(0.1, steps)
    for tag, value in expected.items():
        assert metrics[tag] == pytest.approx(value, rel=1e-4, abs=1e-6), tag
    assert network.weight.tolist() == [[0.5, -1.0]] and network.bias.tolist() == pytest.approx([0.2])
    assert random.getstate() == streams[0]
    assert np.array_equal(np.random.get_state()[1], streams[1])
    assert torch.equal(torch.get_rng_state(), streams[2])


def test_a_fresh_network_is_more_plastic_than_a_saturated_one():
    torch.manual_seed(0)
    inputs = torch.randn(128, 4)

    def fresh():
        return nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 1))

    healthy = fresh()
    saturated = fresh()
    with torch.no_grad():
        saturated[0].weight.mul_(0.01)
        saturated[0].bias.fill_(20.0)  # every tanh unit pinned at +1 whatever the input: only a constant can be fit
    kwargs = dict(steps=300, seed=0)
    adam = lambda params: torch.optim.Adam(params, lr=1e-2)  # noqa: E731
    plastic = plasticity_probe(healthy, fresh, lambda net, x: net(x), inputs, adam, **kwargs)["plasticity/plasticity"]
    stuck = plasticity_probe(saturated, fresh, lambda net, x: net(x), inputs, adam, **kwargs)["plasticity/plasticity"]
    assert plastic > 0.3 and abs(stuck) < 0.05


# ---------------------------------------------------------------- Hessian sharpness
def test_lanczos_recovers_the_whole_spectrum_of_a_quadratic():
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 6, generator=generator), torch.randn(32, generator=generator)
    weight = nn.Parameter(torch.zeros(6))
    spectrum = hessian_spectrum(lambda: (x @ weight - y).square().mean(), [weight], iterations=6)
    exact = np.linalg.eigvalsh((2 * x.T @ x / 32).double().numpy())  # H = 2 X^T X / N
    assert np.allclose(np.sort(spectrum["nodes"]), exact, rtol=1e-4)
    assert spectrum["lambda_max"] == pytest.approx(exact[-1], rel=1e-4)
    assert spectrum["weights"].sum() == pytest.approx(1.0, abs=1e-6)


def test_sharpness_of_a_tanh_network_matches_the_dense_hessian():
    torch.manual_seed(0)
    x, y = torch.randn(20, 3), torch.randn(20, 1)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()

    def loss_of(vector):  # the same network, written out over one flat parameter vector
        pieces, start = [], 0
        for shape in shapes:
            pieces.append(vector[start : start + shape.numel()].view(shape))
            start += shape.numel()
        w1, b1, w2, b2 = pieces
        return (torch.tanh(x.double() @ w1.T + b1) @ w2.T + b2 - y.double()).square().mean()

    exact = np.linalg.eigvalsh(torch.autograd.functional.hessian(loss_of, flat).numpy())
    spectrum = hessian_spectrum(
        lambda: (model(x) - y).square().mean(), list(model.parameters()), iterations=flat.numel()
    )
    assert spectrum["lambda_max"] == pytest.approx(exact[-1], rel=1e-3)
    assert spectrum["lambda_min"] == pytest.approx(exact[0], rel=1e-2, abs=1e-4)
    few = hessian_spectrum(lambda: (model(x) - y).square().mean(), list(model.parameters()), iterations=12)
    assert few["lambda_max"] == pytest.approx(exact[-1], rel=1e-2)  # extreme eigenvalues converge first


# ---------------------------------------------------------------- every agent, from the command line
PLUGINS = (
    "--reg l2_init --reg-delta 1.25 --sp-every 7 --reset-last-layer-every 5 --layer-norm --adam-beta2 0.9 --wc-kappa 2"
).split()
PROBES = (
    "--plasticity-probe-steps 20 --plasticity-probe-samples 64 --sharpness-samples 32 "
    "--sharpness-iterations 5 --sharpness-density"
).split()
PROBE_TAGS = {
    "plasticity/final_loss",
    "plasticity/baseline",
    "plasticity/plasticity",
    "sharpness/lambda_max",
    "sharpness/lambda_min",
}
INTERVENTION_TAGS = {
    "interventions/regularizer_penalty",
    "interventions/shrink_perturb_events",
    "interventions/last_layer_resets",
}


def test_ppo_runs_every_plug_in_and_probe_and_the_probes_change_nothing(tmp_path):
    base = [*TINY, "--total-timesteps", "768", *PLUGINS]
    ppo_continuous.main([*base, "--run-dir", str(tmp_path / "plain")])
    ppo_continuous.main(
        [
            *base,
            *PROBES,
            "--plasticity-probe-every",
            "2",
            "--sharpness-every",
            "2",
            "--run-dir",
            str(tmp_path / "probed"),
        ]
    )
    plain, probed = scalar_series(tmp_path / "plain"), scalar_series(tmp_path / "probed")
    assert INTERVENTION_TAGS <= set(plain) and PROBE_TAGS <= set(probed)
    assert [step for step, _ in probed["sharpness/lambda_max"]] == [512, 768]  # update 2, then the end of the run
    assert sum(v for _, v in plain["interventions/last_layer_resets"]) == 3 * 2 * 4 // 5  # 24 gradient steps
    assert len(list((tmp_path / "probed" / "sharpness").glob("*.npz"))) == 2
    for tag in set(plain) - {"charts/SPS"}:
        assert plain[tag] == probed[tag], tag


@pytest.mark.parametrize("agent", [dqn, rainbow])
def test_q_agents_run_every_plug_in_at_target_updates_and_the_probes_change_nothing(tmp_path, agent):
    base = [
        *CARTPOLE,
        "--total-timesteps",
        "600",
        *PLUGINS[:-2],
        "--reg-every",
        "target",
        "--reset-last-layer-every",
        "target",
        "--sp-every",
        "target",
        "--reg",
        "singular" if agent is rainbow else "l2_init",
    ]
    agent.main([*base, "--run-dir", str(tmp_path / "plain")])
    agent.main(
        [
            *base,
            *PROBES,
            "--plasticity-probe-every",
            "200",
            "--sharpness-every",
            "200",
            "--run-dir",
            str(tmp_path / "probed"),
        ]
    )
    plain, probed = scalars(tmp_path / "plain"), scalars(tmp_path / "probed")
    assert INTERVENTION_TAGS <= set(plain) and PROBE_TAGS <= set(probed)
    # 400 gradient steps after the warm-up, target period 100: resets after updates 100, 200, 300
    assert sum(v for _, v in plain["interventions/last_layer_resets"]) == 3
    checkpoint = torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=False)
    assert checkpoint["plugins"]["regularizer"]["updates"] == checkpoint["gradient_steps"] == 400
    timing = {"charts/SPS", "charts/gradient_steps_per_second"}
    for tag in set(plain) - timing:
        assert plain[tag] == probed[tag], tag
    first = torch.load(tmp_path / "plain" / "model.pt", weights_only=False)["network"]
    second = torch.load(tmp_path / "probed" / "model.pt", weights_only=False)["network"]
    assert all(torch.equal(first[key], second[key]) for key in first)
