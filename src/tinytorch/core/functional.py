"""Differentiable functions that layers call: the maths behind each layer class."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from tinytorch._checks import check_choice, check_int, check_probability, describe
from tinytorch.core import kernels
from tinytorch.core.tensor import RowSparseGrad, Tensor, is_grad_enabled


def as_id_array(input_ids: Any) -> np.ndarray:
    """Convert ids (a ``Tensor``, nested lists, an int or an ndarray) to an integer array.

    Empty input of any dtype becomes an empty int64 array of the same shape.

    Raises:
        TypeError: the ids are floating point, bool, strings or objects. A
            float id is never rounded silently: 2.7 does not become 2.
        ValueError: nested lists are ragged.
    """
    data = input_ids.data if isinstance(input_ids, Tensor) else input_ids
    try:
        ids = np.asarray(data)
    except ValueError as error:
        raise ValueError(
            f"ids must form a rectangular array; received ragged nested lists: {error}"
        ) from error
    if ids.size == 0:
        return ids.astype(np.int64)
    if ids.dtype == object and all(
        isinstance(value, numbers.Integral) and not isinstance(value, bool) for value in ids.flat
    ):
        # Python ints arrive as objects when one is too large for int64, or
        # when the caller built an object array. Both are ids.
        try:
            return ids.astype(np.int64)
        except OverflowError:
            too_large = max(ids.flat, key=abs)
            raise ValueError(f"ids must fit in a 64-bit integer; received id {too_large}") from None
    if ids.dtype.kind not in "iu":
        raise TypeError(
            "ids must be integers (int32 or int64 for example); "
            f"received dtype {ids.dtype} from {describe(input_ids)}"
        )
    return ids


def check_ids_in_range(ids: np.ndarray, num_rows: int) -> None:
    """Raise ``ValueError`` naming the first id outside ``[0, num_rows)``.

    NumPy would silently wrap ``-1`` to the last row; this check runs before
    any indexing so that a bad id never reads the wrong row.
    """
    if ids.size == 0:
        return
    low, high = ids.min(), ids.max()
    if low < 0 or high >= num_rows:
        bad = int(low) if low < 0 else int(high)
        raise ValueError(
            f"ids must be in [0, {num_rows}) for a table of {num_rows} rows; "
            f"received id {bad}. Check the tokenizer's vocab_size against the table's"
        )


def normalize_padding_idx(padding_idx: int | None, num_rows: int) -> int | None:
    """Return ``padding_idx`` as a row number in ``[0, num_rows)``; a negative one counts from the end.

    Raises:
        TypeError: ``padding_idx`` is not an integer.
        ValueError: it is outside ``[-num_rows, num_rows)``.
    """
    if padding_idx is None:
        return None
    check_int("padding_idx", padding_idx)
    if not -num_rows <= padding_idx < num_rows:
        raise ValueError(
            f"padding_idx must be in [-{num_rows}, {num_rows}) for a table of {num_rows} rows; "
            f"received {describe(padding_idx)}"
        )
    return int(padding_idx) % num_rows


def embedding(
    input_ids: Any, weight: Tensor, padding_idx: int | None = None, *, sparse: bool = False
) -> Tensor:
    """Look up the rows of ``weight`` selected by ``input_ids``.

    The gradient with respect to ``weight`` scatter-adds the upstream gradient
    row by row, so repeated ids accumulate; the ``padding_idx`` row (negative
    counts from the end) receives none. With ``sparse=True`` the gradient is a
    ``RowSparseGrad`` holding only the rows that the ids touched.

    Shape:
        ``input_ids (*)``, ``weight (num_embeddings, embedding_dim)`` -> ``(*, embedding_dim)``.

    Example:
        >>> table = Tensor(np.eye(3))
        >>> embedding([[2, 0]], table).shape
        (1, 2, 3)
    """
    ids = as_id_array(input_ids)
    num_rows = weight.shape[0]
    check_ids_in_range(ids, num_rows)
    padding_idx = normalize_padding_idx(padding_idx, num_rows)

    out = kernels.gather_rows(weight.data, ids)  # (*, embedding_dim)
    # A private copy, so that a caller who reuses the id array before
    # backward() cannot redirect the gradient to other rows.
    flat_ids = ids.reshape(-1).copy() if weight.requires_grad and is_grad_enabled() else ids.reshape(-1)

    def dense_backward(grad: np.ndarray) -> tuple[np.ndarray]:
        flat_grad = grad.reshape(-1, grad.shape[-1])  # (n, embedding_dim)
        table_grad = kernels.scatter_add_rows(flat_ids, flat_grad, num_rows)
        if padding_idx is not None:
            table_grad[padding_idx] = 0
        return (table_grad,)

    def sparse_backward(grad: np.ndarray) -> tuple[RowSparseGrad]:
        rows, values = flat_ids, grad.reshape(-1, grad.shape[-1])  # (n,), (n, embedding_dim)
        if padding_idx is not None:
            keep = rows != padding_idx
            if not keep.all():
                rows, values = rows[keep], values[keep]
        # Left uncoalesced, as PyTorch leaves it: an SGD step then adds the
        # rows without first writing their sums to a new array.
        return (RowSparseGrad(rows, values, weight.shape, coalesced=False),)

    return Tensor._from_op(out, (weight,), sparse_backward if sparse else dense_backward)


BAG_MODES = ("sum", "mean", "max")


def _bag_starts(ids: np.ndarray, offsets: Any, include_last_offset: bool) -> tuple[np.ndarray, np.ndarray]:
    """Return the flat ids and each bag's start, after checking ``offsets`` against PyTorch's rules."""
    if ids.ndim == 2:
        if offsets is not None:
            raise ValueError("offsets must be None for 2-D input, where each row is one bag; pass 1-D input to use offsets")
        num_bags, length = ids.shape
        return ids.reshape(-1), np.arange(num_bags, dtype=np.int64) * length
    if ids.ndim != 1:
        raise ValueError(f"input must be 1-D (with offsets) or 2-D (one bag per row); received shape {ids.shape}")
    if offsets is None:
        raise ValueError("1-D input needs offsets, the start of each bag in input (for example [0, 3, 5])")

    starts = as_id_array(offsets).astype(np.int64, copy=False)
    if starts.ndim != 1:
        raise ValueError(f"offsets must be 1-D; received shape {starts.shape}")
    if include_last_offset:
        if starts.size == 0 or starts[-1] != ids.size:
            last = int(starts[-1]) if starts.size else None
            raise ValueError(
                f"with include_last_offset=True the last offset must equal len(input)={ids.size}; received {last}"
            )
        starts = starts[:-1]
    if starts.size:
        if starts[0] != 0:
            raise ValueError(f"offsets[0] must be 0, so that the first bag starts at the first id; received {int(starts[0])}")
        steps = np.diff(starts)
        if (steps < 0).any():
            bad = int(np.flatnonzero(steps < 0)[0]) + 1
            raise ValueError(f"offsets must be non-decreasing; received offsets[{bad}]={int(starts[bad])} after {int(starts[bad - 1])}")
        if starts[-1] > ids.size:
            raise ValueError(f"offsets must be at most len(input)={ids.size}; received {int(starts[-1])}")
    return ids, starts


def embedding_bag(
    input_ids: Any,
    weight: Tensor,
    offsets: Any = None,
    mode: str = "mean",
    per_sample_weights: Any = None,
    padding_idx: int | None = None,
    include_last_offset: bool = False,
) -> Tensor:
    """Pool the table rows of each bag of ids by ``'sum'``, ``'mean'`` or ``'max'``, with PyTorch's rules.

    2-D input has one bag per row. 1-D input needs ``offsets``, the start of
    each bag (``offsets[0] == 0``, non-decreasing); with
    ``include_last_offset`` the final offset is ``len(input)`` and marks the
    end of the last bag. Ids equal to ``padding_idx`` (negative counts from
    the end) are skipped in every mode, and ``'mean'`` divides by the remaining count. An
    empty bag gives a zero row and passes no gradient.
    ``per_sample_weights`` (same shape as the input, ``'sum'`` only) scale
    each row; the result is differentiable with respect to the table and to
    them.

    NOTE: ``'max'`` skips NaN wherever it appears in a bag. PyTorch 2.13
    keeps a NaN that comes first in a bag and skips later ones.

    Shape:
        ``(bags, length)`` or ``(n,)`` with ``offsets (bags,)`` -> ``(bags, embedding_dim)``.
    """
    check_choice("mode", mode, BAG_MODES)
    ids = as_id_array(input_ids)
    flat_ids, starts = _bag_starts(ids, offsets, include_last_offset)
    num_rows = weight.shape[0]
    check_ids_in_range(flat_ids, num_rows)
    padding_idx = normalize_padding_idx(padding_idx, num_rows)

    sample_weights = None
    if per_sample_weights is not None:
        if mode != "sum":
            raise ValueError(f"per_sample_weights work only with mode='sum'; received mode={mode!r}")
        sample_weights = per_sample_weights if isinstance(per_sample_weights, Tensor) else Tensor(per_sample_weights, dtype=weight.dtype)
        if sample_weights.dtype.kind != "f":
            raise TypeError(f"per_sample_weights must be floating point; received dtype {sample_weights.dtype}")
        if sample_weights.shape != ids.shape:
            raise ValueError(
                f"per_sample_weights must have the input's shape {ids.shape}; received shape {sample_weights.shape}"
            )
    # Private copies: a caller who reuses the arrays before backward() must not change the gradient.
    weights_data = None if sample_weights is None else sample_weights.data.reshape(-1).astype(weight.dtype)
    flat_ids = flat_ids.copy()
    starts = starts.copy()

    out, max_positions = kernels.bag_forward(weight.data, flat_ids, starts, mode, weights_data, padding_idx)

    def backward(grad: np.ndarray) -> tuple[np.ndarray, ...]:
        table_grad = kernels.bag_backward(
            grad, flat_ids, starts, mode, num_rows, weights_data, padding_idx, max_positions
        )
        if sample_weights is None:
            return (table_grad,)
        weight_grad = kernels.bag_weight_grad(grad, weight.data, flat_ids, starts, padding_idx)
        return table_grad, weight_grad.reshape(ids.shape)

    parents = (weight,) if sample_weights is None else (weight, sample_weights)
    return Tensor._from_op(out, parents, backward)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Apply ``x @ weight.T + bias`` as one graph node.

    Shape:
        ``x (*, in_features)``, ``weight (out_features, in_features)``,
        ``bias (out_features,)`` -> ``(*, out_features)``.
    """
    x_data, w = x.data, weight.data
    # One 2-D product over all rows: a 3-D ``x @ w.T`` runs as many small
    # products and measured 2.5-3.5x slower at this library's sizes.
    flat_x = x_data.reshape(-1, x_data.shape[-1])  # (n, in_features)
    out = flat_x @ w.T  # (n, out_features)
    if bias is not None:
        out += bias.data
    out = out.reshape(*x_data.shape[:-1], w.shape[0])  # (*, out_features)

    def backward(grad: np.ndarray) -> tuple[np.ndarray, ...]:
        flat_grad = grad.reshape(-1, grad.shape[-1])  # (n, out_features)
        grad_x = (flat_grad @ w).reshape(x_data.shape)  # (*, in_features)
        grad_w = flat_grad.T @ flat_x  # (out_features, in_features)
        if bias is None:
            return grad_x, grad_w
        return grad_x, grad_w, flat_grad.sum(axis=0)

    parents = (x, weight) if bias is None else (x, weight, bias)
    return Tensor._from_op(out, parents, backward)


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """Normalize over the last axis to zero mean and unit variance, then scale and shift.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``, with the biased
    variance, as one graph node.

    Shape:
        ``x (*, d)``, ``weight (d,)``, ``bias (d,)`` -> ``(*, d)``.
    """
    x_data = x.data
    mean = x_data.mean(axis=-1, keepdims=True)
    centered = x_data - mean
    inv_std = 1.0 / np.sqrt((centered * centered).mean(axis=-1, keepdims=True) + eps)
    normalized = centered * inv_std  # (*, d)
    out = normalized * weight.data + bias.data

    def backward(grad: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        reduce_axes = tuple(range(grad.ndim - 1))
        grad_weight = (grad * normalized).sum(axis=reduce_axes)
        grad_bias = grad.sum(axis=reduce_axes)
        grad_normalized = grad * weight.data
        # d/dx of (x - mean) * inv_std, projected off the mean and the normalized direction.
        grad_x = inv_std * (
            grad_normalized
            - grad_normalized.mean(axis=-1, keepdims=True)
            - normalized * (grad_normalized * normalized).mean(axis=-1, keepdims=True)
        )
        return grad_x, grad_weight, grad_bias

    return Tensor._from_op(out.astype(x_data.dtype, copy=False), (x, weight, bias), backward)


_GELU_SCALE = math.sqrt(2.0 / math.pi)  # a Python float, so float32 input stays float32


def gelu(x: Tensor) -> Tensor:
    """GELU with the tanh approximation: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.

    This is the form GPT-2 uses and that PyTorch computes with ``approximate='tanh'``.
    """
    x_data = x.data
    # x * x * x, not x**3: NumPy's float32 power is about 70x slower than two products.
    squared = x_data * x_data
    tanh_inner = np.tanh(_GELU_SCALE * (x_data + 0.044715 * squared * x_data))
    out = 0.5 * x_data * (1.0 + tanh_inner)

    def backward(grad: np.ndarray) -> tuple[np.ndarray]:
        d_inner = _GELU_SCALE * (1.0 + 3 * 0.044715 * squared)
        local = 0.5 * (1.0 + tanh_inner) + 0.5 * x_data * (1.0 - tanh_inner * tanh_inner) * d_inner
        return (grad * local,)

    return Tensor._from_op(out, (x,), backward)


def dropout(x: Tensor, p: float, *, training: bool, rng: np.random.Generator) -> Tensor:
    """Zero each entry with probability ``p`` and scale the rest by ``1 / (1 - p)``.

    This is inverted dropout: the expected value is unchanged, so evaluation
    (``training=False``) returns ``x`` itself.
    """
    p = check_probability("p", p)
    if not training or p == 0.0:
        return x
    keep = rng.random(x.shape) >= p
    scale = np.asarray(1.0 / (1.0 - p), dtype=x.dtype)
    return x * Tensor(keep * scale, dtype=x.dtype)
