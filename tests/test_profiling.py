"""EmbeddingProfiler: result structure, consistency of the derived figures, and argument checks."""

import tracemalloc

import numpy as np
import pytest

from tinytorch.core.embeddings import Embedding
from tinytorch.profiling import EmbeddingProfiler, measure_copy_bandwidth, median_seconds

LOOKUP_KEYS = {
    "batch_size",
    "seq_length",
    "total_tokens",
    "lookup_time_ms",
    "tokens_per_second",
    "input_memory_mb",
    "output_memory_mb",
    "memory_bandwidth_mb_s",
    "time_per_token_us",
    "bandwidth_fraction",
}


@pytest.fixture
def profiler():
    return EmbeddingProfiler(repeats=3, machine_bandwidth_gb_s=20.0, rng=np.random.default_rng(0))


def test_median_seconds_takes_median(monkeypatch):
    ticks = iter([0.0, 1.0, 1.0, 4.0, 4.0, 6.0])  # durations 1, 3, 2
    monkeypatch.setattr("tinytorch.profiling.time.perf_counter", lambda: next(ticks))
    calls = []
    assert median_seconds(calls.append, repeats=3, warmup=2) == 2.0
    assert calls == [0, 1, 0, 1, 2]


def test_copy_bandwidth_is_positive_and_best_of_two():
    result = measure_copy_bandwidth(size_mb=8, repeats=2)
    assert result["array_mb"] == 8.0
    assert result["one_thread_gb_s"] > 0
    assert result["two_threads_gb_s"] > 0
    assert result["copy_bandwidth_gb_s"] == max(result["one_thread_gb_s"], result["two_threads_gb_s"])


def test_lookup_performance_keys_and_arithmetic(profiler):
    layer = Embedding(1000, 32)
    results = profiler.measure_lookup_performance(layer, [2, 4], [8, 16])
    assert sorted(results) == ["batch_2_seq_16", "batch_2_seq_8", "batch_4_seq_16", "batch_4_seq_8"]
    for entry in results.values():
        assert set(entry) == LOOKUP_KEYS
        tokens = entry["batch_size"] * entry["seq_length"]
        seconds = entry["lookup_time_ms"] / 1e3
        assert entry["total_tokens"] == tokens
        assert entry["input_memory_mb"] == tokens * 8 / 2**20
        assert entry["output_memory_mb"] == tokens * 32 * 4 / 2**20
        assert entry["tokens_per_second"] == pytest.approx(tokens / seconds)
        assert entry["time_per_token_us"] == pytest.approx(seconds / tokens * 1e6)
        moved = tokens * 8 + 2 * tokens * 32 * 4
        assert entry["memory_bandwidth_mb_s"] == pytest.approx(moved / seconds / 1e6)
        assert entry["bandwidth_fraction"] == pytest.approx(moved / seconds / 20e9)


def test_lookup_measures_bandwidth_once_when_unknown(monkeypatch):
    calls = []

    def fake_copy_bandwidth(**kwargs):
        calls.append(kwargs)
        return {"one_thread_gb_s": 5.0, "two_threads_gb_s": 8.0, "copy_bandwidth_gb_s": 8.0, "array_mb": 256.0}

    monkeypatch.setattr("tinytorch.profiling.measure_copy_bandwidth", fake_copy_bandwidth)
    profiler = EmbeddingProfiler(repeats=2)
    first = profiler.measure_lookup_performance(Embedding(100, 8), [1], [4])["batch_1_seq_4"]
    profiler.measure_lookup_performance(Embedding(100, 8), [1], [4])
    assert len(calls) == 1
    assert profiler.machine_bandwidth_gb_s == 8.0
    assert first["bandwidth_fraction"] == pytest.approx(first["memory_bandwidth_mb_s"] * 1e6 / 8e9)


def test_memory_scaling(profiler):
    results = profiler.analyze_memory_scaling([100, 1000], [16, 64], batch_size=2, seq_length=8)
    assert sorted(results) == ["vocab_1000_dim_16", "vocab_1000_dim_64", "vocab_100_dim_16", "vocab_100_dim_64"]
    entry = results["vocab_1000_dim_64"]
    assert entry["total_parameters"] == 64_000
    assert entry["memory_mb"] == 64_000 * 4 / 2**20
    assert entry["lookup_time_ms"] > 0
    assert set(entry) == {"vocab_size", "embedding_dim", "total_parameters", "memory_mb", "lookup_time_ms"}


def test_compare_positional_encodings(profiler):
    results = profiler.compare_positional_encodings(seq_length=20, embedding_dim=16)
    sinusoidal, learned = results["sinusoidal"], results["learned"]
    assert sinusoidal["parameters"] == 0
    assert learned["parameters"] == 20 * 16
    assert sinusoidal["deterministic"] is True
    assert learned["deterministic"] is False
    assert sinusoidal["extrapolation"] is None
    assert learned["extrapolation"] == 20
    assert sinusoidal["memory_usage_mb"] == learned["memory_usage_mb"] == 20 * 16 * 4 / 2**20
    assert sinusoidal["computation_time_ms"] > 0
    assert learned["computation_time_ms"] > 0
    assert profiler.compare_positional_encodings(10, 8, max_seq_length=64)["learned"]["extrapolation"] == 64


def test_compare_positional_copies_measured(profiler):
    measured = {
        "sinusoidal": {"heldout_bits_per_char": 2.15, "heldout_bits_per_char_2x_context": 3.5},
        "learned": {"heldout_bits_per_char": 2.16, "heldout_bits_per_char_2x_context": None},
    }
    results = profiler.compare_positional_encodings(seq_length=8, embedding_dim=4, measured=measured)
    assert results["sinusoidal"]["heldout_bits_per_char"] == 2.15
    assert results["sinusoidal"]["heldout_bits_per_char_2x_context"] == 3.5
    assert results["learned"]["heldout_bits_per_char"] == 2.16
    assert results["learned"]["heldout_bits_per_char_2x_context"] is None


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda p: p.measure_lookup_performance("table", [1], [1]), TypeError, r"embedding_layer must be an Embedding; received 'table'"),
        (lambda p: p.measure_lookup_performance(Embedding(5, 2), [], [1]), ValueError, r"batch_sizes must contain at least one"),
        (lambda p: p.measure_lookup_performance(Embedding(5, 2), 4, [1]), TypeError, r"batch_sizes must be a list.*received 4 \(int\)"),
        (lambda p: p.measure_lookup_performance(Embedding(5, 2), [1], [0]), ValueError, r"each value of seq_lengths must be a positive integer; received 0"),
        (lambda p: p.analyze_memory_scaling([10], [-4]), ValueError, r"received -4"),
        (lambda p: p.compare_positional_encodings(seq_length=0), ValueError, r"seq_length must be a positive integer; received 0"),
        (lambda p: p.compare_positional_encodings(seq_length=10, max_seq_length=5), ValueError, r"at least seq_length=10; received 5"),
        (lambda p: p.compare_positional_encodings(measured=[1]), TypeError, r"measured must be a mapping.*received \[1\]"),
        (lambda p: p.compare_positional_encodings(measured={"learned": {}}), ValueError, r"results for 'sinusoidal'; received keys \['learned'\]"),
        (lambda p: p.compare_positional_encodings(measured={"sinusoidal": 2.1, "learned": {}}), TypeError, r"measured\['sinusoidal'\] must be a mapping"),
        (
            lambda p: p.compare_positional_encodings(measured={"sinusoidal": {"heldout_bits_per_char_2x_context": "abc"}, "learned": {}}),
            TypeError,
            r"\['heldout_bits_per_char_2x_context'\] must be a number; received 'abc'",
        ),
        (
            lambda p: p.compare_positional_encodings(measured={"sinusoidal": {}, "learned": {"heldout_bits_per_char": float("nan")}}),
            ValueError,
            r"measured\['learned'\]\['heldout_bits_per_char'\] must be a finite number >= 0; received nan",
        ),
        (
            lambda p: p.compare_positional_encodings(measured={"sinusoidal": {"heldout_bits_per_char": 10**400}, "learned": {}}),
            ValueError,
            r"\['heldout_bits_per_char'\] must be a finite number >= 0",
        ),
        (
            lambda p: p.compare_positional_encodings(measured={"sinusoidal": {"heldout_bits_per_char": -0.5}, "learned": {}}),
            ValueError,
            r"must be a finite number >= 0; received -0.5",
        ),
    ],
)
def test_bad_arguments(profiler, call, error, message):
    with pytest.raises(error, match=message):
        call(profiler)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"repeats": 0}, ValueError, "repeats must be a positive integer; received 0"),
        ({"warmup": -1}, ValueError, r"warmup must be an integer >= 0; received -1"),
        ({"machine_bandwidth_gb_s": 0}, ValueError, "machine_bandwidth_gb_s must be a positive finite number or None; received 0"),
        ({"machine_bandwidth_gb_s": "abc"}, ValueError, "received 'abc'"),
        ({"machine_bandwidth_gb_s": True}, ValueError, "received True"),
        ({"machine_bandwidth_gb_s": float("inf")}, ValueError, "received inf"),
        ({"rng": 3}, TypeError, "rng must be a numpy.random.Generator or None; received int"),
    ],
)
def test_bad_profiler_settings(kwargs, error, message):
    with pytest.raises(error, match=message):
        EmbeddingProfiler(**kwargs)


def test_plots_return_figures(profiler):
    pytest.importorskip("matplotlib")
    from tinytorch.profiling import plot_lookup_throughput, plot_memory_scaling

    scaling = profiler.analyze_memory_scaling([100, 1000], [16, 64], batch_size=2, seq_length=4)
    figure = plot_memory_scaling(scaling)
    lines = figure.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["embedding_dim=16", "embedding_dim=64"]
    np.testing.assert_allclose(lines[1].get_ydata(), [100 * 64 * 4 / 2**20, 1000 * 64 * 4 / 2**20])

    lookup = profiler.measure_lookup_performance(Embedding(50, 4), [1, 2], [3])
    throughput = plot_lookup_throughput(lookup).axes[0].get_lines()[0]
    assert list(throughput.get_xdata()) == [1, 2]


def test_memory_scaling_holds_one_table_at_a_time(profiler):
    # A first small run loads the kernels, whose one-time allocations would swamp the tables.
    profiler.analyze_memory_scaling([10], [4], batch_size=4, seq_length=8)
    # Tables of 5 MB and 10 MB: with both alive at once the peak would pass 15 MB.
    tracemalloc.start()
    try:
        profiler.analyze_memory_scaling([20_000, 40_000], [64], batch_size=4, seq_length=8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    table_bytes = 40_000 * 64 * 4
    assert peak < table_bytes * 1.2
