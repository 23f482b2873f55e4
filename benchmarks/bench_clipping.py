"""Cost of the weight-clipping clamp per optimizer step, relative to one Adam step.

Networks: CleanRL's PPO actor-critic (separate 64-64 tanh, Hopper sizes) and the
Nature CNN of Atari DQN. "Adam" is torch.optim.Adam with its defaults (the for-loop
implementation on CPU); the fused Adam step is shown for reference. Usage: python benchmarks/bench_clipping.py [--threads 1]
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn

from agents.plugins.clipping import WeightClipping
from benchmarks.common import interleaved_medians


def ppo_actor_critic(obs_dim: int = 11, act_dim: int = 3) -> nn.Module:
    def mlp(out: int, gain: float) -> nn.Sequential:
        layers = [nn.Linear(obs_dim, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, out)]
        for layer, g in zip(layers[::2], (math.sqrt(2), math.sqrt(2), gain)):
            nn.init.orthogonal_(layer.weight, g)
            nn.init.zeros_(layer.bias)
        return nn.Sequential(*layers)

    model = nn.Module()
    model.actor_mean, model.critic = mlp(act_dim, 0.01), mlp(1, 1.0)
    model.actor_logstd = nn.Parameter(torch.zeros(1, act_dim))
    return model


def nature_cnn(actions: int = 6) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(4, 32, 8, stride=4),
        nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3136, 512),
        nn.ReLU(),
        nn.Linear(512, actions),
    )


def measure(name: str, model: nn.Module, adam_kwargs: dict, calls: int) -> dict:
    optimizer = torch.optim.Adam(model.parameters(), **adam_kwargs)
    fused = torch.optim.Adam(model.parameters(), **adam_kwargs, fused=True)  # what the PPO agent uses
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-2
    default = WeightClipping(model, kappa=2.0)  # counts on one clamp in 10
    every = WeightClipping(model, kappa=2.0, fraction_every=1)
    clamp_only = WeightClipping(model, kappa=2.0, fraction_every=None)
    times = interleaved_medians(
        {
            "adam": optimizer.step,
            "fused_adam": fused.step,
            "default": default.clip_now,
            "every": every.clip_now,
            "clamp": clamp_only.clip_now,
        },
        calls,
    )
    return {
        "network": name,
        "params": sum(p.numel() for p in model.parameters()),
        "adam_us": times["adam"] * 1e6,
        "fused_adam_us": times["fused_adam"] * 1e6,
        "default_us": times["default"] * 1e6,
        "default": times["default"] / times["adam"],
        "clamp": times["clamp"] / times["adam"],
        "every": times["every"] / times["adam"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = [
        measure("PPO actor-critic 64-64 tanh", ppo_actor_critic(), {"lr": 3e-4, "eps": 1e-5}, calls=2000),
        measure("Nature CNN (DQN)", nature_cnn(), {"lr": 1e-4}, calls=30),
    ]
    print(f"torch {torch.__version__}, threads={args.threads}, device=cpu")
    print(
        "| network | parameters | Adam step (us) | WC, default (us) | WC / Adam, default | clamp only / Adam | counting every clamp / Adam | fused Adam step (us) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['network']} | {r['params']:,} | {r['adam_us']:.1f} | {r['default_us']:.1f} | {r['default']:.1%} | "
            f"{r['clamp']:.1%} | {r['every']:.1%} | {r['fused_adam_us']:.1f} |"
        )


if __name__ == "__main__":
    main()
