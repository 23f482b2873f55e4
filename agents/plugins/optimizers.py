"""The optimizers every agent can choose: Adam (with the eps / beta2 of Lyle et al. 2023,
section 4.1, as options), SGD, and Madam (Bernstein et al. 2020), the multiplicative
optimizer with built-in weight clipping that the WC paper compares against.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

OPTIMIZERS = ("adam", "sgd", "madam")


class Madam(torch.optim.Optimizer):
    """Madam (Bernstein et al. 2020, "Learning compositional functions via multiplicative
    weight updates"), following the authors' reference implementation:

        g_hat = clamp(g / sqrt(v_hat), -g_bound, g_bound)     v: EMA of g^2 (beta2), bias-corrected
        w <- w * exp(-lr * g_hat * sign(w))
        w <- clamp(w, -w_max, w_max)                           w_max = p_scale * rms(w at the first step)

    Updates are relative to each weight's size, so entries that are exactly zero (e.g.
    zero-initialised biases) stay zero, as in the reference implementation.
    """

    def __init__(
        self, params: Iterable, lr: float = 0.01, p_scale: float = 3.0, g_bound: float = 10.0, beta2: float = 0.999
    ) -> None:
        for name, value in (("lr", lr), ("p_scale", p_scale), ("g_bound", g_bound)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"Madam {name} must be a finite number > 0, got {value}")
        if not 0 <= beta2 < 1:
            raise ValueError(f"Madam beta2 must be in [0, 1), got {beta2}")
        super().__init__(params, dict(lr=lr, p_scale=p_scale, g_bound=g_bound, beta2=beta2))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["max"] = group["p_scale"] * p.square().mean().sqrt().item()
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                beta2 = group["beta2"]
                state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                bias_correction = 1 - beta2 ** state["step"]
                normed = p.grad / (state["exp_avg_sq"] / bias_correction).sqrt()
                normed.nan_to_num_(nan=0.0).clamp_(-group["g_bound"], group["g_bound"])
                p.mul_(torch.exp(-group["lr"] * normed * p.sign()))
                p.clamp_(-state["max"], state["max"])
        return loss


def make_optimizer(
    params: Iterable,
    name: str,
    lr: float,
    *,
    adam_eps: float = 1e-8,
    adam_beta2: float = 0.999,
    madam_p_scale: float = 3.0,
    madam_g_bound: float = 10.0,
    fused: bool = False,
) -> torch.optim.Optimizer:
    """The optimizer ``name`` over ``params``; ``fused`` picks torch's one-kernel Adam / foreach SGD."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, eps=adam_eps, betas=(0.9, adam_beta2), fused=fused or None)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, foreach=fused or None)
    if name == "madam":
        return Madam(params, lr=lr, p_scale=madam_p_scale, g_bound=madam_g_bound, beta2=adam_beta2)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
