"""Cluster ordering and rendering of gradient covariance matrices (docs/metrics.md)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from runners.base.files import atomic_write_bytes

COLORMAP = "RdBu_r"  # diverging: red = aligned gradients, blue = interfering ones


def _as_numpy(matrix) -> np.ndarray:
    array = matrix.detach().cpu().numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix)
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {array.shape}")
    return array.astype(np.float64)


def cluster_order(matrix) -> np.ndarray:
    """Row/column order that groups similar rows (Ward linkage on the rows, optimal leaf order)."""
    rows = _as_numpy(matrix)
    if rows.shape[0] < 3:
        return np.arange(rows.shape[0])
    from scipy.cluster.hierarchy import (
        leaves_list,
        linkage,
        optimal_leaf_ordering,
    )  # here: a run's start-up skips scipy

    tree = linkage(rows, method="ward")
    return leaves_list(optimal_leaf_ordering(tree, rows))


def reorder(matrix, order: np.ndarray) -> np.ndarray:
    return _as_numpy(matrix)[np.ix_(order, order)]


def render_heatmap(matrix, title: str = "", cluster: bool = True) -> np.ndarray:
    """The matrix as an RGB image (H, W, 3, uint8), colours fixed to [-1, 1]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # here: a run's start-up skips matplotlib
    from matplotlib.figure import Figure

    array = reorder(matrix, cluster_order(matrix)) if cluster else _as_numpy(matrix)
    figure = Figure(figsize=(4.2, 3.6), dpi=100)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(array, cmap=COLORMAP, vmin=-1.0, vmax=1.0, interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    figure.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write an RGB image as PNG through a temporary file, so a crash never leaves half a file."""
    from matplotlib.image import imsave

    buffer = io.BytesIO()
    imsave(buffer, image, format="png")
    return atomic_write_bytes(path, buffer.getvalue())
