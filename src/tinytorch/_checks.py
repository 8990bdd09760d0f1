"""Argument checks shared by every public entry point.

Every message follows one template: what is wrong, the valid range or choices,
then the received value and its type, for example
``embedding_dim must be a positive integer; received -3 (int)``.
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Iterable
from typing import Any

import numpy as np


def describe(value: Any) -> str:
    """Format a received value and its type for an error message."""
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    """Return ``value`` as an ``int`` after checking its type and lower bound.

    Raises:
        TypeError: ``value`` is not an integer (``bool`` and floats included).
        ValueError: ``value`` is below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; received {describe(value)}")
    if minimum is not None and value < minimum:
        if minimum == 1:
            rule = "a positive integer"
        else:
            rule = f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {rule}; received {describe(value)}")
    return int(value)


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``; raise ``ValueError`` listing them otherwise."""
    options = tuple(choices)
    if not isinstance(value, str) or value not in options:
        listed = ", ".join(repr(option) for option in options)
        raise ValueError(f"{name} must be one of {listed}; received {describe(value)}")
    return value


def check_probability(name: str, value: Any) -> float:
    """Return ``value`` as a float in ``[0, 1)``, the valid range of a dropout rate."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float in [0, 1); received {describe(value)}")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1); received {describe(value)}")
    return float(value)


def check_non_negative(name: str, value: Any) -> float:
    """Return ``value`` as a float after checking that it is a finite real number >= 0.

    NumPy scalars (``np.float32(1e-3)``) count as numbers; ``bool`` does not.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number; received {describe(value)}")
    # An int is compared, not converted, because float() overflows beyond float's range.
    finite = value <= sys.float_info.max if isinstance(value, numbers.Integral) else math.isfinite(value)
    if not (finite and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0; received {describe(value)}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is ``True`` or ``False``; raise ``TypeError`` otherwise."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; received {describe(value)}")
    return bool(value)
