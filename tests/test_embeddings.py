"""Embedding, PositionalEncoding and LearnedPositionalEmbedding: values, gradients and errors."""

import math
import subprocess
import sys

import numpy as np
import pytest

import tinytorch
from tinytorch.core import functional as F
from tinytorch.core.embeddings import Embedding, LearnedPositionalEmbedding, PositionalEncoding
from tinytorch.core.gradcheck import compare_gradients
from tinytorch.core.layers import Module, Parameter
from tinytorch.core.tensor import Tensor
from tinytorch.core.tokenization import CharTokenizer

RTOL, ATOL = 1e-4, 1e-6


def assert_gradients_match(fn, inputs, skip_rows=None):
    analytic, numeric = compare_gradients(fn, inputs)
    for index, (a, n) in enumerate(zip(analytic, numeric)):
        if skip_rows is not None and index == 0:
            keep = np.setdiff1d(np.arange(a.shape[0]), skip_rows)
            a, n = a[keep], n[keep]
        np.testing.assert_allclose(a, n, rtol=RTOL, atol=ATOL, err_msg=f"input {index}")


def test_usage_example_shapes():
    tokenizer = CharTokenizer()
    embedding = Embedding(vocab_size=tokenizer.vocab_size, embedding_dim=256)
    pos_encoding = PositionalEncoding(embedding_dim=256, max_seq_length=512)
    tokens = tokenizer.encode("Hello world!")
    embeddings = embedding(tokens)
    pos_embeddings = pos_encoding(embeddings)
    assert len(tokens) == 14
    assert isinstance(embeddings, Tensor) and embeddings.shape == (14, 256)
    assert isinstance(pos_embeddings, Tensor) and pos_embeddings.shape == (14, 256)
    np.testing.assert_allclose(pos_embeddings.data, embeddings.data + pos_encoding.pe.data[:14])


# ---------------------------------------------------------------- Embedding construction


def test_uniform_init_bounds_and_spread():
    table = Embedding(2000, 64, rng=np.random.default_rng(0)).weight.data
    bound = 1 / math.sqrt(64)
    assert table.dtype == np.float32
    assert np.abs(table).max() <= bound
    assert np.abs(table).max() > 0.99 * bound
    assert table.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)


def test_normal_init_std():
    table = Embedding(4000, 64, init_type="normal", rng=np.random.default_rng(1)).weight.data
    assert table.std() == pytest.approx(1 / 8, rel=0.02)
    assert abs(table.mean()) < 0.005


def test_xavier_init_bounds():
    table = Embedding(3000, 100, init_type="xavier", rng=np.random.default_rng(2)).weight.data
    bound = math.sqrt(6 / (3000 + 100))
    assert np.abs(table).max() <= bound
    assert np.abs(table).max() > 0.99 * bound


def test_float64_table():
    assert Embedding(5, 3, dtype=np.float64).weight.dtype == np.float64


def test_rng_makes_tables_reproducible():
    a = Embedding(10, 4, rng=np.random.default_rng(5)).weight.data
    b = Embedding(10, 4, rng=np.random.default_rng(5)).weight.data
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("padding_idx, row", [(0, 0), (4, 4), (-1, 9), (-10, 0)])
def test_padding_row_starts_at_zero(padding_idx, row):
    layer = Embedding(10, 4, padding_idx=padding_idx)
    assert layer.padding_idx == row
    assert (layer.weight.data[row] == 0).all()
    assert np.abs(layer.weight.data).sum() > 0


def test_parameters_list_and_call():
    layer = Embedding(10, 4)
    assert len(layer.parameters) == 1
    assert layer.parameters[0] is layer.weight
    assert layer.parameters()[0] is layer.weight
    assert isinstance(layer.weight, Parameter) and layer.weight.requires_grad
    assert isinstance(layer, Module)
    assert layer.num_embeddings == 10


def test_memory_usage_uses_real_dtype():
    usage = Embedding(1000, 256).get_memory_usage()
    assert usage == {
        "total_memory_mb": 1000 * 256 * 4 / 2**20,
        "memory_per_token_kb": 1.0,
        "total_parameters": 256_000,
        "vocab_size": 1000,
        "embedding_dim": 256,
    }
    assert Embedding(1000, 256, dtype=np.float64).get_memory_usage()["memory_per_token_kb"] == 2.0


def test_repr_lists_only_non_default_settings():
    assert repr(Embedding(10, 4)) == "Embedding(10, 4)"
    assert repr(Embedding(10, 4, padding_idx=0, init_type="normal")) == "Embedding(10, 4, padding_idx=0, init_type='normal')"


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"vocab_size": 0}, ValueError, r"vocab_size must be a positive integer; received 0 \(int\)"),
        ({"vocab_size": -5}, ValueError, r"received -5 \(int\)"),
        ({"vocab_size": 10.0}, TypeError, r"vocab_size must be an integer; received 10\.0 \(float\)"),
        ({"vocab_size": True}, TypeError, r"received True \(bool\)"),
        ({"embedding_dim": 0}, ValueError, r"embedding_dim must be a positive integer; received 0"),
        ({"embedding_dim": "8"}, TypeError, r"received '8' \(str\)"),
        ({"padding_idx": 10}, ValueError, r"padding_idx must be in \[-10, 10\).*received 10"),
        ({"padding_idx": -11}, ValueError, r"received -11"),
        ({"padding_idx": 1.0}, TypeError, r"padding_idx must be an integer; received 1\.0"),
        ({"init_type": "he"}, ValueError, r"init_type must be one of 'uniform', 'normal', 'xavier'; received 'he'"),
        ({"dtype": np.int32}, ValueError, r"dtype must be float32 or float64; received int32"),
        ({"dtype": "not a dtype"}, TypeError, r"dtype must be a NumPy dtype; received 'not a dtype'"),
        ({"dtype": None}, TypeError, r"dtype must be np.float32 or np.float64; received None"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, message):
    arguments = {"vocab_size": 10, "embedding_dim": 4, **kwargs}
    with pytest.raises(error, match=message):
        Embedding(**arguments)


# ---------------------------------------------------------------- lookup values


@pytest.mark.parametrize(
    "ids",
    [
        [3, 1, 4, 1, 5],
        [[0, 2], [9, 9]],
        [[[1], [2]], [[3], [4]]],
        np.array([[7, 8, 9]], dtype=np.int32),
        np.array([2, 3], dtype=np.uint8),
        Tensor([1, 2, 3]),
    ],
)
def test_lookup_returns_exact_rows(ids):
    layer = Embedding(10, 6)
    out = layer(ids)
    as_array = np.asarray(ids.data if isinstance(ids, Tensor) else ids)
    assert out.shape == as_array.shape + (6,)
    np.testing.assert_array_equal(out.data, layer.weight.data[as_array])


def test_scalar_id():
    layer = Embedding(10, 6)
    out = layer(7)
    assert out.shape == (6,)
    np.testing.assert_array_equal(out.data, layer.weight.data[7])
    assert layer(np.int64(2)).shape == (6,)


@pytest.mark.parametrize("empty", [[], np.zeros(0), np.zeros(0, dtype=np.int32), np.zeros(0, dtype=bool)])
def test_empty_input(empty):
    out = Embedding(10, 6)(empty)
    assert out.shape == (0, 6)


def test_empty_input_backward_gives_zero_gradient():
    layer = Embedding(10, 6)
    layer([]).sum().backward()
    assert (layer.weight.grad.data == 0).all()


@pytest.mark.parametrize("bad_id", [10, 11, -1, -10, 10**12])
def test_out_of_range_id_raises_value_error(bad_id):
    layer = Embedding(10, 4)
    with pytest.raises(ValueError, match=rf"ids must be in \[0, 10\).*received id {bad_id}\b"):
        layer([1, bad_id, 2])


@pytest.mark.parametrize(
    "bad_ids, dtype_name",
    [([2.7], "float64"), (2.0, "float64"), ([True, False], "bool"), (["a"], "<U1"), ([1, 2.5], "float64"), (np.array([1.0], dtype=np.float32), "float32")],
)
def test_non_integer_ids_raise_type_error(bad_ids, dtype_name):
    with pytest.raises(TypeError, match=f"ids must be integers.*received dtype {dtype_name}"):
        Embedding(10, 4)(bad_ids)


def test_float_tensor_ids_raise_type_error():
    with pytest.raises(TypeError, match="received dtype float32"):
        Embedding(10, 4)(Tensor([2.7]))


@pytest.mark.parametrize("huge", [10**30, 2**64, -(10**25)])
def test_python_ints_beyond_int64_raise_value_error(huge):
    with pytest.raises(ValueError, match=f"ids must fit in a 64-bit integer; received id {huge}"):
        Embedding(10, 4)([1, huge])


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Embedding(2**70, 4), r"vocab_size=1180591620717411303424 x embedding_dim=4 has more bytes than any array can address"),
        (lambda: Embedding(10**400, 8), r"vocab_size=10{400} x embedding_dim=8 has more bytes"),
        (lambda: PositionalEncoding(2, max_seq_length=2**62), r"max_seq_length=4611686018427387904 x embedding_dim=2 has more bytes"),
        (lambda: LearnedPositionalEmbedding(2**62, 8), r"max_seq_length=4611686018427387904 x embedding_dim=8 has more bytes"),
    ],
)
def test_unaddressable_table_raises_value_error(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_table_memory_error_names_sizes(monkeypatch):
    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate")

    monkeypatch.setattr(np, "empty", no_memory)
    with pytest.raises(MemoryError, match=r"max_seq_length=300 x embedding_dim=8 \(1.79e-05 GiB\); use a smaller max_seq_length or embedding_dim"):
        PositionalEncoding(8, max_seq_length=300)


def test_object_array_of_small_ints_works():
    layer = Embedding(10, 4)
    ids = np.array([[1, 7], [0, 9]], dtype=object)
    np.testing.assert_array_equal(layer(ids).data, layer(np.array([[1, 7], [0, 9]])).data)


def test_reusing_id_array_before_backward_keeps_gradient_rows():
    layer = Embedding(10, 2)
    ids = np.array([1, 2])
    out = layer(ids)
    ids[:] = [7, 7]
    out.sum().backward()
    assert np.flatnonzero(layer.weight.grad.data[:, 0]).tolist() == [1, 2]


def test_ragged_ids_raise_value_error():
    with pytest.raises(ValueError, match="ragged"):
        Embedding(10, 4)([[1, 2], [3]])


# ---------------------------------------------------------------- lookup gradients


def test_repeated_ids_accumulate():
    layer = Embedding(5, 3)
    layer([1, 1, 1, 4]).sum().backward()
    expected = np.zeros((5, 3), dtype=np.float32)
    expected[1] = 3
    expected[4] = 1
    np.testing.assert_array_equal(layer.weight.grad.data, expected)


@pytest.mark.parametrize("ids", [[3], [1, 1, 2], [[0, 4], [4, 4]], [[[1, 2, 3]], [[3, 2, 1]]]])
def test_lookup_gradient_matches_finite_differences(ids):
    layer = Embedding(6, 4, dtype=np.float64)
    assert_gradients_match(lambda w: F.embedding(ids, w), [layer.weight])


def test_scalar_id_gradient():
    layer = Embedding(6, 4, dtype=np.float64)
    assert_gradients_match(lambda w: F.embedding(2, w), [layer.weight])


@pytest.mark.parametrize("padding_idx", [0, 3, -1])
def test_padding_row_gets_no_gradient(padding_idx):
    layer = Embedding(6, 4, padding_idx=padding_idx, dtype=np.float64)
    ids = [[0, 3, 5], [5, 3, 1]]
    layer(ids).sum().backward()
    assert (layer.weight.grad.data[layer.padding_idx] == 0).all()
    assert (layer.weight.grad.data[1] == 1).all()
    assert_gradients_match(lambda w: F.embedding(ids, w, layer.padding_idx), [layer.weight], skip_rows=[layer.padding_idx])


def test_gradient_flows_through_downstream_ops():
    layer = Embedding(7, 5, dtype=np.float64)
    ids = np.array([[1, 2, 2], [6, 0, 1]])
    assert_gradients_match(lambda w: (F.embedding(ids, w) * 2.0).tanh().sum(axis=-1), [layer.weight])


# ---------------------------------------------------------------- sinusoidal encoding


def test_sinusoidal_formula_element_by_element():
    d = 6
    pe = PositionalEncoding(embedding_dim=d, max_seq_length=20).pe
    assert isinstance(pe, Tensor)
    assert pe.shape == (20, d)
    assert pe.dtype == np.float32
    for pos in range(20):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            assert pe.data[pos, 2 * i] == pytest.approx(math.sin(angle), abs=1e-7)
            assert pe.data[pos, 2 * i + 1] == pytest.approx(math.cos(angle), abs=1e-7)


def test_sinusoidal_known_values():
    pe = PositionalEncoding(embedding_dim=4, max_seq_length=3).pe.data
    np.testing.assert_allclose(pe[0], [0, 1, 0, 1])
    np.testing.assert_allclose(pe[1], [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)], rtol=1e-6)


def test_odd_embedding_dim():
    pe = PositionalEncoding(embedding_dim=5, max_seq_length=8).pe.data
    pos = 7
    for i in range(3):
        assert pe[pos, 2 * i] == pytest.approx(math.sin(pos / 10000 ** (2 * i / 5)), abs=1e-7)
    for i in range(2):
        assert pe[pos, 2 * i + 1] == pytest.approx(math.cos(pos / 10000 ** (2 * i / 5)), abs=1e-7)


def test_encoding_adds_first_rows():
    layer = PositionalEncoding(embedding_dim=4, max_seq_length=10)
    x2 = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(layer(Tensor(x2)).data, x2 + layer.pe.data[:3])
    x3 = np.random.default_rng(1).standard_normal((2, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(layer(Tensor(x3)).data, x3 + layer.pe.data[:5])
    assert layer(Tensor(np.zeros((10, 4)))).shape == (10, 4)


def test_encoding_gradient_flows_to_input():
    layer = PositionalEncoding(embedding_dim=4, max_seq_length=10)
    x = Tensor(np.random.default_rng(2).standard_normal((2, 3, 4)), dtype=np.float64, requires_grad=True)
    assert_gradients_match(lambda t: layer(t).tanh(), [x])
    assert layer.parameters() == []


@pytest.mark.parametrize("layer_class", [PositionalEncoding, LearnedPositionalEmbedding])
def test_positional_input_checks(layer_class):
    layer = PositionalEncoding(4, max_seq_length=6) if layer_class is PositionalEncoding else LearnedPositionalEmbedding(6, 4)
    with pytest.raises(ValueError, match="sequence length 7 exceeds max_seq_length=6"):
        layer(Tensor(np.zeros((7, 4))))
    with pytest.raises(ValueError, match="embedding_dim=4, but the input's last dimension is 5"):
        layer(Tensor(np.zeros((2, 3, 5))))
    with pytest.raises(ValueError, match=r"received shape \(4,\)"):
        layer(Tensor(np.zeros(4)))
    with pytest.raises(TypeError, match="received dtype int64. If these are token ids"):
        layer(Tensor(np.zeros((2, 4), dtype=np.int64)))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"embedding_dim": 0}, ValueError, "embedding_dim must be a positive integer; received 0"),
        ({"max_seq_length": -1}, ValueError, "max_seq_length must be a positive integer; received -1"),
        ({"dropout": 1.0}, ValueError, r"dropout must be in \[0, 1\); received 1\.0"),
        ({"dropout": -0.1}, ValueError, r"received -0\.1"),
        ({"dropout": "0.1"}, TypeError, r"received '0\.1' \(str\)"),
    ],
)
def test_positional_encoding_bad_arguments(kwargs, error, message):
    arguments = {"embedding_dim": 4, **kwargs}
    with pytest.raises(error, match=message):
        PositionalEncoding(**arguments)


def test_dropout_only_in_training_mode():
    layer = PositionalEncoding(embedding_dim=64, max_seq_length=64, dropout=0.5, rng=np.random.default_rng(0))
    x = Tensor(np.ones((64, 64)))
    clean = 1.0 + layer.pe.data

    train_out = layer(x).data
    dropped = train_out == 0
    assert 0.4 < dropped.mean() < 0.6
    np.testing.assert_allclose(train_out[~dropped], 2.0 * clean[~dropped], rtol=1e-6)

    layer.eval()
    np.testing.assert_array_equal(layer(x).data, clean.astype(np.float32))
    layer.train()
    assert layer.training


def test_dropout_gradient_uses_same_mask():
    layer = PositionalEncoding(embedding_dim=8, max_seq_length=8, dropout=0.3, rng=np.random.default_rng(3))
    x = Tensor(np.ones((4, 8)), requires_grad=True)
    out = layer(x)
    out.sum().backward()
    np.testing.assert_allclose(x.grad.data, (out.data != 0) / 0.7, rtol=1e-6)


def test_visualize_encoding_returns_figure():
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    figure = PositionalEncoding(embedding_dim=16, max_seq_length=50).visualize_encoding(seq_length=40, dims_to_show=8)
    assert isinstance(figure, Figure)
    image = figure.axes[0].images[0].get_array()
    assert image.shape == (8, 40)
    np.testing.assert_allclose(image, PositionalEncoding(16, 50).pe.data[:40, :8].T)


def test_visualize_encoding_caps_sizes_and_checks_types():
    pytest.importorskip("matplotlib")
    layer = PositionalEncoding(embedding_dim=6, max_seq_length=50)
    image = layer.visualize_encoding().axes[0].images[0].get_array()
    assert image.shape == (6, 50)
    with pytest.raises(ValueError, match="seq_length must be a positive integer; received 0"):
        layer.visualize_encoding(seq_length=0)
    with pytest.raises(TypeError, match=r"dims_to_show must be an integer; received 2\.5"):
        layer.visualize_encoding(dims_to_show=2.5)


def test_visualize_without_matplotlib_names_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"tinytorch-embeddings\[plot\]"):
        PositionalEncoding(8, 10).visualize_encoding(5, 4)


# ---------------------------------------------------------------- learned positions


def test_learned_positions_structure():
    layer = LearnedPositionalEmbedding(max_seq_length=12, embedding_dim=6)
    assert isinstance(layer.position_embedding, Embedding)
    assert layer.position_embedding.vocab_size == 12
    assert layer.position_embedding.init_type == "normal"
    assert len(layer.parameters) == 1
    assert layer.parameters[0] is layer.position_embedding.weight
    assert layer.parameters()[0] is layer.position_embedding.weight


def test_learned_positions_add_rows():
    layer = LearnedPositionalEmbedding(max_seq_length=12, embedding_dim=6)
    x = np.random.default_rng(4).standard_normal((2, 5, 6)).astype(np.float32)
    out = layer(Tensor(x))
    np.testing.assert_allclose(out.data, x + layer.position_embedding.weight.data[:5], rtol=1e-6)


def test_learned_positions_gradient_reaches_input_and_table():
    layer = LearnedPositionalEmbedding(max_seq_length=6, embedding_dim=3, dtype=np.float64)
    x = Tensor(np.random.default_rng(5).standard_normal((2, 4, 3)), dtype=np.float64, requires_grad=True)
    assert_gradients_match(lambda t, w: layer(t).tanh(), [x, layer.position_embedding.weight])

    layer.zero_grad()
    layer(x).sum().backward()
    table_grad = layer.position_embedding.weight.grad.data
    np.testing.assert_array_equal(table_grad[:4], np.full((4, 3), 2.0))  # summed over the batch of 2
    np.testing.assert_array_equal(table_grad[4:], 0.0)


def test_module_train_eval_recurse():
    layer = LearnedPositionalEmbedding(max_seq_length=6, embedding_dim=3)
    layer.eval()
    assert not layer.training
    assert not layer.position_embedding.training
    layer.train()
    assert layer.training and layer.position_embedding.training


def test_embedding_profiler_lazy_import():
    # A fresh interpreter, so that no other test has imported the profiler yet.
    script = (
        "import sys\n"
        "import tinytorch.core.embeddings as embeddings\n"
        "assert 'tinytorch.profiling' not in sys.modules, 'imported at load time'\n"
        "from tinytorch.core.embeddings import EmbeddingProfiler\n"
        "from tinytorch.profiling import EmbeddingProfiler as original\n"
        "assert EmbeddingProfiler is original\n"
        "try:\n"
        "    embeddings.Missing\n"
        "except AttributeError as error:\n"
        "    assert \"no attribute 'Missing'\" in str(error)\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_manual_seed_drives_default_initializers():
    tinytorch.manual_seed(123)
    first = LearnedPositionalEmbedding(4, 3).position_embedding.weight.data.copy()
    tinytorch.manual_seed(123)
    np.testing.assert_array_equal(LearnedPositionalEmbedding(4, 3).position_embedding.weight.data, first)
