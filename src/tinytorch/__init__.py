"""tinytorch: tokenizers, learnable embedding tables and positional encodings on NumPy."""

import logging

from tinytorch.core.random import manual_seed
from tinytorch.core.tensor import Tensor, is_grad_enabled, no_grad

__version__ = "0.1.0"

# Handlers are the application's choice. Without this one, Python's
# last-resort handler would print tinytorch's warnings to stderr in a program
# that never configured logging.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["Tensor", "__version__", "is_grad_enabled", "manual_seed", "no_grad"]
