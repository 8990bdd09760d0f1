"""Optimizers that update parameters in place from their gradients.

Each optimizer keeps the ``Parameter`` objects it was given; ``step()``
updates those that have a gradient and skips the rest (frozen tables, unused
layers). Updates follow PyTorch's formulas, so results can be compared.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from tinytorch._checks import check_non_negative, describe
from tinytorch.core.layers import Module, Parameter
from tinytorch.core.tensor import RowSparseGrad


def _check_betas(betas: tuple[float, float]) -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2); received {describe(betas)}")
    beta1, beta2 = (check_non_negative("each beta", beta) for beta in betas)
    if beta1 >= 1.0 or beta2 >= 1.0:
        raise ValueError(f"each beta must be in [0, 1); received betas={tuple(betas)}")
    return beta1, beta2


class Optimizer:
    """Base class of the optimizers: keeps the parameters and clears their gradients."""

    def __init__(self, params: Iterable[Parameter], lr: float) -> None:
        if isinstance(params, Module):
            raise TypeError(f"optimizers take a list of parameters; received {describe(params)}. Pass model.parameters()")
        self.params = list(params)
        if not self.params:
            raise ValueError("the optimizer received an empty parameter list; pass model.parameters()")
        for param in self.params:
            if not isinstance(param, Parameter):
                raise TypeError(f"optimizers take Parameter objects; received {describe(param)}")
        if len({id(param) for param in self.params}) != len(self.params):
            raise ValueError("the parameter list contains one Parameter more than once, which would update it twice; remove the duplicate")
        self.lr = check_non_negative("lr", lr)

    def zero_grad(self) -> None:
        """Clear the gradient of every parameter."""
        for param in self.params:
            param.zero_grad()

    def step(self) -> None:
        """Update every parameter that has a gradient."""
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and L2 weight decay.

    ``g = grad + weight_decay * p``; ``buf = momentum * buf + g`` (``buf = g``
    at the first step); ``p -= lr * buf``. A row-sparse gradient updates only
    its rows and needs ``momentum == 0`` and ``weight_decay == 0``, as in
    PyTorch, because both would touch every row.
    """

    def __init__(self, params: Iterable[Parameter], lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr)
        self.momentum = check_non_negative("momentum", momentum)
        self.weight_decay = check_non_negative("weight_decay", weight_decay)
        self._buffers: dict[int, np.ndarray] = {}

    def step(self) -> None:
        """Apply one update."""
        for param in self.params:
            grad = param.grad
            if grad is None:
                continue
            if isinstance(grad, RowSparseGrad):
                if self.momentum or self.weight_decay:
                    raise ValueError(
                        "SGD with a row-sparse gradient needs momentum=0 and weight_decay=0; "
                        f"received momentum={self.momentum}, weight_decay={self.weight_decay}. "
                        "Build the Embedding with sparse=False to use them"
                    )
                grad.add_to(param.data, -self.lr)
                continue

            update = grad.data
            if self.weight_decay:
                update = update + self.weight_decay * param.data
            if self.momentum:
                buffer = self._buffers.get(id(param))
                if buffer is None:
                    buffer = self._buffers[id(param)] = np.array(update, copy=True)
                else:
                    buffer *= self.momentum
                    buffer += update
                update = buffer
            param.data -= self.lr * update


class _AdamFamily(Optimizer):
    """Shared state of the Adam optimizers: betas, eps, and per-parameter moments and step counts."""

    def __init__(self, params: Iterable[Parameter], lr: float, betas: tuple[float, float], eps: float) -> None:
        super().__init__(params, lr)
        self.betas = _check_betas(betas)
        self.eps = check_non_negative("eps", eps)
        self._moments: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._steps: dict[int, int] = {}

    def _advance(self, param: Parameter) -> tuple[np.ndarray, np.ndarray, int]:
        """Return the parameter's first and second moments (zeros at first) and its new step count."""
        key = id(param)
        if key not in self._moments:
            self._moments[key] = (np.zeros_like(param.data), np.zeros_like(param.data))
        self._steps[key] = self._steps.get(key, 0) + 1
        first, second = self._moments[key]
        return first, second, self._steps[key]


class Adam(_AdamFamily):
    """Adam (Kingma and Ba, 2015) with bias correction; ``weight_decay`` adds an L2 term to the gradient.

    ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``,
    ``p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)``.
    """

    decoupled_weight_decay = False

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr, betas, eps)
        self.weight_decay = check_non_negative("weight_decay", weight_decay)

    def step(self) -> None:
        """Apply one update."""
        beta1, beta2 = self.betas
        for param in self.params:
            grad = param.grad
            if grad is None:
                continue
            g = grad.to_dense() if isinstance(grad, RowSparseGrad) else grad.data
            if self.weight_decay and self.decoupled_weight_decay:
                param.data *= 1.0 - self.lr * self.weight_decay
            elif self.weight_decay:
                g = g + self.weight_decay * param.data

            m, v, step = self._advance(param)
            m *= beta1
            m += (1.0 - beta1) * g
            v *= beta2
            v += (1.0 - beta2) * (g * g)
            step_size = self.lr / (1.0 - beta1**step)
            denominator = np.sqrt(v / (1.0 - beta2**step)) + self.eps
            param.data -= step_size * m / denominator


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter, 2019): ``p *= 1 - lr * weight_decay`` before the Adam step."""

    decoupled_weight_decay = True

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


class SparseAdam(_AdamFamily):
    """Lazy Adam for row-sparse gradients: only the rows a batch touched change, moments included.

    As in ``torch.optim.SparseAdam``, the step count used for bias correction
    is shared by all rows of a parameter, untouched rows keep stale moments,
    and the update is ``p -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``.
    Dense gradients are rejected: use ``Adam`` for them.
    """

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(params, lr, betas, eps)

    def step(self) -> None:
        """Apply one update to the rows present in each gradient."""
        beta1, beta2 = self.betas
        for param in self.params:
            grad = param.grad
            if grad is None:
                continue
            if not isinstance(grad, RowSparseGrad):
                raise ValueError(
                    f"SparseAdam needs row-sparse gradients; received a dense gradient of shape {grad.shape}. "
                    "Build the Embedding with sparse=True and use the table only for lookups (a weight-tied "
                    "output layer such as attend gives it a dense gradient), or use Adam for dense parameters"
                )
            m, v, step = self._advance(param)
            rows, g = grad.indices, grad.values
            m_rows = beta1 * m[rows] + (1.0 - beta1) * g
            v_rows = beta2 * v[rows] + (1.0 - beta2) * (g * g)
            m[rows] = m_rows
            v[rows] = v_rows
            # The paper's efficient form, as torch.optim.SparseAdam computes it:
            # the bias corrections fold into the step size, and eps is added to sqrt(v).
            step_size = self.lr * math.sqrt(1.0 - beta2**step) / (1.0 - beta1**step)
            param.data[rows] -= step_size * m_rows / (np.sqrt(v_rows) + self.eps)


def clip_grad_norm(params: Iterable[Parameter], max_norm: float) -> float:
    """Scale all gradients together so that their global L2 norm is at most ``max_norm``.

    Returns the norm before clipping. Row-sparse gradients count their stored rows.
    """
    max_norm = check_non_negative("max_norm", max_norm)
    grads = [param.grad for param in params if param.grad is not None]
    squares = 0.0
    for grad in grads:
        values = grad.values if isinstance(grad, RowSparseGrad) else grad.data
        squares += float(np.square(values, dtype=np.float64).sum())
    total = math.sqrt(squares)
    scale = max_norm / (total + 1e-6)
    if scale < 1.0:
        for grad in grads:
            values = grad.values if isinstance(grad, RowSparseGrad) else grad.data
            values *= scale
    return total
