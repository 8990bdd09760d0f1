"""Module discovery and state dicts; Linear, LayerNorm, Dropout, GELU; weight tying and frozen tables."""

import numpy as np
import pytest

from tinytorch.core import functional as F
from tinytorch.core.embeddings import Embedding
from tinytorch.core.gradcheck import compare_gradients
from tinytorch.core.layers import Dropout, LayerNorm, Linear, Module, Parameter
from tinytorch.core.tensor import RowSparseGrad, Tensor

RTOL, ATOL = 1e-4, 1e-6


def assert_gradients_match(fn, inputs):
    analytic, numeric = compare_gradients(fn, inputs)
    for index, (a, n) in enumerate(zip(analytic, numeric)):
        np.testing.assert_allclose(a, n, rtol=RTOL, atol=ATOL, err_msg=f"input {index}")


def leaf(shape, seed):
    return Tensor(np.random.default_rng(seed).standard_normal(shape), dtype=np.float64, requires_grad=True)


class TwoLayers(Module):
    def __init__(self):
        self.first = Linear(3, 4, dtype=np.float64, rng=np.random.default_rng(0))
        self.norm = LayerNorm(4, dtype=np.float64)
        self.shared = self.first  # the same module twice must be counted once

    def forward(self, x):
        return self.norm(self.first(x))


# ---------------------------------------------------------------- Module


def test_named_parameters_recurse_in_order_without_duplicates():
    names = [name for name, _ in TwoLayers().named_parameters()]
    assert names == ["first.weight", "first.bias", "norm.weight", "norm.bias"]


def test_state_dict_round_trip_updates_in_place():
    source, target = TwoLayers(), TwoLayers()
    for parameter in source.parameters:
        parameter.data[...] = np.random.default_rng(1).standard_normal(parameter.shape)
    original_weight = target.parameters[0]
    target.load_state_dict({name: array.copy() for name, array in source.state_dict().items()})
    assert target.parameters[0] is original_weight
    for name, array in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[name], array)


def test_load_state_dict_rejects_mismatch_and_changes_nothing():
    model = TwoLayers()
    before = {name: array.copy() for name, array in model.state_dict().items()}
    good = {name: np.ones_like(array) for name, array in before.items()}

    with pytest.raises(ValueError, match=r"missing \['norm.bias'\], unexpected \[\]"):
        model.load_state_dict({k: v for k, v in good.items() if k != "norm.bias"})
    with pytest.raises(ValueError, match=r"unexpected \['extra'\]"):
        model.load_state_dict({**good, "extra": np.ones(2)})
    bad_shape = {**good, "norm.bias": np.ones(5)}
    with pytest.raises(ValueError, match=r"state\['norm.bias'\] must have shape \(4,\); received shape \(5,\)"):
        model.load_state_dict(bad_shape)
    with pytest.raises(TypeError, match="state must be a mapping"):
        model.load_state_dict([1, 2])
    for name, array in model.state_dict().items():
        np.testing.assert_array_equal(array, before[name])


def test_load_state_dict_checks_dtype_and_range():
    model = TwoLayers()
    good = {name: array.copy() for name, array in model.state_dict().items()}
    with pytest.raises(TypeError, match=r"state\['norm.bias'\] must be floating point.*received dtype int64"):
        model.load_state_dict({**good, "norm.bias": np.ones(4, dtype=np.int64)})
    single = LayerNorm(4)
    with pytest.raises(ValueError, match=r"state\['bias'\] contains values too large for float32"):
        single.load_state_dict({"weight": np.ones(4), "bias": np.full(4, 1e300)})
    with pytest.raises(TypeError, match="strict must be True or False; received 'no'"):
        model.load_state_dict(good, strict="no")


def test_load_state_dict_non_strict_allows_missing():
    model = TwoLayers()
    model.load_state_dict({"norm.bias": np.full(4, 2.0)}, strict=False)
    assert model.norm.bias.data.tolist() == [2.0] * 4


# ---------------------------------------------------------------- Linear


def test_linear_matches_formula_and_init_bounds():
    layer = Linear(16, 8, rng=np.random.default_rng(2))
    assert layer.weight.shape == (8, 16)
    assert np.abs(layer.weight.data).max() <= 0.25
    x = np.random.default_rng(3).standard_normal((2, 5, 16)).astype(np.float32)
    np.testing.assert_allclose(layer(Tensor(x)).data, x @ layer.weight.data.T + layer.bias.data, rtol=1e-5)


def test_linear_gradients():
    layer = Linear(3, 4, dtype=np.float64, rng=np.random.default_rng(4))
    x = leaf((2, 5, 3), 5)
    assert_gradients_match(lambda x, w, b: F.linear(x, w, b), [x, layer.weight, layer.bias])
    assert_gradients_match(lambda x, w: F.linear(x, w), [x, layer.weight])


def test_linear_without_bias():
    layer = Linear(3, 2, bias=False)
    assert layer.bias is None
    assert len(layer.parameters) == 1
    assert repr(layer) == "Linear(3, 2, bias=False)"


def test_linear_checks_input_width():
    with pytest.raises(ValueError, match=r"in_features=3; received shape \(2, 4\)"):
        Linear(3, 2)(Tensor(np.ones((2, 4))))


# ---------------------------------------------------------------- LayerNorm and GELU


def test_layer_norm_values():
    layer = LayerNorm(6, dtype=np.float64)
    x = np.random.default_rng(6).standard_normal((3, 6)) * 5 + 2
    out = layer(Tensor(x, dtype=np.float64)).data
    np.testing.assert_allclose(out.mean(axis=-1), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=-1), 1 / (1 + 1e-5 / x.var(axis=-1)), rtol=1e-9)


def test_layer_norm_gradients():
    layer = LayerNorm(5, dtype=np.float64)
    layer.weight.data[...] = np.random.default_rng(7).standard_normal(5)
    layer.bias.data[...] = np.random.default_rng(8).standard_normal(5)
    assert_gradients_match(lambda x, w, b: F.layer_norm(x, w, b), [leaf((2, 3, 5), 9), layer.weight, layer.bias])


def test_gelu_values_and_gradient():
    x = np.array([-3.0, -1.0, 0.0, 0.5, 2.0])
    expected = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(F.gelu(Tensor(x, dtype=np.float64)).data, expected)
    assert_gradients_match(F.gelu, [leaf((4, 3), 10)])


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: Linear(0, 2), ValueError, "in_features must be a positive integer; received 0"),
        (lambda: Linear(2, 2.5), TypeError, r"out_features must be an integer; received 2\.5"),
        (lambda: LayerNorm(4, eps=0), ValueError, "eps must be positive; received 0"),
        (lambda: Dropout(1.5), ValueError, r"p must be in \[0, 1\); received 1\.5"),
    ],
)
def test_bad_layer_arguments(make, error, message):
    with pytest.raises(error, match=message):
        make()


# ---------------------------------------------------------------- Dropout


def test_dropout_layer_modes():
    layer = Dropout(0.25, rng=np.random.default_rng(11))
    x = Tensor(np.ones((200, 50)))
    out = layer(x).data
    assert 0.22 < (out == 0).mean() < 0.28
    np.testing.assert_allclose(out[out != 0], 1 / 0.75, rtol=1e-6)
    layer.eval()
    assert layer(x) is x


# ---------------------------------------------------------------- embeddings: sparse, frozen, tied


def test_sparse_gradient_holds_unique_rows_without_padding():
    layer = Embedding(10, 3, padding_idx=0, sparse=True)
    layer([[4, 0, 4], [7, 2, 0]]).sum().backward()
    grad = layer.weight.grad
    assert isinstance(grad, RowSparseGrad)
    assert grad.indices.tolist() == [2, 4, 7]
    np.testing.assert_array_equal(grad.values, [[1] * 3, [2] * 3, [1] * 3])


def test_sparse_gradient_densifies_to_dense_gradient():
    ids = np.random.default_rng(12).integers(0, 30, size=(8, 9))
    upstream = np.random.default_rng(13).standard_normal((8, 9, 4))
    dense = Embedding(30, 4, padding_idx=5, dtype=np.float64, rng=np.random.default_rng(0))
    sparse = Embedding(30, 4, padding_idx=5, dtype=np.float64, sparse=True, rng=np.random.default_rng(0))
    (dense(ids) * upstream).sum().backward()
    (sparse(ids) * upstream).sum().backward()
    np.testing.assert_array_equal(sparse.weight.grad.to_dense(), dense.weight.grad.data)


def test_sparse_gradient_stays_uncoalesced_until_read():
    layer = Embedding(10, 2, dtype=np.float64, sparse=True)
    upstream = np.arange(8.0).reshape(4, 2)
    layer([3, 1, 3, 3]).backward(upstream)
    grad = layer.weight.grad
    assert not grad.is_coalesced()
    assert "coalesced=False" in repr(grad)
    assert grad.indices.tolist() == [1, 3]
    assert grad.is_coalesced()
    assert grad.values.tolist() == [[2, 3], [0 + 4 + 6, 1 + 5 + 7]]
    assert not np.shares_memory(grad.values, upstream)  # reading values never exposes the caller's array


def test_add_to_matches_coalesced_update():
    rng = np.random.default_rng(20)
    ids = np.minimum(rng.zipf(1.4, size=300) - 1, 39)
    upstream = rng.standard_normal((300, 16)).astype(np.float32)
    layer = Embedding(40, 16, sparse=True)
    layer(ids).backward(upstream)
    grad = layer.weight.grad
    direct = layer.weight.data.copy()
    grad.add_to(direct, -0.1)
    assert not grad.is_coalesced()
    coalesced = layer.weight.data.copy()
    coalesced[grad.indices] += grad.values * np.float32(-0.1)
    np.testing.assert_array_equal(direct, coalesced)
    np.testing.assert_array_equal(grad.to_dense()[grad.indices], grad.values)


@pytest.mark.parametrize(
    ("indices", "values", "error", "message"),
    [
        (np.array([5, 5]), np.ones((2, 4)), ValueError, r"indices must be in \[0, 4\); received values from 5 to 5"),
        (np.array([-1]), np.ones((1, 4)), ValueError, r"indices must be in \[0, 4\)"),
        (np.array([1, 2]), np.ones((3, 4)), ValueError, r"values must have shape \(2, 4\)"),
        (np.array([1.0]), np.ones((1, 4)), TypeError, "indices must be a 1-D integer array"),
        (np.array([[1]]), np.ones((1, 4)), TypeError, "indices must be a 1-D integer array"),
        (np.array([1]), np.ones((1, 4), dtype=np.int64), TypeError, "values must be floating point"),
    ],
)
def test_row_sparse_grad_rejects_bad_parts(indices, values, error, message):
    with pytest.raises(error, match=message):
        RowSparseGrad(indices, values, (4, 4), coalesced=False)


def test_add_to_rejects_mismatched_table():
    grad = RowSparseGrad([3, 1], np.ones((2, 2)), (4, 2), coalesced=False)
    with pytest.raises(ValueError, match=r"table must have the gradient's shape \(4, 2\); received shape \(2, 2\)"):
        grad.add_to(np.zeros((2, 2)))
    with pytest.raises(TypeError, match="table must be a NumPy array"):
        grad.add_to([[0.0, 0.0]] * 4)


def test_row_sparse_grad_checks_its_shape():
    with pytest.raises(TypeError, match="num_rows must be an integer; received 3.5"):
        RowSparseGrad([0], np.ones((1, 2)), (3.5, 2), coalesced=False)
    with pytest.raises(ValueError, match=r"shape must be \(num_rows, dim\)"):
        RowSparseGrad([0], np.ones((1, 2)), (3, 2, 1))
    grad = RowSparseGrad([2, 0, 2], np.ones((3, 2)), (3, 2), coalesced=False)  # lists become arrays
    assert grad.indices.tolist() == [0, 2]


def test_gradient_check_sparse_lookup():
    table = Tensor(np.random.default_rng(22).standard_normal((5, 3)), dtype=np.float64, requires_grad=True)
    analytic, numeric = compare_gradients(lambda t: F.embedding([1, 1, 4], t, sparse=True), [table])
    np.testing.assert_allclose(analytic[0], numeric[0], rtol=1e-6, atol=1e-8)
    assert analytic[0][1].any()


def test_sparse_gradient_keeps_table_dtype():
    """A float64 factor downstream must not make a float32 table's sparse gradient float64."""
    ids = np.array([0, 1, 1, 2, 3, 3, 3])
    grads = []
    for sparse in (False, True):
        table = Embedding(4, 5, sparse=sparse, rng=np.random.default_rng(21))
        out = table(ids)
        (out.max(axis=-1) * Tensor(np.full(7, 3.0), dtype=np.float64)).sum().backward()
        grad = table.weight.grad
        grads.append(grad.data if sparse is False else grad.to_dense())
        assert grad.dtype == np.float32
    np.testing.assert_array_equal(grads[1], grads[0])


def test_negative_padding_idx_in_functional_lookup():
    table = Tensor(np.arange(10.0).reshape(5, 2), requires_grad=True)
    for sparse in (False, True):
        table.grad = None
        F.embedding([4, 1, 4], table, padding_idx=-1, sparse=sparse).sum().backward()
        dense = table.grad.data if not sparse else table.grad.to_dense()
        assert dense[4].tolist() == [0.0, 0.0]
        assert dense[1].tolist() == [1.0, 1.0]


def test_sparse_lookup_into_computed_table():
    """The row-sparse gradient becomes dense before it reaches a computed table's rule."""
    base = Tensor(np.arange(8.0).reshape(4, 2), requires_grad=True)
    F.embedding([3, 0, 3], base * 2.0, sparse=True).sum().backward()
    assert base.grad.data.tolist() == [[2.0, 2.0], [0.0, 0.0], [0.0, 0.0], [4.0, 4.0]]


def test_sparse_gradients_accumulate_across_backward_calls():
    layer = Embedding(6, 2, sparse=True)
    layer([1, 2]).sum().backward()
    layer([2, 5]).sum().backward()
    assert layer.weight.grad.indices.tolist() == [1, 2, 5]
    np.testing.assert_array_equal(layer.weight.grad.values[:, 0], [1, 2, 1])


def test_from_pretrained_frozen_gets_no_gradient():
    vectors = np.arange(12, dtype=np.float32).reshape(4, 3)
    layer = Embedding.from_pretrained(vectors)
    assert not layer.weight.requires_grad
    assert isinstance(layer.weight, Parameter)
    np.testing.assert_array_equal(layer([3, 0]).data, vectors[[3, 0]])
    out = layer([1, 2]) * Tensor(np.ones(3), requires_grad=True)
    out.sum().backward()
    assert layer.weight.grad is None
    vectors[0, 0] = 99.0
    assert layer.weight.data[0, 0] == 0.0  # copied, not shared


def test_from_pretrained_draws_no_random_numbers():
    import tinytorch

    tinytorch.manual_seed(0)
    expected = Linear(2, 2).weight.data.copy()
    tinytorch.manual_seed(0)
    Embedding.from_pretrained(np.ones((1000, 8)))
    np.testing.assert_array_equal(Linear(2, 2).weight.data, expected)
    with pytest.raises(TypeError, match="freeze must be True or False; received 'no'"):
        Embedding.from_pretrained(np.ones((2, 2)), freeze="no")


def test_from_pretrained_trainable_and_checks():
    layer = Embedding.from_pretrained(np.ones((4, 3), dtype=np.float16), freeze=False, padding_idx=1)
    assert layer.weight.requires_grad
    assert layer.weight.dtype == np.float32
    assert Embedding.from_pretrained(np.ones((4, 3))).weight.dtype == np.float64
    assert layer.weight.data[1].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match=r"non-empty 2-D array.*received shape \(3,\)"):
        Embedding.from_pretrained(np.ones(3))
    with pytest.raises(TypeError, match="floating-point array; received dtype int64"):
        Embedding.from_pretrained(np.ones((2, 2), dtype=np.int64))


def test_attend_is_tied_output_and_gradients_sum():
    layer = Embedding(7, 4, dtype=np.float64, rng=np.random.default_rng(14))
    ids = np.array([[1, 3, 3]])

    def tied(weight):
        hidden = F.embedding(ids, weight).tanh()
        return F.linear(hidden, weight)

    np.testing.assert_allclose(layer.attend(layer(ids)).data, layer(ids).data @ layer.weight.data.T)
    assert_gradients_match(tied, [layer.weight])

    layer.zero_grad()
    upstream = np.random.default_rng(15).standard_normal((1, 3, 7))
    hidden = layer(ids)
    (layer.attend(hidden) * upstream).sum().backward()
    from_lookup = np.zeros((7, 4))
    for position, token in enumerate(ids[0]):
        from_lookup[token] += upstream[0, position] @ layer.weight.data
    from_logits = upstream[0].T @ hidden.data[0]
    np.testing.assert_allclose(layer.weight.grad.data, from_lookup + from_logits, rtol=1e-12)


def test_attend_with_sparse_table_sums_to_dense():
    layer = Embedding(5, 2, sparse=True)
    layer.attend(layer([1, 1])).sum().backward()
    assert isinstance(layer.weight.grad, Tensor)
    assert layer.weight.grad.shape == (5, 2)


def test_most_similar_cosine():
    table = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    layer = Embedding.from_pretrained(table)
    neighbours = layer.most_similar(0, k=3)
    assert [index for index, _ in neighbours] == [1, 2, 3]
    assert neighbours[0][1] == pytest.approx(0.9 / np.hypot(0.9, 0.1))
    assert neighbours[2][1] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match=r"token_id must be in \[0, 4\); received 4"):
        layer.most_similar(4)
