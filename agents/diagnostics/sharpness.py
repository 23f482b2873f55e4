"""Sharpness of the loss landscape: the extreme eigenvalues of the loss Hessian and its
spectral density, from Hessian-vector products (Lyle et al. 2023, section 2.1; docs/metrics.md).

Lanczos with full reorthogonalisation builds an m x m tridiagonal matrix T whose
eigenvalues (Ritz values) converge to the extreme eigenvalues of the Hessian first, so
``lambda_max`` is accurate after a few tens of products. The Ritz values with weights
``(first component of T's eigenvectors)^2`` are the nodes of stochastic Lanczos
quadrature: a discrete estimate of the spectral density (Ghorbani et al. 2019).
The tridiagonal eigenproblem is scipy's; the products are PyTorch double-backward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch


def hessian_vector_product(
    loss: torch.Tensor, params: Sequence[torch.Tensor]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v -> H v`` for the Hessian of ``loss`` over ``params`` (v flat); the graph is built once.
    Parameters the loss does not use, or uses linearly, have zero rows and columns."""
    gradients = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    curved = [index for index, g in enumerate(gradients) if g is not None and g.requires_grad]
    sizes = [p.numel() for p in params]

    def product(vector: torch.Tensor) -> torch.Tensor:
        pieces = [piece.view_as(p) for piece, p in zip(vector.split(sizes), params)]
        hv = torch.autograd.grad(
            [gradients[i] for i in curved],
            params,
            grad_outputs=[pieces[i] for i in curved],
            retain_graph=True,
            allow_unused=True,
        )
        return torch.cat([(h if h is not None else torch.zeros_like(p)).reshape(-1) for h, p in zip(hv, params)])

    return product


def lanczos(
    product: Callable[[torch.Tensor], torch.Tensor],
    size: int,
    iterations: int,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Diagonal and off-diagonal of Lanczos' tridiagonal matrix from a random unit start."""
    vector = torch.randn(size, generator=generator).to(device)
    vector /= vector.norm()
    basis = [vector]
    alphas, betas = [], []
    previous, beta = torch.zeros_like(vector), 0.0
    for step in range(min(iterations, size)):
        w = product(vector) - beta * previous
        alpha = torch.dot(w, vector).item()
        w -= alpha * vector
        for _ in range(2):  # full reorthogonalisation, twice is enough in float32
            stacked = torch.stack(basis)
            w -= stacked.T @ (stacked @ w)
        alphas.append(alpha)
        beta = w.norm().item()
        if step == min(iterations, size) - 1 or beta < 1e-6 * max(abs(a) for a in alphas + [1e-12]):
            break
        betas.append(beta)
        previous, vector = vector, w / beta
        basis.append(vector)
    return np.asarray(alphas), np.asarray(betas)


def hessian_spectrum(
    loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor], iterations: int = 20, seed: int = 0
) -> dict[str, np.ndarray | float]:
    """``lambda_max``, ``lambda_min`` (Ritz estimates) and the density's ``nodes`` and ``weights``."""
    params = [p for p in params if p.requires_grad]
    product = hessian_vector_product(loss_fn(), params)
    size = sum(p.numel() for p in params)
    alphas, betas = lanczos(product, size, iterations, torch.Generator().manual_seed(seed), params[0].device)
    from scipy.linalg import eigh_tridiagonal  # here: scipy loads only when a spectrum is computed

    nodes, vectors = eigh_tridiagonal(alphas, betas) if len(alphas) > 1 else (alphas, np.ones((1, 1)))
    return {"lambda_max": float(nodes[-1]), "lambda_min": float(nodes[0]), "nodes": nodes, "weights": vectors[0] ** 2}
