"""tinytorch: tokenizers, learnable embedding tables and positional encodings on NumPy."""

from tinytorch.core.random import manual_seed
from tinytorch.core.tensor import Tensor, is_grad_enabled, no_grad

__version__ = "0.1.0"

__all__ = ["Tensor", "__version__", "is_grad_enabled", "manual_seed", "no_grad"]
