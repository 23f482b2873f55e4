"""Exact gradient covariance of per-sample losses (Lyle et al. 2023, Eq. 3; docs/metrics.md).

``C[i, j] = <g_i, g_j> / (||g_i|| ||g_j||)`` with ``g_i`` the gradient of sample i's loss
over all trained parameters. The Gram matrix ``<g_i, g_j>`` is accumulated layer by
layer from one batched forward and backward pass:

* Linear: with layer input ``a_i`` and output gradient ``d_i``,
  ``<dW_i, dW_j> = (a_i . a_j)(d_i . d_j)``, so no per-sample weight gradient is formed.
* Conv1d/Conv2d: per-sample weight gradients from unfolded inputs (groups respected).
* Noisy linear layers (Tianshou's ``NoisyLinear``, ``W = mu + sigma * eps_q eps_p^T``):
  the mean terms as Linear; the sigma terms as Linear with ``d * eps_q`` and ``a * eps_p``.
* Anything else (log-std vectors, norm gains, Conv3d, ...): per-sample gradients with
  ``torch.func.vmap`` over the samples, for those parameters only.

Samples must not interact in the forward pass (no BatchNorm in training mode): the
gradient of the summed loss at sample i's activations is then sample i's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils._pytree import tree_map

PerSampleLoss = Callable[[nn.Module, Any], torch.Tensor]
HOOKED_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)


class _LayerCalls:
    """Inputs and output gradients of every call of one hooked layer during the pass."""

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []
        self.output_grads: list[torch.Tensor | None] = []

    def record(self, module, args, output) -> None:
        if not output.requires_grad:
            return
        index = len(self.inputs)
        self.inputs.append(args[0].detach())
        self.output_grads.append(None)

        # A tensor hook registered now sees the gradient of this value even if an
        # in-place activation (ReLU(inplace=True)) later overwrites the tensor.
        def keep(g, index=index):
            self.output_grads[index] = g.detach()

        output.register_hook(keep)


def _is_noisy_linear(module: nn.Module) -> bool:
    return all(hasattr(module, name) for name in ("mu_W", "sigma_W", "mu_bias", "sigma_bias", "eps_p", "eps_q"))


def _hooked_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {
        name: m
        for name, m in model.named_modules()
        if (type(m) in HOOKED_TYPES or _is_noisy_linear(m))
        and any(p.requires_grad for p in m.parameters(recurse=False))
    }


def _check_batch(name: str, tensor: torch.Tensor, k: int) -> None:
    if tensor.shape[0] != k:
        raise ValueError(
            f"layer {name!r} ran on a batch of {tensor.shape[0]} rows but the loss has {k} samples;"
            " every call of a trained layer must have one row per sample"
        )


def _linear_gram(layer: nn.Linear, calls: _LayerCalls) -> torch.Tensor:
    # Stack all calls and extra leading dims into positions t: a, d are (k, T, features).
    pairs = [(a, d) for a, d in zip(calls.inputs, calls.output_grads) if d is not None]
    k = pairs[0][0].shape[0]
    a = torch.cat([a.reshape(k, -1, a.shape[-1]) for a, _ in pairs], 1)
    d = torch.cat([d.reshape(k, -1, d.shape[-1]) for _, d in pairs], 1)
    positions = a.shape[1]
    gram = torch.zeros(k, k, dtype=torch.float64, device=a.device)
    if layer.weight.requires_grad:
        if positions == 1 or (k * positions) ** 2 <= layer.weight.numel() * k:
            gram += _outer_gram(a, d)
        else:
            per_sample = torch.einsum("kto,kti->koi", d, a).reshape(k, -1)
            gram += (per_sample @ per_sample.T).double()
    if layer.bias is not None and layer.bias.requires_grad:
        bias = d.sum(1)
        gram += (bias @ bias.T).double()
    return gram


def _outer_gram(a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Gram of per-sample outer products ``d_i a_i^T`` summed over positions; a, d are (k, T, features)."""
    k, positions = a.shape[0], a.shape[1]
    if positions == 1:
        return (a[:, 0] @ a[:, 0].T).double() * (d[:, 0] @ d[:, 0].T).double()
    aa = (a.reshape(k * positions, -1) @ a.reshape(k * positions, -1).T).reshape(k, positions, k, positions)
    dd = (d.reshape(k * positions, -1) @ d.reshape(k * positions, -1).T).reshape(k, positions, k, positions)
    return (aa.double() * dd.double()).sum((1, 3))


def _noisy_linear_gram(layer: nn.Module, calls: _LayerCalls) -> torch.Tensor:
    pairs = [(a, d) for a, d in zip(calls.inputs, calls.output_grads) if d is not None]
    k = pairs[0][0].shape[0]
    a = torch.cat([a.reshape(k, -1, a.shape[-1]) for a, _ in pairs], 1)
    d = torch.cat([d.reshape(k, -1, d.shape[-1]) for _, d in pairs], 1)
    gram = torch.zeros(k, k, dtype=torch.float64, device=a.device)
    noisy = layer.training  # in eval mode the layer uses its means only
    if layer.mu_W.requires_grad:
        gram += _outer_gram(a, d)
    if noisy and layer.sigma_W.requires_grad:
        gram += _outer_gram(a * layer.eps_p, d * layer.eps_q)
    if layer.mu_bias.requires_grad:
        bias = d.sum(1)
        gram += (bias @ bias.T).double()
    if noisy and layer.sigma_bias.requires_grad:
        bias = (d * layer.eps_q).sum(1)
        gram += (bias @ bias.T).double()
    return gram


def _padded_input(layer: nn.Conv1d | nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
    return F.pad(x, layer._reversed_padding_repeated_twice, mode=mode)


def _conv_gram(layer: nn.Conv1d | nn.Conv2d, calls: _LayerCalls) -> torch.Tensor:
    k = calls.inputs[0].shape[0]
    groups = layer.groups
    weight_grad = (
        torch.zeros(k, *layer.weight.shape, device=layer.weight.device) if layer.weight.requires_grad else None
    )
    bias_grad = torch.zeros(k, layer.out_channels, device=layer.weight.device)
    for x, d in zip(calls.inputs, calls.output_grads):
        if d is None:
            continue
        x = _padded_input(layer, x)
        if isinstance(layer, nn.Conv1d):  # as a 2-D conv of height 1
            x, d = x.unsqueeze(2), d.unsqueeze(2)
            kernel, stride, dilation = (1, *layer.kernel_size), (1, *layer.stride), (1, *layer.dilation)
        else:
            kernel, stride, dilation = layer.kernel_size, layer.stride, layer.dilation
        d = d.reshape(k, groups, layer.out_channels // groups, -1)
        bias_grad += d.sum(-1).reshape(k, -1)
        if weight_grad is not None:
            columns = F.unfold(x, kernel, dilation=dilation, stride=stride)  # (k, C_in*prod(kernel), L)
            columns = columns.reshape(k, groups, -1, columns.shape[-1])
            weight_grad += torch.einsum("kgol,kgcl->kgoc", d, columns).reshape(weight_grad.shape)
    gram = torch.zeros(k, k, dtype=torch.float64, device=layer.weight.device)
    if weight_grad is not None:
        flat = weight_grad.reshape(k, -1)
        gram += (flat @ flat.T).double()
    if layer.bias is not None and layer.bias.requires_grad:
        gram += (bias_grad @ bias_grad.T).double()
    return gram


class _LossOf(nn.Module):
    """Wraps ``per_sample_loss_fn(model, batch)`` so ``functional_call`` can swap parameters."""

    def __init__(self, model: nn.Module, per_sample_loss_fn: PerSampleLoss) -> None:
        super().__init__()
        self.model = model
        self.per_sample_loss_fn = per_sample_loss_fn

    def forward(self, batch):
        return self.per_sample_loss_fn(self.model, batch)


def _vmap_gram(model: nn.Module, per_sample_loss_fn: PerSampleLoss, batch, names: list[str]) -> torch.Tensor:
    """Gram of per-sample gradients of the named parameters, via torch.func."""
    wrapper = _LossOf(model, per_sample_loss_fn)
    params = dict(model.named_parameters())
    chosen = {f"model.{name}": params[name].detach() for name in names}

    def sample_loss(chosen_params, sample):
        one = tree_map(lambda x: x.unsqueeze(0) if isinstance(x, torch.Tensor) else x, sample)
        return functional_call(wrapper, chosen_params, (one,)).reshape(())

    in_dims = (None, tree_map(lambda x: 0 if isinstance(x, torch.Tensor) else None, batch))
    # grad() ignores an outer no_grad, which keeps the other parameters out of the result's graph.
    with torch.no_grad():
        per_sample = vmap(grad(sample_loss), in_dims=in_dims, randomness="same")(chosen, batch)
    flat = torch.cat([g.reshape(g.shape[0], -1) for g in per_sample.values()], 1)
    return (flat @ flat.T).double()


def gradient_gram(model: nn.Module, per_sample_loss_fn: PerSampleLoss, batch) -> torch.Tensor:
    """``G[i, j] = <g_i, g_j>`` over all trained parameters, float64, shape (k, k)."""
    layers = _hooked_layers(model)
    calls = {name: _LayerCalls() for name in layers}
    handles = [layer.register_forward_hook(calls[name].record) for name, layer in layers.items()]
    try:
        losses = per_sample_loss_fn(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    if losses.ndim != 1:
        raise ValueError(
            f"per_sample_loss_fn must return one loss per sample (shape (k,)), got shape {tuple(losses.shape)}"
        )
    k = losses.shape[0]
    trained = [p for p in model.parameters() if p.requires_grad]
    # autograd.grad (not backward) so the model's .grad fields are left untouched.
    torch.autograd.grad(losses.sum(), trained, allow_unused=True)

    gram = torch.zeros(k, k, dtype=torch.float64, device=losses.device)
    covered: set[int] = set()
    for name, layer in layers.items():
        if not calls[name].inputs:
            continue
        for tensor in calls[name].inputs:
            _check_batch(name, tensor, k)
        if isinstance(layer, nn.Linear):
            gram += _linear_gram(layer, calls[name])
        elif _is_noisy_linear(layer):
            gram += _noisy_linear_gram(layer, calls[name])
        else:
            gram += _conv_gram(layer, calls[name])
        covered.update(id(p) for p in layer.parameters(recurse=False))
    leftover = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in covered]
    if leftover:
        gram += _vmap_gram(model, per_sample_loss_fn, batch, leftover)
    return gram


def gradient_covariance(model: nn.Module, per_sample_loss_fn: PerSampleLoss, batch) -> torch.Tensor:
    """Normalised per-sample gradient covariance ``C`` (k x k, float32, CPU).

    ``per_sample_loss_fn(model, batch)`` must return k losses, one per sample. A sample
    whose gradient is exactly zero gets a zero row and column.
    """
    gram = gradient_gram(model, per_sample_loss_fn, batch)
    norms = gram.diagonal().clamp_min(0).sqrt()
    denominator = torch.outer(norms, norms)
    covariance = torch.where(
        denominator > 0, gram / denominator.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(gram)
    )
    return covariance.clamp(-1, 1).float().cpu()


def covariance_summary(covariance: torch.Tensor) -> dict[str, float]:
    """Mean off-diagonal entry, mean absolute off-diagonal entry, and fraction of negative
    off-diagonal entries (interference). The signed mean of a matrix made of positive and
    negative blocks can sit near 0; the absolute mean is the size of the blocks."""
    k = covariance.shape[0]
    off_diagonal = covariance[~torch.eye(k, dtype=torch.bool, device=covariance.device)]
    if off_diagonal.numel() == 0:
        return {"gradcov/mean_offdiag": 0.0, "gradcov/mean_abs_offdiag": 0.0, "gradcov/negative_offdiag_frac": 0.0}
    return {
        "gradcov/mean_offdiag": float(off_diagonal.mean()),
        "gradcov/mean_abs_offdiag": float(off_diagonal.abs().mean()),
        "gradcov/negative_offdiag_frac": float((off_diagonal < 0).float().mean()),
    }
