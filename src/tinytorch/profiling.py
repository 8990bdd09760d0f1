"""Measure embedding lookups against the machine's own memory bandwidth.

An embedding lookup reads ids and table rows and writes the output; it does
no arithmetic, so its speed limit is memory bandwidth. ``EmbeddingProfiler``
measures that limit with a plain array copy and reports each lookup as a
fraction of it.

Units: sizes are in MB of 2**20 bytes, as in ``Embedding.get_memory_usage``;
rates are decimal (1 MB/s = 10**6 bytes/s, 1 GB/s = 10**9 bytes/s), as
bandwidth tools such as STREAM report them.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tinytorch._checks import check_int, check_non_negative, describe
from tinytorch._plotting import import_figure
from tinytorch.core.embeddings import BYTES_PER_MB as MB
from tinytorch.core.embeddings import Embedding, LearnedPositionalEmbedding, PositionalEncoding
from tinytorch.core.random import resolve_rng
from tinytorch.core.tensor import Tensor, no_grad

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

# Distinct id batches cycled through during timing, so that no repeat finds
# the previous repeat's rows already in cache.
ID_BATCHES = 4


def median_seconds(fn: Callable[[int], Any], *, repeats: int, warmup: int = 1) -> float:
    """Return the median wall time of ``fn(i)`` over ``repeats`` calls, after ``warmup`` calls.

    ``fn`` receives the call's index so that it can rotate through inputs.
    """
    for i in range(warmup):
        fn(i)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_copy_bandwidth(*, size_mb: int = 256, repeats: int = 5) -> dict[str, float]:
    """Measure memory bandwidth as the speed of copying one float32 array into another.

    Copies of ``size_mb`` MB are timed with one thread and with two threads
    (each copying half). Bandwidth counts bytes read plus bytes written, so
    a copy of N bytes moves 2N. The result is the best of the two medians.

    Returns:
        ``one_thread_gb_s``, ``two_threads_gb_s``, ``copy_bandwidth_gb_s``
        (the best) and ``array_mb``.
    """
    check_int("size_mb", size_mb, minimum=1)
    check_int("repeats", repeats, minimum=1)
    source = np.ones(size_mb * MB // 4, dtype=np.float32)
    target = np.zeros_like(source)  # touched now, so page faults are not timed
    half = source.size // 2

    def copy_one_thread(_: int) -> None:
        np.copyto(target, source)

    def copy_two_threads(_: int) -> None:
        # np.copyto releases the GIL, so the two halves copy in parallel.
        worker = threading.Thread(target=np.copyto, args=(target[half:], source[half:]))
        worker.start()
        np.copyto(target[:half], source[:half])
        worker.join()

    moved = 2 * source.nbytes
    one_thread = moved / median_seconds(copy_one_thread, repeats=repeats) / 1e9
    two_threads = moved / median_seconds(copy_two_threads, repeats=repeats) / 1e9
    logger.info("copy bandwidth: %.1f GB/s one thread, %.1f GB/s two threads", one_thread, two_threads)
    return {
        "one_thread_gb_s": one_thread,
        "two_threads_gb_s": two_threads,
        "copy_bandwidth_gb_s": max(one_thread, two_threads),
        "array_mb": float(size_mb),
    }


def _check_sizes(name: str, values: Sequence[int]) -> list[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a list of positive integers; received {describe(values)}")
    if not values:
        raise ValueError(f"{name} must contain at least one positive integer; received []")
    return [check_int(f"each value of {name}", value, minimum=1) for value in values]


class EmbeddingProfiler:
    """Time embedding lookups and positional encodings, and relate them to memory bandwidth.

    Args:
        repeats: Timed calls per measurement; the median is reported.
        warmup: Untimed calls before timing starts.
        machine_bandwidth_gb_s: The machine's copy bandwidth, if already
            known. Otherwise it is measured once, on first need, with
            ``measure_copy_bandwidth``.
        rng: Generator for random ids and tables; the seeded default one if omitted.

    Example:
        >>> profiler = EmbeddingProfiler(repeats=3, machine_bandwidth_gb_s=10.0)
        >>> results = profiler.measure_lookup_performance(Embedding(100, 8), [2], [4])
        >>> sorted(results)
        ['batch_2_seq_4']
    """

    def __init__(
        self,
        *,
        repeats: int = 10,
        warmup: int = 1,
        machine_bandwidth_gb_s: float | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.repeats = check_int("repeats", repeats, minimum=1)
        self.warmup = check_int("warmup", warmup, minimum=0)
        if machine_bandwidth_gb_s is not None and (
            isinstance(machine_bandwidth_gb_s, bool)
            or not isinstance(machine_bandwidth_gb_s, (int, float))
            or not 0 < machine_bandwidth_gb_s < float("inf")
        ):
            raise ValueError(
                f"machine_bandwidth_gb_s must be a positive finite number or None; received {describe(machine_bandwidth_gb_s)}"
            )
        self.machine_bandwidth_gb_s = machine_bandwidth_gb_s
        self.rng = resolve_rng(rng)

    def measure_memory_bandwidth(self, *, size_mb: int = 256) -> dict[str, float]:
        """Measure the copy bandwidth (see ``measure_copy_bandwidth``) and keep it for later ratios."""
        result = measure_copy_bandwidth(size_mb=size_mb)
        self.machine_bandwidth_gb_s = result["copy_bandwidth_gb_s"]
        return result

    def _machine_bandwidth(self) -> float:
        if self.machine_bandwidth_gb_s is None:
            return self.measure_memory_bandwidth()["copy_bandwidth_gb_s"]
        return self.machine_bandwidth_gb_s

    def _time_lookup(self, layer: Embedding, batch_size: int, seq_length: int) -> tuple[float, np.ndarray]:
        """Return the median seconds of ``layer(ids)`` over rotating id batches, and one batch."""
        id_batches = [
            self.rng.integers(0, layer.vocab_size, size=(batch_size, seq_length), dtype=np.int64)
            for _ in range(ID_BATCHES)
        ]
        seconds = median_seconds(
            lambda i: layer(id_batches[i % ID_BATCHES]), repeats=self.repeats, warmup=self.warmup
        )
        return seconds, id_batches[0]

    def measure_lookup_performance(
        self, embedding_layer: Embedding, batch_sizes: Sequence[int], seq_lengths: Sequence[int]
    ) -> dict[str, dict[str, float | int]]:
        """Time ``embedding_layer(ids)`` for every batch size and sequence length.

        The call is timed as users make it, id validation and autograd
        bookkeeping included, with a fresh output each time.

        Returns:
            A dict keyed ``batch_{b}_seq_{s}``. Each entry contains
            ``batch_size``, ``seq_length``, ``total_tokens``,
            ``lookup_time_ms`` (median), ``tokens_per_second``,
            ``input_memory_mb`` (ids), ``output_memory_mb``,
            ``memory_bandwidth_mb_s`` (ids read + rows read + output written,
            per second), ``time_per_token_us`` and ``bandwidth_fraction``
            (achieved bandwidth over the machine's copy bandwidth).
        """
        if not isinstance(embedding_layer, Embedding):
            raise TypeError(f"embedding_layer must be an Embedding; received {describe(embedding_layer)}")
        batch_sizes = _check_sizes("batch_sizes", batch_sizes)
        seq_lengths = _check_sizes("seq_lengths", seq_lengths)
        machine_bytes_per_second = self._machine_bandwidth() * 1e9
        row_bytes = embedding_layer.embedding_dim * embedding_layer.weight.dtype.itemsize

        results: dict[str, dict[str, float | int]] = {}
        for batch_size in batch_sizes:
            for seq_length in seq_lengths:
                seconds, ids = self._time_lookup(embedding_layer, batch_size, seq_length)
                tokens = batch_size * seq_length
                output_bytes = tokens * row_bytes
                moved = ids.nbytes + output_bytes + output_bytes  # ids, rows read, output written
                results[f"batch_{batch_size}_seq_{seq_length}"] = {
                    "batch_size": batch_size,
                    "seq_length": seq_length,
                    "total_tokens": tokens,
                    "lookup_time_ms": seconds * 1e3,
                    "tokens_per_second": tokens / seconds,
                    "input_memory_mb": ids.nbytes / MB,
                    "output_memory_mb": output_bytes / MB,
                    "memory_bandwidth_mb_s": moved / seconds / 1e6,
                    "time_per_token_us": seconds / tokens * 1e6,
                    "bandwidth_fraction": moved / seconds / machine_bytes_per_second,
                }
        return results

    def analyze_memory_scaling(
        self,
        vocab_sizes: Sequence[int],
        embedding_dims: Sequence[int],
        *,
        batch_size: int = 32,
        seq_length: int = 128,
    ) -> dict[str, dict[str, float | int]]:
        """Build a table for every vocabulary size and dimension; report its memory and lookup time.

        Returns:
            A dict keyed ``vocab_{v}_dim_{d}``, each with ``vocab_size``,
            ``embedding_dim``, ``total_parameters``, ``memory_mb`` and
            ``lookup_time_ms`` (median, for ``batch_size`` x ``seq_length`` ids).
        """
        vocab_sizes = _check_sizes("vocab_sizes", vocab_sizes)
        embedding_dims = _check_sizes("embedding_dims", embedding_dims)
        check_int("batch_size", batch_size, minimum=1)
        check_int("seq_length", seq_length, minimum=1)

        results: dict[str, dict[str, float | int]] = {}
        for vocab_size in vocab_sizes:
            for embedding_dim in embedding_dims:
                layer = Embedding(vocab_size, embedding_dim, rng=self.rng)
                seconds, _ = self._time_lookup(layer, batch_size, seq_length)
                memory = layer.get_memory_usage()
                results[f"vocab_{vocab_size}_dim_{embedding_dim}"] = {
                    "vocab_size": vocab_size,
                    "embedding_dim": embedding_dim,
                    "total_parameters": memory["total_parameters"],
                    "memory_mb": memory["total_memory_mb"],
                    "lookup_time_ms": seconds * 1e3,
                }
                # Freed before the next table is built, so that at most one table exists at a time.
                del layer
        return results

    def compare_positional_encodings(
        self,
        seq_length: int = 100,
        embedding_dim: int = 256,
        *,
        batch_size: int = 8,
        max_seq_length: int | None = None,
        measured: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Compare the sinusoidal and the learned positional encodings on the same input.

        Both are built with ``max_seq_length`` rows (``seq_length`` when
        omitted) and applied to a random ``(batch_size, seq_length,
        embedding_dim)`` input.

        Returns:
            ``{'sinusoidal': {...}, 'learned': {...}}``, each with
            ``computation_time_ms`` (median forward time), ``memory_usage_mb``
            (the table), ``parameters`` (learnable values), ``deterministic``
            (whether the values follow from a formula rather than training) and
            ``extrapolation``: the longest sequence the encoding can be
            applied to, ``None`` meaning no limit. Whether a model trained at
            one length works at another is a separate, measured question:
            pass ``measured``, the ``results`` of a ``tinytorch
            compare-positional`` report, to add its held-out
            ``heldout_bits_per_char`` and ``heldout_bits_per_char_2x_context``
            to each entry (``None`` where the encoding could not run).
        """
        check_int("seq_length", seq_length, minimum=1)
        check_int("embedding_dim", embedding_dim, minimum=1)
        check_int("batch_size", batch_size, minimum=1)
        table_rows = seq_length if max_seq_length is None else check_int("max_seq_length", max_seq_length)
        if table_rows < seq_length:
            raise ValueError(
                f"max_seq_length must be at least seq_length={seq_length}; received {describe(max_seq_length)}"
            )
        if measured is not None:
            _check_measured(measured)

        x = Tensor(self.rng.standard_normal((batch_size, seq_length, embedding_dim)), dtype=np.float32)
        sinusoidal = PositionalEncoding(embedding_dim, max_seq_length=table_rows)
        learned = LearnedPositionalEmbedding(table_rows, embedding_dim, rng=self.rng)

        def forward_time_ms(layer: PositionalEncoding | LearnedPositionalEmbedding) -> float:
            with no_grad():
                return median_seconds(lambda _: layer(x), repeats=self.repeats, warmup=self.warmup) * 1e3

        comparison = {
            "sinusoidal": {
                "computation_time_ms": forward_time_ms(sinusoidal),
                "memory_usage_mb": sinusoidal.pe.data.nbytes / MB,
                "parameters": sinusoidal.num_parameters(),
                "deterministic": True,
                "extrapolation": None,
            },
            "learned": {
                "computation_time_ms": forward_time_ms(learned),
                "memory_usage_mb": learned.position_embedding.weight.data.nbytes / MB,
                "parameters": learned.num_parameters(),
                "deterministic": False,
                "extrapolation": table_rows,
            },
        }
        if measured is not None:
            for kind, entry in comparison.items():
                for key in MEASURED_KEYS:
                    entry[key] = measured[kind].get(key)
        return comparison


# The held-out figures that ``compare_positional_encodings`` copies from a
# ``tinytorch compare-positional`` report.
MEASURED_KEYS = ("heldout_bits_per_char", "heldout_bits_per_char_2x_context")


def _check_measured(measured: Any) -> None:
    """Raise unless ``measured`` maps both encodings to mappings whose held-out figures are numbers or None."""
    if not isinstance(measured, Mapping):
        raise TypeError(
            "measured must be a mapping like {'sinusoidal': {...}, 'learned': {...}}, "
            f"the 'results' of a compare-positional report; received {describe(measured)}"
        )
    for kind in ("sinusoidal", "learned"):
        if kind not in measured:
            raise ValueError(f"measured must hold results for {kind!r}; received keys {list(measured)}")
        results = measured[kind]
        if not isinstance(results, Mapping):
            raise TypeError(f"measured[{kind!r}] must be a mapping of result names to values; received {describe(results)}")
        for key in MEASURED_KEYS:
            value = results.get(key)
            if value is not None:  # None: the encoding could not run at that length
                check_non_negative(f"measured[{kind!r}][{key!r}]", value)


def _line_figure(
    results: dict[str, dict[str, float | int]],
    *,
    series_key: str,
    x_key: str,
    y_key: str,
    x_label: str,
    y_label: str,
    title: str,
) -> Figure:
    """Plot ``y_key`` against ``x_key``, one line per value of ``series_key``."""
    figure = import_figure()(figsize=(7, 4.5))
    axes = figure.add_subplot()
    for series in sorted({int(entry[series_key]) for entry in results.values()}):
        points = sorted(
            (int(entry[x_key]), float(entry[y_key])) for entry in results.values() if entry[series_key] == series
        )
        axes.plot(*zip(*points, strict=True), marker="o", label=f"{series_key}={series}")
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.set_title(title)
    axes.legend()
    return figure


def plot_memory_scaling(results: dict[str, dict[str, float | int]]) -> Figure:
    """Return a figure of table memory against vocabulary size, one line per ``embedding_dim``.

    ``results`` is the output of ``EmbeddingProfiler.analyze_memory_scaling``.
    """
    figure = _line_figure(
        results,
        series_key="embedding_dim",
        x_key="vocab_size",
        y_key="memory_mb",
        x_label="vocab_size",
        y_label="table memory (MB)",
        title="Embedding table memory",
    )
    figure.axes[0].set_xscale("log")
    figure.axes[0].set_yscale("log")
    return figure


def plot_lookup_throughput(results: dict[str, dict[str, float | int]]) -> Figure:
    """Return a figure of lookup throughput against batch size, one line per sequence length.

    ``results`` is the output of ``EmbeddingProfiler.measure_lookup_performance``.
    """
    figure = _line_figure(
        results,
        series_key="seq_length",
        x_key="batch_size",
        y_key="tokens_per_second",
        x_label="batch size",
        y_label="tokens per second",
        title="Embedding lookup throughput",
    )
    figure.axes[0].set_xscale("log", base=2)
    return figure
