"""``Module``, the base of every layer, and ``Parameter``, the tensors it learns."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from tinytorch._checks import check_bool, check_int, check_probability, describe
from tinytorch.core import functional as F
from tinytorch.core.random import resolve_rng
from tinytorch.core.tensor import Tensor


class Parameter(Tensor):
    """A tensor that a ``Module`` registers as learnable; it requires gradients by default."""

    def __init__(self, data: Any, dtype: Any = None, *, requires_grad: bool = True) -> None:
        super().__init__(data, dtype=dtype, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter" + super().__repr__()[len("Tensor") :]


class ParameterList(list):
    """A list of a module's parameters that is also callable, PyTorch-style.

    ``len(layer.parameters)``, ``layer.parameters[0]`` and
    ``layer.parameters()`` all reach the same ``Parameter`` objects.
    """

    def __call__(self) -> ParameterList:
        return self


class Module:
    """Base class of every layer.

    A subclass assigns ``Parameter`` and sub-``Module`` attributes in
    ``__init__`` and defines ``forward``; calling the module calls
    ``forward``. Parameters are discovered from those attributes, in the
    order they were assigned.
    """

    training: bool = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Yield ``(dotted_name, parameter)`` for this module and its sub-modules, each once."""
        seen: set[int] = set()
        for name, value in vars(self).items():
            full_name = f"{prefix}{name}"
            if isinstance(value, Parameter):
                if id(value) not in seen:
                    seen.add(id(value))
                    yield full_name, value
            elif isinstance(value, Module):
                for sub_name, parameter in value.named_parameters(prefix=f"{full_name}."):
                    if id(parameter) not in seen:
                        seen.add(id(parameter))
                        yield sub_name, parameter

    @property
    def parameters(self) -> ParameterList:
        """The learnable tensors, as a list that can also be called."""
        return ParameterList(parameter for _, parameter in self.named_parameters())

    def modules(self) -> Iterator[Module]:
        """Yield this module and every sub-module below it."""
        yield self
        for value in vars(self).values():
            if isinstance(value, Module):
                yield from value.modules()

    def train(self, mode: bool = True) -> Module:
        """Set training mode (dropout active) on this module and its sub-modules."""
        for module in self.modules():
            module.training = bool(mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode (dropout off) on this module and its sub-modules."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Clear the gradients of every parameter."""
        for parameter in self.parameters:
            parameter.zero_grad()

    def state_dict(self) -> dict[str, np.ndarray]:
        """Return every parameter's array by dotted name.

        The arrays are the parameters' own storage, not copies (as in
        PyTorch); copy them before changing them.
        """
        return {name: parameter.data for name, parameter in self.named_parameters()}

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Copy ``state`` into the existing parameters, in place.

        Every name and shape is checked before anything is copied, so a
        mismatched ``state`` raises ``ValueError`` and leaves the module
        unchanged. With ``strict=False``, missing and unexpected names are
        allowed but shapes are still checked.
        """
        parameters = dict(self.named_parameters())
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping of names to arrays; received {describe(state)}")
        check_bool("strict", strict)
        if strict:
            missing = sorted(set(parameters) - set(state))
            unexpected = sorted(set(state) - set(parameters))
            if missing or unexpected:
                raise ValueError(
                    f"state does not match {type(self).__name__}: missing {missing}, unexpected {unexpected}"
                )
        arrays = {}
        for name, value in state.items():
            if name not in parameters:
                continue
            try:
                array = np.asarray(value.data if isinstance(value, Tensor) else value)
            except ValueError as error:
                raise ValueError(f"state[{name!r}] must be a rectangular array: {error}") from error
            target = parameters[name]
            if array.shape != target.shape:
                raise ValueError(f"state[{name!r}] must have shape {target.shape}; received shape {array.shape}")
            if array.dtype.kind != "f":
                raise TypeError(f"state[{name!r}] must be floating point like the parameter ({target.dtype}); received dtype {array.dtype}")
            with np.errstate(over="ignore"):
                converted = array.astype(target.dtype)
            if not np.array_equal(np.isfinite(converted), np.isfinite(array)):
                raise ValueError(f"state[{name!r}] contains values too large for {target.dtype}; they would become inf")
            arrays[name] = converted
        for name, array in arrays.items():
            parameters[name].data[...] = array

    def num_parameters(self) -> int:
        """Return the number of scalar values in all parameters."""
        return int(sum(np.prod(parameter.shape) for parameter in self.parameters))


class Linear(Module):
    """An affine map ``x @ weight.T + bias``, as ``torch.nn.Linear``.

    ``weight`` has shape ``(out_features, in_features)``; weight and bias
    start uniform in ``±1/sqrt(in_features)``, PyTorch's default.

    Shape:
        ``(*, in_features)`` -> ``(*, out_features)``.

    Example:
        >>> Linear(4, 2)(Tensor(np.ones((3, 4)))).shape
        (3, 2)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        dtype: Any = np.float32,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.in_features = check_int("in_features", in_features, minimum=1)
        self.out_features = check_int("out_features", out_features, minimum=1)
        generator = resolve_rng(rng)
        bound = 1.0 / math.sqrt(self.in_features)
        self.weight = Parameter(generator.uniform(-bound, bound, (self.out_features, self.in_features)), dtype=dtype)
        self.bias = Parameter(generator.uniform(-bound, bound, self.out_features), dtype=dtype) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        """Return ``x @ weight.T + bias``."""
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear expects input with last dimension in_features={self.in_features}; "
                f"received shape {x.shape}"
            )
        return F.linear(x, self.weight, self.bias)

    def __repr__(self) -> str:
        suffix = "" if self.bias is not None else ", bias=False"
        return f"Linear({self.in_features}, {self.out_features}{suffix})"


class Dropout(Module):
    """Inverted dropout: zero each entry with probability ``p`` in training mode, scale the rest by ``1/(1-p)``.

    In evaluation mode (after ``eval()``) it returns its input unchanged.
    """

    def __init__(self, p: float = 0.1, *, rng: np.random.Generator | None = None) -> None:
        self.p = check_probability("p", p)
        resolve_rng(rng)  # type check now; resolved per call so manual_seed applies later
        self.rng = rng

    def forward(self, x: Tensor) -> Tensor:
        """Return ``x`` with dropout applied in training mode."""
        return F.dropout(x, self.p, training=self.training, rng=resolve_rng(self.rng))

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"


class LayerNorm(Module):
    """Normalize the last axis to zero mean and unit variance, then apply a learned scale and shift.

    Shape:
        ``(*, normalized_shape)`` -> same shape.
    """

    def __init__(self, normalized_shape: int, eps: float = 1e-5, *, dtype: Any = np.float32) -> None:
        self.normalized_shape = check_int("normalized_shape", normalized_shape, minimum=1)
        if not eps > 0:
            raise ValueError(f"eps must be positive; received {describe(eps)}")
        self.eps = float(eps)
        self.weight = Parameter(np.ones(self.normalized_shape), dtype=dtype)
        self.bias = Parameter(np.zeros(self.normalized_shape), dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        """Return the normalized, scaled and shifted ``x``."""
        if x.shape[-1] != self.normalized_shape:
            raise ValueError(
                f"LayerNorm expects input with last dimension {self.normalized_shape}; received shape {x.shape}"
            )
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def __repr__(self) -> str:
        return f"LayerNorm({self.normalized_shape})"
