"""PPO's policy-change statistics with CleanRL's definitions (docs/metrics.md)."""

from __future__ import annotations

import torch


def approx_kl(logratio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(old_approx_kl, approx_kl) for ``logratio = logpi_new - logpi_old``.

    ``old_approx_kl = mean(-logratio)``; ``approx_kl = mean((ratio - 1) - logratio)``,
    the unbiased, non-negative estimator (the WC paper's "approximate KL").
    Returned as tensors so a training loop can stack them without a device sync.
    """
    with torch.no_grad():
        return (-logratio).mean(), ((logratio.exp() - 1) - logratio).mean()


def clip_fraction(ratio: torch.Tensor, clip_coef: float) -> torch.Tensor:
    """Fraction of samples whose probability ratio left ``[1 - clip_coef, 1 + clip_coef]``."""
    with torch.no_grad():
        return ((ratio - 1.0).abs() > clip_coef).float().mean()
