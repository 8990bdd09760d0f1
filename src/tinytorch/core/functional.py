"""Differentiable functions that layers call: the maths behind each layer class."""

from __future__ import annotations

from typing import Any

import numpy as np

from tinytorch._checks import check_probability, describe
from tinytorch.core import kernels
from tinytorch.core.tensor import Tensor


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


def embedding(input_ids: Any, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    """Look up the rows of ``weight`` selected by ``input_ids``.

    The gradient with respect to ``weight`` scatter-adds the upstream gradient
    row by row, so repeated ids accumulate; the ``padding_idx`` row (a
    non-negative index) receives none.

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

    out = kernels.gather_rows(weight.data, ids)  # (*, embedding_dim)

    def backward(grad: np.ndarray) -> tuple[np.ndarray]:
        flat_grad = grad.reshape(-1, grad.shape[-1])  # (n, embedding_dim)
        table_grad = kernels.scatter_add_rows(ids.reshape(-1), flat_grad, num_rows)
        if padding_idx is not None:
            table_grad[padding_idx] = 0
        return (table_grad,)

    return Tensor._from_op(out, (weight,), backward)


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
