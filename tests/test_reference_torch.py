"""Lookups, their gradients and the sinusoidal table against PyTorch, where it is installed.

PyTorch is a test-time reference only; these tests skip cleanly without it.
"""

import math

import numpy as np
import pytest

from tinytorch.core.embeddings import Embedding, PositionalEncoding

torch = pytest.importorskip("torch")


def torch_embedding_like(layer):
    reference = torch.nn.Embedding(layer.vocab_size, layer.embedding_dim, padding_idx=layer.padding_idx, dtype=torch.float64)
    with torch.no_grad():
        reference.weight.copy_(torch.from_numpy(layer.weight.data))
    return reference


@pytest.mark.parametrize("ids_shape", [(7,), (3, 5), (2, 3, 4)])
def test_lookup_matches_torch(ids_shape):
    layer = Embedding(20, 8, dtype=np.float64, rng=np.random.default_rng(0))
    ids = np.random.default_rng(1).integers(0, 20, size=ids_shape)
    expected = torch.nn.functional.embedding(torch.from_numpy(ids), torch.from_numpy(layer.weight.data))
    np.testing.assert_array_equal(layer(ids).data, expected.numpy())


@pytest.mark.parametrize("padding_idx", [None, 0, 5, -1])
def test_gradient_with_padding_matches_torch(padding_idx):
    layer = Embedding(12, 6, padding_idx=padding_idx, dtype=np.float64, rng=np.random.default_rng(2))
    reference = torch_embedding_like(layer)
    ids = np.array([[0, 5, 5, 11], [3, 11, 0, 5], [5, 5, 5, 5]])
    upstream = np.random.default_rng(3).standard_normal((3, 4, 6))

    (layer(ids) * upstream).sum().backward()
    (reference(torch.from_numpy(ids)) * torch.from_numpy(upstream)).sum().backward()

    np.testing.assert_allclose(layer.weight.grad.data, reference.weight.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_padding_row_initialised_like_torch():
    layer = Embedding(12, 6, padding_idx=-2)
    reference = torch.nn.Embedding(12, 6, padding_idx=-2)
    assert layer.padding_idx == reference.padding_idx
    assert (layer.weight.data[layer.padding_idx] == 0).all()


@pytest.mark.parametrize("embedding_dim", [8, 64, 257])
def test_sinusoidal_table_matches_torch(embedding_dim):
    max_len = 200
    position = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
    frequencies = torch.exp(torch.arange(0, embedding_dim, 2, dtype=torch.float64) * (-math.log(10000.0) / embedding_dim))
    expected = torch.zeros(max_len, embedding_dim, dtype=torch.float64)
    expected[:, 0::2] = torch.sin(position * frequencies)
    expected[:, 1::2] = torch.cos(position * frequencies[: embedding_dim // 2])

    table = PositionalEncoding(embedding_dim, max_seq_length=max_len).pe.data
    np.testing.assert_allclose(table, expected.numpy(), rtol=0, atol=1e-6)
