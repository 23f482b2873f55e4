"""The one place that writes diagnostics to TensorBoard, so every agent logs the same tags."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from agents.diagnostics.gradcov import PerSampleLoss, covariance_summary, gradient_covariance
from agents.diagnostics.heatmap import cluster_order, render_heatmap, save_png
from agents.diagnostics.plasticity import Predict, plasticity_probe
from agents.diagnostics.sharpness import hessian_spectrum
from agents.diagnostics.units import representation_metrics
from agents.diagnostics.weights import distance_from_init, snapshot_parameters, weight_norms
from runners.base.files import atomic_write_bytes


class ClipStatistics(Protocol):
    """What the logger reads of weight clipping (``agents.plugins.clipping.WeightClipping``)."""

    def pop_clipped_fraction(self) -> float | None: ...


class DiagnosticsLogger:
    """Measures a model's plasticity diagnostics and writes them under stable tags.

    Args:
        writer: a ``torch.utils.tensorboard.SummaryWriter``.
        model: the trained network (theta_0 is snapshotted now, for distance from init).
        feature_layers: layers whose inputs are the penultimate features (the agents pass their
            output layers: ``agents.plugins.clipping.output_layer_names``, the layers weight
            clipping's ``--wc-skip-last-layer`` leaves free).
        run_dir: where gradient covariance matrices and heatmap PNGs are saved (optional).
    """

    def __init__(
        self, writer, model: nn.Module, feature_layers: Iterable[str], run_dir: str | Path | None = None
    ) -> None:
        self.writer = writer
        self.model = model
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.feature_layers = list(feature_layers)
        self.initial_parameters = snapshot_parameters(model)

    def log_scalars(self, metrics: Mapping[str, float | None], step: int) -> None:
        for tag, value in metrics.items():
            if value is not None:
                self.writer.add_scalar(tag, float(value), step)

    def log_representation(self, run_forward: Callable[[], object], step: int) -> dict[str, float]:
        """Saturated/dormant/dead units and feature ranks from one forward on the probe batch."""
        metrics = representation_metrics(self.model, run_forward, self.feature_layers)
        self.log_scalars(metrics, step)
        return metrics

    def log_weights(self, step: int, gradient_norm: float | None = None) -> dict[str, float]:
        """Weight norms (global, per layer), distance from init and, if given, the gradient norm."""
        metrics = weight_norms(self.model)
        metrics["diagnostics/distance_from_init"] = distance_from_init(self.model, self.initial_parameters)
        if gradient_norm is not None:
            metrics["diagnostics/grad_norm"] = float(gradient_norm)
        self.log_scalars(metrics, step)
        return metrics

    def log_clipping(self, clipping: ClipStatistics | None, step: int) -> float | None:
        fraction = clipping.pop_clipped_fraction() if clipping is not None else None
        self.log_scalars({"wc/clipped_fraction": fraction}, step)
        return fraction

    def log_gradient_covariance(self, per_sample_loss_fn: PerSampleLoss, batch, step: int) -> torch.Tensor:
        """Compute C on ``batch``, log its heatmap image and summaries, and save matrix and PNG."""
        covariance = gradient_covariance(self.model, per_sample_loss_fn, batch)
        self.log_scalars(covariance_summary(covariance), step)
        image = render_heatmap(covariance, title=f"gradient covariance, step {step}")
        self.writer.add_image("gradcov/heatmap", image, step, dataformats="HWC")
        if self.run_dir is not None:
            stem = self.run_dir / "gradcov" / f"step_{step:010d}"
            buffer = io.BytesIO()
            np.savez(buffer, covariance=covariance.numpy(), order=cluster_order(covariance), step=step)
            atomic_write_bytes(stem.with_suffix(".npz"), buffer.getvalue())
            save_png(image, stem.with_suffix(".png"))
        return covariance

    def log_plasticity(
        self,
        fresh_network: Callable[[], nn.Module],
        predict: Predict,
        inputs,
        make_optimizer: Callable,
        step: int,
        *,
        steps: int,
        targets: int,
        seed: int,
    ) -> dict[str, float]:
        """The plasticity probe (Lyle et al. 2023, 2.2) from the current weights; see ``plasticity_probe``."""
        metrics = plasticity_probe(
            self.model, fresh_network, predict, inputs, make_optimizer, steps=steps, targets=targets, seed=seed
        )
        self.log_scalars(metrics, step)
        return metrics

    def log_sharpness(
        self, loss_fn: Callable[[], torch.Tensor], step: int, *, iterations: int, seed: int, save_density: bool = False
    ) -> dict[str, float]:
        """Largest and smallest Hessian eigenvalue estimates of ``loss_fn()``; with ``save_density``
        the quadrature nodes and weights go to ``<run_dir>/sharpness/step_<n>.npz``."""
        spectrum = hessian_spectrum(loss_fn, list(self.model.parameters()), iterations=iterations, seed=seed)
        metrics = {"sharpness/lambda_max": spectrum["lambda_max"], "sharpness/lambda_min": spectrum["lambda_min"]}
        self.log_scalars(metrics, step)
        if save_density and self.run_dir is not None:
            buffer = io.BytesIO()
            np.savez(buffer, nodes=spectrum["nodes"], weights=spectrum["weights"], step=step)
            atomic_write_bytes(self.run_dir / "sharpness" / f"step_{step:010d}.npz", buffer.getvalue())
        return metrics

    def state_dict(self) -> dict:
        return {"initial_parameters": self.initial_parameters}

    def load_state_dict(self, state: Mapping) -> None:
        self.initial_parameters = dict(state["initial_parameters"])
