"""Figures of a training run: the loss curve and a 2-D map of the learned token vectors.

Each function returns a matplotlib ``Figure`` and neither shows nor saves it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from tinytorch._plotting import import_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """Project rows onto their first two principal components.

    Shape:
        ``(n, d)`` -> ``(n, 2)``.
    """
    centered = vectors - vectors.mean(axis=0)
    # The right singular vectors of the centered data are the principal axes.
    _, _, axes = np.linalg.svd(centered, full_matrices=False)
    return centered @ axes[:2].T  # (n, 2)


def plot_loss_curve(losses: Sequence[float], *, smoothing: int = 25) -> Figure:
    """Return a figure of the training loss per step, with a moving average of ``smoothing`` steps."""
    figure = import_figure()(figsize=(7, 4.5))
    axes = figure.add_subplot()
    steps = np.arange(1, len(losses) + 1)
    axes.plot(steps, losses, color="0.75", linewidth=0.8, label="loss per step")
    if len(losses) >= smoothing:
        kernel = np.ones(smoothing) / smoothing
        smoothed = np.convolve(losses, kernel, mode="valid")
        axes.plot(steps[smoothing - 1 :], smoothed, color="C0", label=f"mean of {smoothing} steps")
    axes.set_xlabel("step")
    axes.set_ylabel("cross-entropy (nats per token)")
    axes.set_title("Training loss")
    axes.legend()
    return figure


def plot_embedding_pca(table: np.ndarray, labels: Sequence[str]) -> Figure:
    """Return a scatter plot of the table's rows on their first two principal components, labelled."""
    points = pca_2d(table.astype(np.float64))
    figure = import_figure()(figsize=(8, 8))
    axes = figure.add_subplot()
    axes.scatter(points[:, 0], points[:, 1], s=8, color="C0", alpha=0.6)
    for (x, y), label in zip(points, labels, strict=True):
        axes.annotate(label, (x, y), fontsize=7, alpha=0.85)
    axes.set_xlabel("principal component 1")
    axes.set_ylabel("principal component 2")
    axes.set_title("Token embeddings, PCA to 2-D")
    return figure
