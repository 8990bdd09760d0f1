"""The NumPy implementation of the embedding kernels: always available, no compiler needed.

Each function picks the fastest plain-NumPy technique measured for its job;
none uses ``np.add.at`` on rows, which measured 3-5x slower than PyTorch's
lookup backward.
"""

from __future__ import annotations

import numpy as np

NAME = "numpy"


def gather_rows(weight: np.ndarray, ids: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Return ``weight[ids]`` (see ``tinytorch.core.kernels.gather_rows``)."""
    flat_ids = ids.reshape(-1)
    if out is None:
        # np.take on flat ids is NumPy's fastest gather; fancy indexing goes
        # through a slower general path.
        rows = np.take(weight, flat_ids, axis=0)
    else:
        # With out=, the default mode='raise' makes np.take buffer the result
        # (measured 2x slower). The ids are validated already, so 'clip' is safe.
        rows = np.take(weight, flat_ids, axis=0, out=out.reshape(flat_ids.size, weight.shape[1]), mode="clip")
    return rows.reshape(*ids.shape, weight.shape[1])  # (*, dim)


def group_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort ``ids`` stably and find the runs of equal ids.

    Returns ``(unique_ids, starts, order)``: the sorted unique ids (int64),
    where each one's run starts in the sorted ids (with ``ids.size``
    appended, so ``np.diff(starts)`` counts each id), and the sort's order.

    Each id and its position are packed into one int64 key,
    ``id << shift | position``, so one ``np.sort`` of the keys is a stable
    sort of the ids. For 16,384 ids that took 0.1 ms, 9x less than a stable
    ``np.argsort`` plus ``np.unique``. Ids too large to pack take the argsort.
    """
    flat_ids = ids.reshape(-1).astype(np.int64, copy=False)
    n = flat_ids.size
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    shift = max(1, (n - 1).bit_length())
    if int(flat_ids.max()) < 1 << (63 - shift):
        keys = (flat_ids << shift) | np.arange(n)
        keys.sort()
        order = keys & ((1 << shift) - 1)
        sorted_ids = keys >> shift
    else:
        order = np.argsort(flat_ids, kind="stable")
        sorted_ids = flat_ids[order]
    run_starts = np.empty(n, dtype=bool)
    run_starts[0] = True
    np.not_equal(sorted_ids[1:], sorted_ids[:-1], out=run_starts[1:])
    starts = np.append(np.flatnonzero(run_starts), n)
    return sorted_ids[starts[:-1]], starts, order


def _sum_groups_into(
    rows: np.ndarray, starts: np.ndarray, order: np.ndarray, out: np.ndarray, targets: np.ndarray
) -> None:
    """Set ``out[targets[g]]`` to the sum of the rows in group ``g`` of ``group_ids``' result.

    Groups of the same size m are handled at once: one gather of shape
    ``(groups, m, dim)`` and one sum over m, which adds the rows in their
    order in the ids. This costs one NumPy call per distinct multiplicity and
    batch, never a Python loop over ids. A batch contains about 1 MB of rows
    (at least one group): a temporary that size is reused from cache, where
    one of hundreds of megabytes costs page faults.
    """
    counts = np.diff(starts)
    row_bytes = max(1, rows.shape[1] * rows.itemsize)
    for multiplicity in np.unique(counts):
        groups = np.flatnonzero(counts == multiplicity)
        batch = max(1, (1 << 20) // (row_bytes * int(multiplicity)))
        for first in range(0, groups.size, batch):
            part = groups[first : first + batch]
            if multiplicity == 1:
                out[targets[part]] = rows[order[starts[part]]]
                continue
            positions = starts[part, np.newaxis] + np.arange(multiplicity)  # (part, m)
            gathered = rows[order[positions]]  # (part, m, dim)
            if rows.shape[1] == 1:
                # With one column the m axis is the innermost, where NumPy's sum
                # adds pairwise; accumulate always adds in order.
                out[targets[part]] = np.add.accumulate(gathered, axis=1)[:, -1]
            else:
                out[targets[part]] = gathered.sum(axis=1)  # (part, dim)


def sum_rows_by_id(ids: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the sorted unique ids and the sum of each id's rows (see ``tinytorch.core.kernels``)."""
    unique_ids, starts, order = group_ids(ids)
    sums = np.empty((unique_ids.size, rows.shape[1]), dtype=rows.dtype)
    _sum_groups_into(rows, starts, order, sums, np.arange(unique_ids.size))
    return unique_ids, sums


def scatter_add_rows(ids: np.ndarray, rows: np.ndarray, num_rows: int) -> np.ndarray:
    """Return the fresh ``(num_rows, dim)`` sum of ``rows`` by id."""
    # np.zeros takes pages the OS zeroes on first touch, so rows no id hits cost nothing.
    out = np.zeros((num_rows, rows.shape[1]), dtype=rows.dtype)
    unique_ids, starts, order = group_ids(ids)
    # Each group's sum goes straight into its output row: no array of sums to write and copy.
    _sum_groups_into(rows, starts, order, out, unique_ids)
    return out


def _bag_layout(offsets: np.ndarray, num_ids: int) -> tuple[np.ndarray, np.ndarray]:
    """Return each bag's length and, for each id, the bag it belongs to."""
    ends = np.append(offsets[1:], num_ids)
    lengths = ends - offsets
    bag_of_id = np.repeat(np.arange(offsets.size), lengths)  # (n,)
    return lengths, bag_of_id


def _token_scales(
    ids: np.ndarray,
    offsets: np.ndarray,
    mode: str,
    per_sample_weights: np.ndarray | None,
    padding_idx: int | None,
    dtype: np.dtype,
) -> tuple[np.ndarray, np.ndarray]:
    """Return each id's bag and the factor its row is multiplied by in a sum or mean pool.

    Padding ids get factor 0; in ``'mean'`` the others get 1 / (non-padding ids in the bag).
    """
    lengths, bag_of_id = _bag_layout(offsets, ids.size)
    keep = np.ones(ids.size, dtype=bool) if padding_idx is None else ids != padding_idx
    if per_sample_weights is not None:
        scales = np.where(keep, per_sample_weights, 0).astype(dtype)
    else:
        scales = keep.astype(dtype)
    if mode == "mean":
        counts = np.bincount(bag_of_id, weights=keep, minlength=offsets.size)
        scales /= np.maximum(counts, 1)[bag_of_id].astype(dtype)
    return bag_of_id, scales


# Bytes of pooled rows per chunk of bags in ``bag_forward``: the chunk and its
# gather buffer then stay in a core's L2 cache. 256 KB measured 1.6-2x faster
# than one chunk of all bags, and faster than 64 KB or 4 MB (16,384 ids in
# 4,096 bags, tables of 256 to 4,096 float32 columns, an Intel Xeon VM).
_BAG_CHUNK_BYTES = 1 << 18


def bag_forward(
    weight: np.ndarray,
    ids: np.ndarray,
    offsets: np.ndarray,
    mode: str,
    per_sample_weights: np.ndarray | None = None,
    padding_idx: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Pool each bag's rows (see ``tinytorch.core.kernels.bag_forward``).

    Bags are sorted longest first and pooled a chunk at a time. Within a
    chunk, rounds run over the position within a bag: round p gathers the
    p-th row of every bag longer than p, a prefix of the chunk, with one
    ``np.take``, and adds it to the chunk's pooled rows (or takes the max).
    This measured fastest among the NumPy techniques tried
    (``np.add.reduceat`` was 5x slower, and one ``(bags, length, dim)``
    gather per bag length no faster).
    """
    num_bags, dim = offsets.size, weight.shape[1]
    lengths, bag_of_id = _bag_layout(offsets, ids.size)
    order = np.argsort(-lengths, kind="stable")  # longest bags first
    sorted_starts = offsets[order]
    sorted_lengths = lengths[order]
    is_max = mode == "max"
    if mode == "mean":
        keep = np.ones(ids.size, dtype=bool) if padding_idx is None else ids != padding_idx
        counts = np.bincount(bag_of_id, weights=keep, minlength=num_bags)
        divisors = np.maximum(counts, 1)[order].astype(weight.dtype)

    out = np.empty((num_bags, dim), dtype=weight.dtype)
    max_positions = np.empty((num_bags, dim), dtype=np.int64) if is_max else None
    chunk = max(1, _BAG_CHUNK_BYTES // max(1, dim * weight.itemsize))
    pooled = np.empty((min(chunk, num_bags), dim), dtype=weight.dtype)
    buffer = np.empty_like(pooled)
    positions = np.empty(pooled.shape, dtype=np.int64) if is_max else None
    for first in range(0, num_bags, chunk):
        starts = sorted_starts[first : first + chunk]
        chunk_lengths = sorted_lengths[first : first + chunk]
        size = starts.size
        block = pooled[:size]
        longest = int(chunk_lengths[0])
        # Bags of this chunk with length > p, for each round p.
        active_counts = np.searchsorted(-chunk_lengths, -np.arange(longest), side="left")
        if is_max:
            block.fill(-np.inf)
            positions[:size] = -1
        else:
            block[int(active_counts[0]) if longest else 0 :] = 0  # empty bags sort last
        for p in range(longest):
            active = int(active_counts[p])
            token_positions = starts[:active] + p
            token_ids = ids[token_positions]
            # A sum's round 0 gathers straight into the pooled rows: no zero fill and one add less.
            # The max starts from -inf, so that a NaN in a bag's first row is skipped like any other.
            target = block[:active] if p == 0 and not is_max else buffer[:active]
            rows = np.take(weight, token_ids, axis=0, out=target, mode="clip")  # ids are validated
            padding = None if padding_idx is None else token_ids == padding_idx
            if is_max:
                current = block[:active]
                current_positions = positions[:active]
                # A first value is taken even if it is -inf, so that a column of -inf keeps it.
                better = (rows > current) | ((current_positions < 0) & ~np.isnan(rows))
                if padding is not None:
                    better[padding] = False
                np.copyto(current, rows, where=better)
                np.copyto(current_positions, token_positions[:, np.newaxis], where=better)
                continue
            # Padding rows and their weights become 0 before the product, so that an inf
            # in either adds nothing (0 * inf would be NaN).
            has_padding = padding is not None and padding.any()
            if has_padding:
                rows[padding] = 0
            if per_sample_weights is not None:
                factors = per_sample_weights[token_positions]
                if has_padding:
                    factors[padding] = 0
                rows *= factors[:, np.newaxis]
            if p > 0:
                block[:active] += rows
        bags = order[first : first + size]
        if is_max:
            block[positions[:size] < 0] = 0  # empty bags, or bags of padding only
            max_positions[bags] = positions[:size]
        elif mode == "mean":
            block /= divisors[first : first + size, np.newaxis]
        out[bags] = block
    return out, max_positions


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
    dim = grad.shape[1]
    if mode == "max":
        out = np.zeros((num_rows, dim), dtype=grad.dtype)
        filled = max_positions >= 0
        columns = np.broadcast_to(np.arange(dim), max_positions.shape)[filled]
        flat_index = ids[max_positions[filled]] * dim + columns
        # Elementwise (not row) accumulation: NumPy 2 runs 1-D np.add.at on a fast path.
        np.add.at(out.reshape(-1), flat_index, grad[filled])
        return out

    bag_of_id, scales = _token_scales(ids, offsets, mode, per_sample_weights, padding_idx, grad.dtype)
    rows = np.take(grad, bag_of_id, axis=0)  # (n, dim)
    if padding_idx is not None:
        rows[ids == padding_idx] = 0  # before the product: an inf upstream times the padding's 0 would be NaN
    rows *= scales[:, np.newaxis]
    return scatter_add_rows(ids, rows, num_rows)


def bag_weight_grad(
    grad: np.ndarray, weight: np.ndarray, ids: np.ndarray, offsets: np.ndarray, padding_idx: int | None = None
) -> np.ndarray:
    """Return the gradient with respect to ``per_sample_weights`` (see ``tinytorch.core.kernels``)."""
    _, bag_of_id = _bag_layout(offsets, ids.size)
    result = np.einsum("nd,nd->n", np.take(grad, bag_of_id, axis=0), np.take(weight, ids, axis=0))
    if padding_idx is not None:
        result[ids == padding_idx] = 0
    return result.astype(grad.dtype, copy=False)


def add_scaled_rows(table: np.ndarray, indices: np.ndarray, values: np.ndarray, alpha: float) -> None:
    """Add ``alpha`` times each index's summed values to ``table``, in place (see ``tinytorch.core.kernels``)."""
    indices = indices.reshape(-1)
    if np.any(indices[1:] <= indices[:-1]):  # repeats are possible: sum them first
        indices, values = sum_rows_by_id(indices, values)
    scaled = np.multiply(values, table.dtype.type(alpha))  # in the table's dtype, as a dense update rounds
    table[indices] += scaled
