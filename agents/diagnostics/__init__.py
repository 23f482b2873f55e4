"""Plasticity diagnostics shared by every agent (formulas: docs/metrics.md)."""

from agents.diagnostics.gradcov import covariance_summary, gradient_covariance, gradient_gram
from agents.diagnostics.heatmap import cluster_order, render_heatmap, save_png
from agents.diagnostics.ppo import approx_kl, clip_fraction
from agents.diagnostics.rank import effective_rank, srank
from agents.diagnostics.tensorboard_log import DiagnosticsLogger
from agents.diagnostics.units import (
    record_activations,
    redo_scores,
    relu_dormancy,
    representation_metrics,
    tanh_saturation,
)
from agents.diagnostics.weights import (
    GradientNormMeter,
    distance_from_init,
    gradient_norm,
    snapshot_parameters,
    weight_norms,
)

__all__ = [
    "DiagnosticsLogger",
    "GradientNormMeter",
    "approx_kl",
    "clip_fraction",
    "cluster_order",
    "covariance_summary",
    "distance_from_init",
    "effective_rank",
    "gradient_covariance",
    "gradient_gram",
    "gradient_norm",
    "record_activations",
    "redo_scores",
    "relu_dormancy",
    "render_heatmap",
    "representation_metrics",
    "save_png",
    "snapshot_parameters",
    "srank",
    "tanh_saturation",
    "weight_norms",
]
