"""The ``tinytorch`` command: parse arguments, call the library, render the results.

Subcommands:
    embed               text -> token ids -> vectors -> position-aware vectors
    profile             lookup throughput against the machine's memory bandwidth
    train               learn embeddings with a small language model; report bits per character
    compare-positional  the same model with sinusoidal, learned and no positions
    neighbors           nearest tokens in a trained table
    generate            sample text from a trained model
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import logging
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import numpy as np

import tinytorch
from tinytorch._atomic import atomic_write, atomic_write_text
from tinytorch._checks import check_non_negative, describe
from tinytorch._plotting import import_figure
from tinytorch.checkpoint import check_replaceable
from tinytorch.core import kernels
from tinytorch.core.embeddings import BYTES_PER_MB as MB
from tinytorch.core.embeddings import Embedding, LearnedPositionalEmbedding, PositionalEncoding
from tinytorch.core.tensor import no_grad
from tinytorch.core.tokenization import FIRST_MERGE_ID, BPETokenizer, CharTokenizer
from tinytorch.data import builtin_corpus, read_text_file
from tinytorch.models import POSITIONAL_KINDS, generate
from tinytorch.training import (
    TOKENIZERS,
    PreparedText,
    TrainConfig,
    TrainResult,
    evaluate_bits_per_char,
    load_trained_model,
    prepare_text,
    save_trained_model,
    train_language_model,
)

PREVIEW_TOKENS = 3
PREVIEW_DIMS = 6

# The files that train writes into --out beside checkpoint/, and that profile
# writes into --plot. Both are checked before any work, and written by these names.
REPORT_FILE = "report.json"
LOSS_CURVE_FIGURE = "loss_curve.png"
EMBEDDINGS_PCA_FIGURE = "embeddings_pca.png"
TRAIN_FILES = (REPORT_FILE, LOSS_CURVE_FIGURE, EMBEDDINGS_PCA_FIGURE)
POSITIONAL_FIGURE = "positional_encoding.png"
MEMORY_SCALING_FIGURE = "memory_scaling.png"
LOOKUP_THROUGHPUT_FIGURE = "lookup_throughput.png"
PROFILE_FIGURES = (POSITIONAL_FIGURE, MEMORY_SCALING_FIGURE, LOOKUP_THROUGHPUT_FIGURE)

# The options that set array sizes, per command, named when memory runs out.
SIZE_OPTIONS = {
    "embed": ("--dim", "--max-length", "--batch-size", "--bpe-vocab-size"),
    "profile": ("--vocab-size", "--dim", "--batch-sizes", "--seq-lengths"),
    "train": ("--context", "--dim", "--hidden", "--heads", "--batch-size", "--bpe-vocab-size"),
    "compare-positional": ("--context", "--dim", "--hidden", "--heads", "--batch-size", "--bpe-vocab-size"),
}


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


def _bpe_vocab_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < FIRST_MERGE_ID:
        raise argparse.ArgumentTypeError(
            f"expected an integer >= {FIRST_MERGE_ID}, received {text!r}; "
            f"the special tokens and the 256 byte values take the first {FIRST_MERGE_ID} ids"
        )
    return value


def _file_path(text: str) -> Path:
    """Return ``text`` as a file path; ``Path`` would drop a trailing separator, which marks a directory."""
    if text.endswith(tuple(separator for separator in (os.sep, os.altsep) if separator)):
        raise argparse.ArgumentTypeError(f"expected a file name, received {text!r}, which ends in a separator")
    return Path(text)


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
        "--bpe-vocab-size", type=_bpe_vocab_size, default=1000, help="vocab_size when training BPE (default: 1000)"
    )
    embed.add_argument(
        "--positional", choices=("sinusoidal", "learned"), default="sinusoidal", help="positional encoding (default: sinusoidal)"
    )
    embed.add_argument("--batch-size", type=_positive_int, default=32, help="windows per batch (default: 32)")
    embed.add_argument("--out", type=_file_path, help="save the vectors of a file or corpus to this .npy file")
    embed.add_argument("--seed", type=_non_negative_int, default=0, help="seed for the table's initial values (default: 0)")

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
    profile.add_argument("--seed", type=_non_negative_int, default=0, help="seed for random ids and tables (default: 0)")
    profile.add_argument(
        "--positional-report",
        type=Path,
        metavar="FILE",
        help="compare.json from compare-positional, to show measured held-out bits per character",
    )

    defaults = TrainConfig()
    train = commands.add_parser(
        "train",
        help="train a small language model and report held-out bits per character",
        description=(
            "Train a one-block causal transformer on the built-in corpus (or --corpus FILE), then report "
            "held-out bits per character beside unigram and bigram baselines."
        ),
    )
    _add_training_options(train, defaults)
    train.add_argument("--out", type=Path, default=Path("tinytorch-run"), help="output directory (default: tinytorch-run)")

    compare = commands.add_parser(
        "compare-positional",
        help="train with sinusoidal, learned and no positions; compare held-out bits per character",
        description=(
            "Train the same model three times (sinusoidal, learned, none) with the same steps and seed, and "
            "report held-out bits per character at the training context and at twice that context."
        ),
    )
    _add_training_options(compare, defaults, positional=False)
    compare.add_argument("--out", type=_file_path, help="also write the results to this JSON file")

    neighbors = commands.add_parser("neighbors", help="list the tokens nearest to TOKEN in a trained table")
    neighbors.add_argument("token", help="a string that is exactly one token of the checkpoint's tokenizer")
    neighbors.add_argument("--checkpoint", type=Path, required=True, help="checkpoint directory written by train")
    neighbors.add_argument("-k", type=_positive_int, default=10, help="how many neighbours to list (default: 10)")

    generate = commands.add_parser("generate", help="sample a continuation of a prompt from a trained model")
    generate.add_argument("--checkpoint", type=Path, required=True, help="checkpoint directory written by train")
    generate.add_argument("--prompt", default="", help="text to continue (default: start from <BOS>)")
    generate.add_argument("--length", type=_positive_int, default=200, help="tokens to generate (default: 200)")
    generate.add_argument(
        "--temperature", type=_non_negative_float, default=0.8, help="sampling temperature; 0 is greedy (default: 0.8)"
    )
    generate.add_argument("--seed", type=_non_negative_int, default=0, help="sampling seed (default: 0)")
    return parser


def _add_training_options(parser: argparse.ArgumentParser, defaults: TrainConfig, *, positional: bool = True) -> None:
    parser.add_argument("--corpus", type=Path, help="UTF-8 text file to train on (default: the built-in corpus)")
    parser.add_argument("--tokenizer", choices=TOKENIZERS, default=defaults.tokenizer, help="tokenizer (default: char)")
    parser.add_argument(
        "--bpe-vocab-size", type=_bpe_vocab_size, default=defaults.bpe_vocab_size, help="BPE vocab_size (default: 1000)"
    )
    if positional:
        parser.add_argument(
            "--positional", choices=POSITIONAL_KINDS, default=defaults.positional, help="positional information (default: sinusoidal)"
        )
    parser.add_argument("--context", type=_positive_int, default=defaults.context, help="window length in tokens (default: 64)")
    parser.add_argument("--dim", type=_positive_int, default=defaults.embedding_dim, help="embedding_dim (default: 64)")
    parser.add_argument("--heads", type=_positive_int, default=defaults.num_heads, help="attention heads (default: 4)")
    parser.add_argument("--hidden", type=_positive_int, default=defaults.hidden_dim, help="MLP width (default: 256)")
    parser.add_argument("--tie-weights", action="store_true", help="reuse the embedding table as the output layer")
    parser.add_argument("--steps", type=_positive_int, default=defaults.steps, help="training steps (default: 1500)")
    parser.add_argument("--batch-size", type=_positive_int, default=defaults.batch_size, help="windows per step (default: 32)")
    parser.add_argument("--lr", type=_non_negative_float, default=defaults.lr, help="peak AdamW learning rate (default: 0.003)")
    parser.add_argument("--seed", type=_non_negative_int, default=defaults.seed, help="seed for weights and batches (default: 0)")


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, received {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, received {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, received {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, received {text!r}")
    return value


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


def _read_input_text(path: Path, option: str) -> str:
    """Read the UTF-8 text file given with ``option``, turning an OS error into a message that names the option."""
    try:
        return read_text_file(path)
    except OSError as error:
        raise ValueError(
            f"cannot read {option} {str(path)!r} ({error.strerror or error}); "
            "give the path of an existing, readable UTF-8 text file"
        ) from error
    except ValueError as error:  # a directory, or text that is not UTF-8
        raise ValueError(f"{option}: {error}") from error


def _prepare_output_directory(path: Path, option: str, files: Sequence[str]) -> list[Path]:
    """Create ``path`` and check that ``files`` can be written in it, so that a bad path fails before long work.

    Returns the directories this call created, deepest first, for
    ``_remove_created_directories`` to remove again if the command fails.
    """
    _check_link_resolves(path, option)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {str(path)!r} is a file; give a directory for the outputs")

    # Each directory on the path is made here one at a time, and only those that
    # mkdir made are recorded. Working the list out from the path as written
    # would be wrong for "new/../old", whose "old" does exist.
    created: list[Path] = []
    try:
        for depth in range(1, len(path.parts) + 1):
            directory = Path(*path.parts[:depth])
            try:
                directory.mkdir()
            except FileExistsError:
                continue
            created.insert(0, directory)
        if not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(path))
    except OSError as error:
        _remove_created_directories(created)
        raise ValueError(
            f"cannot create {option} directory {str(path)!r} ({error.strerror or error}); give another {option}"
        ) from error
    try:
        _check_writable(path, f"{option} {str(path)!r}")
        for name in files:
            _check_not_special(path / name, option)
    except ValueError:
        _remove_created_directories(created)
        raise
    return created


def _remove_created_directories(created: Sequence[Path]) -> None:
    """Remove the directories that ``_prepare_output_directory`` created, deepest first, where they are empty."""
    for directory in created:
        # rmdir removes only an empty directory. One that fails (not empty, gone,
        # or a ".." step of the path) does not stop the others.
        with contextlib.suppress(OSError):
            directory.rmdir()


def _check_link_resolves(path: Path, option: str) -> None:
    """Reject a symbolic link at ``path`` whose target is missing, or that is part of a loop of links."""
    if path.is_symlink() and not path.exists():
        raise ValueError(
            f"{option} {str(path)!r} is a symbolic link to {os.readlink(path)!r}, which does not resolve "
            f"(its target is missing, or the links form a loop); fix the link or give another {option}"
        )


def _check_writable(directory: Path, described: str) -> None:
    """Raise ``ValueError`` unless a temporary file can be created and deleted in ``directory``.

    ``described`` is the option and path that the message starts with.
    """
    try:
        # realpath, because tempfile applies abspath, which drops "link/.." before the OS follows the link.
        with tempfile.NamedTemporaryFile(dir=os.path.realpath(directory), prefix=".tinytorch-write-test-"):
            pass
    except OSError as error:
        raise ValueError(
            f"{described}: cannot create files in {str(directory)!r} ({error.strerror or error}); "
            "give a path in a writable directory"
        ) from error


def _check_not_special(path: Path, option: str) -> None:
    """Reject an unresolvable link, or an existing directory, pipe or device at ``path``, which an atomic write cannot replace."""
    _check_link_resolves(path, option)
    if path.exists() and not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise ValueError(f"cannot write {str(path)!r}: it is {kind}; remove it or give another {option}")
    if path.is_symlink():  # atomic_write replaces the link's target, in the target's directory
        _check_writable(Path(os.path.realpath(path)).parent, f"{option} {str(path)!r}")


def _check_output_file(path: Path | None, option: str = "--out") -> None:
    """Check before any long work that the file ``path`` can be written."""
    if path is None:
        return
    try:
        path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        pass  # the checks below name the missing or wrong directory
    except OSError as error:  # a file name that is too long, for example
        raise ValueError(f"{option} {str(path)!r} cannot be used ({error.strerror or error}); give another {option}") from error
    if path.is_dir():
        raise ValueError(f"{option} {str(path)!r} is a directory; give a file name inside it")
    _check_not_special(path, option)
    # atomic_write writes into the directory of realpath(path): beside a link's
    # target, and after a "link/.." in the parent, where the OS takes it.
    directory = Path(os.path.realpath(path)).parent if path.is_symlink() or os.pardir in path.parts else path.parent
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{option} {str(path)!r}: {str(directory)!r} is a file, not a directory; give another {option}")
    if not directory.is_dir():
        raise ValueError(f"{option} {str(path)!r}: directory {str(directory)!r} does not exist; create it first or give another {option}")
    _check_writable(directory, f"{option} {str(path)!r}")


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
    _check_output_file(args.out)
    if args.file is not None:
        text, source = _read_input_text(args.file, "--file"), str(args.file)
    else:
        text, source = builtin_corpus(), f"built-in corpus (pydoc_data.topics, Python {platform.python_version()})"

    start = time.perf_counter()
    tokenizer = _make_tokenizer(args, text)
    ids = np.asarray(tokenizer.encode(text, add_special_tokens=False), dtype=np.int64)
    tokenize_seconds = time.perf_counter() - start
    if ids.size == 0:
        raise ValueError(f"{source} is empty: there is no text to embed")

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


def _read_positional_report(path: Path) -> dict[str, Any]:
    """Return the ``results`` of a compare-positional report, checked before any measuring."""
    text = _read_input_text(path, "--positional-report")
    try:
        report = json.loads(text)
    except ValueError as error:  # JSONDecodeError, or an integer of more digits than Python converts
        raise ValueError(f"--positional-report {str(path)!r} is not valid JSON: {error}") from None
    except RecursionError:
        raise ValueError(f"--positional-report {str(path)!r} is not valid JSON: its arrays or objects are nested too deeply") from None

    problem = _positional_report_problem(report)
    if problem is not None:
        raise ValueError(
            f"--positional-report {str(path)!r} is not a complete compare-positional report (written with --out): {problem}"
        )
    return report["results"]


def _positional_report_problem(report: Any) -> str | None:
    """Return what makes ``report`` unusable, or None when it is complete and every figure in it is valid."""
    if not isinstance(report, dict) or not isinstance(report.get("results"), dict):
        return "it has no 'results' object"
    interrupted = report.get("interrupted", False)
    if not isinstance(interrupted, bool):
        return f"'interrupted' must be true or false; received {describe(interrupted)}"
    if interrupted:
        return "compare-positional was interrupted, so the encodings were not trained for the same number of steps; run it again to the end"
    problem = _figure_problem("'bigram_bits_per_char'", report.get("bigram_bits_per_char"))
    if problem is not None:
        return problem
    config = report.get("config")
    if not isinstance(config, dict):
        return f"'config' must be an object; received {describe(config)}"
    try:
        steps = TrainConfig(**config).steps
    except (TypeError, ValueError) as error:
        return f"'config' is not a valid training configuration: {error}"

    results = report["results"]
    for kind in ("sinusoidal", "learned"):
        if kind not in results:
            return f"it has no measured result for {kind!r}"
    for kind, entry in results.items():
        if kind not in POSITIONAL_KINDS:
            return f"'results' has the unknown positional kind {kind!r}; expected keys from {list(POSITIONAL_KINDS)}"
        if not isinstance(entry, dict):
            return f"results[{kind!r}] must be an object; received {describe(entry)}"
        steps_done = entry.get("steps_done")
        # A complete comparison trains every encoding for config's steps. Reports
        # written before the "interrupted" flag existed are still read, so this
        # also catches one cut short by Ctrl-C.
        if isinstance(steps_done, bool) or not isinstance(steps_done, int) or steps_done != steps:
            return f"results[{kind!r}]['steps_done'] must equal the config's steps ({steps}); received {describe(steps_done)}"
        for key in ("tokens_per_second", "heldout_bits_per_char", "heldout_bits_per_char_2x_context"):
            # Only the 2x-context figure may be null, because it is null where the encoding cannot run that long.
            if key not in entry:
                return f"results[{kind!r}] has no {key!r}"
            value = entry[key]
            if value is None and key == "heldout_bits_per_char_2x_context":
                continue
            problem = _figure_problem(f"results[{kind!r}][{key!r}]", value)
            if problem is not None:
                return problem
    return None


def _figure_problem(name: str, value: Any) -> str | None:
    """Return why ``value`` is not a finite number >= 0, or None when it is one."""
    try:
        check_non_negative(name, value)
    except (TypeError, ValueError) as error:
        return str(error)
    return None


def _run_profile(args: argparse.Namespace) -> int:
    measured = None if args.positional_report is None else _read_positional_report(args.positional_report)
    created: list[Path] = []
    if args.plot is not None:
        import_figure()  # fail now, not after minutes of measuring, when matplotlib is missing
        created = _prepare_output_directory(args.plot, "--plot", PROFILE_FIGURES)
    try:
        return _profile_and_report(args, measured)
    except BaseException:
        _remove_created_directories(created)  # only directories that are still empty
        raise


def _profile_and_report(args: argparse.Namespace, measured: dict[str, Any] | None) -> int:
    from tinytorch.profiling import EmbeddingProfiler, plot_lookup_throughput, plot_memory_scaling

    rng = tinytorch.manual_seed(args.seed)
    profiler = EmbeddingProfiler(repeats=args.repeats, rng=rng)
    bandwidth = profiler.measure_memory_bandwidth()
    # The table is freed when the lookups are timed, before the scaling tables are built.
    lookup = profiler.measure_lookup_performance(Embedding(args.vocab_size, args.dim, rng=rng), args.batch_sizes, args.seq_lengths)
    scaling = profiler.analyze_memory_scaling([1_000, 10_000, args.vocab_size], [64, 256, args.dim])
    positional = profiler.compare_positional_encodings(measured=measured)

    if args.plot is not None:
        figures = {
            POSITIONAL_FIGURE: PositionalEncoding(256, max_seq_length=100).visualize_encoding(100, 64),
            MEMORY_SCALING_FIGURE: plot_memory_scaling(scaling),
            LOOKUP_THROUGHPUT_FIGURE: plot_lookup_throughput(lookup),
        }
        for name, figure in figures.items():
            atomic_write(args.plot / name, lambda handle, figure=figure: figure.savefig(handle, format="png", dpi=120))

    if args.json:
        report = {
            "tinytorch": tinytorch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "kernels": kernels.active_implementation(),
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
    print(f"Embedding kernels: {kernels.active_implementation()} (set {kernels.ENVIRONMENT_VARIABLE}=numpy or numba to choose)")
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
    headers = ["kind", "forward ms", "MB", "parameters", "deterministic", "longest sequence"]
    rows = [
        [name, r["computation_time_ms"], r["memory_usage_mb"], r["parameters"], r["deterministic"], r["extrapolation"] or "no limit"]
        for name, r in positional.items()
    ]
    if measured is not None:
        headers += ["held-out bits/char", "at 2x context"]
        for row, r in zip(rows, positional.values(), strict=True):
            at_2x = r["heldout_bits_per_char_2x_context"]
            row += [r["heldout_bits_per_char"], "cannot run" if at_2x is None else at_2x]
    print(format_table(headers, rows))
    if args.plot is not None:
        print(f"\nFigures written to {args.plot}/")
    return 0


# ---------------------------------------------------------------------- train


def _train_config(args: argparse.Namespace, positional: str) -> TrainConfig:
    return TrainConfig(
        tokenizer=args.tokenizer,
        bpe_vocab_size=args.bpe_vocab_size,
        positional=positional,
        context=args.context,
        embedding_dim=args.dim,
        num_heads=args.heads,
        hidden_dim=args.hidden,
        tie_weights=args.tie_weights,
        batch_size=args.batch_size,
        steps=args.steps,
        lr=args.lr,
        seed=args.seed,
    )


def _load_corpus(path: Path | None) -> tuple[str, str]:
    if path is not None:
        return _read_input_text(path, "--corpus"), str(path)
    return builtin_corpus(), f"built-in corpus (pydoc_data.topics, Python {platform.python_version()})"


@contextlib.contextmanager
def _stop_on_interrupt() -> Iterator[Callable[[], bool]]:
    """Turn the first Ctrl-C into a request to stop after the current step; a second one aborts."""
    requested = False

    def handle(signum: int, frame: Any) -> None:
        nonlocal requested
        if requested:
            raise KeyboardInterrupt
        requested = True
        print("\ntinytorch: stopping after this step (Ctrl-C again to abort)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield lambda: requested
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _progress(total: int, label: str) -> Iterator[Callable[[int, float, float], None]]:
    """Yield a per-step callback: a tqdm progress bar on a terminal, otherwise a line every 10%."""
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is None or not sys.stderr.isatty():
        every = max(1, total // 10)

        def report(step: int, loss: float, tokens_per_second: float) -> None:
            if step % every == 0 or step == total:
                print(f"{label}: step {step}/{total}  loss {loss:.3f}  {tokens_per_second:,.0f} tokens/s", file=sys.stderr)

        yield report
        return

    bar = tqdm(total=total, desc=label, unit="step", file=sys.stderr, dynamic_ncols=True)

    def update(step: int, loss: float, tokens_per_second: float) -> None:
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{loss:.3f}", tokens_s=f"{tokens_per_second:,.0f}", refresh=False)

    try:
        yield update
    finally:
        bar.close()


def _train_one(config: TrainConfig, prepared: PreparedText, label: str) -> TrainResult:
    with _stop_on_interrupt() as should_stop, _progress(config.steps, label) as on_step:
        return train_language_model(
            config, prepared.train_ids, prepared.tokenizer, on_step=on_step, should_stop=should_stop
        )


def _token_label(tokenizer: CharTokenizer | BPETokenizer, token_id: int) -> str:
    """Return a printable ASCII label: whitespace and non-ASCII characters are escaped.

    Escaping also keeps matplotlib from warning about glyphs its font lacks.
    """
    text = tokenizer.decode([token_id], skip_special_tokens=False)
    if text and text.isascii() and text.isprintable() and text.strip() == text:
        return text
    return ascii(text)


def _run_train(args: argparse.Namespace) -> int:
    config = _train_config(args, args.positional)
    created = _prepare_output_directory(args.out, "--out", TRAIN_FILES)
    try:
        _check_checkpoint_target(args.out)
        return _train_and_save(args, config)
    except BaseException:
        # A failed run leaves no empty --out behind, but never removes a directory that existed before.
        _remove_created_directories(created)
        raise


def _check_checkpoint_target(out: Path) -> None:
    """Raise ``ValueError`` before training if saving ``out/checkpoint`` would be rejected."""
    checkpoint = out / "checkpoint"
    try:
        # Resolved as save_checkpoint resolves it: a link in --out is followed before a "..".
        check_replaceable(Path(os.path.realpath(out)) / "checkpoint")
    except ValueError as error:
        raise ValueError(
            f"cannot save the checkpoint in --out {str(out)!r}: {error}; "
            f"empty or remove {str(checkpoint)!r}, or give another --out"
        ) from error


def _train_and_save(args: argparse.Namespace, config: TrainConfig) -> int:
    text, source = _load_corpus(args.corpus)
    prepared = prepare_text(config, text)
    result = _train_one(config, prepared, "train")
    if result.steps_done == 0:
        raise ValueError("training stopped before its first step; nothing to save")

    heldout_bpc = evaluate_bits_per_char(result.model, prepared.heldout_ids, prepared.heldout_chars, window=config.context)
    bigram = prepared.baselines["bigram_bits_per_char"]
    report = {
        "tinytorch": tinytorch.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "corpus": source,
        "train_characters": prepared.train_chars,
        "heldout_characters": prepared.heldout_chars,
        "config": config.to_dict(),
        "vocab_size": prepared.tokenizer.vocab_size,
        "parameters": result.model.num_parameters(),
        "steps_done": result.steps_done,
        "interrupted": result.interrupted,
        "train_seconds": result.train_seconds,
        "tokens_per_second": result.tokens_per_second,
        "final_train_loss": result.losses[-1],
        "heldout_bits_per_char": heldout_bpc,
        **prepared.baselines,
        "improvement_over_bigram": 1.0 - heldout_bpc / bigram,
        "losses": result.losses,
    }

    # The checkpoint carries its own summary, so it stays self-describing even
    # if the run is interrupted between writing it and writing report.json.
    summary = {key: value for key, value in report.items() if key != "losses"}
    save_trained_model(args.out / "checkpoint", result.model, prepared.tokenizer, config, metadata=summary)
    atomic_write_text(args.out / REPORT_FILE, json.dumps(report, indent=2) + "\n")
    figure_note = _write_training_figures(args.out, result, prepared.tokenizer)

    print(
        format_table(
            ("quantity", "value"),
            [
                ("corpus", source),
                ("tokenizer", f"{config.tokenizer} (vocab_size={prepared.tokenizer.vocab_size})"),
                ("model", f"{result.model.num_parameters():,} parameters, {config.positional} positions"),
                ("steps", f"{result.steps_done} of {config.steps}" + (" (stopped early)" if result.interrupted else "")),
                ("train time", f"{result.train_seconds:.1f} s, {result.tokens_per_second:,.0f} tokens/s"),
                ("held-out bits/char", f"{heldout_bpc:.3f}"),
                ("bigram baseline", f"{bigram:.3f}"),
                ("unigram baseline", f"{prepared.baselines['unigram_bits_per_char']:.3f}"),
                ("vs bigram", _relative_change(heldout_bpc, bigram)),
                ("saved", f"{args.out}/ (checkpoint/, report.json{figure_note})"),
            ],
        )
    )
    return 0


def _relative_change(value: float, reference: float) -> str:
    change = 1.0 - value / reference
    return f"{abs(change):.1%} {'lower' if change >= 0 else 'higher'}"


def _write_training_figures(out: Path, result: TrainResult, tokenizer: CharTokenizer | BPETokenizer) -> str:
    """Write the loss curve and the PCA map; return the note for the summary line."""
    try:
        from tinytorch.visualize import plot_embedding_pca, plot_loss_curve

        table = result.model.token_embedding.weight.data
        labels = [_token_label(tokenizer, token_id) for token_id in range(table.shape[0])]
        figures = {LOSS_CURVE_FIGURE: plot_loss_curve(result.losses), EMBEDDINGS_PCA_FIGURE: plot_embedding_pca(table, labels)}
    except ImportError:
        return "; install the plot extra for PNG figures"
    for name, figure in figures.items():
        atomic_write(out / name, lambda handle, figure=figure: figure.savefig(handle, format="png", dpi=120))
    return ", " + ", ".join(figures)


def _run_compare_positional(args: argparse.Namespace) -> int:
    _check_output_file(args.out)
    text, source = _load_corpus(args.corpus)
    base = _train_config(args, "sinusoidal")
    prepared = prepare_text(base, text)
    results: dict[str, dict[str, Any]] = {}
    interrupted = False
    for kind in POSITIONAL_KINDS:
        config = dataclasses.replace(base, positional=kind)
        result = _train_one(config, prepared, kind)
        entry: dict[str, Any] = {
            "steps_done": result.steps_done,
            "tokens_per_second": result.tokens_per_second,
            "heldout_bits_per_char": evaluate_bits_per_char(
                result.model, prepared.heldout_ids, prepared.heldout_chars, window=config.context
            ),
            "heldout_bits_per_char_2x_context": None,
        }
        if result.model.max_seq_length is None or result.model.max_seq_length >= 2 * config.context:
            entry["heldout_bits_per_char_2x_context"] = evaluate_bits_per_char(
                result.model, prepared.heldout_ids, prepared.heldout_chars, window=2 * config.context
            )
        results[kind] = entry
        if result.interrupted:
            interrupted = True
            break

    # After a Ctrl-C the report keeps the figures measured so far. The encodings
    # were not trained for the same number of steps, so the report is marked
    # "interrupted" and profile --positional-report rejects it. The command
    # exits with 130, the usual status after SIGINT, so that scripts do not
    # take the partial result for a complete comparison.
    report = {
        "corpus": source,
        "config": base.to_dict(),
        "bigram_bits_per_char": prepared.baselines["bigram_bits_per_char"],
        "interrupted": interrupted,
        "results": results,
    }
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")

    context = base.context
    print(f"Held-out bits per character, {base.steps} steps, seed {base.seed}, {source}")
    print(
        format_table(
            ("positional", f"context {context}", f"context {2 * context}", "tokens/s"),
            [
                (
                    kind,
                    f"{entry['heldout_bits_per_char']:.3f}",
                    "cannot run" if entry["heldout_bits_per_char_2x_context"] is None else f"{entry['heldout_bits_per_char_2x_context']:.3f}",
                    entry["tokens_per_second"],
                )
                for kind, entry in results.items()
            ],
        )
    )
    print(f"bigram baseline: {prepared.baselines['bigram_bits_per_char']:.3f} bits per character")
    if interrupted:
        note = f"tinytorch: interrupted during {kind}; the comparison is incomplete"
        if args.out is not None:
            note += f' (saved to {args.out} with "interrupted": true)'
        print(note, file=sys.stderr)
        return 130
    return 0


# ---------------------------------------------------------------------- neighbors and generate


def _run_neighbors(args: argparse.Namespace) -> int:
    model, tokenizer, _ = load_trained_model(args.checkpoint)
    ids = tokenizer.encode(args.token, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(
            f"TOKEN must be exactly one token of the checkpoint's tokenizer; {args.token!r} is {len(ids)} tokens"
        )
    if ids[0] == tokenizer.unk_token_id:
        raise ValueError(f"TOKEN {args.token!r} is not in the checkpoint's vocabulary (it maps to <UNK>)")
    neighbours = model.token_embedding.most_similar(ids[0], k=args.k)
    print(f"Nearest tokens to {args.token!r} (id {ids[0]}) by cosine similarity")
    print(
        format_table(
            ("rank", "token", "id", "cosine"),
            [(rank, _token_label(tokenizer, token_id), token_id, score) for rank, (token_id, score) in enumerate(neighbours, 1)],
        )
    )
    return 0


def _run_generate(args: argparse.Namespace) -> int:
    model, tokenizer, _ = load_trained_model(args.checkpoint)
    prompt_ids = [tokenizer.bos_token_id, *tokenizer.encode(args.prompt, add_special_tokens=False)]
    ids = generate(model, prompt_ids, args.length, temperature=args.temperature, rng=np.random.default_rng(args.seed))
    print(args.prompt + tokenizer.decode(ids[len(prompt_ids) :]))
    return 0


# ---------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tinytorch`` command and return its exit status."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    handlers = {
        "embed": _run_embed,
        "profile": _run_profile,
        "train": _run_train,
        "compare-positional": _run_compare_positional,
        "neighbors": _run_neighbors,
        "generate": _run_generate,
    }
    try:
        return handlers[args.command](args)
    except (ValueError, OSError, ImportError, FloatingPointError) as error:
        # Bad input from the user (a missing file, a malformed vocabulary, a
        # missing extra): one line, no traceback.
        print(f"tinytorch: error: {error}", file=sys.stderr)
        return 2
    except MemoryError:
        options = SIZE_OPTIONS.get(args.command)
        if options is None:
            advice = "the --checkpoint model does not fit in this machine's memory"
        else:
            advice = f"use smaller values of {', '.join(options)}"
        print(f"tinytorch: error: not enough memory for {args.command}; {advice}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tinytorch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
