"""Time tinytorch's embedding kernels against PyTorch's CPU kernels and the machine's copy bandwidth.

Run: ``python benchmarks/embedding_kernels.py`` (PyTorch 2.13.0 is an optional
comparison: ``pip install torch==2.13.0``). For each table shape the script
times, interleaving the contenders and cycling through several id batches:

* lookup: ``Embedding`` forward (id validation and autograd bookkeeping
  included, fresh output), and, labelled, a gather into a reused buffer;
* dense backward: a fresh, zero-filled table gradient;
* sparse backward plus one SGD step;
* bag pooling (``sum`` and ``mean``, random bag lengths averaging 4);
* the cost of one 12-token ``Embedding`` call.

tinytorch runs with each kernel implementation (``numpy``, and ``numba`` when
installed); PyTorch runs with 1 and 2 threads. Figures are medians with the
spread (min to max); ratios divide by PyTorch's 2-thread median from the same
run. PyTorch with transparent huge pages needs its own process:
``THP_MEM_ALLOC_ENABLE=1 python benchmarks/embedding_kernels.py --torch-only``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import tinytorch
from tinytorch.core import kernels
from tinytorch.core.embeddings import Embedding
from tinytorch.core.functional import as_id_array, check_ids_in_range, embedding_bag
from tinytorch.core.optimizers import SGD
from tinytorch.core.tensor import no_grad
from tinytorch.profiling import measure_copy_bandwidth

SHAPES = ((50_000, 256), (1_000_000, 128), (32_000, 4_096))
BATCH, SEQ = 32, 512
BAGS, MEAN_BAG_LENGTH = 4_096, 4
# More id batches than contenders per operation, so a batch comes back only
# after every other contender has run.
ID_BATCHES = 8
SMALL_CALL_TOKENS = 12


def median_and_spread(samples: list[float]) -> dict[str, float]:
    """Return the median, min and max of ``samples`` in milliseconds."""
    return {
        "median_ms": statistics.median(samples) * 1e3,
        "min_ms": min(samples) * 1e3,
        "max_ms": max(samples) * 1e3,
    }


def interleave(contenders: dict[str, Callable[[int], Any]], repeats: int, setups: dict[str, Callable[[int], Any]] | None = None) -> dict[str, dict[str, float]]:
    """Time each contender ``repeats`` times, in a rotating order, after one warm-up call each.

    ``fn(i)`` receives a call number, counted across all contenders, and
    picks its ids with it. Consecutive calls therefore read different id
    batches: a contender never finds its table rows in cache because the
    call just before it read the same rows. An optional ``setups[name](i)``
    runs untimed before each call, with the same number.
    """
    setups = setups or {}
    names = list(contenders)
    samples: dict[str, list[float]] = {name: [] for name in names}
    call = 0
    for repeat in range(repeats + 1):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            if name in setups:
                setups[name](call)
            start = time.perf_counter()
            contenders[name](call)
            elapsed = time.perf_counter() - start
            call += 1
            if repeat:  # the first round is the warm-up
                samples[name].append(elapsed)
    return {name: median_and_spread(values) for name, values in samples.items()}


def random_bags(rng: np.random.Generator, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ids and offsets for ``BAGS`` bags of random lengths 1..7 (mean 4) adding up to 16,384 ids."""
    lengths = rng.integers(1, 2 * MEAN_BAG_LENGTH, size=BAGS)
    lengths = np.maximum(1, np.round(lengths * (BAGS * MEAN_BAG_LENGTH) / lengths.sum())).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    ids = rng.integers(0, vocab_size, size=int(lengths.sum()), dtype=np.int64)
    return ids, offsets


def tinytorch_contenders(table: Embedding, sparse_table: Embedding, implementation: str, id_batches: list[np.ndarray], bag_inputs: list[tuple[np.ndarray, np.ndarray]], upstream: np.ndarray) -> tuple[dict[str, Callable[[int], Any]], dict[str, Callable[[int], Any]]]:
    """Return the timed calls and their untimed setups for one kernel implementation."""
    optimizer = SGD(sparse_table.parameters(), lr=0.01)
    buffer = np.empty((BATCH, SEQ, table.embedding_dim), dtype=np.float32)
    pending: dict[str, Any] = {}

    def select() -> None:
        kernels.set_implementation(implementation)

    def lookup(i: int) -> None:
        select()
        table(id_batches[i % ID_BATCHES])

    def reused_buffer(i: int) -> None:
        select()
        kernels.gather_rows(table.weight.data, id_batches[i % ID_BATCHES], out=buffer)

    def dense_setup(i: int) -> None:
        select()
        table.zero_grad()
        pending["dense"] = table(id_batches[i % ID_BATCHES])

    def dense_backward(i: int) -> None:
        pending.pop("dense").backward(upstream)

    def sparse_setup(i: int) -> None:
        select()
        optimizer.zero_grad()
        pending["sparse"] = sparse_table(id_batches[i % ID_BATCHES])

    def sparse_step(i: int) -> None:
        pending.pop("sparse").backward(upstream)
        optimizer.step()

    def bag_call(mode: str) -> Callable[[int], Any]:
        def call(i: int) -> None:
            select()
            ids, offsets = bag_inputs[i % ID_BATCHES]
            with no_grad():
                embedding_bag(ids, table.weight, offsets, mode)

        return call

    calls = {
        "lookup": lookup,
        "lookup, reused buffer": reused_buffer,
        "dense backward": dense_backward,
        "sparse backward + SGD": sparse_step,
        "bag sum": bag_call("sum"),
        "bag mean": bag_call("mean"),
    }
    return calls, {"dense backward": dense_setup, "sparse backward + SGD": sparse_setup}


def torch_contenders(torch: Any, weight: Any, sparse_table: Any, threads: int, id_batches: list[np.ndarray], bag_inputs: list[tuple[np.ndarray, np.ndarray]], upstream: np.ndarray) -> tuple[dict[str, Callable[[int], Any]], dict[str, Callable[[int], Any]]]:
    """Return the timed PyTorch calls with ``threads`` threads, and their untimed setups."""
    functional = torch.nn.functional
    optimizer = torch.optim.SGD(sparse_table.parameters(), lr=0.01)
    ids = [torch.from_numpy(batch) for batch in id_batches]
    bags = [(torch.from_numpy(i), torch.from_numpy(o)) for i, o in bag_inputs]
    upstream_tensor = torch.from_numpy(upstream)
    pending: dict[str, Any] = {}

    def select() -> None:
        torch.set_num_threads(threads)

    def lookup(i: int) -> None:
        select()
        functional.embedding(ids[i % ID_BATCHES], weight)

    def dense_setup(i: int) -> None:
        select()
        weight.grad = None
        pending["dense"] = functional.embedding(ids[i % ID_BATCHES], weight)

    def dense_backward(i: int) -> None:
        pending.pop("dense").backward(upstream_tensor)

    def sparse_setup(i: int) -> None:
        select()
        optimizer.zero_grad()
        pending["sparse"] = sparse_table(ids[i % ID_BATCHES])

    def sparse_step(i: int) -> None:
        pending.pop("sparse").backward(upstream_tensor)
        optimizer.step()

    def bag_call(mode: str) -> Callable[[int], Any]:
        def call(i: int) -> None:
            select()
            bag_ids, bag_offsets = bags[i % ID_BATCHES]
            with torch.no_grad():
                functional.embedding_bag(bag_ids, weight, bag_offsets, mode=mode)

        return call

    calls = {
        "lookup": lookup,
        "dense backward": dense_backward,
        "sparse backward + SGD": sparse_step,
        "bag sum": bag_call("sum"),
        "bag mean": bag_call("mean"),
    }
    return calls, {"dense backward": dense_setup, "sparse backward + SGD": sparse_setup}


def small_call_overhead(torch: Any | None, implementations: list[str], repeats: int) -> dict[str, float]:
    """Return the median microseconds of one 12-token lookup for each contender."""
    ids = np.arange(SMALL_CALL_TOKENS, dtype=np.int64)
    table = Embedding(50_000, 256)
    contenders: dict[str, Callable[[], Any]] = {f"tinytorch {name}": lambda: table(ids) for name in implementations}
    if torch is not None:
        torch.set_num_threads(2)
        module = torch.nn.Embedding(50_000, 256)
        torch_ids = torch.from_numpy(ids)
        contenders["torch F.embedding"] = lambda: torch.nn.functional.embedding(torch_ids, module.weight)
        contenders["torch nn.Embedding"] = lambda: module(torch_ids)
    calls = 2_000
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for name, call in contenders.items():  # warm-up: compile or load each kernel before timing
        if name.startswith("tinytorch"):
            kernels.set_implementation(name.split()[-1])
        call()
    for _ in range(repeats):
        for name, call in contenders.items():
            if name.startswith("tinytorch"):
                kernels.set_implementation(name.split()[-1])
            start = time.perf_counter()
            for _ in range(calls):
                call()
            samples[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(values) * 1e6 for name, values in samples.items()}


def validation_cost(vocab_size: int, id_batches: list[np.ndarray], repeats: int) -> float:
    """Return the median milliseconds of the id checks alone (dtype and range)."""
    samples = []
    for i in range(repeats):
        ids = id_batches[i % ID_BATCHES]
        start = time.perf_counter()
        check_ids_in_range(as_id_array(ids), vocab_size)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def parse_shapes(text: str) -> tuple[tuple[int, int], ...]:
    """Parse ``"50000x256,32000x4096"`` into ``((50000, 256), (32000, 4096))``."""
    shapes = []
    for item in text.split(","):
        match = re.fullmatch(r"([0-9]+)x([0-9]+)", item.strip().lower())
        if match is None or int(match[1]) == 0 or int(match[2]) == 0:
            raise argparse.ArgumentTypeError(f"a shape must look like 50000x256, with positive sizes; received {item!r}")
        shape = (int(match[1]), int(match[2]))
        if shape in shapes:
            raise argparse.ArgumentTypeError(f"shape {item.strip()!r} is listed twice; list each shape once")
        shapes.append(shape)
    return tuple(shapes)


def positive_int(text: str) -> int:
    """Parse a whole number of at least 1, for ``--repeats``."""
    if re.fullmatch(r"[0-9]+", text.strip()) is None or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1; received {text!r}")
    return int(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=positive_int, default=11, help="timed repeats per contender (default: 11)")
    parser.add_argument("--torch-only", action="store_true", help="time PyTorch alone (for the huge-pages run)")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even when installed")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--shapes",
        type=parse_shapes,
        default=SHAPES,
        help="comma-separated table shapes (default: 50000x256,1000000x128,32000x4096)",
    )
    args = parser.parse_args()

    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("PyTorch is not installed; timing tinytorch alone (pip install torch==2.13.0 to compare)", file=sys.stderr)
    if args.torch_only and torch is None:
        print("--torch-only needs PyTorch: pip install torch==2.13.0", file=sys.stderr)
        return 2

    implementations: list[str] = []
    if not args.torch_only:
        implementations.append("numpy")
        try:
            kernels.set_implementation("numba")
            implementations.append("numba")
        except ImportError:
            print("numba is not installed; timing the NumPy kernels only", file=sys.stderr)

    report: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "machine": f"{platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "tinytorch": tinytorch.__version__,
            "torch": None if torch is None else torch.__version__,
            "numba": None,
        },
        "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE"),
        "shapes": {},
    }
    if "numba" in implementations:
        import numba

        report["versions"]["numba"] = numba.__version__

    for vocab_size, dim in args.shapes:
        rng = np.random.default_rng(0)
        id_batches = [rng.integers(0, vocab_size, size=(BATCH, SEQ), dtype=np.int64) for _ in range(ID_BATCHES)]
        bag_inputs = [random_bags(rng, vocab_size) for _ in range(ID_BATCHES)]
        upstream = rng.standard_normal((BATCH, SEQ, dim), dtype=np.float32)

        calls: dict[str, Callable[[int], Any]] = {}
        setups: dict[str, Callable[[int], Any]] = {}
        if implementations:
            table = Embedding(vocab_size, dim, rng=np.random.default_rng(1))
            sparse_table = Embedding(vocab_size, dim, sparse=True)
            sparse_table.weight = table.weight  # both layers use one table, as tied weights do
            for implementation in implementations:
                built_calls, built_setups = tinytorch_contenders(table, sparse_table, implementation, id_batches, bag_inputs, upstream)
                calls.update({f"{op} | tinytorch {implementation}": fn for op, fn in built_calls.items()})
                setups.update({f"{op} | tinytorch {implementation}": fn for op, fn in built_setups.items()})
        if torch is not None:
            weight = torch.nn.Parameter(torch.from_numpy(rng.standard_normal((vocab_size, dim), dtype=np.float32)))
            torch_sparse = torch.nn.Embedding(vocab_size, dim, sparse=True, _weight=weight.detach())
            for threads in (1, 2):
                built_calls, built_setups = torch_contenders(torch, weight, torch_sparse, threads, id_batches, bag_inputs, upstream)
                calls.update({f"{op} | torch {threads}t": fn for op, fn in built_calls.items()})
                setups.update({f"{op} | torch {threads}t": fn for op, fn in built_setups.items()})

        print(f"timing {vocab_size:,} x {dim}", file=sys.stderr)
        results: dict[str, dict[str, dict[str, float]]] = {}
        operations = list(dict.fromkeys(name.split(" | ")[0] for name in calls))
        for operation in operations:
            members = {name.split(" | ")[1]: calls[name] for name in calls if name.startswith(operation + " |")}
            member_setups = {name.split(" | ")[1]: setups[name] for name in setups if name.startswith(operation + " |")}
            results[operation] = interleave(members, args.repeats, member_setups)

        for operation, contenders in results.items():
            for name, figures in contenders.items():
                if torch is not None and "torch 2t" in contenders and operation != "lookup, reused buffer":
                    figures["ratio_to_torch_2t"] = figures["median_ms"] / contenders["torch 2t"]["median_ms"]
        if implementations:
            validation_ms = validation_cost(vocab_size, id_batches, max(args.repeats, 20))
            fastest_lookup = min(results["lookup"][f"tinytorch {name}"]["median_ms"] for name in implementations)
            results["id validation"] = {"tinytorch": {"median_ms": validation_ms, "fraction_of_lookup": validation_ms / fastest_lookup}}
        report["shapes"][f"{vocab_size}x{dim}"] = results

    report["small_call_us"] = small_call_overhead(None if args.torch_only else torch, implementations, args.repeats)
    if args.torch_only:
        report["small_call_us"] = {}

    # Measured last: copying 256 MB arrays leaves the OS reclaiming memory for
    # a while, which slowed whichever operation was timed right after it.
    report["copy_bandwidth"] = bandwidth = measure_copy_bandwidth()
    for shape, results in report["shapes"].items():
        dim = int(shape.split("x")[1])
        lookup_bytes = BATCH * SEQ * 8 + 2 * BATCH * SEQ * dim * 4  # int64 ids, rows read, output written
        for operation in ("lookup", "lookup, reused buffer"):
            for figures in results.get(operation, {}).values():
                seconds = figures["median_ms"] / 1e3
                figures["fraction_of_copy_bandwidth"] = lookup_bytes / seconds / (bandwidth["copy_bandwidth_gb_s"] * 1e9)

    print_markdown(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
    return 0


def print_markdown(report: dict[str, Any]) -> None:
    """Print the report as Markdown tables for docs/benchmarks.md."""
    bandwidth = report["copy_bandwidth"]
    print(f"Command: `{report['command']}`, {report['date']}.")
    print(f"Machine: {report['machine']}; " + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v))
    if report["THP_MEM_ALLOC_ENABLE"]:
        print(f"THP_MEM_ALLOC_ENABLE={report['THP_MEM_ALLOC_ENABLE']}")
    print(
        f"Copy bandwidth: {bandwidth['copy_bandwidth_gb_s']:.1f} GB/s (one thread {bandwidth['one_thread_gb_s']:.1f}, "
        f"two threads {bandwidth['two_threads_gb_s']:.1f}), bytes read plus written.\n"
    )
    for shape, results in report["shapes"].items():
        print(f"### {shape.replace('x', ' × ')}, ids {BATCH} × {SEQ}\n")
        print("| operation | contender | median ms | spread ms | vs torch 2 threads | of copy bandwidth |")
        print("| --- | --- | ---: | ---: | ---: | ---: |")
        for operation, contenders in results.items():
            for name, figures in contenders.items():
                if operation == "id validation":
                    print(f"| id validation | {name} | {figures['median_ms']:.3f} | | {figures['fraction_of_lookup']:.1%} of the lookup | |")
                    continue
                ratio = f"{figures['ratio_to_torch_2t']:.2f}×" if "ratio_to_torch_2t" in figures else ""
                fraction = f"{figures['fraction_of_copy_bandwidth']:.0%}" if "fraction_of_copy_bandwidth" in figures else ""
                spread = f"{figures['min_ms']:.2f}–{figures['max_ms']:.2f}"
                print(f"| {operation} | {name} | {figures['median_ms']:.2f} | {spread} | {ratio} | {fraction} |")
        print()
    if report["small_call_us"]:
        print(f"### One {SMALL_CALL_TOKENS}-token lookup (median µs per call)\n")
        print("| contender | µs |")
        print("| --- | ---: |")
        for name, microseconds in report["small_call_us"].items():
            print(f"| {name} | {microseconds:.2f} |")


if __name__ == "__main__":
    raise SystemExit(main())
