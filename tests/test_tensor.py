"""Tensor construction, autograd bookkeeping and every backward rule against finite differences."""

import numpy as np
import pytest

import tinytorch
from tinytorch.core.gradcheck import compare_gradients
from tinytorch.core.tensor import Tensor, is_grad_enabled, no_grad, where

RTOL, ATOL = 1e-4, 1e-6


def leaf(array):
    return Tensor(np.asarray(array, dtype=np.float64), dtype=np.float64, requires_grad=True)


def random_leaf(shape, seed, low=-1.0, high=1.0):
    return leaf(np.random.default_rng(seed).uniform(low, high, size=shape))


def assert_gradients_match(fn, inputs):
    analytic, numeric = compare_gradients(fn, inputs)
    for index, (a, n) in enumerate(zip(analytic, numeric)):
        np.testing.assert_allclose(a, n, rtol=RTOL, atol=ATOL, err_msg=f"input {index}")


# ---------------------------------------------------------------- construction


def test_float64_input_becomes_float32():
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(np.zeros(3)).dtype == np.float32
    assert Tensor(2.5).dtype == np.float32


def test_explicit_dtype_is_kept():
    assert Tensor([1.0], dtype=np.float64).dtype == np.float64


def test_integer_and_bool_data_stay():
    assert Tensor([1, 2]).dtype == np.int64
    assert Tensor(np.array([1], dtype=np.int32)).dtype == np.int32
    assert Tensor([True]).dtype == np.bool_


def test_accessors():
    t = Tensor([[1.0, 2.0, 3.0]])
    assert t.shape == (1, 3)
    assert t.size == 3
    assert t.ndim == 2
    assert t.numpy() is t.data
    assert np.asarray(t) is t.data
    assert Tensor([4.5]).item() == 4.5
    assert "Tensor(" in repr(t)
    assert "float32" in repr(t)


def test_item_needs_one_element():
    with pytest.raises(ValueError, match=r"exactly one element; received shape \(2,\)"):
        Tensor([1.0, 2.0]).item()


def test_string_data_rejected():
    with pytest.raises(TypeError, match="must be numeric"):
        Tensor(["a", "b"])


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(TypeError, match="only floating-point tensors can require gradients; received dtype int64"):
        Tensor([1, 2], requires_grad=True)


# ---------------------------------------------------------------- autograd bookkeeping


def test_requires_grad_propagates():
    a = Tensor([1.0], requires_grad=True)
    b = Tensor([2.0])
    assert (a * b).requires_grad
    assert not (b * b).requires_grad


def test_no_grad_stops_recording():
    a = Tensor([1.0], requires_grad=True)
    with no_grad():
        assert not is_grad_enabled()
        out = a * 3
    assert is_grad_enabled()
    assert not out.requires_grad


def test_detach_cuts_graph_and_shares_data():
    a = Tensor([1.0, 2.0], requires_grad=True)
    d = (a * 2).detach()
    assert not d.requires_grad
    assert d.is_leaf


def test_value_used_twice_accumulates():
    a = Tensor([3.0], requires_grad=True)
    (a * a + a).sum().backward()
    assert a.grad.data.tolist() == [7.0]  # 2a + 1


def test_backward_twice_accumulates_until_zero_grad():
    a = Tensor([1.0, 2.0], requires_grad=True)
    (a * 2).sum().backward()
    (a * 2).sum().backward()
    assert a.grad.data.tolist() == [4.0, 4.0]
    a.zero_grad()
    assert a.grad is None


def test_broadcast_gradient_reduces_to_operand_shape():
    a = Tensor(np.ones((2, 3)), requires_grad=True)
    b = Tensor(np.ones((1, 3)), requires_grad=True)
    c = Tensor(np.ones(3), requires_grad=True)
    (a * b + c).sum().backward()
    assert b.grad.shape == (1, 3)
    assert b.grad.data.tolist() == [[2.0, 2.0, 2.0]]
    assert c.grad.data.tolist() == [2.0, 2.0, 2.0]


def test_backward_without_gradient_needs_scalar():
    a = Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ValueError, match=r"received shape \(2,\)"):
        (a * 2).backward()


def test_backward_gradient_shape_checked():
    a = Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ValueError, match=r"gradient must have the tensor's shape \(2,\); received shape \(3,\)"):
        (a * 2).backward(np.ones(3))


def test_backward_on_constant_raises():
    with pytest.raises(RuntimeError, match="does not require gradients"):
        Tensor([1.0]).sum().backward()


def test_deep_graph_does_not_recurse():
    a = Tensor([1.0], requires_grad=True)
    out = a
    for _ in range(5000):
        out = out + 1.0
    out.sum().backward()
    assert a.grad.data.tolist() == [1.0]


def test_manual_seed_reproduces_layers():
    from tinytorch.core.embeddings import Embedding

    tinytorch.manual_seed(7)
    first = Embedding(20, 4).weight.data.copy()
    tinytorch.manual_seed(7)
    second = Embedding(20, 4).weight.data
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("seed", [-1, 1.5, "0"])
def test_manual_seed_rejects_bad_seed(seed):
    with pytest.raises((TypeError, ValueError), match=repr(seed).replace(".", r"\.")):
        tinytorch.manual_seed(seed)


# ---------------------------------------------------------------- forward values


def test_scalar_operands_keep_float32():
    t = Tensor([1.0, 2.0])
    for result in (t + 1.5, 1.5 + t, t * 2.0, t / 3.0, 2.0 - t, t**2, 2.0**t, 1.0 / t):
        assert result.dtype == np.float32


def test_forward_values_match_numpy():
    x = np.array([[0.5, -1.0], [2.0, 0.25]])
    t = Tensor(x, dtype=np.float64)
    np.testing.assert_allclose((t + 1).data, x + 1)
    np.testing.assert_allclose((t / 2).data, x / 2)
    np.testing.assert_allclose((-t).data, -x)
    np.testing.assert_allclose(t.exp().data, np.exp(x))
    np.testing.assert_allclose(t.tanh().data, np.tanh(x))
    np.testing.assert_allclose(t.relu().data, np.maximum(x, 0))
    np.testing.assert_allclose(t.max(axis=1).data, x.max(axis=1))
    np.testing.assert_allclose(t.mean().data, x.mean())
    np.testing.assert_allclose(t.softmax(axis=1).data.sum(axis=1), [1.0, 1.0])
    np.testing.assert_allclose(t.log_softmax(axis=1).data, np.log(np.exp(x) / np.exp(x).sum(1, keepdims=True)))


def test_softmax_is_stable_for_large_inputs():
    t = Tensor([1000.0, 1001.0, 1002.0], dtype=np.float64)
    expected = np.exp([-2.0, -1.0, 0.0]) / np.exp([-2.0, -1.0, 0.0]).sum()
    np.testing.assert_allclose(t.softmax().data, expected)
    assert np.isfinite(t.log_softmax().data).all()


def test_axis_out_of_range_raises():
    with pytest.raises(ValueError, match="axis 5"):
        Tensor(np.ones((2, 2))).sum(axis=5)


def test_masked_fill_needs_boolean_mask():
    with pytest.raises(TypeError, match="boolean array; received dtype int64"):
        Tensor([1.0]).masked_fill(np.array([1]), 0.0)


# ---------------------------------------------------------------- gradients vs finite differences


BINARY_OPS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a**b,
}


@pytest.mark.parametrize("name", sorted(BINARY_OPS))
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 4)), ((2, 1, 4), (3, 1))])
def test_binary_op_gradients_with_broadcasting(name, shapes):
    a = random_leaf(shapes[0], seed=1, low=0.5, high=2.0)
    b = random_leaf(shapes[1], seed=2, low=0.5, high=2.0)
    assert_gradients_match(BINARY_OPS[name], [a, b])


@pytest.mark.parametrize(
    "name, fn",
    [
        ("add scalar", lambda a: a + 2.0),
        ("radd", lambda a: 2.0 + a),
        ("rsub", lambda a: 2.0 - a),
        ("rmul", lambda a: 3.0 * a),
        ("rdiv", lambda a: 3.0 / a),
        ("pow scalar", lambda a: a**3),
        ("pow fractional", lambda a: a**0.5),
        ("rpow", lambda a: 2.0**a),
        ("neg", lambda a: -a),
        ("exp", lambda a: a.exp()),
        ("log", lambda a: a.log()),
        ("sqrt", lambda a: a.sqrt()),
        ("tanh", lambda a: a.tanh()),
        ("sum all", lambda a: a.sum()),
        ("sum axis", lambda a: a.sum(axis=1)),
        ("sum keepdims", lambda a: a.sum(axis=0, keepdims=True)),
        ("sum two axes", lambda a: a.sum(axis=(0, 2))),
        ("mean all", lambda a: a.mean()),
        ("mean axis", lambda a: a.mean(axis=-1)),
        ("mean keepdims", lambda a: a.mean(axis=1, keepdims=True)),
        ("reshape", lambda a: a.reshape(4, 6)),
        ("reshape infer", lambda a: a.reshape(-1)),
        ("transpose", lambda a: a.transpose()),
        ("transpose axes", lambda a: a.transpose(0, 2)),
        ("index int", lambda a: a[1]),
        ("index slice", lambda a: a[:, 1:3]),
        ("index array repeated", lambda a: a[np.array([0, 1, 0, 0])]),
        ("index pairs", lambda a: a[np.array([0, 1]), np.array([2, 2])]),
        ("softmax", lambda a: a.softmax(axis=-1)),
        ("softmax axis 1", lambda a: a.softmax(axis=1)),
        ("log_softmax", lambda a: a.log_softmax(axis=-1)),
        ("log_softmax axis 0", lambda a: a.log_softmax(axis=0)),
    ],
)
def test_unary_op_gradients(name, fn):
    a = random_leaf((2, 3, 4), seed=3, low=0.5, high=2.0)
    assert_gradients_match(fn, [a])


def test_relu_gradient_away_from_zero():
    values = np.random.default_rng(4).uniform(0.1, 1.0, size=(3, 4)) * np.where(
        np.arange(12).reshape(3, 4) % 2, 1, -1
    )
    assert_gradients_match(lambda a: a.relu(), [leaf(values)])


def test_max_gradient_without_ties():
    a = leaf(np.random.default_rng(5).permutation(24).reshape(2, 3, 4) * 0.1)
    assert_gradients_match(lambda t: t.max(axis=1), [a])
    assert_gradients_match(lambda t: t.max(axis=-1, keepdims=True), [a])
    assert_gradients_match(lambda t: t.max(), [a])


def test_max_gradient_shares_ties_equally():
    a = Tensor([1.0, 3.0, 3.0], requires_grad=True)
    a.max().backward()
    assert a.grad.data.tolist() == [0.0, 0.5, 0.5]


@pytest.mark.parametrize(
    "shapes",
    [((3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 2)), ((4,), (4, 3)), ((3, 4), (4,)), ((4,), (4,))],
)
def test_matmul_gradients(shapes):
    a = random_leaf(shapes[0], seed=6)
    b = random_leaf(shapes[1], seed=7)
    np.testing.assert_allclose((a @ b).data, a.data @ b.data)
    assert_gradients_match(lambda x, y: x @ y, [a, b])


def test_rmatmul_with_array():
    b = random_leaf((4, 2), seed=8)
    left = np.random.default_rng(9).standard_normal((3, 4))
    assert_gradients_match(lambda y: left @ y, [b])


def test_where_gradients():
    condition = np.array([[True, False, True], [False, False, True]])
    a = random_leaf((2, 3), seed=10)
    b = random_leaf((1, 3), seed=11)
    assert_gradients_match(lambda x, y: where(condition, x, y), [a, b])


def test_masked_fill_gradient_and_value():
    mask = np.triu(np.ones((3, 3), dtype=bool), k=1)  # a causal mask
    a = random_leaf((2, 3, 3), seed=12)
    out = a.masked_fill(mask, -1e9)
    assert (out.data[:, mask] == -1e9).all()
    assert_gradients_match(lambda x: x.masked_fill(mask, -1e9).softmax(-1), [a])


def test_composite_attention_like_expression():
    q = random_leaf((2, 3, 4), seed=13)
    k = random_leaf((2, 3, 4), seed=14)
    mask = np.triu(np.ones((3, 3), dtype=bool), k=1)

    def attention(q, k):
        scores = (q @ k.transpose(-2, -1)) / 2.0
        return scores.masked_fill(mask, -1e9).softmax(axis=-1) @ k

    assert_gradients_match(attention, [q, k])


@pytest.mark.parametrize("operand", ["3", None, object()])
def test_non_numeric_operands_raise_type_error(operand):
    with pytest.raises(TypeError, match="Tensor data must be numeric"):
        Tensor([1.0, 2.0]) + operand


def test_non_numeric_data_with_dtype_raises():
    with pytest.raises(TypeError, match="received dtype object"):
        Tensor(None, dtype=np.float32)


def test_ragged_data_raises_value_error():
    with pytest.raises(ValueError, match="rectangular array"):
        Tensor([[1.0], [1.0, 2.0]])


def test_integer_and_float32_give_float32():
    ints = Tensor([1, 2, 3])
    floats = Tensor([0.5, 0.5, 0.5])
    for result in (ints + floats, floats + ints, ints * floats, floats - ints, ints / floats, ints @ floats):
        assert result.dtype == np.float32


def test_backward_gradient_must_be_numeric():
    a = Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(TypeError, match="must be numeric"):
        (a * 2).backward([1.0, None])


def test_mean_of_empty_axis_is_nan():
    assert np.isnan(Tensor(np.ones((0, 3))).mean(axis=0).data).all()


def test_gradcheck_handles_non_contiguous_input():
    data = np.random.default_rng(0).standard_normal((3, 4)).T
    x = Tensor(data, dtype=np.float64, requires_grad=True)
    assert not x.data.flags.c_contiguous
    analytic, numeric = compare_gradients(lambda t: t.tanh(), [x])
    np.testing.assert_allclose(analytic[0], numeric[0], rtol=RTOL, atol=ATOL)
    assert np.abs(numeric[0]).min() > 0.01  # a real gradient, not the zeros a copied view gives


def test_leaf_gradients_never_share_memory():
    a = Tensor([1.0, 2.0], requires_grad=True)
    b = Tensor([3.0, 4.0], requires_grad=True)
    upstream = np.array([1.0, 1.0], dtype=np.float32)
    (a + b).backward(upstream)
    assert not np.shares_memory(a.grad.data, b.grad.data)
    assert not np.shares_memory(a.grad.data, upstream)
    a.grad.data *= 10  # an optimizer scaling one gradient in place
    assert b.grad.data.tolist() == [1.0, 1.0]
    assert upstream.tolist() == [1.0, 1.0]

    c = Tensor(np.ones((2, 3)), requires_grad=True)
    c.reshape(6).backward(np.arange(6.0))
    assert c.grad.data.flags.owndata


def test_lookup_gradient_is_not_copied(monkeypatch):
    from tinytorch.core import functional
    from tinytorch.core.embeddings import Embedding

    produced = []

    def recording_scatter_add(ids, rows, num_rows):
        produced.append(np.zeros((num_rows, rows.shape[1]), dtype=rows.dtype))
        return produced[-1]

    monkeypatch.setattr(functional.kernels, "scatter_add_rows", recording_scatter_add)
    layer = Embedding(5, 2)
    layer([1, 2]).backward(np.ones((2, 2), dtype=np.float32))
    assert layer.weight.grad.data is produced[0]
