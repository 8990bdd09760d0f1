"""EmbeddingBag: PyTorch's bag semantics, gradients by finite differences, and errors."""

import numpy as np
import pytest

from tinytorch.core import functional as F
from tinytorch.core.embeddings import Embedding, EmbeddingBag
from tinytorch.core.gradcheck import compare_gradients
from tinytorch.core.tensor import Tensor

MODES = ["sum", "mean", "max"]


def loop_bags(weight, ids, starts, mode, per_sample_weights=None, padding_idx=None):
    """The obvious oracle: one Python loop per bag."""
    ends = list(starts[1:]) + [len(ids)]
    out = np.zeros((len(starts), weight.shape[1]))
    for b, (start, end) in enumerate(zip(starts, ends)):
        rows = [
            weight[ids[j]] * (1.0 if per_sample_weights is None else per_sample_weights[j])
            for j in range(start, end)
            if ids[j] != padding_idx
        ]
        if not rows:
            continue
        if mode == "sum":
            out[b] = np.sum(rows, axis=0)
        elif mode == "mean":
            out[b] = np.mean(rows, axis=0)
        else:
            out[b] = np.max(rows, axis=0)
    return out


IDS = np.array([1, 2, 3, 4, 2, 2, 5, 6, 7, 7])
OFFSETS = np.array([0, 3, 3, 4, 6])  # bags: [1 2 3], [], [4], [2 2], [5 6 7 7]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("padding_idx", [None, 2])
def test_bags_match_loop_oracle(mode, padding_idx):
    bag = EmbeddingBag(10, 4, mode=mode, padding_idx=padding_idx, dtype=np.float64, rng=np.random.default_rng(0))
    expected = loop_bags(bag.weight.data, IDS, OFFSETS, mode, padding_idx=padding_idx)
    np.testing.assert_allclose(bag(IDS, OFFSETS).data, expected, rtol=1e-12)


def test_functional_negative_padding_idx():
    weight = Tensor(np.arange(12.0).reshape(6, 2), dtype=np.float64)
    ids = np.array([5, 1, 5, 2])
    result = F.embedding_bag(ids, weight, np.array([0, 2]), "sum", padding_idx=-1)
    expected = F.embedding_bag(ids, weight, np.array([0, 2]), "sum", padding_idx=5)
    np.testing.assert_array_equal(result.data, expected.data)
    assert result.data.tolist() == [[2.0, 3.0], [4.0, 5.0]]


def test_caller_arrays_reused_before_backward():
    """Changing offsets or sample weights after the forward pass must not change the gradient."""
    weight = Tensor(np.zeros((4, 1)), dtype=np.float64, requires_grad=True)
    ids = np.array([0, 1, 2, 3])
    offsets = np.array([0, 2])
    sample_weights = Tensor(np.ones(4), dtype=np.float64)
    out = F.embedding_bag(ids, weight, offsets, "sum", sample_weights)
    offsets[1] = 1
    sample_weights.data[:] = 5.0
    out.sum().backward()
    assert weight.grad.data.ravel().tolist() == [1.0, 1.0, 1.0, 1.0]


def test_from_pretrained_takes_bag_options():
    vectors = np.arange(8.0).reshape(4, 2)
    bag = EmbeddingBag.from_pretrained(vectors, mode="sum", include_last_offset=True)
    assert bag.mode == "sum"
    assert bag.include_last_offset
    assert bag([1, 3, 2], offsets=[0, 2, 3]).data.tolist() == [[8.0, 10.0], [4.0, 5.0]]
    with pytest.raises(ValueError, match="mode must be one of"):
        EmbeddingBag.from_pretrained(vectors, mode="median")
    with pytest.raises(TypeError, match="mode"):
        Embedding.from_pretrained(vectors, mode="sum")


def test_empty_bags_give_zero_rows():
    bag = EmbeddingBag(10, 3, mode="mean", padding_idx=2, dtype=np.float64)
    out = bag(IDS, OFFSETS)
    assert (out.data[1] == 0).all()
    assert (out.data[3] == 0).all()
    upstream = np.zeros((5, 3))
    upstream[[1, 3]] = 1.0
    (out * upstream).sum().backward()
    assert (bag.weight.grad.data == 0).all()


def test_two_dimensional_input_is_fixed_length_bags():
    bag = EmbeddingBag(10, 4, mode="sum", rng=np.random.default_rng(1))
    ids = np.array([[1, 2, 3], [4, 4, 0]])
    np.testing.assert_allclose(bag(ids).data, bag.weight.data[ids].sum(axis=1), rtol=1e-6)


def test_include_last_offset():
    bag = EmbeddingBag(10, 4, mode="sum", include_last_offset=True)
    with_last = bag(IDS, np.append(OFFSETS, IDS.size))
    assert with_last.shape == (5, 4)
    np.testing.assert_allclose(with_last.data, loop_bags(bag.weight.data, IDS, OFFSETS, "sum"), rtol=1e-6)


def test_per_sample_weights_scale_rows():
    bag = EmbeddingBag(10, 4, mode="sum", padding_idx=2, dtype=np.float64)
    weights = np.linspace(0.5, 2.0, IDS.size)
    expected = loop_bags(bag.weight.data, IDS, OFFSETS, "sum", per_sample_weights=weights, padding_idx=2)
    np.testing.assert_allclose(bag(IDS, OFFSETS, per_sample_weights=weights).data, expected, rtol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_table_gradient_matches_finite_differences(mode):
    bag = EmbeddingBag(10, 3, mode=mode, padding_idx=2, dtype=np.float64, rng=np.random.default_rng(2))
    analytic, numeric = compare_gradients(lambda w: F.embedding_bag(IDS, w, OFFSETS, mode, padding_idx=2), [bag.weight])
    keep = np.arange(10) != 2  # the padding row gets no gradient by design
    np.testing.assert_allclose(analytic[0][keep], numeric[0][keep], rtol=1e-4, atol=1e-6)
    assert (analytic[0][2] == 0).all()


def test_per_sample_weights_gradient_matches_finite_differences():
    bag = EmbeddingBag(10, 3, mode="sum", dtype=np.float64, rng=np.random.default_rng(3))
    weights = Tensor(np.linspace(0.5, 2.0, IDS.size), dtype=np.float64, requires_grad=True)
    analytic, numeric = compare_gradients(
        lambda w, s: F.embedding_bag(IDS, w, OFFSETS, "sum", per_sample_weights=s), [bag.weight, weights]
    )
    for a, n in zip(analytic, numeric):
        np.testing.assert_allclose(a, n, rtol=1e-4, atol=1e-6)


def test_bag_of_one_equals_embedding():
    table = EmbeddingBag(10, 4, mode="mean")
    lookup = Embedding.from_pretrained(table.weight.data)
    ids = np.array([3, 1, 4, 1, 5])
    np.testing.assert_array_equal(table(ids, np.arange(5)).data, lookup(ids).data)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda b: b(IDS), ValueError, r"1-D input needs offsets"),
        (lambda b: b(IDS.reshape(2, 5), OFFSETS), ValueError, r"offsets must be None for 2-D input"),
        (lambda b: b(IDS, [1, 3]), ValueError, r"offsets\[0\] must be 0.*received 1"),
        (lambda b: b(IDS, [0, 4, 3]), ValueError, r"non-decreasing; received offsets\[2\]=3 after 4"),
        (lambda b: b(IDS, [0, 11]), ValueError, r"at most len\(input\)=10; received 11"),
        (lambda b: b(IDS, [0.0, 2.0]), TypeError, r"ids must be integers"),
        (lambda b: b([1, 10], [0]), ValueError, r"ids must be in \[0, 10\).*received id 10"),
        (lambda b: b([1.5], [0]), TypeError, r"received dtype float64"),
        (lambda b: b(np.zeros((2, 2, 2), dtype=int)), ValueError, r"received shape \(2, 2, 2\)"),
        (lambda b: b(IDS, OFFSETS, per_sample_weights=np.ones(3)), ValueError, r"per_sample_weights must have the input's shape \(10,\); received shape \(3,\)"),
    ],
)
def test_bad_bag_input(call, error, message):
    with pytest.raises(error, match=message):
        call(EmbeddingBag(10, 4, mode="sum"))


def test_per_sample_weights_only_with_sum():
    with pytest.raises(ValueError, match="per_sample_weights work only with mode='sum'; received mode='mean'"):
        EmbeddingBag(10, 4, mode="mean")(IDS, OFFSETS, per_sample_weights=np.ones(10))


def test_include_last_offset_needs_end():
    with pytest.raises(ValueError, match=r"last offset must equal len\(input\)=10; received 6"):
        EmbeddingBag(10, 4, include_last_offset=True)(IDS, OFFSETS)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"mode": "median"}, ValueError, "mode must be one of 'sum', 'mean', 'max'; received 'median'"),
        ({"sparse": True}, ValueError, "supports only dense gradients"),
        ({"include_last_offset": 1}, TypeError, r"include_last_offset must be True or False; received 1 \(int\)"),
    ],
)
def test_bad_bag_settings(kwargs, error, message):
    with pytest.raises(error, match=message):
        EmbeddingBag(10, 4, **kwargs)


def test_repr():
    assert repr(EmbeddingBag(10, 4)) == "EmbeddingBag(10, 4, mode='mean')"
    assert repr(EmbeddingBag(10, 4, mode="max", padding_idx=0)) == "EmbeddingBag(10, 4, mode='max', padding_idx=0)"


# ---------------------------------------------------------------- PyTorch reference


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("padding_idx", [None, 2])
def test_matches_torch_forward_and_gradient(mode, padding_idx):
    torch = pytest.importorskip("torch")
    bag = EmbeddingBag(10, 4, mode=mode, padding_idx=padding_idx, dtype=np.float64, rng=np.random.default_rng(4))
    reference = torch.nn.EmbeddingBag(10, 4, mode=mode, padding_idx=padding_idx, dtype=torch.float64)
    with torch.no_grad():
        reference.weight.copy_(torch.from_numpy(bag.weight.data))
    upstream = np.random.default_rng(5).standard_normal((5, 4))

    out = bag(IDS, OFFSETS)
    expected = reference(torch.from_numpy(IDS), torch.from_numpy(OFFSETS))
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-12, atol=1e-15)
    (out * upstream).sum().backward()
    (expected * torch.from_numpy(upstream)).sum().backward()
    np.testing.assert_allclose(bag.weight.grad.data, reference.weight.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_per_sample_weights_match_torch():
    torch = pytest.importorskip("torch")
    bag = EmbeddingBag(10, 4, mode="sum", dtype=np.float64, rng=np.random.default_rng(6))
    reference = torch.nn.EmbeddingBag(10, 4, mode="sum", dtype=torch.float64)
    with torch.no_grad():
        reference.weight.copy_(torch.from_numpy(bag.weight.data))
    weights = np.linspace(0.5, 2.0, IDS.size)
    tiny_weights = Tensor(weights, dtype=np.float64, requires_grad=True)
    torch_weights = torch.tensor(weights, requires_grad=True)
    upstream = np.random.default_rng(7).standard_normal((5, 4))
    (bag(IDS, OFFSETS, tiny_weights) * upstream).sum().backward()
    (reference(torch.from_numpy(IDS), torch.from_numpy(OFFSETS), torch_weights) * torch.from_numpy(upstream)).sum().backward()
    np.testing.assert_allclose(tiny_weights.grad.data, torch_weights.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(bag.weight.grad.data, reference.weight.grad.numpy(), rtol=1e-12)
