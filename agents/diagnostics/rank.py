"""Rank of penultimate features: effective rank and srank (docs/metrics.md)."""

from __future__ import annotations

import torch


def _singular_values(features: torch.Tensor) -> torch.Tensor:
    if features.ndim != 2:
        raise ValueError(f"features must be a (batch, dim) matrix, got shape {tuple(features.shape)}")
    return torch.linalg.svdvals(features.detach().double())


def effective_rank(features: torch.Tensor) -> float:
    """``exp(-sum_k p_k log p_k)`` with ``p_k = sigma_k / sum_j sigma_j`` (Roy & Vetterli).

    Bounded by min(batch, dim); use a batch at least as large as the feature dim.
    """
    sigma = _singular_values(features)
    total = sigma.sum()
    if total == 0:
        return 0.0
    p = sigma / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def srank(features: torch.Tensor, delta: float = 0.01) -> int:
    """Smallest k with ``sum_{i<=k} sigma_i >= (1 - delta) * sum_i sigma_i`` (Kumar et al.)."""
    sigma = _singular_values(features)
    total = sigma.sum()
    if total == 0:
        return 0
    cumulative = torch.cumsum(sigma, 0)
    return int(torch.searchsorted(cumulative, (1 - delta) * total * (1 - 1e-12)).item()) + 1
