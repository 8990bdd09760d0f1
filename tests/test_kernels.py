"""Embedding kernels against plain-loop oracles, on ordinary and adversarial ids."""

import numpy as np
import pytest

from tinytorch.core import kernels


def loop_gather(weight, ids):
    flat = [weight[i] for i in ids.reshape(-1)]
    return np.array(flat, dtype=weight.dtype).reshape(*ids.shape, weight.shape[1])


def loop_scatter_add(ids, rows, num_rows):
    out = np.zeros((num_rows, rows.shape[1]), dtype=np.float64)
    for i, row in zip(ids, rows):
        out[i] += row
    return out


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


@pytest.mark.parametrize("case", CASE_NAMES)
@pytest.mark.parametrize("id_dtype", [np.int32, np.int64])
def test_scatter_add_matches_loop(case, id_dtype):
    rng = np.random.default_rng(1)
    ids = id_cases(50, 40, rng)[case].astype(id_dtype)
    rows = rng.standard_normal((ids.size, 6))
    result = kernels.scatter_add_rows(ids, rows, 50)
    assert result.shape == (50, 6)
    np.testing.assert_allclose(result, loop_scatter_add(ids, rows, 50), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASE_NAMES)
@pytest.mark.parametrize("id_dtype", [np.int32, np.int64])
def test_gather_matches_loop(case, id_dtype):
    rng = np.random.default_rng(2)
    weight = rng.standard_normal((50, 5)).astype(np.float32)
    ids = id_cases(50, 40, rng)[case].astype(id_dtype)
    np.testing.assert_array_equal(kernels.gather_rows(weight, ids), loop_gather(weight, ids))


def test_gather_keeps_id_shape():
    weight = np.arange(12.0).reshape(4, 3)
    ids = np.array([[[1], [3]]])
    out = kernels.gather_rows(weight, ids)
    assert out.shape == (1, 2, 1, 3)
    np.testing.assert_array_equal(out[0, 1, 0], weight[3])
    assert kernels.gather_rows(weight, np.array(2)).shape == (3,)


def test_sum_rows_by_id_returns_sorted_unique():
    ids = np.array([5, 1, 5, 5, 2, 1])
    rows = np.arange(12.0).reshape(6, 2)
    unique_ids, sums = kernels.sum_rows_by_id(ids, rows)
    assert unique_ids.tolist() == [1, 2, 5]
    assert sums.tolist() == [[2 + 10, 3 + 11], [8, 9], [0 + 4 + 6, 1 + 5 + 7]]


def test_scatter_add_keeps_float32():
    rows = np.ones((4, 3), dtype=np.float32)
    assert kernels.scatter_add_rows(np.array([0, 0, 1, 2]), rows, 3).dtype == np.float32


def test_scatter_add_large_zipf_matches_bincount():
    # Many distinct multiplicities exercise every group-size pass.
    rng = np.random.default_rng(3)
    ids = np.minimum(rng.zipf(1.2, size=20_000) - 1, 999)
    rows = rng.standard_normal((ids.size, 2))
    result = kernels.scatter_add_rows(ids, rows, 1000)
    for column in range(2):
        expected = np.bincount(ids, weights=rows[:, column], minlength=1000)
        np.testing.assert_allclose(result[:, column], expected, rtol=1e-9, atol=1e-9)
