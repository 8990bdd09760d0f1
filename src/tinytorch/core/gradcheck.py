"""Finite-difference gradient checks for tinytorch operations and layers.

Example:
    >>> import numpy as np
    >>> x = Tensor(np.array([0.5, 1.5]), dtype=np.float64, requires_grad=True)
    >>> analytic, numeric = compare_gradients(lambda t: t.tanh(), [x])
    >>> bool(np.allclose(analytic[0], numeric[0], rtol=1e-4, atol=1e-6))
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tinytorch.core.tensor import RowSparseGrad, Tensor, no_grad


def _dense_grad(tensor: Tensor) -> np.ndarray:
    """Return a copy of ``tensor``'s gradient as a full array (zeros when it has none)."""
    if tensor.grad is None:
        return np.zeros_like(tensor.data)
    if isinstance(tensor.grad, RowSparseGrad):
        return tensor.grad.to_dense()
    return tensor.grad.data.copy()


def compare_gradients(
    fn: Callable[..., Tensor],
    inputs: Sequence[Tensor],
    *,
    eps: float = 1e-6,
    seed: int = 0,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Return autograd's gradients and central finite differences for each input.

    The scalar objective is ``sum(fn(*inputs) * upstream)`` with a fixed
    random ``upstream`` of the output's shape, so every output entry and
    every backward path counts. The numerical gradient of input entry ``x_j``
    is ``(L(x_j + eps) - L(x_j - eps)) / (2 eps)``. Use float64 inputs and
    keep them away from kinks (``relu`` at 0, ties in ``max``).
    """
    for tensor in inputs:
        tensor.zero_grad()
    output = fn(*inputs)
    upstream = np.random.default_rng(seed).standard_normal(output.shape)
    (output * Tensor(upstream, dtype=output.dtype)).sum().backward()
    analytic = [_dense_grad(tensor) for tensor in inputs]

    def objective() -> float:
        with no_grad():
            return float((fn(*inputs).data * upstream).sum())

    numeric = []
    for tensor in inputs:
        grad = np.zeros(tensor.shape, dtype=np.float64)
        for index in np.ndindex(tensor.shape):  # works for non-contiguous data too
            original = tensor.data[index]
            tensor.data[index] = original + eps
            plus = objective()
            tensor.data[index] = original - eps
            minus = objective()
            tensor.data[index] = original
            grad[index] = (plus - minus) / (2 * eps)
        numeric.append(grad)
    return analytic, numeric
