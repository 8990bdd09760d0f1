"""The numba implementation of the embedding kernels: compiled, multi-threaded, with NumPy's results.

Each public function is a thin wrapper: it flattens ids to int64, encodes
``None`` options as plain values, allocates the output with NumPy and calls
compiled cores. The cores run on numba's thread pool, whose size
``numba.set_num_threads`` sets. Each core compiles on first use, once per
table dtype (float32 or float64) and per read-only flag, and numba caches
the machine code on disk.

For finite inputs the results equal ``numpy_kernels``' under
``np.array_equal``. Every sum adds the same terms in the same order
(ascending position in ``ids``, or ascending bag for ``'max'`` gradients),
and each product and mean is rounded to the dtype where NumPy rounds it.
The exception is ``bag_weight_grad``: its dot products accumulate in float64
and round once, so float32 results agree with NumPy's only to float32
rounding.

Threads never write the same element, and no core uses atomics. Each thread
owns a block of the output (a range of rows, or of columns) and scans all
ids, adding only into its own block. ``_partition`` chooses the blocks.

Inputs the cores do not take go to ``numpy_kernels``: dtypes other than
float32 and float64, a table that is not C-contiguous, and sample weights or
row updates whose dtype differs from the table's.
"""

from __future__ import annotations

import logging
import mmap
import threading
from collections.abc import Callable

import numba
import numpy as np
from numba import njit, prange

from tinytorch.core.kernels import numpy_kernels

NAME = "numba"

logger = logging.getLogger(__name__)

# numba's "workqueue" threading layer terminates the process when two Python
# threads launch parallel functions at once (numba's threading-layer docs), so
# launches are serialized. Each launch already runs on every thread of the pool.
_LAUNCH_LOCK = threading.Lock()

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Columns per thread in a column partition: 16 float32 values are one 64-byte
# cache line, so two threads rarely write the same line.
_MIN_COLUMNS_PER_PART = 16

# How many ids ahead ``_touch_ahead`` reads. For a lookup of 16,384 ids, 32
# measured 17-21% faster than 8 at 128 and 256 columns, and 64 about the same as 32.
_TOUCH_DISTANCE = 32

# No padding id: ids are non-negative, so -1 never matches.
_NO_PADDING = -1


# True once the warning that the kernels compile without an on-disk cache is logged.
_cache_warned = False


def _compiled(parallel: bool):
    """Return a decorator that compiles with ``njit``, caching the machine code on disk and releasing the GIL.

    numba raises ``RuntimeError`` at decoration when no cache directory is
    writable (beside this file, under ``NUMBA_CACHE_DIR`` or in the user's
    cache directory), as in a read-only install run by a user without a
    writable home. The kernels then compile without a cache, on every start.
    """

    def decorate(function: Callable) -> Callable:
        global _cache_warned
        try:
            return njit(cache=True, nogil=True, parallel=parallel)(function)
        except RuntimeError as error:
            if "cannot cache" not in str(error):
                raise
            if not _cache_warned:
                _cache_warned = True
                logger.warning("numba kernels compile without an on-disk cache (%s); set NUMBA_CACHE_DIR to a writable directory", error)
            return njit(nogil=True, parallel=parallel)(function)

    return decorate


# --- Compiled cores -----------------------------------------------------------------


@_compiled(parallel=False)
def _part_box(part, row_bounds, column_block, dim):
    """Return ``(row_start, row_stop, column_start, column_stop)``: the block of the output that ``part`` owns.

    Parts run over row ranges (``row_bounds``) times column blocks of
    ``column_block`` columns; ``_num_parts`` counts them.
    """
    column_parts = (dim + column_block - 1) // column_block
    row_part = part // column_parts
    column_start = (part % column_parts) * column_block
    return row_bounds[row_part], row_bounds[row_part + 1], column_start, min(column_start + column_block, dim)


@_compiled(parallel=False)
def _num_parts(row_bounds, column_block, dim):
    return (row_bounds.shape[0] - 1) * ((dim + column_block - 1) // column_block)


@_compiled(parallel=False)
def _balanced_row_bounds(ids, num_rows, parts):
    """Split ``[0, num_rows)`` into ``parts`` ranges that contain about the same number of ids.

    Ids are counted in at most ``1024 * parts`` buckets of rows, so a bound
    falls on a bucket edge, and one row hit by most ids still lands in one
    range. Returns the ``parts + 1`` bounds and the id count of the fullest range.
    """
    n = ids.shape[0]
    buckets = min(num_rows, 1024 * parts)
    counts = np.zeros(buckets, dtype=np.int64)
    for i in range(n):
        counts[ids[i] * buckets // num_rows] += 1
    bounds = np.full(parts + 1, num_rows, dtype=np.int64)
    bounds[0] = 0
    part = 1
    seen = 0
    previous = 0
    heaviest = 0
    for bucket in range(buckets):
        seen += counts[bucket]
        while part < parts and seen * parts >= part * n:
            bounds[part] = ((bucket + 1) * num_rows + buckets - 1) // buckets  # first row of the next bucket
            heaviest = max(heaviest, seen - previous)
            previous = seen
            part += 1
    return bounds, max(heaviest, n - previous)


@_compiled(parallel=False)
def _copy_into(target, source):
    for j in range(target.shape[0]):
        target[j] = source[j]


@_compiled(parallel=False)
def _scale_into(target, source, scale):
    for j in range(target.shape[0]):
        target[j] = source[j] * scale


@_compiled(parallel=False)
def _add_into(target, source):
    for j in range(target.shape[0]):
        target[j] += source[j]


@_compiled(parallel=False)
def _add_scaled_into(target, source, scale):
    # The product is rounded to the arrays' dtype before the sum, as NumPy's ``rows * scale`` is.
    for j in range(target.shape[0]):
        target[j] += source[j] * scale


@_compiled(parallel=False)
def _touch_ahead(weight, ids, i):
    """Read the first value of the row that id ``i + _TOUCH_DISTANCE`` selects, so that its load starts early.

    Table rows are read in random order, so the hardware prefetcher cannot
    guess the next one, and pooling a bag adds rows one after another into
    one output row, so the CPU waits for each row in turn. This read lets
    the memory system fetch a later row meanwhile. Callers sum the values
    read and return the sum, so that the compiler cannot drop the reads. The
    read made ``'sum'`` pooling of 16,384 ids from a 1,000,000 x 128 float32
    table 2x faster, and a lookup of those ids 1.2x faster (2 threads of an
    Intel Xeon VM).
    """
    ahead = i + _TOUCH_DISTANCE
    if ahead < ids.shape[0] and weight.shape[1] > 0:
        return np.float64(weight[ids[ahead], 0])
    return 0.0


@_compiled(parallel=True)
def _gather_core(weight, ids, out):
    """Copy ``weight[ids[i]]`` into ``out[i]``; return the sum of the values ``_touch_ahead`` read."""
    touched = 0.0
    for i in prange(ids.shape[0]):
        touched += _touch_ahead(weight, ids, i)
        _copy_into(out[i], weight[ids[i]])
    return touched


@_compiled(parallel=True)
def _scatter_add_core(ids, rows, out, row_bounds, column_block):
    """Add ``rows[i]`` into ``out[ids[i]]``, each part only into its own block of ``out``."""
    dim = out.shape[1]
    for part in prange(_num_parts(row_bounds, column_block, dim)):
        row_start, row_stop, column_start, column_stop = _part_box(part, row_bounds, column_block, dim)
        for i in range(ids.shape[0]):
            row = ids[i]
            if row_start <= row < row_stop:
                _add_into(out[row, column_start:column_stop], rows[i, column_start:column_stop])


@_compiled(parallel=False)
def _fault_in(buffer, page_size):
    """Write a zero byte into every page of the fresh, zeroed ``buffer``, so that the OS maps it now, on this thread."""
    for k in range(0, buffer.shape[0], page_size):
        buffer[k] = 0


@_compiled(parallel=True)
def _sum_groups_core(rows, order, starts, sums, group_bounds, column_block):
    """Set ``sums[g]`` to the sum of ``rows[order[starts[g]:starts[g + 1]]]``, added in that order."""
    dim = sums.shape[1]
    for part in prange(_num_parts(group_bounds, column_block, dim)):
        group_start, group_stop, column_start, column_stop = _part_box(part, group_bounds, column_block, dim)
        for group in range(group_start, group_stop):
            target = sums[group, column_start:column_stop]
            _copy_into(target, rows[order[starts[group]], column_start:column_stop])
            for k in range(starts[group] + 1, starts[group + 1]):
                _add_into(target, rows[order[k], column_start:column_stop])


@_compiled(parallel=True)
def _add_scaled_groups_core(table, rows, unique_ids, order, starts, alpha, group_bounds, column_block):
    """Add ``alpha`` times the sum of group ``g``'s rows into ``table[unique_ids[g]]``.

    A group of several rows is summed in a small per-thread buffer, adding
    the rows in ``order`` as ``_sum_groups_core`` does, so the table row
    receives the same value as in coalescing first and adding the sums
    afterwards. A group of one row is added directly: skipping the buffer
    made a step after 16,384 uniform ids into a 32,000 x 4,096 float32 table
    1.2x faster (2 threads of an Intel Xeon VM).
    """
    dim = table.shape[1]
    for part in prange(_num_parts(group_bounds, column_block, dim)):
        group_start, group_stop, column_start, column_stop = _part_box(part, group_bounds, column_block, dim)
        total = np.empty(column_stop - column_start, dtype=rows.dtype)
        for group in range(group_start, group_stop):
            target = table[unique_ids[group], column_start:column_stop]
            first = rows[order[starts[group]], column_start:column_stop]
            if starts[group + 1] - starts[group] == 1:
                _add_scaled_into(target, first, alpha)
                continue
            _copy_into(total, first)
            for k in range(starts[group] + 1, starts[group + 1]):
                _add_into(total, rows[order[k], column_start:column_stop])
            _add_scaled_into(target, total, alpha)


@_compiled(parallel=False)
def _bag_scales(ids, offsets, sample_weights, mean, padding_idx):
    """Return each id's factor in the gradient of a sum or mean pool, rounded to the dtype as NumPy rounds it.

    Padding ids get 0. Otherwise the factor is the id's sample weight (1 when
    ``sample_weights`` is empty), divided in ``'mean'`` by the bag's count of
    non-padding ids. ``sample_weights`` already has the gradient's dtype.
    """
    n = ids.shape[0]
    num_bags = offsets.shape[0]
    scales = np.empty(n, dtype=sample_weights.dtype)
    # NumPy rounds the count to the dtype before it divides, and a store into this array does the same.
    count_as_dtype = np.empty(1, dtype=sample_weights.dtype)
    for bag in range(num_bags):
        start = offsets[bag]
        stop = offsets[bag + 1] if bag + 1 < num_bags else n
        count = 0
        for i in range(start, stop):
            if ids[i] == padding_idx:
                scales[i] = 0
            else:
                scales[i] = sample_weights[i] if sample_weights.shape[0] else 1
                count += 1
        if mean:
            count_as_dtype[0] = max(count, 1)
            for i in range(start, stop):
                scales[i] = scales[i] / count_as_dtype[0]
    return scales


@_compiled(parallel=True)
def _bag_sum_core(weight, ids, offsets, sample_weights, mean, padding_idx, out):
    """Set ``out[b]`` to the sum of bag ``b``'s non-padding rows, each times its sample weight if any.

    ``sample_weights`` is empty for unweighted bags. In ``'mean'`` the sum is
    then divided by the bag's count of non-padding ids, rounded to the
    table's dtype first as NumPy rounds it. Returns the sum of the values that
    ``_touch_ahead`` read, which callers ignore.
    """
    num_bags = out.shape[0]
    n = ids.shape[0]
    weighted = sample_weights.shape[0] > 0
    counts = np.empty(num_bags, dtype=out.dtype)
    touched = 0.0
    for bag in prange(num_bags):
        start = offsets[bag]
        stop = offsets[bag + 1] if bag + 1 < num_bags else n
        target = out[bag]
        count = 0
        for i in range(start, stop):
            touched += _touch_ahead(weight, ids, i)
            row = ids[i]
            if row == padding_idx:
                continue
            # The first row is copied, not added to zeros, which saves one pass
            # over the output row.
            if count == 0 and weighted:
                _scale_into(target, weight[row], sample_weights[i])
            elif count == 0:
                _copy_into(target, weight[row])
            elif weighted:
                _add_scaled_into(target, weight[row], sample_weights[i])
            else:
                _add_into(target, weight[row])
            count += 1
        if count == 0:
            target[:] = 0
        if mean:
            counts[bag] = max(count, 1)
            divisor = counts[bag]
            for j in range(target.shape[0]):
                target[j] /= divisor
    return touched


@_compiled(parallel=True)
def _bag_max_core(weight, ids, offsets, padding_idx, out, positions):
    """Set ``out[b]`` to the elementwise max over bag ``b`` and ``positions[b]`` to where it came from.

    Returns the sum of the values that ``_touch_ahead`` read, which callers ignore.
    """
    num_bags, dim = out.shape
    n = ids.shape[0]
    touched = 0.0
    for bag in prange(num_bags):
        start = offsets[bag]
        stop = offsets[bag + 1] if bag + 1 < num_bags else n
        target = out[bag]
        where = positions[bag]
        target[:] = -np.inf
        where[:] = -1
        for i in range(start, stop):
            touched += _touch_ahead(weight, ids, i)
            row = ids[i]
            if row == padding_idx:
                continue
            source = weight[row]
            for j in range(dim):
                # A strict comparison keeps the first of equal values and skips NaN, as NumPy's version
                # does. A first value is taken even if it is -inf, so that a column of -inf keeps it.
                if source[j] > target[j] or (where[j] < 0 and not np.isnan(source[j])):
                    target[j] = source[j]
                    where[j] = i
        for j in range(dim):
            if where[j] < 0:
                target[j] = 0
    return touched


@_compiled(parallel=True)
def _bag_sum_backward_core(grad, ids, offsets, scales, scaled, padding_idx, out, row_bounds, column_block):
    """Add ``grad[b] * scales[i]`` into ``out[ids[i]]`` for each non-padding id ``i`` of bag ``b``."""
    dim = out.shape[1]
    num_bags = offsets.shape[0]
    n = ids.shape[0]
    for part in prange(_num_parts(row_bounds, column_block, dim)):
        row_start, row_stop, column_start, column_stop = _part_box(part, row_bounds, column_block, dim)
        for bag in range(num_bags):
            start = offsets[bag]
            stop = offsets[bag + 1] if bag + 1 < num_bags else n
            source = grad[bag, column_start:column_stop]
            for i in range(start, stop):
                row = ids[i]
                if row == padding_idx or row < row_start or row >= row_stop:
                    continue
                if scaled:
                    _add_scaled_into(out[row, column_start:column_stop], source, scales[i])
                else:
                    _add_into(out[row, column_start:column_stop], source)


@_compiled(parallel=True)
def _bag_max_backward_core(grad, ids, positions, out, row_bounds, column_block):
    """Add ``grad[b, j]`` into ``out[ids[positions[b, j]], j]`` wherever a position is set."""
    dim = out.shape[1]
    num_bags = positions.shape[0]
    for part in prange(_num_parts(row_bounds, column_block, dim)):
        row_start, row_stop, column_start, column_stop = _part_box(part, row_bounds, column_block, dim)
        for bag in range(num_bags):
            for j in range(column_start, column_stop):
                position = positions[bag, j]
                if position < 0:
                    continue
                row = ids[position]
                if row_start <= row < row_stop:
                    out[row, j] += grad[bag, j]


@_compiled(parallel=True)
def _bag_weight_grad_core(grad, weight, ids, offsets, padding_idx, out):
    """Set ``out[i]`` to ``grad[b] . weight[ids[i]]`` for id ``i`` of bag ``b`` (0 for padding)."""
    num_bags, dim = grad.shape
    n = ids.shape[0]
    for bag in prange(num_bags):
        start = offsets[bag]
        stop = offsets[bag + 1] if bag + 1 < num_bags else n
        upstream = grad[bag]
        for i in range(start, stop):
            row = ids[i]
            total = 0.0
            if row != padding_idx:
                source = weight[row]
                for j in range(dim):
                    total += np.float64(upstream[j]) * np.float64(source[j])
            out[i] = total


# --- Wrappers -----------------------------------------------------------------------


def _is_supported(array: np.ndarray) -> bool:
    """Return whether a table or gradient can go to the cores: 2-D, float32 or float64, C-contiguous."""
    return array.ndim == 2 and array.dtype in _FLOAT_DTYPES and array.flags.c_contiguous


def _flat_ids(ids: np.ndarray) -> np.ndarray:
    """Return ``ids`` as a contiguous 1-D int64 array, copying only when needed."""
    return np.ascontiguousarray(ids.reshape(-1), dtype=np.int64)


def _padding(padding_idx: int | None) -> int:
    return _NO_PADDING if padding_idx is None else int(padding_idx)


def _partition(
    num_rows: int, dim: int, total: int, split_rows: Callable[[int], tuple[np.ndarray, int]]
) -> tuple[np.ndarray, int]:
    """Return ``(row_bounds, column_block)``: how threads split a ``(num_rows, dim)`` output.

    Threads normally take row ranges, which ``split_rows(parts)`` balances by
    work (ids or summed rows, ``total`` in all). It returns the bounds and
    the work of the fullest range. A row split reads each random row in one
    run, and it measured faster than a column split at every width from 256
    to 4,096 float32 columns (16,384 uniform ids, 2 threads of an Intel Xeon
    VM). When the fullest range would still get more than 1.5 times its
    share, as when most ids are equal, outputs with at least 16 columns per
    thread are split by columns instead.
    """
    threads = numba.get_num_threads()
    whole = np.array([0, num_rows], dtype=np.int64)
    if threads == 1 or dim == 0 or total == 0:
        return whole, max(dim, 1)
    row_bounds, heaviest = split_rows(threads)
    if 2 * heaviest * threads > 3 * total and dim >= threads * _MIN_COLUMNS_PER_PART:
        block = -(-dim // threads)
        return whole, -(-block // _MIN_COLUMNS_PER_PART) * _MIN_COLUMNS_PER_PART
    return row_bounds, dim


def _balanced_group_bounds(starts: np.ndarray, parts: int) -> tuple[np.ndarray, int]:
    """Split sorted groups where the running count of rows crosses each part's share (see ``_partition``)."""
    total = int(starts[-1])
    bounds = np.searchsorted(starts, np.arange(parts + 1) * total // parts)
    return bounds, int(np.diff(starts[bounds]).max())


def _zeros(shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """Return a zeroed array whose pages the calling thread has already had the OS map.

    Scatter cores write rows in random order into a fresh ``np.zeros``
    array, so their threads often fault on the same huge page at once. On
    the 2-vCPU KVM development machine, that measured up to 9x slower than
    one thread faulting every page first (a 50,000 x 256 float32 gradient:
    median 63 ms against 7 ms), with outliers of 0.7 s at 512 MB. Gathers
    write their output in order and measured no such cost, so they skip this.
    """
    out = np.zeros(shape, dtype=dtype)
    _fault_in(out.reshape(-1).view(np.uint8), mmap.PAGESIZE)
    return out


def gather_rows(weight: np.ndarray, ids: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Return ``weight[ids]`` (see ``tinytorch.core.kernels.gather_rows``)."""
    if not _is_supported(weight):
        return numpy_kernels.gather_rows(weight, ids, out)
    flat_ids = _flat_ids(ids)
    dim = weight.shape[1]
    if out is None:
        out = np.empty((*ids.shape, dim), dtype=weight.dtype)
    if flat_ids.size:
        with _LAUNCH_LOCK:
            _gather_core(weight, flat_ids, out.reshape(flat_ids.size, dim))
    return out.reshape(*ids.shape, dim)  # (*, dim)


def scatter_add_rows(ids: np.ndarray, rows: np.ndarray, num_rows: int) -> np.ndarray:
    """Return the fresh ``(num_rows, dim)`` sum of ``rows`` by id (see ``tinytorch.core.kernels``)."""
    rows = np.ascontiguousarray(rows)
    if not _is_supported(rows):
        return numpy_kernels.scatter_add_rows(ids, rows, num_rows)
    out = _zeros((num_rows, rows.shape[1]), rows.dtype)
    flat_ids = _flat_ids(ids)
    if flat_ids.size:
        row_bounds, column_block = _partition(
            num_rows, rows.shape[1], flat_ids.size, lambda parts: _balanced_row_bounds(flat_ids, num_rows, parts)
        )
        with _LAUNCH_LOCK:
            _scatter_add_core(flat_ids, rows, out, row_bounds, column_block)
    return out


def sum_rows_by_id(ids: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the sorted unique ids and the sum of each id's rows (see ``tinytorch.core.kernels``)."""
    rows = np.ascontiguousarray(rows)
    if not _is_supported(rows):
        return numpy_kernels.sum_rows_by_id(ids, rows)
    unique_ids, starts, order = numpy_kernels.group_ids(ids)
    sums = np.empty((unique_ids.size, rows.shape[1]), dtype=rows.dtype)
    group_bounds, column_block = _partition(
        unique_ids.size, rows.shape[1], order.size, lambda parts: _balanced_group_bounds(starts, parts)
    )
    with _LAUNCH_LOCK:
        _sum_groups_core(rows, order, starts, sums, group_bounds, column_block)
    return unique_ids, sums


def add_scaled_rows(table: np.ndarray, indices: np.ndarray, values: np.ndarray, alpha: float) -> None:
    """Add ``alpha`` times each index's summed values to ``table`` in place (see ``tinytorch.core.kernels``).

    Repeated indices are grouped as ``sum_rows_by_id`` groups them, but each
    group's sum goes straight into its table row: the sums never reach
    memory. After a lookup of 16,384 ids into a 32,000 x 4,096 float32
    table, that saves writing and rereading 210 MB.
    """
    values = np.ascontiguousarray(values)
    if np.may_share_memory(values, table):
        # Threads would read rows that other threads have already updated.
        values = values.copy()
    supported = _is_supported(table) and table.flags.writeable and values.ndim == 2 and values.dtype == table.dtype
    if not supported:
        numpy_kernels.add_scaled_rows(table, indices, values, alpha)
        return
    unique_ids, starts, order = numpy_kernels.group_ids(indices)
    group_bounds, column_block = _partition(
        unique_ids.size, table.shape[1], order.size, lambda parts: _balanced_group_bounds(starts, parts)
    )
    # alpha in the table's dtype, so that each product rounds as NumPy's does.
    with _LAUNCH_LOCK:
        _add_scaled_groups_core(
            table, values, unique_ids, order, starts, table.dtype.type(alpha), group_bounds, column_block
        )


def _offsets(offsets: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(offsets.reshape(-1), dtype=np.int64)


def _scales(
    ids: np.ndarray,
    offsets: np.ndarray,
    mode: str,
    per_sample_weights: np.ndarray | None,
    padding_idx: int,
    dtype: np.dtype,
) -> tuple[np.ndarray, bool]:
    """Return each id's factor in the gradient of a sum or mean pool, and whether any factor can differ from 1."""
    scaled = mode == "mean" or per_sample_weights is not None
    if not scaled:
        return np.empty(0, dtype=dtype), False
    if per_sample_weights is None:
        sample_weights = np.empty(0, dtype=dtype)
    else:
        sample_weights = np.ascontiguousarray(per_sample_weights.reshape(-1), dtype=dtype)
    return _bag_scales(ids, offsets, sample_weights, mode == "mean", padding_idx), True


def bag_forward(
    weight: np.ndarray,
    ids: np.ndarray,
    offsets: np.ndarray,
    mode: str,
    per_sample_weights: np.ndarray | None = None,
    padding_idx: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Pool each bag's rows (see ``tinytorch.core.kernels.bag_forward``).

    Each thread takes whole bags, gathering and pooling their rows in one pass.
    """
    # NumPy multiplies by sample weights in their own dtype, so only a matching dtype takes the fast path.
    weights_match = per_sample_weights is None or per_sample_weights.dtype == weight.dtype
    if not (_is_supported(weight) and weights_match):
        return numpy_kernels.bag_forward(weight, ids, offsets, mode, per_sample_weights, padding_idx)
    flat_ids = _flat_ids(ids)
    starts = _offsets(offsets)
    padding = _padding(padding_idx)
    out = np.empty((starts.size, weight.shape[1]), dtype=weight.dtype)

    if mode == "max":
        positions = np.empty(out.shape, dtype=np.int64)
        with _LAUNCH_LOCK:
            _bag_max_core(weight, flat_ids, starts, padding, out, positions)
        return out, positions

    if per_sample_weights is None:
        sample_weights = np.empty(0, dtype=weight.dtype)
    else:
        sample_weights = np.ascontiguousarray(per_sample_weights.reshape(-1))
    with _LAUNCH_LOCK:
        _bag_sum_core(weight, flat_ids, starts, sample_weights, mode == "mean", padding, out)
    return out, None


def bag_backward(
    grad: np.ndarray,
    ids: np.ndarray,
    offsets: np.ndarray,
    mode: str,
    num_rows: int,
    per_sample_weights: np.ndarray | None = None,
    padding_idx: int | None = None,
    max_positions: np.ndarray | None = None,
) -> np.ndarray:
    """Return the table gradient of ``bag_forward`` (see ``tinytorch.core.kernels.bag_backward``)."""
    grad = np.ascontiguousarray(grad)
    if not _is_supported(grad):
        return numpy_kernels.bag_backward(
            grad, ids, offsets, mode, num_rows, per_sample_weights, padding_idx, max_positions
        )
    flat_ids = _flat_ids(ids)
    out = _zeros((num_rows, grad.shape[1]), grad.dtype)
    row_bounds, column_block = _partition(
        num_rows, grad.shape[1], flat_ids.size, lambda parts: _balanced_row_bounds(flat_ids, num_rows, parts)
    )

    if mode == "max":
        positions = np.ascontiguousarray(max_positions, dtype=np.int64)
        with _LAUNCH_LOCK:
            _bag_max_backward_core(grad, flat_ids, positions, out, row_bounds, column_block)
        return out

    starts = _offsets(offsets)
    padding = _padding(padding_idx)
    scales, scaled = _scales(flat_ids, starts, mode, per_sample_weights, padding, grad.dtype)
    with _LAUNCH_LOCK:
        _bag_sum_backward_core(grad, flat_ids, starts, scales, scaled, padding, out, row_bounds, column_block)
    return out


def bag_weight_grad(
    grad: np.ndarray, weight: np.ndarray, ids: np.ndarray, offsets: np.ndarray, padding_idx: int | None = None
) -> np.ndarray:
    """Return the gradient with respect to ``per_sample_weights`` (see ``tinytorch.core.kernels``).

    Note:
        Each dot product accumulates in float64 and rounds once to ``grad``'s
        dtype, so float32 results can differ from NumPy's by float32 rounding.
    """
    grad = np.ascontiguousarray(grad)
    if not (_is_supported(grad) and _is_supported(weight)):
        return numpy_kernels.bag_weight_grad(grad, weight, ids, offsets, padding_idx)
    flat_ids = _flat_ids(ids)
    out = np.empty(flat_ids.size, dtype=grad.dtype)
    with _LAUNCH_LOCK:
        _bag_weight_grad_core(grad, weight, flat_ids, _offsets(offsets), _padding(padding_idx), out)
    return out
