"""``Module``, the base of every layer, and ``Parameter``, the tensors it learns."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

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

    def num_parameters(self) -> int:
        """Return the number of scalar values in all parameters."""
        return int(sum(np.prod(parameter.shape) for parameter in self.parameters))
