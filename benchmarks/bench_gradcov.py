"""Exact gradient covariance vs the naive loop of k per-sample backward passes.

Same model, same batch, same process; also checks that the two agree.
Usage: python -m benchmarks.bench_gradcov [--k 128] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from agents.diagnostics import gradient_covariance
from benchmarks.bench_clipping import nature_cnn, ppo_actor_critic


def naive_covariance(model, loss_fn, batch: dict, k: int) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(k):
        grads = torch.autograd.grad(loss_fn(model, {key: v[i : i + 1] for key, v in batch.items()})[0], params)
        rows.append(torch.cat([g.flatten() for g in grads]).double())
    gradients = torch.stack(rows)
    gram = gradients @ gradients.T
    norms = gram.diagonal().sqrt()
    return (gram / torch.outer(norms, norms)).float()


def td_loss(model, batch):
    q = model(batch["obs"]).gather(1, batch["action"][:, None]).squeeze(1)
    return (q - batch["target"]) ** 2


def ppo_loss(model, batch):
    mean = model.actor_mean(batch["obs"])
    log_prob = torch.distributions.Normal(mean, model.actor_logstd.exp()).log_prob(batch["action"]).sum(-1)
    value = model.critic(batch["obs"]).squeeze(-1)
    return -log_prob * batch["advantage"] + 0.5 * (value - batch["ret"]) ** 2


def timed(fn, repeats: int = 3):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--k", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    k = args.k
    cases = {
        "Nature CNN, TD loss": (
            nature_cnn(),
            td_loss,
            {"obs": torch.rand(k, 4, 84, 84), "action": torch.randint(0, 6, (k,)), "target": torch.randn(k)},
        ),
        "PPO actor-critic, PPO loss": (
            ppo_actor_critic(),
            ppo_loss,
            {
                "obs": torch.randn(k, 11),
                "action": torch.randn(k, 3),
                "advantage": torch.randn(k),
                "ret": torch.randn(k),
            },
        ),
    }
    print(f"torch {torch.__version__}, threads={args.threads}, k={k}, device=cpu")
    print("| model | one batched fwd+bwd (ms) | naive loop (ms) | ours (ms) | loop / ours | max abs difference |")
    print("|---|---|---|---|---|---|")
    for name, (model, loss_fn, batch) in cases.items():
        params = [p for p in model.parameters() if p.requires_grad]
        batched, _ = timed(lambda: torch.autograd.grad(loss_fn(model, batch).sum(), params))
        naive_s, naive = timed(lambda: naive_covariance(model, loss_fn, batch, k), repeats=1)
        ours_s, ours = timed(lambda: gradient_covariance(model, loss_fn, batch))
        print(
            f"| {name} | {batched * 1e3:.1f} | {naive_s * 1e3:.0f} | {ours_s * 1e3:.0f} | {naive_s / ours_s:.1f}x | {(naive - ours).abs().max().item():.1e} |"
        )


if __name__ == "__main__":
    main()
