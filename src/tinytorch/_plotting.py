"""Lazy access to matplotlib, the optional dependency behind every plot."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def import_figure() -> type[Figure]:
    """Return ``matplotlib.figure.Figure``, or raise ``ImportError`` naming the extra to install.

    Plots are built on a bare ``Figure`` rather than ``pyplot``, so no GUI
    backend or global figure state is involved.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "plotting needs matplotlib; install it with pip install 'tinytorch-embeddings[plot]'"
        ) from error
    return Figure
