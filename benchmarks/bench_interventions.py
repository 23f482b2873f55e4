"""Cost of each plasticity plug-in per training step, relative to a plain Adam training step
(forward, backward, step) measured side by side, and the cost of one probe in training steps.

Networks: the PPO agent (64-64 tanh actor and critic, Hopper sizes, minibatch 64) and the
DQN Nature CNN (batch 32). Shrink & Perturb and the last-layer reset are timed as if they
fired on every step: the cost of one event. Usage: python benchmarks/bench_interventions.py [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from agents.diagnostics.plasticity import plasticity_probe
from agents.diagnostics.sharpness import hessian_spectrum
from agents.plugins.interventions import Interval, LastLayerReset, LayerRegularizer, ShrinkAndPerturb
from agents.plugins.optimizers import Madam
from agents.ppo_continuous import Agent
from agents.qlearning.networks import QNetwork
from benchmarks.common import interleaved_medians


def ppo_case(layer_norm: bool = False):
    model = Agent(11, 3, layer_norm=layer_norm)
    obs = torch.randn(64, 11)
    return (
        model,
        lambda m: m.critic(obs).square().mean() + m.actor_mean(obs).square().mean(),
        obs,
        lambda net, x: torch.cat([net.critic(x), net.actor_mean(x)], 1),
        lambda: Agent(11, 3, layer_norm=layer_norm),
    )


def cnn_case(layer_norm: bool = False):
    model = QNetwork((4, 84, 84), 6, layer_norm=layer_norm)
    obs = torch.randint(0, 255, (32, 4, 84, 84), dtype=torch.uint8)
    return (
        model,
        lambda m: m(obs)[0].square().mean(),
        obs,
        lambda net, x: net(x)[0],
        lambda: QNetwork((4, 84, 84), 6, layer_norm=layer_norm),
    )


def training_step(model: nn.Module, loss_fn, optimizer_class=torch.optim.Adam, plugin=None, **optimizer_kwargs):
    optimizer = optimizer_class(model.parameters(), **optimizer_kwargs)
    if plugin is not None:
        plugin(model).attach(optimizer)

    def step() -> None:
        optimizer.zero_grad()
        loss_fn(model).backward()
        optimizer.step()

    return step


def measure(name: str, case, calls: int) -> list[tuple[str, str, float]]:
    base_model, loss_fn, obs, predict, fresh = case()
    every_step = Interval(1)
    candidates = {
        "adam": training_step(fresh(), loss_fn, lr=1e-4),
        "l2 (loss form)": training_step(fresh(), loss_fn, plugin=lambda m: LayerRegularizer(m, "l2", 0.01), lr=1e-4),
        "l2_init decoupled": training_step(
            fresh(), loss_fn, plugin=lambda m: LayerRegularizer(m, "l2_init", 0.01, form="decoupled"), lr=1e-4
        ),
        "singular, delta 1.25": training_step(
            fresh(), loss_fn, plugin=lambda m: LayerRegularizer(m, "singular", 0.001, delta=1.25), lr=1e-4
        ),
        "shrink & perturb event": training_step(
            fresh(), loss_fn, plugin=lambda m: ShrinkAndPerturb(m, fresh, every_step, shrink=0.2, sigma=0.1), lr=1e-4
        ),
        "last-layer reset event": training_step(
            fresh(), loss_fn, plugin=lambda m: LastLayerReset(m, fresh, every_step), lr=1e-4
        ),
        "madam": training_step(fresh(), loss_fn, optimizer_class=Madam, lr=1e-2),
        "layer norm network": training_step(case(layer_norm=True)[4](), loss_fn, lr=1e-4),
    }
    times = interleaved_medians(candidates, calls)
    rows = [(name, label, seconds / times["adam"]) for label, seconds in times.items()]

    def once(fn) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    probe = once(
        lambda: plasticity_probe(base_model, fresh, predict, obs, lambda p: torch.optim.Adam(p, lr=1e-4), steps=100)
    )
    sharpness = once(
        lambda: hessian_spectrum(lambda: loss_fn(base_model), list(base_model.parameters()), iterations=20)
    )
    rows.append((name, "plasticity probe, 100 steps", probe / times["adam"]))
    rows.append((name, "sharpness, 20 Lanczos steps", sharpness / times["adam"]))
    print(f"{name}: plain Adam training step {times['adam'] * 1e3:.2f} ms", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = measure("PPO actor-critic", ppo_case, calls=200) + measure("Nature CNN", cnn_case, calls=10)
    print("\n| network | plug-in | time / plain Adam training step |\n|-|-|-|")
    for name, label, ratio in rows:
        print(f"| {name} | {label} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
