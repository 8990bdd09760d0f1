"""Embedding kernels: pure functions on NumPy arrays, with no ``Tensor`` and no checks.

Each kernel has two implementations with identical results:

* ``numpy_kernels``: always available, written with the fastest plain-NumPy
  technique for each job;
* ``numba_kernels``: compiled with numba and run on several threads, used
  when the ``fast`` extra is installed (``pip install 'tinytorch-embeddings[fast]'``).

The choice is made once, on the first kernel call, not when tinytorch is
imported. The environment variable ``TINYTORCH_KERNELS`` forces it:
``numpy``, ``numba``, or ``auto`` (the default: numba when importable).
``set_implementation`` switches it at run time, for tests and benchmarks.

Callers validate ids first (range and integer dtype); the kernels trust them.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType
import numpy as np

logger = logging.getLogger(__name__)

IMPLEMENTATIONS = ("numpy", "numba")
ENVIRONMENT_VARIABLE = "TINYTORCH_KERNELS"

_module: ModuleType | None = None


def _load(name: str) -> ModuleType:
    if name == "numba":
        try:
            from tinytorch.core.kernels import numba_kernels
        except ImportError as error:
            raise ImportError(
                "the numba kernels need numba; install it with pip install 'tinytorch-embeddings[fast]'"
            ) from error
        return numba_kernels
    from tinytorch.core.kernels import numpy_kernels

    return numpy_kernels


def set_implementation(name: str | None) -> str:
    """Select ``'numpy'``, ``'numba'``, or ``None`` for the automatic choice; return the active name.

    Raises:
        ValueError: ``name`` is not one of those.
        ImportError: ``'numba'`` was requested and numba is not installed.
    """
    global _module
    if name is None or name == "auto":
        try:
            _module = _load("numba")
        except ImportError:
            _module = _load("numpy")
    elif name in IMPLEMENTATIONS:
        _module = _load(name)
    else:
        choices = ", ".join(repr(choice) for choice in (*IMPLEMENTATIONS, "auto"))
        raise ValueError(f"kernel implementation must be one of {choices} or None; received {name!r}")
    logger.info("embedding kernels: %s", _module.NAME)
    return _module.NAME


def _active() -> ModuleType:
    if _module is None:
        requested = os.environ.get(ENVIRONMENT_VARIABLE, "auto").strip().lower() or "auto"
        try:
            set_implementation(requested)
        except ValueError as error:
            raise ValueError(f"{ENVIRONMENT_VARIABLE}={requested!r} is invalid: {error}") from error
    assert _module is not None  # set_implementation always sets it or raises
    return _module


def active_implementation() -> str:
    """Return ``'numba'`` or ``'numpy'``, choosing now if no kernel has run yet."""
    return _active().NAME


def gather_rows(weight: np.ndarray, ids: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Return the rows of ``weight`` selected by ``ids``, written into ``out`` when given.

    Shape:
        ``weight (num_rows, dim)``, ``ids (*)`` -> ``(*, dim)``; ``out`` must be
        C-contiguous with that shape and ``weight``'s dtype.
    """
    if out is not None:
        expected = (*ids.shape, weight.shape[1])
        if out.shape != expected or out.dtype != weight.dtype or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError(
                f"out must be a writeable C-contiguous {weight.dtype} array of shape {expected}; "
                f"received {out.dtype} of shape {out.shape}, C-contiguous={out.flags.c_contiguous}, "
                f"writeable={out.flags.writeable}"
            )
        if np.may_share_memory(out, weight):
            raise ValueError("out must not overlap weight: rows would be read after they were overwritten; pass a separate array")
    return _active().gather_rows(weight, ids, out)


def scatter_add_rows(ids: np.ndarray, rows: np.ndarray, num_rows: int) -> np.ndarray:
    """Return a fresh ``(num_rows, dim)`` array whose row ``i`` sums the ``rows`` with id ``i``.

    This is the gradient of a lookup with respect to its table: repeated ids
    accumulate and untouched rows stay zero.

    Shape:
        ``ids (n,)``, ``rows (n, dim)`` -> ``(num_rows, dim)``.
    """
    return _active().scatter_add_rows(ids, rows, num_rows)


def sum_rows_by_id(ids: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the sorted unique ids and, for each, the sum of its rows (a row-sparse gradient).

    Shape:
        ``ids (n,)``, ``rows (n, dim)`` -> ``(u,)`` int64, ``(u, dim)``.
    """
    return _active().sum_rows_by_id(ids, rows)


def add_scaled_rows(table: np.ndarray, indices: np.ndarray, values: np.ndarray, alpha: float) -> None:
    """Add ``alpha * values`` to the rows ``indices`` of ``table`` in place.

    This is a row-sparse optimizer update. Indices may repeat in any order:
    the values of one index are summed first, in their order, then scaled.
    The product is rounded in the table's dtype, so an SGD step matches the
    dense update bit for bit.

    Shape:
        ``table (num_rows, dim)``, ``indices (u,)``, ``values (u, dim)``.
    """
    _active().add_scaled_rows(table, indices, values, alpha)


def bag_forward(
    weight: np.ndarray,
    ids: np.ndarray,
    offsets: np.ndarray,
    mode: str,
    per_sample_weights: np.ndarray | None = None,
    padding_idx: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Pool the rows of each bag: ``'sum'``, ``'mean'`` or ``'max'``.

    Bag ``b`` contains ``ids[offsets[b]:offsets[b + 1]]`` (the last bag runs to
    the end). Ids equal to ``padding_idx`` are skipped; ``'mean'`` divides by
    the number of other ids; a bag with no other ids gives a zero row.
    ``per_sample_weights`` (``'sum'`` only) scales each row.

    Returns:
        The pooled rows ``(num_bags, dim)`` and, for ``'max'``, the position in
        ``ids`` that supplied each maximum ``(num_bags, dim)`` (-1 in empty
        bags), else ``None``.
    """
    return _active().bag_forward(weight, ids, offsets, mode, per_sample_weights, padding_idx)


def bag_backward(
    grad: np.ndarray,
    ids: np.ndarray,
    offsets: np.ndarray,
    mode: str,
    num_rows: int,
    per_sample_weights: np.ndarray | None = None,
    padding_idx: int | None = None,
    max_positions: np.ndarray | None = None,
) -> np.ndarray:
    """Return the fresh ``(num_rows, dim)`` table gradient of ``bag_forward`` for upstream ``grad (num_bags, dim)``."""
    return _active().bag_backward(grad, ids, offsets, mode, num_rows, per_sample_weights, padding_idx, max_positions)


def bag_weight_grad(
    grad: np.ndarray, weight: np.ndarray, ids: np.ndarray, offsets: np.ndarray, padding_idx: int | None = None
) -> np.ndarray:
    """Return the gradient of ``'sum'`` pooling with respect to ``per_sample_weights``.

    Entry ``j`` is ``grad[bag_of_j] . weight[ids[j]]`` (0 for padding ids).

    Shape:
        ``(n,)``.
    """
    return _active().bag_weight_grad(grad, weight, ids, offsets, padding_idx)
