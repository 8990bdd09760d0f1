"""``Tensor``: a NumPy array with reverse-mode automatic differentiation.

Every operation follows one pattern: compute the output array, define how the
output's gradient maps to each input's gradient, and record both on the output
with ``Tensor._from_op``. ``backward`` walks the recorded graph in reverse
topological order and accumulates gradients into the leaf tensors that
require them.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from numpy.lib.array_utils import normalize_axis_tuple

from tinytorch._checks import check_int, describe
from tinytorch.core import kernels

# A backward rule maps the output's gradient to one gradient per parent
# (``None`` for a parent that needs none).
BackwardRule = Callable[[np.ndarray], Sequence["np.ndarray | RowSparseGrad | None"]]

_grad_enabled = True


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Disable graph recording inside the ``with`` block (for inference and updates).

    Example:
        >>> with no_grad():
        ...     y = Tensor([1.0], requires_grad=True) * 2
        >>> y.requires_grad
        False
    """
    global _grad_enabled
    previous = _grad_enabled
    _grad_enabled = False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled() -> bool:
    """Return whether operations currently record the graph for ``backward``."""
    return _grad_enabled


def _to_array(data: Any, dtype: Any) -> np.ndarray:
    if isinstance(data, Tensor):
        data = data.data
    try:
        # Check the data before any cast, so that "3" or None never becomes a number.
        array = np.asarray(data)
    except ValueError as error:
        raise ValueError(f"Tensor data must form a rectangular array; received {describe(data)}: {error}") from error
    if array.dtype.kind not in "biuf":
        raise TypeError(
            "Tensor data must be numeric (bool, integer or floating point); "
            f"received dtype {array.dtype} from {describe(data)}"
        )
    if dtype is not None:
        return array.astype(dtype, copy=False)
    if array.dtype == np.float64:
        # float32 is the working precision; float64 must be asked for by dtype.
        return array.astype(np.float32)
    return array


class RowSparseGrad:
    """A gradient that is zero except in a few rows of a 2-D table.

    It contains row numbers and one row of values for each. With
    ``coalesced=True`` the caller promises sorted unique row numbers (they
    are not checked). With ``coalesced=False``, as a lookup's backward makes
    it, they may repeat in any order, and repeated rows add up. ``indices``
    and ``values`` always give the coalesced form, summing the repeats on
    first use.

    An optimizer step can skip that sum: ``add_to`` adds the rows straight
    into a table. Like PyTorch's sparse lookup gradient, an uncoalesced
    gradient may share memory with the upstream gradient that produced it,
    until it is coalesced.

    Shape:
        ``indices (u,)``, ``values (u, dim)``, representing ``shape == (num_rows, dim)``.
    """

    __array_ufunc__ = None  # make ``ndarray + RowSparseGrad`` call __radd__

    def __init__(self, indices: Any, values: Any, shape: tuple[int, int], *, coalesced: bool = True) -> None:
        if len(shape) != 2:
            raise ValueError(f"shape must be (num_rows, dim); received {shape!r}")
        num_rows = check_int("num_rows", shape[0], minimum=0)
        dim = check_int("dim", shape[1], minimum=0)
        indices, values = np.asarray(indices), np.asarray(values)
        if indices.ndim != 1 or indices.dtype.kind not in "iu":
            raise TypeError(f"indices must be a 1-D integer array; received dtype {indices.dtype}, shape {indices.shape}")
        if values.dtype.kind != "f":
            raise TypeError(f"values must be floating point; received dtype {values.dtype}")
        if values.shape != (indices.size, dim):
            raise ValueError(
                f"values must have shape {(indices.size, dim)} for {indices.size} indices into a table of "
                f"width {dim}; received shape {values.shape}"
            )
        if indices.size and not (0 <= indices.min() and indices.max() < num_rows):
            raise ValueError(
                f"indices must be in [0, {num_rows}); received values from {indices.min()} to {indices.max()}"
            )
        self._indices = indices
        self._values = values
        self._coalesced = coalesced
        self.shape = (num_rows, dim)

    def is_coalesced(self) -> bool:
        """Return whether the row numbers are known to be sorted and unique."""
        return self._coalesced

    def _coalesce(self) -> None:
        if not self._coalesced:
            self._indices, self._values = kernels.sum_rows_by_id(self._indices, self._values)
            self._coalesced = True

    @property
    def indices(self) -> np.ndarray:
        """The sorted unique row numbers, shape ``(u,)``."""
        self._coalesce()
        return self._indices

    @property
    def values(self) -> np.ndarray:
        """The summed row of each of ``indices``, shape ``(u, dim)``."""
        self._coalesce()
        return self._values

    @property
    def dtype(self) -> np.dtype:
        """The dtype of ``values``."""
        return self._values.dtype

    def add_to(self, table: np.ndarray, alpha: float = 1.0) -> None:
        """Add ``alpha`` times this gradient to ``table`` in place, touching only its rows.

        The result equals coalescing first, bit for bit, but repeated rows are
        summed on the fly instead of into a new array.

        Raises:
            TypeError: ``table`` is not a NumPy array.
            ValueError: its shape is not this gradient's ``shape``.
        """
        if not isinstance(table, np.ndarray):
            raise TypeError(f"table must be a NumPy array; received {describe(table)}")
        if table.shape != self.shape:
            raise ValueError(f"table must have the gradient's shape {self.shape}; received shape {table.shape}")
        kernels.add_scaled_rows(table, self._indices, self._values, alpha)

    def to_dense(self) -> np.ndarray:
        """Return the full ``shape`` array, with zeros in the rows not listed."""
        return kernels.scatter_add_rows(self._indices, self._values, self.shape[0])

    def __add__(self, other: Any) -> RowSparseGrad | np.ndarray:
        if isinstance(other, RowSparseGrad):
            # Each side is summed first, so the total rounds as two dense gradients added would.
            indices, values = kernels.sum_rows_by_id(
                np.concatenate([self.indices, other.indices]),
                np.concatenate([self.values, other.values]),
            )
            return RowSparseGrad(indices, values, self.shape)
        dense = np.array(other, dtype=np.result_type(other, self._values), copy=True)
        dense[self.indices] += self.values
        return dense

    __radd__ = __add__

    def __repr__(self) -> str:
        return (
            f"RowSparseGrad(rows={self._indices.size} of {self.shape[0]}, dim={self.shape[1]}, "
            f"dtype={self.dtype}, coalesced={self._coalesced})"
        )


def _as_parent_grad(grad: np.ndarray | RowSparseGrad, parent: Tensor) -> np.ndarray | RowSparseGrad:
    """Return ``grad`` in ``parent``'s dtype, and dense unless ``parent`` is a leaf.

    Every gradient then has its tensor's dtype, as in PyTorch: a float64
    factor in a backward rule cannot make a float32 table's gradient
    float64, so sparse and dense paths round alike. A row-sparse gradient
    reaches only leaf tables; a computed table's backward rule gets the
    dense array that its rules expect.
    """
    if isinstance(grad, RowSparseGrad):
        if parent._backward is not None:
            return grad.to_dense().astype(parent.dtype, copy=False)
        if grad.dtype != parent.dtype:
            values = grad._values.astype(parent.dtype)
            return RowSparseGrad(grad._indices, values, grad.shape, coalesced=grad.is_coalesced())
        return grad
    return grad if grad.dtype == parent.dtype else grad.astype(parent.dtype)


def _unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` over the axes that broadcasting added or stretched, giving ``shape``."""
    if grad.shape == shape:
        return grad
    extra_axes = grad.ndim - len(shape)
    if extra_axes > 0:
        grad = grad.sum(axis=tuple(range(extra_axes)))
    stretched = tuple(axis for axis, size in enumerate(shape) if size == 1 and grad.shape[axis] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def _normalize_axes(axis: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    # Raises numpy.exceptions.AxisError (a ValueError) for an axis out of range.
    return normalize_axis_tuple(axis, ndim)


class Tensor:
    """An n-dimensional array that records operations for reverse-mode autograd.

    Args:
        data: Anything ``numpy.asarray`` accepts, or another ``Tensor``.
        dtype: NumPy dtype. Without it, float64 input becomes float32 and
            integer or bool data keeps its dtype.
        requires_grad: Record operations on this tensor so that ``backward``
            fills ``.grad``. Only floating-point tensors can require gradients.

    Example:
        >>> x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
        >>> (x * x).sum().backward()
        >>> x.grad.data.tolist()
        [2.0, 4.0, 6.0]
    """

    __array_priority__ = 1000  # NumPy defers ``ndarray + Tensor`` to Tensor.__radd__.

    def __init__(self, data: Any, dtype: Any = None, *, requires_grad: bool = False) -> None:
        self.data: np.ndarray = _to_array(data, dtype)
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(
                "only floating-point tensors can require gradients; "
                f"received dtype {self.data.dtype}. Pass dtype=np.float32 or np.float64"
            )
        self.requires_grad: bool = bool(requires_grad)
        # A Tensor, or a RowSparseGrad for tables built with sparse=True.
        self.grad: Tensor | RowSparseGrad | None = None
        self._parents: tuple[Tensor, ...] = ()
        self._backward: BackwardRule | None = None

    # ------------------------------------------------------------------ basics

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of ``data``."""
        return self.data.shape

    @property
    def size(self) -> int:
        """The number of elements."""
        return int(self.data.size)

    @property
    def ndim(self) -> int:
        """The number of dimensions."""
        return self.data.ndim

    @property
    def dtype(self) -> np.dtype:
        """The NumPy dtype of ``data``."""
        return self.data.dtype

    @property
    def is_leaf(self) -> bool:
        """Whether this tensor was created by the user rather than by an operation."""
        return self._backward is None

    def item(self) -> float | int | bool:
        """Return the single element as a Python number."""
        if self.data.size != 1:
            raise ValueError(
                f"item() needs a tensor with exactly one element; received shape {self.shape}"
            )
        return self.data.item()

    def numpy(self) -> np.ndarray:
        """Return ``data``, the underlying array (shared, not copied)."""
        return self.data

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if dtype is None and not copy:
            return self.data
        return np.array(self.data, dtype=dtype, copy=True if copy else None)

    def __len__(self) -> int:
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return len(self.data)

    def __repr__(self) -> str:
        body = np.array2string(self.data, separator=", ", precision=4, threshold=20)
        flags = f", dtype={self.dtype}"
        if self.requires_grad:
            flags += ", requires_grad=True"
        return f"Tensor({body}{flags})"

    def detach(self) -> Tensor:
        """Return a tensor sharing ``data`` but cut from the graph (no gradient flows back)."""
        return Tensor(self.data, dtype=self.data.dtype)

    def zero_grad(self) -> None:
        """Clear the accumulated gradient (``grad`` becomes ``None``)."""
        self.grad = None

    # ------------------------------------------------------------------ graph

    @classmethod
    def _from_op(cls, data: np.ndarray, parents: Sequence[Tensor], backward: BackwardRule) -> Tensor:
        """Wrap an operation's output, recording ``backward`` when a parent needs gradients."""
        out = cls(data, dtype=data.dtype)
        if _grad_enabled and any(parent.requires_grad for parent in parents):
            out.requires_grad = True
            out._parents = tuple(parents)
            out._backward = backward
        return out

    def backward(self, gradient: Any = None) -> None:
        """Accumulate the gradient of this tensor into every leaf that requires one.

        Args:
            gradient: The gradient of the final objective with respect to this
                tensor, of the same shape. It may be omitted for a tensor with
                one element, where it defaults to 1.

        Note:
            Only leaf tensors (created by the user, such as layer parameters)
            keep ``.grad``; intermediate results do not. Gradients add up
            across calls until ``zero_grad`` clears them.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() called on a tensor that does not require gradients; "
                "create the inputs with requires_grad=True"
            )
        if gradient is None:
            if self.data.size != 1:
                raise ValueError(
                    "backward() without a gradient needs a tensor with one element; "
                    f"received shape {self.shape}. Pass gradient= of that shape"
                )
            seed = np.ones_like(self.data)
        else:
            seed = _to_array(gradient, self.dtype)
            if seed.shape != self.shape:
                raise ValueError(
                    f"gradient must have the tensor's shape {self.shape}; received shape {seed.shape}"
                )

        grads: dict[int, np.ndarray | RowSparseGrad] = {id(self): seed}
        # How often each array object was handed to a parent. A leaf may keep
        # an array without copying it only if nothing else received it: a rule
        # such as addition passes one array to both operands, and the seed
        # belongs to the caller.
        handed_out: dict[int, int] = {id(seed): 2}
        for node in self._reverse_topological_order():
            grad = grads.pop(id(node), None)
            if grad is None:
                continue
            if node._backward is None:
                node._accumulate(grad, shared=handed_out.get(id(grad), 0) > 1)
                continue
            parent_grads = node._backward(grad)
            for parent, parent_grad in zip(node._parents, parent_grads, strict=True):
                if parent_grad is None or not parent.requires_grad:
                    continue
                parent_grad = _as_parent_grad(parent_grad, parent)
                handed_out[id(parent_grad)] = handed_out.get(id(parent_grad), 0) + 1
                key = id(parent)
                if key in grads:
                    grads[key] = grads[key] + parent_grad
                else:
                    grads[key] = parent_grad

    def _reverse_topological_order(self) -> list[Tensor]:
        # Iterative depth-first search, so deep graphs do not hit Python's
        # recursion limit.
        order: list[Tensor] = []
        visited: set[int] = set()
        stack: list[tuple[Tensor, bool]] = [(self, False)]
        while stack:
            node, children_done = stack.pop()
            if children_done:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            for parent in node._parents:
                if parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
        order.reverse()
        return order

    def _accumulate(self, grad: np.ndarray | RowSparseGrad, *, shared: bool) -> None:
        previous = self.grad.data if isinstance(self.grad, Tensor) else self.grad
        if previous is not None:
            total = previous + grad  # a new array or RowSparseGrad
        elif isinstance(grad, RowSparseGrad) or (not shared and grad.flags.owndata and grad.dtype == self.dtype):
            # A fresh array that nothing else references (such as a lookup's table
            # gradient) is kept as it is: copying a large table costs as much
            # as computing it.
            total = grad
        else:
            total = np.array(grad, dtype=self.dtype)
        if isinstance(total, RowSparseGrad):
            self.grad = total
        else:
            self.grad = Tensor(total.astype(self.dtype, copy=False), dtype=self.dtype)

    # ------------------------------------------------------------------ arithmetic

    def _coerce(self, other: Any) -> Tensor:
        """Wrap a scalar or array operand; a floating tensor casts it to its own dtype.

        So ``float32_tensor * 0.5`` stays float32 and a float64 tensor keeps
        float64 operands exact. An integer or bool tensor combined with a
        floating one takes the floating dtype, as in PyTorch.
        """
        if isinstance(other, Tensor):
            if self.dtype.kind == "f" and other.dtype.kind != "f":
                return Tensor(other.data, dtype=self.dtype)
            return other
        if self.dtype.kind == "f":
            return Tensor(other, dtype=self.dtype)
        return Tensor(other)

    def _operands(self, other: Any) -> tuple[Tensor, Tensor]:
        """Return ``(self, other)`` as tensors, with an integer side cast to the other's floating dtype."""
        other = self._coerce(other)
        if other.dtype.kind == "f" and self.dtype.kind != "f":
            return Tensor(self.data, dtype=other.dtype), other
        return self, other

    def __add__(self, other: Any) -> Tensor:
        self, other = self._operands(other)
        a_shape, b_shape = self.shape, other.shape

        def backward(grad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return _unbroadcast(grad, a_shape), _unbroadcast(grad, b_shape)

        return Tensor._from_op(self.data + other.data, (self, other), backward)

    def __radd__(self, other: Any) -> Tensor:
        return self._coerce(other) + self

    def __neg__(self) -> Tensor:
        return Tensor._from_op(-self.data, (self,), lambda grad: (-grad,))

    def __sub__(self, other: Any) -> Tensor:
        self, other = self._operands(other)
        a_shape, b_shape = self.shape, other.shape

        def backward(grad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return _unbroadcast(grad, a_shape), _unbroadcast(-grad, b_shape)

        return Tensor._from_op(self.data - other.data, (self, other), backward)

    def __rsub__(self, other: Any) -> Tensor:
        return self._coerce(other) - self

    def __mul__(self, other: Any) -> Tensor:
        self, other = self._operands(other)
        a, b = self.data, other.data

        def backward(grad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return _unbroadcast(grad * b, a.shape), _unbroadcast(grad * a, b.shape)

        return Tensor._from_op(a * b, (self, other), backward)

    def __rmul__(self, other: Any) -> Tensor:
        return self._coerce(other) * self

    def __truediv__(self, other: Any) -> Tensor:
        self, other = self._operands(other)
        a, b = self.data, other.data

        def backward(grad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return _unbroadcast(grad / b, a.shape), _unbroadcast(-grad * a / (b * b), b.shape)

        return Tensor._from_op(a / b, (self, other), backward)

    def __rtruediv__(self, other: Any) -> Tensor:
        return self._coerce(other) / self

    def __pow__(self, exponent: Any) -> Tensor:
        self, exponent = self._operands(exponent)
        base, power = self.data, exponent.data
        out = base**power

        def backward(grad: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            grad_base = _unbroadcast(grad * power * base ** (power - 1), base.shape)
            if not exponent.requires_grad:
                return grad_base, None
            # d(b^p)/dp = b^p ln b, defined for positive bases.
            grad_power = _unbroadcast(grad * out * np.log(base), power.shape)
            return grad_base, grad_power

        return Tensor._from_op(out, (self, exponent), backward)

    def __rpow__(self, base: Any) -> Tensor:
        return self._coerce(base) ** self

    def __matmul__(self, other: Any) -> Tensor:
        return self.matmul(other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return self._coerce(other).matmul(self)

    def matmul(self, other: Any) -> Tensor:
        """Matrix product with NumPy's broadcasting over leading batch dimensions.

        Shape:
            ``(*, n, k) @ (*, k, m) -> (*, n, m)``; 1-D operands act as a row
            (left) or a column (right) vector, as in ``numpy.matmul``.
        """
        self, other = self._operands(other)
        a, b = self.data, other.data

        def backward(grad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            # Promote 1-D operands to matrices so one rule covers every case.
            a2 = a[np.newaxis, :] if a.ndim == 1 else a
            b2 = b[:, np.newaxis] if b.ndim == 1 else b
            g2 = grad
            if b.ndim == 1:
                g2 = g2[..., np.newaxis]  # restore the column axis m
            if a.ndim == 1:
                g2 = g2[..., np.newaxis, :]  # restore the row axis n
            grad_a = g2 @ np.swapaxes(b2, -1, -2)
            grad_b = np.swapaxes(a2, -1, -2) @ g2
            if a.ndim == 1:
                grad_a = np.squeeze(grad_a, -2)
            if b.ndim == 1:
                grad_b = np.squeeze(grad_b, -1)
            return _unbroadcast(grad_a, a.shape), _unbroadcast(grad_b, b.shape)

        return Tensor._from_op(a @ b, (self, other), backward)

    # ------------------------------------------------------------------ reductions

    def sum(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:
        """Sum over ``axis`` (all axes when ``None``)."""
        shape = self.shape
        axes = _normalize_axes(axis, self.ndim)

        def backward(grad: np.ndarray) -> tuple[np.ndarray]:
            if not keepdims:
                grad = np.expand_dims(grad, axes)
            return (np.broadcast_to(grad, shape).copy(),)

        return Tensor._from_op(self.data.sum(axis=axes, keepdims=keepdims), (self,), backward)

    def mean(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:
        """Average over ``axis`` (all axes when ``None``)."""
        axes = _normalize_axes(axis, self.ndim)
        count = int(np.prod([self.shape[a] for a in axes])) if axes else 1
        # The mean of no elements is NaN, as in NumPy and PyTorch.
        return self.sum(axis=axes, keepdims=keepdims) * (1.0 / count if count else np.nan)

    def max(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:
        """Maximum over ``axis``; the gradient is shared equally between tied maxima."""
        axes = _normalize_axes(axis, self.ndim)
        kept = self.data.max(axis=axes, keepdims=True)
        mask = self.data == kept
        share = (mask / mask.sum(axis=axes, keepdims=True)).astype(self.dtype)

        def backward(grad: np.ndarray) -> tuple[np.ndarray]:
            if not keepdims:
                grad = np.expand_dims(grad, axes)
            return (grad * share,)

        out = kept if keepdims else np.squeeze(kept, axis=axes)
        return Tensor._from_op(out, (self,), backward)

    # ------------------------------------------------------------------ shape

    def reshape(self, *shape: int | Sequence[int]) -> Tensor:
        """Return the same elements with a new shape (``-1`` infers one dimension)."""
        if len(shape) == 1 and not isinstance(shape[0], numbers.Integral):
            shape = tuple(shape[0])  # type: ignore[arg-type]
        original = self.shape
        return Tensor._from_op(
            self.data.reshape(shape), (self,), lambda grad: (grad.reshape(original),)
        )

    def transpose(self, dim0: int = -2, dim1: int = -1) -> Tensor:
        """Swap two axes (the last two by default, as for ``k.transpose()`` in attention)."""
        if self.ndim < 2:
            raise ValueError(f"transpose needs at least 2 dimensions; received shape {self.shape}")
        return Tensor._from_op(
            np.swapaxes(self.data, dim0, dim1),
            (self,),
            lambda grad: (np.swapaxes(grad, dim0, dim1),),
        )

    def __getitem__(self, index: Any) -> Tensor:
        if isinstance(index, Tensor):
            index = index.data
        shape = self.shape
        dtype = self.dtype

        parts = index if isinstance(index, tuple) else (index,)
        advanced = any(not isinstance(part, (numbers.Integral, slice, type(None), type(Ellipsis))) for part in parts)

        def backward(grad: np.ndarray) -> tuple[np.ndarray]:
            full = np.zeros(shape, dtype=dtype)
            if advanced:
                # Integer arrays may repeat an index; np.add.at accumulates the
                # repeats, where plain assignment would keep only one.
                np.add.at(full, index, grad)
            else:
                full[index] = grad
            return (full,)

        return Tensor._from_op(self.data[index], (self,), backward)

    # ------------------------------------------------------------------ elementwise

    def exp(self) -> Tensor:
        """Elementwise ``e**x``."""
        out = np.exp(self.data)
        return Tensor._from_op(out, (self,), lambda grad: (grad * out,))

    def log(self) -> Tensor:
        """Elementwise natural logarithm."""
        x = self.data
        return Tensor._from_op(np.log(x), (self,), lambda grad: (grad / x,))

    def sqrt(self) -> Tensor:
        """Elementwise square root."""
        out = np.sqrt(self.data)
        return Tensor._from_op(out, (self,), lambda grad: (grad / (2.0 * out),))

    def tanh(self) -> Tensor:
        """Elementwise hyperbolic tangent."""
        out = np.tanh(self.data)
        return Tensor._from_op(out, (self,), lambda grad: (grad * (1.0 - out * out),))

    def relu(self) -> Tensor:
        """Elementwise ``max(x, 0)``; the gradient at exactly 0 is taken as 0."""
        positive = self.data > 0
        return Tensor._from_op(
            np.where(positive, self.data, 0).astype(self.dtype),
            (self,),
            lambda grad: (grad * positive,),
        )

    def masked_fill(self, mask: Any, value: float) -> Tensor:
        """Replace the entries where ``mask`` is true by ``value`` (no gradient flows there)."""
        mask_array = np.asarray(mask.data if isinstance(mask, Tensor) else mask)
        if mask_array.dtype != np.bool_:
            raise TypeError(f"mask must be a boolean array; received dtype {mask_array.dtype}")
        fill = np.asarray(value, dtype=self.dtype)
        out = np.where(mask_array, fill, self.data)
        shape = self.shape

        def backward(grad: np.ndarray) -> tuple[np.ndarray]:
            return (_unbroadcast(np.where(mask_array, 0, grad), shape),)

        return Tensor._from_op(out, (self,), backward)

    # ------------------------------------------------------------------ softmax

    def softmax(self, axis: int = -1) -> Tensor:
        """Softmax along ``axis``, shifted by the maximum so large inputs do not overflow."""
        shifted = self.data - self.data.max(axis=axis, keepdims=True)
        exps = np.exp(shifted)
        out = exps / exps.sum(axis=axis, keepdims=True)

        def backward(grad: np.ndarray) -> tuple[np.ndarray]:
            # Jacobian-vector product of softmax: s * (g - sum(g * s)).
            return (out * (grad - (grad * out).sum(axis=axis, keepdims=True)),)

        return Tensor._from_op(out, (self,), backward)

    def log_softmax(self, axis: int = -1) -> Tensor:
        """Logarithm of the softmax along ``axis``, computed with the log-sum-exp shift."""
        shifted = self.data - self.data.max(axis=axis, keepdims=True)
        out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
        probabilities = np.exp(out)

        def backward(grad: np.ndarray) -> tuple[np.ndarray]:
            return (grad - probabilities * grad.sum(axis=axis, keepdims=True),)

        return Tensor._from_op(out, (self,), backward)


def where(condition: Any, x: Any, y: Any) -> Tensor:
    """Choose ``x`` where ``condition`` is true and ``y`` elsewhere, with broadcasting.

    Gradients flow to ``x`` at the chosen entries and to ``y`` at the others.
    """
    cond = np.asarray(condition.data if isinstance(condition, Tensor) else condition)
    if cond.dtype != np.bool_:
        raise TypeError(f"condition must be a boolean array; received dtype {cond.dtype}")
    if isinstance(x, Tensor):
        a = x
    elif isinstance(y, Tensor):
        a = y._coerce(x)  # a scalar x takes y's dtype
    else:
        a = Tensor(x)
    b = y if isinstance(y, Tensor) else a._coerce(y)

    def backward(grad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (
            _unbroadcast(np.where(cond, grad, 0), a.shape),
            _unbroadcast(np.where(cond, 0, grad), b.shape),
        )

    return Tensor._from_op(np.where(cond, a.data, b.data), (a, b), backward)
