"""Time one SGD training step on a large table with dense and with row-sparse gradients.

Run: ``python benchmarks/sparse_vs_dense.py`` (a 1,000,000 x 64 float32 table
and 4,096-token batches by default). A step is lookup, backward and
``SGD.step``. The two paths are interleaved, each step draws a new batch, and
the script prints medians with the spread (min to max) and their ratio. It
also checks that both paths leave bit-identical tables.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

from tinytorch.core.embeddings import Embedding
from tinytorch.core.optimizers import SGD


def time_step(table: Embedding, optimizer: SGD, ids: np.ndarray, upstream: np.ndarray) -> float:
    """Return the seconds of one lookup + backward + SGD step."""
    start = time.perf_counter()
    optimizer.zero_grad()
    table(ids).backward(upstream)
    optimizer.step()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="table rows (default: 1000000)")
    parser.add_argument("--dim", type=int, default=64, help="embedding_dim (default: 64)")
    parser.add_argument("--tokens", type=int, default=4096, help="ids per batch (default: 4096)")
    parser.add_argument("--repeats", type=int, default=15, help="timed steps per path (default: 15)")
    args = parser.parse_args()

    initial = np.random.default_rng(0).standard_normal((args.rows, args.dim)).astype(np.float32)
    dense = Embedding.from_pretrained(initial, freeze=False)
    sparse = Embedding.from_pretrained(initial, freeze=False, sparse=True)
    del initial
    optimizers = {"dense": SGD(dense.parameters(), lr=0.1), "sparse": SGD(sparse.parameters(), lr=0.1)}
    tables = {"dense": dense, "sparse": sparse}

    rng = np.random.default_rng(1)
    times: dict[str, list[float]] = {"dense": [], "sparse": []}
    for repeat in range(args.repeats + 1):  # the first round warms up and is not counted
        ids = rng.integers(0, args.rows, size=args.tokens)
        upstream = rng.standard_normal((args.tokens, args.dim)).astype(np.float32)
        order = ("dense", "sparse") if repeat % 2 == 0 else ("sparse", "dense")
        for name in order:
            seconds = time_step(tables[name], optimizers[name], ids, upstream)
            if repeat:
                times[name].append(seconds)

    identical = np.array_equal(dense.weight.data, sparse.weight.data)
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"table {args.rows:,} x {args.dim} float32, {args.tokens:,} ids per step, {args.repeats} interleaved steps each")
    print("| path | median ms | min ms | max ms |")
    print("| --- | ---: | ---: | ---: |")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values) * 1e3:.2f} | {min(values) * 1e3:.2f} | {max(values) * 1e3:.2f} |")
    ratio = statistics.median(times["dense"]) / statistics.median(times["sparse"])
    print(f"sparse step is {ratio:.1f}x faster than dense; tables bit-identical after all steps: {identical}")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
