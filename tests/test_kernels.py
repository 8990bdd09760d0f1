"""Embedding kernels against plain-loop oracles, under every implementation, on ordinary and adversarial ids.

Each kernel test takes the ``implementation`` fixture, so it runs once with
the NumPy kernels and once with the numba kernels (skipped only where numba,
an optional extra, is not installed).
"""

import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tinytorch.core import kernels


@pytest.fixture(params=["numpy", "numba"])
def implementation(request):
    """Select one kernel implementation for the test, then restore the one active before it."""
    if request.param == "numba":
        pytest.importorskip("numba")
    previous = kernels.active_implementation()
    assert kernels.set_implementation(request.param) == request.param
    yield request.param
    kernels.set_implementation(previous)


# --- Plain-loop oracles -------------------------------------------------------------


def loop_gather(weight, ids):
    flat = [weight[i] for i in ids.reshape(-1)]
    return np.array(flat, dtype=weight.dtype).reshape(*ids.shape, weight.shape[1])


def loop_scatter_add(ids, rows, num_rows):
    """Add the rows one by one, in the order of ``ids``, in the rows' dtype."""
    out = np.zeros((num_rows, rows.shape[1]), dtype=rows.dtype)
    for i, row in zip(ids, rows):
        out[i] += row
    return out


def loop_add_scaled_rows(table, indices, values, alpha):
    """Return a copy of ``table`` with ``values[k] * alpha`` added to row ``indices[k]``, one row at a time."""
    out = table.copy()
    for k, i in enumerate(indices):
        out[i] = out[i] + values[k] * table.dtype.type(alpha)
    return out


def bag_members(ids, offsets, padding_idx):
    """Return, for each bag, the positions in ``ids`` of its non-padding ids."""
    bounds = [*offsets.tolist(), ids.size]
    return [
        [i for i in range(bounds[bag], bounds[bag + 1]) if ids[i] != padding_idx]
        for bag in range(offsets.size)
    ]


def loop_bag_forward(weight, ids, offsets, mode, per_sample_weights=None, padding_idx=None):
    pooled = np.zeros((offsets.size, weight.shape[1]), dtype=np.float64)
    positions = np.full(pooled.shape, -1, dtype=np.int64)
    for bag, members in enumerate(bag_members(ids, offsets, padding_idx)):
        if not members:
            continue
        if mode == "max":
            for j in range(weight.shape[1]):
                # max() returns the first of equal values, as the kernels must.
                best = max(members, key=lambda i: weight[ids[i], j])
                pooled[bag, j] = weight[ids[best], j]
                positions[bag, j] = best
            continue
        for i in members:
            factor = 1.0 if per_sample_weights is None else per_sample_weights[i]
            pooled[bag] += weight[ids[i]] * factor
        if mode == "mean":
            pooled[bag] /= len(members)
    return pooled, positions


def loop_bag_backward(grad, ids, offsets, mode, num_rows, per_sample_weights=None, padding_idx=None, positions=None):
    out = np.zeros((num_rows, grad.shape[1]), dtype=np.float64)
    for bag, members in enumerate(bag_members(ids, offsets, padding_idx)):
        if mode == "max":
            for j in range(grad.shape[1]):
                if positions[bag, j] >= 0:
                    out[ids[positions[bag, j]], j] += grad[bag, j]
            continue
        for i in members:
            factor = 1.0 if per_sample_weights is None else per_sample_weights[i]
            if mode == "mean":
                factor /= len(members)
            out[ids[i]] += grad[bag] * factor
    return out


def loop_bag_weight_grad(grad, weight, ids, offsets, padding_idx=None):
    out = np.zeros(ids.size, dtype=np.float64)
    for bag, members in enumerate(bag_members(ids, offsets, padding_idx)):
        for i in members:
            out[i] = np.dot(grad[bag].astype(np.float64), weight[ids[i]].astype(np.float64))
    return out


def tolerance(dtype):
    """Return assert_allclose tolerances for sums rounded in ``dtype``."""
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}


# --- Cases --------------------------------------------------------------------------


def id_cases(num_rows, n, rng):
    zipf = np.minimum(rng.zipf(1.3, size=n) - 1, num_rows - 1)
    return {
        "uniform": rng.integers(0, num_rows, size=n),
        "all equal": np.full(n, 3),
        "all distinct": rng.permutation(num_rows)[:n],
        "zipf": zipf,
        "single": np.array([num_rows - 1]),
        "first and last rows": np.array([0, num_rows - 1, 0, num_rows - 1, 0]),
        "empty": np.array([], dtype=np.int64),
    }


CASE_NAMES = list(id_cases(50, 40, np.random.default_rng(0)))
ID_DTYPES = [np.int32, np.int64]
FLOAT_DTYPES = [np.float32, np.float64]
# On 2 or more threads the numba kernels split 70 columns between threads when the ids are
# skewed (all equal, say), and always split 6 columns by table rows.
DIMS = [6, 70]

NUM_ROWS = 30
PADDING = 7


def bag_layout(rng, id_dtype):
    """Return ids and offsets with empty bags (first, middle, last) and a bag of padding only."""
    lengths = [0, 3, 1, 0, 4, 2, 6, 0, 1, 5, 3, 0]
    ids = np.minimum(rng.zipf(1.5, size=sum(lengths)) - 1, NUM_ROWS - 1)
    ids[np.arange(ids.size) % 4 == 1] = PADDING  # padding spread over most bags
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    ids[offsets[4] : offsets[4] + lengths[4]] = PADDING  # bag 4 contains only padding
    return ids.astype(id_dtype), offsets.astype(np.int64)


def tie_table(rng, dtype, dim):
    """Return a table of small integers, so that 'max' meets many ties."""
    return rng.integers(-2, 3, size=(NUM_ROWS, dim)).astype(dtype)


# --- gather_rows --------------------------------------------------------------------


@pytest.mark.parametrize("case", CASE_NAMES)
@pytest.mark.parametrize("id_dtype", ID_DTYPES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_gather_matches_loop(implementation, case, id_dtype, dtype):
    rng = np.random.default_rng(2)
    weight = rng.standard_normal((50, 5)).astype(dtype)
    ids = id_cases(50, 40, rng)[case].astype(id_dtype)
    result = kernels.gather_rows(weight, ids)
    assert result.dtype == dtype
    np.testing.assert_array_equal(result, loop_gather(weight, ids))


def test_gather_keeps_id_shape(implementation):
    weight = np.arange(12.0).reshape(4, 3)
    ids = np.array([[[1], [3]]])
    out = kernels.gather_rows(weight, ids)
    assert out.shape == (1, 2, 1, 3)
    np.testing.assert_array_equal(out[0, 1, 0], weight[3])
    assert kernels.gather_rows(weight, np.array(2)).shape == (3,)
    assert kernels.gather_rows(weight, np.zeros((2, 0), dtype=np.int64)).shape == (2, 0, 3)


def test_gather_writes_into_out(implementation):
    weight = np.random.default_rng(4).standard_normal((20, 8)).astype(np.float32)
    ids = np.array([[4, 19, 4], [0, 7, 7]])
    out = np.full((2, 3, 8), np.nan, dtype=np.float32)
    result = kernels.gather_rows(weight, ids, out)
    assert np.shares_memory(result, out)
    np.testing.assert_array_equal(out, loop_gather(weight, ids))


@pytest.mark.parametrize(
    "out",
    [
        np.empty((6, 8), dtype=np.float32),  # flat, not the ids' shape
        np.empty((2, 3, 8), dtype=np.float64),  # another dtype
        np.empty((2, 3, 16), dtype=np.float32)[:, :, ::2],  # not C-contiguous
    ],
)
def test_gather_rejects_unfit_out(implementation, out):
    weight = np.zeros((20, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="out must be a writeable C-contiguous float32 array of shape"):
        kernels.gather_rows(weight, np.zeros((2, 3), dtype=np.int64), out)


def test_gather_rejects_overlapping_out(implementation):
    weight = np.arange(12, dtype=np.float32).reshape(6, 2)
    with pytest.raises(ValueError, match="out must not overlap weight"):
        kernels.gather_rows(weight, np.array([5, 4, 3, 2]), out=weight[0:4])


@pytest.mark.parametrize("id_dtype", [np.uint8, np.int16, np.uint32, np.uint64])
def test_gather_other_integer_ids(implementation, id_dtype):
    weight = np.arange(40.0).reshape(10, 4)
    ids = np.array([9, 0, 3, 3], dtype=id_dtype)
    np.testing.assert_array_equal(kernels.gather_rows(weight, ids), loop_gather(weight, ids))


def test_gather_other_tables(implementation):
    # float16 tables and tables that are not C-contiguous take the NumPy path under numba.
    rng = np.random.default_rng(5)
    ids = np.array([3, 1, 3, 0])
    half = rng.standard_normal((6, 4)).astype(np.float16)
    np.testing.assert_array_equal(kernels.gather_rows(half, ids), loop_gather(half, ids))
    strided = rng.standard_normal((6, 8))[:, ::2]
    np.testing.assert_array_equal(kernels.gather_rows(strided, ids), loop_gather(strided, ids))


def test_gather_read_only_table(implementation):
    weight = np.arange(20.0, dtype=np.float32).reshape(5, 4)
    weight.flags.writeable = False
    ids = np.array([4, 2])
    np.testing.assert_array_equal(kernels.gather_rows(weight, ids), loop_gather(weight, ids))


def test_gather_zero_width_table(implementation):
    weight = np.zeros((5, 0), dtype=np.float32)
    assert kernels.gather_rows(weight, np.array([1, 4])).shape == (2, 0)


# --- scatter_add_rows and sum_rows_by_id --------------------------------------------


@pytest.mark.parametrize("case", CASE_NAMES)
@pytest.mark.parametrize("id_dtype", ID_DTYPES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("dim", DIMS)
def test_scatter_add_matches_loop(implementation, case, id_dtype, dtype, dim):
    rng = np.random.default_rng(1)
    ids = id_cases(50, 40, rng)[case].astype(id_dtype)
    rows = rng.standard_normal((ids.size, dim)).astype(dtype)
    result = kernels.scatter_add_rows(ids, rows, 50)
    assert result.shape == (50, dim)
    assert result.dtype == dtype
    # Both implementations add each id's rows in the order of ids, as the loop does.
    np.testing.assert_array_equal(result, loop_scatter_add(ids, rows, 50))


@pytest.mark.parametrize("case", CASE_NAMES)
@pytest.mark.parametrize("id_dtype", ID_DTYPES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("dim", DIMS)
def test_sum_rows_by_id_matches_loop(implementation, case, id_dtype, dtype, dim):
    rng = np.random.default_rng(6)
    ids = id_cases(50, 40, rng)[case].astype(id_dtype)
    rows = rng.standard_normal((ids.size, dim)).astype(dtype)
    unique_ids, sums = kernels.sum_rows_by_id(ids, rows)
    assert unique_ids.dtype == np.int64
    assert sums.dtype == dtype
    np.testing.assert_array_equal(unique_ids, np.unique(ids))
    np.testing.assert_array_equal(sums, loop_scatter_add(ids, rows, 50)[unique_ids])


def test_sum_rows_by_id_returns_sorted_unique(implementation):
    ids = np.array([5, 1, 5, 5, 2, 1])
    rows = np.arange(12.0).reshape(6, 2)
    unique_ids, sums = kernels.sum_rows_by_id(ids, rows)
    assert unique_ids.tolist() == [1, 2, 5]
    assert sums.tolist() == [[2 + 10, 3 + 11], [8, 9], [0 + 4 + 6, 1 + 5 + 7]]


def test_sum_rows_by_id_huge_ids(implementation):
    # Ids near the int64 limit cannot share an int64 with their position.
    big = np.iinfo(np.int64).max - 1
    ids = np.array([big, 3, big, 0])
    rows = np.arange(8.0).reshape(4, 2)
    unique_ids, sums = kernels.sum_rows_by_id(ids, rows)
    assert unique_ids.tolist() == [0, 3, big]
    assert sums.tolist() == [[6, 7], [2, 3], [0 + 4, 1 + 5]]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_group_ids_is_a_stable_sort(case):
    from tinytorch.core.kernels.numpy_kernels import group_ids

    ids = id_cases(50, 40, np.random.default_rng(19))[case].astype(np.int32)
    unique_ids, starts, order = group_ids(ids)
    np.testing.assert_array_equal(order, np.argsort(ids, kind="stable"))
    np.testing.assert_array_equal(unique_ids, np.unique(ids))
    assert unique_ids.dtype == np.int64
    np.testing.assert_array_equal(np.diff(starts), np.unique(ids, return_counts=True)[1])
    assert starts[-1] == ids.size


def test_one_column_sums_in_order(implementation):
    """With one column, a sum over repeats must still add in order, not pairwise."""
    ids = np.zeros(9, dtype=np.int64)
    rows = np.array([1e8, 1, -1e8, 1, 1, 1, 1, 1, 1], dtype=np.float32).reshape(9, 1)
    expected = loop_scatter_add(ids, rows, 2)
    assert expected[0, 0] == 6.0
    np.testing.assert_array_equal(kernels.scatter_add_rows(ids, rows, 2), expected)
    unique_ids, sums = kernels.sum_rows_by_id(ids, rows)
    assert unique_ids.tolist() == [0]
    np.testing.assert_array_equal(sums, expected[:1])


def test_scatter_add_keeps_float32(implementation):
    rows = np.ones((4, 3), dtype=np.float32)
    assert kernels.scatter_add_rows(np.array([0, 0, 1, 2]), rows, 3).dtype == np.float32


def test_scatter_add_broadcast_rows(implementation):
    # An upstream gradient can be a broadcast view with stride 0.
    rows = np.broadcast_to(np.arange(3.0), (5, 3))
    ids = np.array([2, 0, 2, 2, 1])
    np.testing.assert_array_equal(kernels.scatter_add_rows(ids, rows, 4), loop_scatter_add(ids, rows, 4))


def test_scatter_add_float16_rows(implementation):
    rows = np.random.default_rng(7).standard_normal((6, 3)).astype(np.float16)
    ids = np.array([1, 1, 0, 4, 1, 0])
    result = kernels.scatter_add_rows(ids, rows, 5)
    assert result.dtype == np.float16
    np.testing.assert_array_equal(result, loop_scatter_add(ids, rows, 5))
    unique_ids, sums = kernels.sum_rows_by_id(ids, rows)
    assert unique_ids.tolist() == [0, 1, 4]
    np.testing.assert_array_equal(sums, loop_scatter_add(ids, rows, 5)[unique_ids])


def test_scatter_add_large_zipf_matches_bincount(implementation):
    # Many distinct multiplicities exercise every group-size pass, and one hot id takes most of the work.
    rng = np.random.default_rng(3)
    ids = np.minimum(rng.zipf(1.2, size=20_000) - 1, 999)
    rows = rng.standard_normal((ids.size, 40))
    result = kernels.scatter_add_rows(ids, rows, 1000)
    for column in (0, 17, 39):
        expected = np.bincount(ids, weights=rows[:, column], minlength=1000)
        np.testing.assert_allclose(result[:, column], expected, rtol=1e-9, atol=1e-9)


def test_kernels_from_many_threads(implementation):
    # The numba kernels release the GIL; concurrent callers must each get their own correct result.
    rng = np.random.default_rng(8)
    weight = rng.standard_normal((200, 48)).astype(np.float32)
    batches = [rng.integers(0, 200, size=300) for _ in range(16)]
    rows = rng.standard_normal((300, 48)).astype(np.float32)

    def run(ids):
        return kernels.gather_rows(weight, ids), kernels.scatter_add_rows(ids, rows, 200)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, batches))
    for ids, (gathered, summed) in zip(batches, results):
        np.testing.assert_array_equal(gathered, loop_gather(weight, ids))
        np.testing.assert_array_equal(summed, loop_scatter_add(ids, rows, 200))


# --- add_scaled_rows ----------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 17, 50])
@pytest.mark.parametrize("id_dtype", ID_DTYPES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_add_scaled_rows_matches_loop(implementation, count, id_dtype, dtype):
    rng = np.random.default_rng(15)
    table = rng.standard_normal((50, 40)).astype(dtype)
    indices = rng.permutation(50)[:count].astype(id_dtype)
    values = rng.standard_normal((count, 40)).astype(dtype)
    expected = loop_add_scaled_rows(table, indices, values, -0.1)
    assert kernels.add_scaled_rows(table, indices, values, -0.1) is None
    np.testing.assert_array_equal(table, expected)


@pytest.mark.parametrize("case", CASE_NAMES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("dim", DIMS)
def test_add_scaled_rows_repeated_indices(implementation, case, dtype, dim):
    """Repeated indices act as one index whose values were summed in order, then scaled and added."""
    rng = np.random.default_rng(18)
    indices = id_cases(50, 40, rng)[case]
    table = rng.standard_normal((50, dim)).astype(dtype)
    values = rng.standard_normal((indices.size, dim)).astype(dtype)
    summed = loop_scatter_add(indices, values, 50)
    unique = np.unique(indices)
    expected = loop_add_scaled_rows(table, unique, summed[unique], -0.3)
    kernels.add_scaled_rows(table, indices, values, -0.3)
    np.testing.assert_array_equal(table, expected)


def test_add_scaled_rows_values_view_table(implementation):
    """Values that are rows of the table itself are read before any row is updated."""
    table = np.arange(12.0, dtype=np.float32).reshape(4, 3)
    indices = np.array([1, 0, 1])
    values = table[[0, 1, 2]]
    expected = loop_add_scaled_rows(table, [0, 1], np.array([values[1], values[0] + values[2]]), 0.5)
    kernels.add_scaled_rows(table, indices, table[0:3], 0.5)
    np.testing.assert_array_equal(table, expected)


def test_add_scaled_rows_float64_values_on_float32_table(implementation):
    rng = np.random.default_rng(16)
    table = rng.standard_normal((20, 6)).astype(np.float32)
    indices = np.array([19, 0, 7])
    values = rng.standard_normal((3, 6))
    expected = loop_add_scaled_rows(table, indices, values, 0.3)
    kernels.add_scaled_rows(table, indices, values, 0.3)
    assert table.dtype == np.float32
    np.testing.assert_array_equal(table, expected)


def test_add_scaled_rows_read_only_table(implementation):
    table = np.zeros((4, 3), dtype=np.float32)
    table.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        kernels.add_scaled_rows(table, np.array([1]), np.ones((1, 3), dtype=np.float32), 1.0)


# --- Bag kernels --------------------------------------------------------------------

BAG_SETTINGS = [
    ("sum", False, None),
    ("sum", False, PADDING),
    ("sum", True, None),
    ("sum", True, PADDING),
    ("mean", False, None),
    ("mean", False, PADDING),
    ("max", False, None),
    ("max", False, PADDING),
]


@pytest.mark.parametrize(("mode", "weighted", "padding_idx"), BAG_SETTINGS)
@pytest.mark.parametrize("id_dtype", ID_DTYPES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("dim", DIMS)
def test_bag_forward_matches_loop(implementation, mode, weighted, padding_idx, id_dtype, dtype, dim):
    rng = np.random.default_rng(9)
    ids, offsets = bag_layout(rng, id_dtype)
    weight = tie_table(rng, dtype, dim) if mode == "max" else rng.standard_normal((NUM_ROWS, dim)).astype(dtype)
    sample_weights = rng.standard_normal(ids.size).astype(dtype) if weighted else None

    pooled, positions = kernels.bag_forward(weight, ids, offsets, mode, sample_weights, padding_idx)
    expected, expected_positions = loop_bag_forward(weight, ids, offsets, mode, sample_weights, padding_idx)
    assert pooled.shape == (offsets.size, dim)
    assert pooled.dtype == dtype
    np.testing.assert_allclose(pooled, expected, **tolerance(dtype))
    if mode == "max":
        assert positions.dtype == np.int64
        np.testing.assert_array_equal(positions, expected_positions)
    else:
        assert positions is None


@pytest.mark.parametrize(("mode", "weighted", "padding_idx"), BAG_SETTINGS)
@pytest.mark.parametrize("bags_per_chunk", [1, 2, 5])
def test_numpy_bag_forward_in_small_chunks(monkeypatch, mode, weighted, padding_idx, bags_per_chunk):
    """Chunks of a few bags put chunk edges between bags of every length, empty bags included."""
    from tinytorch.core.kernels import numpy_kernels

    rng = np.random.default_rng(17)
    ids, offsets = bag_layout(rng, np.int64)
    weight = tie_table(rng, np.float64, 4)
    sample_weights = rng.standard_normal(ids.size) if weighted else None
    monkeypatch.setattr(numpy_kernels, "_BAG_CHUNK_BYTES", bags_per_chunk * 4 * 8)

    pooled, positions = numpy_kernels.bag_forward(weight, ids, offsets, mode, sample_weights, padding_idx)
    expected, expected_positions = loop_bag_forward(weight, ids, offsets, mode, sample_weights, padding_idx)
    np.testing.assert_allclose(pooled, expected, **tolerance(np.float64))
    if mode == "max":
        np.testing.assert_array_equal(positions, expected_positions)


@pytest.mark.parametrize(("mode", "weighted", "padding_idx"), BAG_SETTINGS)
@pytest.mark.parametrize("id_dtype", ID_DTYPES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("dim", DIMS)
def test_bag_backward_matches_loop(implementation, mode, weighted, padding_idx, id_dtype, dtype, dim):
    rng = np.random.default_rng(10)
    ids, offsets = bag_layout(rng, id_dtype)
    weight = tie_table(rng, dtype, dim)
    sample_weights = rng.standard_normal(ids.size).astype(dtype) if weighted else None
    grad = rng.standard_normal((offsets.size, dim)).astype(dtype)
    _, positions = kernels.bag_forward(weight, ids, offsets, mode, sample_weights, padding_idx)

    result = kernels.bag_backward(grad, ids, offsets, mode, NUM_ROWS, sample_weights, padding_idx, positions)
    expected = loop_bag_backward(grad, ids, offsets, mode, NUM_ROWS, sample_weights, padding_idx, positions)
    assert result.shape == (NUM_ROWS, dim)
    assert result.dtype == dtype
    np.testing.assert_allclose(result, expected, **tolerance(dtype))
    if padding_idx is not None:
        assert not result[padding_idx].any()


@pytest.mark.parametrize("padding_idx", [None, PADDING])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_bag_weight_grad_matches_loop(implementation, padding_idx, dtype):
    rng = np.random.default_rng(11)
    ids, offsets = bag_layout(rng, np.int64)
    weight = rng.standard_normal((NUM_ROWS, 24)).astype(dtype)
    grad = rng.standard_normal((offsets.size, 24)).astype(dtype)
    result = kernels.bag_weight_grad(grad, weight, ids, offsets, padding_idx)
    assert result.shape == ids.shape
    assert result.dtype == dtype
    np.testing.assert_allclose(result, loop_bag_weight_grad(grad, weight, ids, offsets, padding_idx), **tolerance(dtype))


def test_bag_empty_bags_give_zero_rows(implementation):
    weight = np.random.default_rng(12).standard_normal((5, 3))
    ids = np.array([2, 2, 4])
    offsets = np.array([0, 0, 2, 3])  # bags: [], [2, 2], [4], []
    for mode in ("sum", "mean", "max"):
        pooled, positions = kernels.bag_forward(weight, ids, offsets, mode)
        assert not pooled[0].any(), mode
        assert not pooled[3].any(), mode
        if mode == "max":
            assert (positions[[0, 3]] == -1).all()
            assert (positions[2] == 2).all()


def test_bag_all_ids_empty(implementation):
    weight = np.ones((4, 3), dtype=np.float32)
    ids = np.array([], dtype=np.int64)
    offsets = np.zeros(3, dtype=np.int64)
    for mode in ("sum", "mean", "max"):
        pooled, positions = kernels.bag_forward(weight, ids, offsets, mode)
        assert pooled.shape == (3, 3)
        assert not pooled.any()
        grad = np.ones((3, 3), dtype=np.float32)
        table_grad = kernels.bag_backward(grad, ids, offsets, mode, 4, max_positions=positions)
        assert table_grad.shape == (4, 3)
        assert not table_grad.any()


def test_bag_padding_only_bag_passes_no_gradient(implementation):
    weight = np.arange(12.0).reshape(4, 3)
    ids = np.array([1, 1, 3])
    offsets = np.array([0, 2])  # bags: [1, 1] (padding only), [3]
    for mode in ("sum", "mean", "max"):
        pooled, positions = kernels.bag_forward(weight, ids, offsets, mode, padding_idx=1)
        assert not pooled[0].any(), mode
        np.testing.assert_array_equal(pooled[1], weight[3])
        table_grad = kernels.bag_backward(np.ones((2, 3)), ids, offsets, mode, 4, None, 1, positions)
        assert table_grad[[0, 1, 2]].tolist() == [[0, 0, 0]] * 3, mode
        assert table_grad[3].tolist() == [1, 1, 1], mode


def test_bag_sample_weights_of_other_dtype(implementation):
    rng = np.random.default_rng(14)
    ids, offsets = bag_layout(rng, np.int64)
    weight = rng.standard_normal((NUM_ROWS, 5)).astype(np.float32)
    sample_weights = rng.standard_normal(ids.size)  # float64 weights on a float32 table
    pooled, _ = kernels.bag_forward(weight, ids, offsets, "sum", sample_weights, PADDING)
    expected, _ = loop_bag_forward(weight, ids, offsets, "sum", sample_weights, PADDING)
    assert pooled.dtype == np.float32
    np.testing.assert_allclose(pooled, expected, **tolerance(np.float32))

    grad = rng.standard_normal((offsets.size, 5)).astype(np.float32)
    table_grad = kernels.bag_backward(grad, ids, offsets, "sum", NUM_ROWS, sample_weights, PADDING)
    expected_grad = loop_bag_backward(grad, ids, offsets, "sum", NUM_ROWS, sample_weights, PADDING)
    assert table_grad.dtype == np.float32
    np.testing.assert_allclose(table_grad, expected_grad, **tolerance(np.float32))


def test_bag_max_keeps_minus_infinity(implementation):
    weight = np.array([[-np.inf, 1.0], [-np.inf, -2.0]], dtype=np.float32)
    pooled, positions = kernels.bag_forward(weight, np.array([0, 1, 0]), np.array([0, 2]), "max")
    assert pooled.tolist() == [[-np.inf, 1.0], [-np.inf, 1.0]]
    assert positions.tolist() == [[0, 0], [2, 2]]
    grad = kernels.bag_backward(np.ones((2, 2), dtype=np.float32), np.array([0, 1, 0]), np.array([0, 2]), "max", 2, max_positions=positions)
    assert grad.tolist() == [[2.0, 2.0], [0.0, 0.0]]


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_bag_padding_ignores_non_finite_factors(implementation, mode):
    """An inf sample weight or upstream value on a padding id must not turn anything into NaN."""
    weight = np.arange(12, dtype=np.float32).reshape(4, 3)
    ids = np.array([0, 2, 1, 2, 3, 3])
    offsets = np.array([0, 3])
    sample_weights = np.array([1, np.inf, 1, np.inf, 1, 1], dtype=np.float32) if mode == "sum" else None
    pooled, _ = kernels.bag_forward(weight, ids, offsets, mode, sample_weights, padding_idx=2)
    expected, _ = loop_bag_forward(weight, ids, offsets, mode, sample_weights, padding_idx=2)
    np.testing.assert_array_equal(pooled, expected)
    upstream = np.array([[np.inf, 1, 1], [1, np.nan, 1]], dtype=np.float32)
    table_grad = kernels.bag_backward(upstream, ids, offsets, mode, 4, sample_weights, padding_idx=2)
    assert table_grad[2].tolist() == [0.0, 0.0, 0.0]


def test_bag_max_ties_pick_first_position(implementation):
    weight = np.array([[1.0, 5.0], [1.0, 5.0], [0.0, 7.0]])
    ids = np.array([0, 1, 2, 1])
    pooled, positions = kernels.bag_forward(weight, ids, np.array([0]), "max")
    assert pooled.tolist() == [[1.0, 7.0]]
    assert positions.tolist() == [[0, 2]]


# --- The two implementations against each other -------------------------------------


def test_numba_matches_numpy_bit_for_bit():
    pytest.importorskip("numba")
    from tinytorch.core.kernels import numba_kernels, numpy_kernels

    rng = np.random.default_rng(13)
    for dtype in FLOAT_DTYPES:
        weight = rng.standard_normal((400, 40)).astype(dtype)
        ids = np.minimum(rng.zipf(1.3, size=3000) - 1, 399)
        rows = rng.standard_normal((ids.size, 40)).astype(dtype)
        for module in (numba_kernels, numpy_kernels):
            assert module.NAME in kernels.IMPLEMENTATIONS
        np.testing.assert_array_equal(numba_kernels.gather_rows(weight, ids), numpy_kernels.gather_rows(weight, ids))
        np.testing.assert_array_equal(
            numba_kernels.scatter_add_rows(ids, rows, 400), numpy_kernels.scatter_add_rows(ids, rows, 400)
        )
        for fast, reference in zip(numba_kernels.sum_rows_by_id(ids, rows), numpy_kernels.sum_rows_by_id(ids, rows)):
            np.testing.assert_array_equal(fast, reference)
        unique_ids, sums = numpy_kernels.sum_rows_by_id(ids, rows)
        updated = [weight.copy(), weight.copy()]
        numba_kernels.add_scaled_rows(updated[0], unique_ids, sums, -0.05)
        numpy_kernels.add_scaled_rows(updated[1], unique_ids, sums, -0.05)
        np.testing.assert_array_equal(updated[0], updated[1])

        lengths = rng.integers(0, 8, size=700)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        offsets = offsets[offsets <= ids.size]
        sample_weights = rng.standard_normal(ids.size).astype(dtype)
        for mode, weights in (("sum", None), ("sum", sample_weights), ("mean", None), ("max", None)):
            for padding_idx in (None, int(ids[0])):
                fast = numba_kernels.bag_forward(weight, ids, offsets, mode, weights, padding_idx)
                reference = numpy_kernels.bag_forward(weight, ids, offsets, mode, weights, padding_idx)
                np.testing.assert_array_equal(fast[0], reference[0])
                if mode == "max":
                    np.testing.assert_array_equal(fast[1], reference[1])
                grad = rng.standard_normal(fast[0].shape).astype(dtype)
                np.testing.assert_array_equal(
                    numba_kernels.bag_backward(grad, ids, offsets, mode, 400, weights, padding_idx, fast[1]),
                    numpy_kernels.bag_backward(grad, ids, offsets, mode, 400, weights, padding_idx, reference[1]),
                )
                if weights is not None:
                    # Dot products accumulate in float64 under numba, so they agree only to rounding.
                    np.testing.assert_allclose(
                        numba_kernels.bag_weight_grad(grad, weight, ids, offsets, padding_idx),
                        numpy_kernels.bag_weight_grad(grad, weight, ids, offsets, padding_idx),
                        **tolerance(dtype),
                    )


# --- Choosing the implementation ----------------------------------------------------


def test_set_implementation_rejects_unknown_name():
    previous = kernels.active_implementation()
    for bad in ("bogus", "NumPy", ""):
        with pytest.raises(ValueError, match=r"one of 'numpy', 'numba', 'auto' or None; received " + repr(bad)):
            kernels.set_implementation(bad)
        assert kernels.active_implementation() == previous


def run_python(code, **environment):
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **environment},
        timeout=120,
    )


@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_environment_variable_forces_choice(name):
    if name == "numba":
        pytest.importorskip("numba")
    code = "from tinytorch.core import kernels; print(kernels.active_implementation())"
    result = run_python(code, TINYTORCH_KERNELS=name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == name


def test_environment_variable_rejects_unknown_name():
    code = "from tinytorch.core import kernels; kernels.active_implementation()"
    result = run_python(code, TINYTORCH_KERNELS="fortran")
    assert result.returncode != 0
    assert "TINYTORCH_KERNELS='fortran' is invalid" in result.stderr


def test_import_does_not_import_numba():
    code = "import sys, tinytorch, tinytorch.core.embeddings; assert 'numba' not in sys.modules, 'numba imported'"
    result = run_python(code)
    assert result.returncode == 0, result.stderr


def test_numba_compiles_without_writable_cache(monkeypatch, caplog):
    pytest.importorskip("numba")
    from tinytorch.core.kernels import numba_kernels

    real_njit = numba_kernels.njit

    def njit_without_cache_directory(**options):
        if options.get("cache"):
            def fail(function):
                raise RuntimeError(f"cannot cache function {function.__name__!r}: no locator available for file 'x.py'")

            return fail
        return real_njit(**options)

    def add_one(values):
        return values + 1

    monkeypatch.setattr(numba_kernels, "njit", njit_without_cache_directory)
    monkeypatch.setattr(numba_kernels, "_cache_warned", False)
    with caplog.at_level(logging.WARNING, logger="tinytorch.core.kernels.numba_kernels"):
        compiled = numba_kernels._compiled(parallel=False)(add_one)
        again = numba_kernels._compiled(parallel=False)(add_one)
    np.testing.assert_array_equal(compiled(np.arange(3)), [1, 2, 3])
    np.testing.assert_array_equal(again(np.arange(2)), [1, 2])
    assert caplog.text.count("compile without an on-disk cache") == 1
    assert "set NUMBA_CACHE_DIR" in caplog.text
