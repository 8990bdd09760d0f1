"""The random generator that every tinytorch initializer and dropout mask draws from."""

from __future__ import annotations

import numpy as np

from tinytorch._checks import check_int

_generator = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the default generator so that runs are reproducible, and return it.

    Example:
        >>> import tinytorch
        >>> _ = tinytorch.manual_seed(0)
    """
    global _generator
    _generator = np.random.default_rng(check_int("seed", seed, minimum=0))
    return _generator


def resolve_rng(rng: np.random.Generator | None) -> np.random.Generator:
    """Return ``rng`` if given, else the default generator; reject other types."""
    if rng is None:
        return _generator
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator or None; received {type(rng).__name__}"
        )
    return rng
