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


def sum_rows_by_id(ids: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the sorted unique ids and the sum of each id's rows.

    Ids are sorted so that equal ids sit together. Groups of the same size m
    are then handled at once: one gather of shape ``(groups, m, dim)`` and one
    sum over m. This costs one NumPy call per distinct multiplicity, never a
    Python loop over ids.
    """
    if ids.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, rows.shape[1]), dtype=rows.dtype)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    unique_ids, starts, counts = np.unique(sorted_ids, return_index=True, return_counts=True)
    sums = np.empty((unique_ids.size, rows.shape[1]), dtype=rows.dtype)

    singles = counts == 1
    sums[singles] = rows[order[starts[singles]]]
    for multiplicity in np.unique(counts[~singles]):
        groups = np.flatnonzero(counts == multiplicity)
        positions = starts[groups, np.newaxis] + np.arange(multiplicity)  # (groups, m)
        sums[groups] = rows[order[positions]].sum(axis=1)  # (groups, dim)
    return unique_ids.astype(np.int64, copy=False), sums


def scatter_add_rows(ids: np.ndarray, rows: np.ndarray, num_rows: int) -> np.ndarray:
    """Return the fresh ``(num_rows, dim)`` sum of ``rows`` by id."""
    # np.zeros takes pages the OS zeroes on first touch, so rows no id hits cost nothing.
    out = np.zeros((num_rows, rows.shape[1]), dtype=rows.dtype)
    if ids.size == 0:
        return out
    # The same grouping as sum_rows_by_id, but each group's sum goes straight
    # into its output row: no intermediate array of sums to write and copy.
    order = np.argsort(ids, kind="stable")
    unique_ids, starts, counts = np.unique(ids[order], return_index=True, return_counts=True)
    # Groups go in chunks of about 1 MB of rows: a temporary that size is
    # reused from cache, where one of hundreds of megabytes costs page faults.
    chunk = max(1, (1 << 20) // max(1, rows.shape[1] * rows.itemsize))
    for multiplicity in np.unique(counts):
        groups = np.flatnonzero(counts == multiplicity)
        for first in range(0, groups.size, chunk):
            part = groups[first : first + chunk]
            if multiplicity == 1:
                out[unique_ids[part]] = rows[order[starts[part]]]
                continue
            positions = starts[part, np.newaxis] + np.arange(multiplicity)  # (part, m)
            out[unique_ids[part]] = rows[order[positions]].sum(axis=1)  # (part, dim)
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


def bag_forward(
    weight: np.ndarray,
    ids: np.ndarray,
    offsets: np.ndarray,
    mode: str,
    per_sample_weights: np.ndarray | None = None,
    padding_idx: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Pool each bag's rows (see ``tinytorch.core.kernels.bag_forward``).

    Bags are processed in rounds over the position within a bag, longest bags
    first, so that each round is one gather over a prefix of the bags. This
    measured fastest among the NumPy techniques tried (``np.add.reduceat``
    was 5x slower). Every round gathers into one reused buffer, because a
    fresh multi-megabyte temporary per round costs page faults.
    """
    num_bags, dim = offsets.size, weight.shape[1]
    lengths, _ = _bag_layout(offsets, ids.size)
    order = np.argsort(-lengths, kind="stable")  # longest bags first
    sorted_starts = offsets[order]
    sorted_lengths = lengths[order]
    max_length = int(sorted_lengths[0]) if num_bags else 0
    active_counts = np.searchsorted(-sorted_lengths, -np.arange(max_length), side="left")  # bags with length > p
    buffer = np.empty((int(active_counts[0]) if max_length else 0, dim), dtype=weight.dtype)
    is_max = mode == "max"

    pooled = np.full((num_bags, dim), -np.inf if is_max else 0, dtype=weight.dtype)
    positions = np.full((num_bags, dim), -1, dtype=np.int64) if is_max else None
    for p in range(max_length):
        active = int(active_counts[p])
        token_positions = sorted_starts[:active] + p
        token_ids = ids[token_positions]
        rows = np.take(weight, token_ids, axis=0, out=buffer[:active], mode="clip")  # ids are validated
        if padding_idx is not None:
            padding = token_ids == padding_idx
            if padding.any():
                rows[padding] = -np.inf if is_max else 0
        if is_max:
            current = pooled[:active]
            better = rows > current
            np.copyto(current, rows, where=better)
            np.copyto(positions[:active], token_positions[:, np.newaxis], where=better)
            continue
        if per_sample_weights is not None:
            rows *= per_sample_weights[token_positions, np.newaxis]
        pooled[:active] += rows

    if is_max:
        pooled[positions < 0] = 0  # empty bags, or bags of padding only
    elif mode == "mean":
        keep = np.ones(ids.size, dtype=bool) if padding_idx is None else ids != padding_idx
        _, bag_of_id = _bag_layout(offsets, ids.size)
        counts = np.bincount(bag_of_id, weights=keep, minlength=num_bags)[order]
        pooled /= np.maximum(counts, 1)[:, np.newaxis].astype(weight.dtype)

    out = np.empty_like(pooled)
    out[order] = pooled
    if not is_max:
        return out, None
    max_positions = np.empty_like(positions)
    max_positions[order] = positions
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
    """Add ``alpha * values`` to the rows ``indices`` of ``table``, in place (see ``tinytorch.core.kernels``)."""
    scaled = np.multiply(values, table.dtype.type(alpha))  # in the table's dtype, as a dense update rounds
    table[indices] += scaled
