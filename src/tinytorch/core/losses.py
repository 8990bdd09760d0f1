"""Loss functions."""

from __future__ import annotations

from typing import Any

import numpy as np

from tinytorch._checks import check_choice, check_int, describe
from tinytorch.core.functional import as_id_array
from tinytorch.core.tensor import Tensor

REDUCTIONS = ("mean", "sum", "none")


def cross_entropy(
    logits: Tensor, targets: Any, ignore_index: int | None = None, reduction: str = "mean"
) -> Tensor:
    """Cross-entropy between unnormalized ``logits`` and integer class ``targets``, in nats.

    The log-softmax uses the log-sum-exp shift, so large logits do not
    overflow. Targets equal to ``ignore_index`` contribute neither loss nor
    gradient, and ``'mean'`` divides by the number of the other targets (NaN
    when every target is ignored, as in PyTorch).

    Shape:
        ``logits (*, C)``, ``targets (*)`` -> a scalar for ``'mean'`` and
        ``'sum'``, ``(*)`` for ``'none'``.
    """
    check_choice("reduction", reduction, REDUCTIONS)
    if not isinstance(logits, Tensor):
        raise TypeError(f"logits must be a Tensor; received {describe(logits)}")
    if logits.dtype.kind != "f" or logits.ndim == 0:
        raise TypeError(
            f"logits must be a floating-point Tensor with a class axis; received dtype {logits.dtype}, shape {logits.shape}"
        )
    if ignore_index is not None:
        check_int("ignore_index", ignore_index)
    target_ids = as_id_array(targets)
    num_classes = logits.shape[-1]
    if target_ids.shape != logits.shape[:-1]:
        raise ValueError(
            f"targets must have shape {logits.shape[:-1]} to match logits {logits.shape}; "
            f"received shape {target_ids.shape}"
        )
    keep = np.ones(target_ids.shape, dtype=bool) if ignore_index is None else target_ids != ignore_index
    valid = target_ids[keep]
    if valid.size and (valid.min() < 0 or valid.max() >= num_classes):
        bad = int(valid.min()) if valid.min() < 0 else int(valid.max())
        raise ValueError(
            f"targets must be in [0, {num_classes}) for {num_classes} classes"
            f"{'' if ignore_index is None else f' or equal ignore_index={ignore_index}'}; received {describe(bad)}"
        )

    flat_logits = logits.data.reshape(-1, num_classes)  # (n, C)
    flat_targets = np.where(keep, target_ids, 0).reshape(-1)  # (n,)
    flat_keep = keep.reshape(-1)
    shifted = flat_logits - flat_logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_norm  # (n, C)
    rows = np.arange(flat_targets.size)
    losses = np.where(flat_keep, -log_probs[rows, flat_targets], 0.0).astype(logits.dtype)  # (n,)

    count = int(flat_keep.sum())
    if reduction == "mean":
        out = np.asarray(losses.sum() / count if count else np.nan, dtype=logits.dtype)
    elif reduction == "sum":
        out = np.asarray(losses.sum(), dtype=logits.dtype)
    else:
        out = losses.reshape(target_ids.shape)

    def backward(grad: np.ndarray) -> tuple[np.ndarray]:
        # d loss_i / d logits_i = softmax(logits_i) - one_hot(target_i).
        grad_logits = np.exp(log_probs)
        grad_logits[rows, flat_targets] -= 1.0
        grad_logits *= flat_keep[:, np.newaxis]
        if reduction == "none":
            grad_logits *= grad.reshape(-1, 1)
        elif reduction == "mean":
            grad_logits *= grad / max(count, 1)
        else:
            grad_logits *= grad
        return (grad_logits.reshape(logits.shape),)

    return Tensor._from_op(out, (logits,), backward)
