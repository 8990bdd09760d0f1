"""The examples in public docstrings run and print what they claim."""

import doctest
import importlib

import pytest

MODULES = [
    "tinytorch.core.tensor",
    "tinytorch.core.functional",
    "tinytorch.core.embeddings",
    "tinytorch.core.gradcheck",
    "tinytorch.core.layers",
    "tinytorch.core.random",
    "tinytorch.core.tokenization",
    "tinytorch.profiling",
    "tinytorch.checkpoint",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    failures, attempted = doctest.testmod(module, extraglobs={"np": importlib.import_module("numpy")})
    assert attempted > 0, f"{name} has no examples"
    assert failures == 0
