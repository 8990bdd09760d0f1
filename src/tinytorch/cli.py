"""The ``tinytorch`` command: parse arguments, call the library, render the results.

Subcommands:
    embed    text -> token ids -> vectors -> position-aware vectors
    profile  lookup throughput against the machine's memory bandwidth
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import numpy as np

import tinytorch
from tinytorch._atomic import atomic_write
from tinytorch.core.embeddings import Embedding, LearnedPositionalEmbedding, PositionalEncoding
from tinytorch.core.tensor import no_grad
from tinytorch.core.tokenization import BPETokenizer, CharTokenizer
from tinytorch.data import builtin_corpus, read_text_file

MB = 2**20
PREVIEW_TOKENS = 3
PREVIEW_DIMS = 6


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return value


def _build_parser() -> _Parser:
    parser = _Parser(prog="tinytorch", description="Turn text into position-aware vectors and measure the cost.")
    parser.add_argument("--version", action="version", version=f"tinytorch {tinytorch.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    embed = commands.add_parser(
        "embed",
        help="embed a text, a file or the built-in corpus",
        description=(
            "Embed TEXT, or a text file with --file, or (with neither) the built-in corpus: "
            "the Python documentation topics that ship with CPython."
        ),
    )
    embed.add_argument("text", nargs="?", help="text to embed; prints every token id")
    embed.add_argument("--file", type=Path, help="UTF-8 text file to embed in fixed-length windows")
    embed.add_argument("--dim", type=_positive_int, default=256, help="embedding_dim (default: 256)")
    embed.add_argument(
        "--max-length", type=_positive_int, default=512, help="max_seq_length and window length in tokens (default: 512)"
    )
    embed.add_argument("--tokenizer", choices=("char", "bpe"), default="char", help="tokenizer (default: char)")
    embed.add_argument("--vocab", type=Path, help="load the tokenizer from this saved vocabulary file instead of building one")
    embed.add_argument(
        "--bpe-vocab-size", type=_positive_int, default=1000, help="vocab_size when training BPE (default: 1000)"
    )
    embed.add_argument(
        "--positional", choices=("sinusoidal", "learned"), default="sinusoidal", help="positional encoding (default: sinusoidal)"
    )
    embed.add_argument("--batch-size", type=_positive_int, default=32, help="windows per batch (default: 32)")
    embed.add_argument("--out", type=Path, help="save the vectors of a file or corpus to this .npy file")
    embed.add_argument("--seed", type=int, default=0, help="seed for the table's initial values (default: 0)")

    profile = commands.add_parser(
        "profile",
        help="measure lookup speed, memory scaling and positional encodings",
        description="Measure embedding lookups against this machine's copy bandwidth.",
    )
    profile.add_argument("--vocab-size", type=_positive_int, default=50_000, help="table rows (default: 50000)")
    profile.add_argument("--dim", type=_positive_int, default=512, help="embedding_dim (default: 512)")
    profile.add_argument(
        "--batch-sizes", type=_positive_int, nargs="+", default=[1, 8, 32], help="batch sizes (default: 1 8 32)"
    )
    profile.add_argument(
        "--seq-lengths", type=_positive_int, nargs="+", default=[128, 512], help="sequence lengths (default: 128 512)"
    )
    profile.add_argument("--repeats", type=_positive_int, default=10, help="timed repeats per figure (default: 10)")
    profile.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    profile.add_argument("--plot", type=Path, metavar="DIR", help="write PNG figures to DIR (needs the plot extra)")
    profile.add_argument("--seed", type=int, default=0, help="seed for random ids and tables (default: 0)")
    return parser


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Render rows as a plain-text table: numbers right-aligned, text left-aligned."""
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) for i in range(len(headers))]
    cells = [[str(h) for h in headers]] + [[_format_cell(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def render(row: Sequence[str]) -> str:
        aligned = (
            cell.rjust(width) if is_number else cell.ljust(width)
            for cell, width, is_number in zip(row, widths, numeric, strict=True)
        )
        return "  ".join(aligned).rstrip()

    lines = [render(row) for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _format_cell(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# ---------------------------------------------------------------------- embed


def _make_tokenizer(args: argparse.Namespace, text: str) -> CharTokenizer | BPETokenizer:
    tokenizer_class = CharTokenizer if args.tokenizer == "char" else BPETokenizer
    if args.vocab is not None:
        return tokenizer_class.load(args.vocab)
    if args.tokenizer == "char":
        return CharTokenizer()
    tokenizer = BPETokenizer(vocab_size=args.bpe_vocab_size)
    tokenizer.train(text)
    return tokenizer


def _make_layers(args: argparse.Namespace, vocab_size: int) -> tuple[Embedding, PositionalEncoding | LearnedPositionalEmbedding]:
    rng = tinytorch.manual_seed(args.seed)
    embedding = Embedding(vocab_size, args.dim, padding_idx=0, rng=rng)
    if args.positional == "sinusoidal":
        return embedding, PositionalEncoding(args.dim, max_seq_length=args.max_length)
    return embedding, LearnedPositionalEmbedding(args.max_length, args.dim, rng=rng)


def _run_embed(args: argparse.Namespace) -> int:
    if args.text is not None and args.file is not None:
        raise ValueError("give either TEXT or --file, not both")
    if args.text is not None:
        return _embed_text(args)
    return _embed_corpus(args)


def _embed_text(args: argparse.Namespace) -> int:
    if args.out is not None:
        raise ValueError("--out saves the vectors of a file or corpus; drop TEXT or --out")
    tokenizer = _make_tokenizer(args, args.text)
    ids = tokenizer.encode(args.text)
    if len(ids) > args.max_length:
        raise ValueError(
            f"the text is {len(ids)} tokens, more than --max-length {args.max_length}; "
            "raise --max-length or embed it with --file"
        )
    embedding, positional = _make_layers(args, tokenizer.vocab_size)
    with no_grad():
        vectors = embedding(ids)
        encoded = positional(vectors)

    memory = embedding.get_memory_usage()
    print(f"tokenizer     {args.tokenizer} (vocab_size={tokenizer.vocab_size})")
    print(f"token ids     {ids}")
    print(f"embeddings    shape {vectors.shape}, dtype {vectors.dtype}")
    print(f"positional    {args.positional}, output shape {encoded.shape}")
    print(
        f"table memory  {memory['total_memory_mb']:.2f} MB "
        f"({memory['total_parameters']:,} parameters, {memory['memory_per_token_kb']:.2f} KB per token)"
    )
    print(f"\npreview: first {PREVIEW_DIMS} dimensions of the first {PREVIEW_TOKENS} position-aware vectors")
    for position in range(min(PREVIEW_TOKENS, len(ids))):
        token = tokenizer.decode([ids[position]], skip_special_tokens=False)
        values = " ".join(f"{value:+.4f}" for value in encoded.data[position, :PREVIEW_DIMS])
        print(f"  {position:>3} {token!r:>8}  [{values} ...]")
    return 0


def _embed_corpus(args: argparse.Namespace) -> int:
    if args.file is not None:
        text, source = read_text_file(args.file), str(args.file)
    else:
        text, source = builtin_corpus(), f"built-in corpus (pydoc_data.topics, Python {platform.python_version()})"

    start = time.perf_counter()
    tokenizer = _make_tokenizer(args, text)
    ids = np.asarray(tokenizer.encode(text, add_special_tokens=False), dtype=np.int64)
    tokenize_seconds = time.perf_counter() - start
    if ids.size == 0:
        raise ValueError(f"{source} holds no text to embed")

    window = args.max_length
    num_windows = -(-ids.size // window)
    windows = np.full(num_windows * window, tokenizer.pad_token_id, dtype=np.int64)
    windows[: ids.size] = ids
    windows = windows.reshape(num_windows, window)  # (num_windows, window)

    embedding, positional = _make_layers(args, tokenizer.vocab_size)
    output_shape = (num_windows, window, args.dim)
    embed_seconds = 0.0

    def embed_batches(handle: BinaryIO | None) -> None:
        nonlocal embed_seconds
        for first in range(0, num_windows, args.batch_size):
            batch = windows[first : first + args.batch_size]  # (batch, window)
            batch_start = time.perf_counter()
            with no_grad():
                encoded = positional(embedding(batch))  # (batch, window, dim)
            embed_seconds += time.perf_counter() - batch_start
            if handle is not None:
                handle.write(np.ascontiguousarray(encoded.data).tobytes())

    if args.out is None:
        embed_batches(None)
    else:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False, "shape": output_shape}

        def write_npy(handle: BinaryIO) -> None:
            np.lib.format.write_array_header_2_0(handle, header)
            embed_batches(handle)

        atomic_write(args.out, write_npy)

    memory = embedding.get_memory_usage()
    rows = [
        ("source", source),
        ("characters", len(text)),
        ("tokenizer", f"{args.tokenizer} (vocab_size={tokenizer.vocab_size})"),
        ("tokens", int(ids.size)),
        ("windows", f"{num_windows} of {window} tokens (last padded with <PAD>)"),
        ("output shape", str(output_shape)),
        ("table memory", f"{memory['total_memory_mb']:.2f} MB"),
        ("output memory", f"{np.prod(output_shape) * 4 / MB:.1f} MB"),
        ("tokenize time", f"{tokenize_seconds:.2f} s"),
        ("embed throughput", f"{ids.size / embed_seconds:,.0f} tokens/s"),
    ]
    if args.out is not None:
        rows.append(("saved", str(args.out)))
    print(format_table(("quantity", "value"), rows))
    return 0


# ---------------------------------------------------------------------- profile


def _run_profile(args: argparse.Namespace) -> int:
    from tinytorch.profiling import EmbeddingProfiler, plot_lookup_throughput, plot_memory_scaling

    rng = tinytorch.manual_seed(args.seed)
    profiler = EmbeddingProfiler(repeats=args.repeats, rng=rng)
    bandwidth = profiler.measure_memory_bandwidth()
    layer = Embedding(args.vocab_size, args.dim, rng=rng)
    lookup = profiler.measure_lookup_performance(layer, args.batch_sizes, args.seq_lengths)
    scaling = profiler.analyze_memory_scaling([1_000, 10_000, args.vocab_size], [64, 256, args.dim])
    positional = profiler.compare_positional_encodings()

    if args.plot is not None:
        args.plot.mkdir(parents=True, exist_ok=True)
        figures = {
            "positional_encoding.png": PositionalEncoding(256, max_seq_length=100).visualize_encoding(100, 64),
            "memory_scaling.png": plot_memory_scaling(scaling),
            "lookup_throughput.png": plot_lookup_throughput(lookup),
        }
        for name, figure in figures.items():
            atomic_write(args.plot / name, lambda handle, figure=figure: figure.savefig(handle, format="png", dpi=120))

    if args.json:
        report = {
            "tinytorch": tinytorch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "table": {"vocab_size": args.vocab_size, "embedding_dim": args.dim},
            "machine_bandwidth": bandwidth,
            "lookup": lookup,
            "memory_scaling": scaling,
            "positional": positional,
        }
        print(json.dumps(report, indent=2))
        return 0

    print(
        f"Machine copy bandwidth: {bandwidth['copy_bandwidth_gb_s']:.1f} GB/s "
        f"(one thread {bandwidth['one_thread_gb_s']:.1f}, two threads {bandwidth['two_threads_gb_s']:.1f})\n"
    )
    print(f"Lookup, table {args.vocab_size:,} x {args.dim} float32 (medians of {args.repeats})")
    print(
        format_table(
            ("batch", "seq", "tokens", "ms", "tokens/s", "MB/s", "of bandwidth"),
            [
                (
                    r["batch_size"],
                    r["seq_length"],
                    r["total_tokens"],
                    r["lookup_time_ms"],
                    r["tokens_per_second"],
                    r["memory_bandwidth_mb_s"],
                    f"{r['bandwidth_fraction']:.0%}",
                )
                for r in lookup.values()
            ],
        )
    )
    print("\nMemory scaling (lookup of 32 x 128 ids)")
    print(
        format_table(
            ("vocab_size", "embedding_dim", "parameters", "MB", "lookup ms"),
            [(r["vocab_size"], r["embedding_dim"], r["total_parameters"], r["memory_mb"], r["lookup_time_ms"]) for r in scaling.values()],
        )
    )
    print("\nPositional encodings (8 x 100 x 256 input)")
    print(
        format_table(
            ("kind", "forward ms", "MB", "parameters", "deterministic", "longest sequence"),
            [
                (name, r["computation_time_ms"], r["memory_usage_mb"], r["parameters"], r["deterministic"], r["extrapolation"] or "no limit")
                for name, r in positional.items()
            ],
        )
    )
    if args.plot is not None:
        print(f"\nFigures written to {args.plot}/")
    return 0


# ---------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tinytorch`` command and return its exit status."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    handlers = {"embed": _run_embed, "profile": _run_profile}
    try:
        return handlers[args.command](args)
    except (ValueError, OSError, ImportError) as error:
        # Bad input from the user (a missing file, a malformed vocabulary, a
        # missing extra): one line, no traceback.
        print(f"tinytorch: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tinytorch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
