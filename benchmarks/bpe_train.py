"""Time BPETokenizer training and encoding on the built-in corpus.

Run with ``python benchmarks/bpe_train.py``. The script trains
``BPETokenizer(vocab_size=1000)`` on ``builtin_corpus()`` several times and
prints the median training time, then times one encode of the whole corpus and
checks that decoding it returns the corpus. It also prints the Python and NumPy
versions and the machine, because the figures depend on both.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

from tinytorch.core.tokenization import BPETokenizer
from tinytorch.data import builtin_corpus


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=1000, help="target BPE vocabulary size (ids)")
    parser.add_argument("--repeats", type=int, default=3, help="number of training runs to time")
    arguments = parser.parse_args()

    corpus = builtin_corpus()
    print(f"python {platform.python_version()}, numpy {np.__version__}")
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"corpus: {len(corpus):,} characters, {len(corpus.encode('utf-8')):,} UTF-8 bytes")

    train_seconds = []
    tokenizer = BPETokenizer(vocab_size=arguments.vocab_size)
    for _ in range(arguments.repeats):
        tokenizer = BPETokenizer(vocab_size=arguments.vocab_size)
        start = time.perf_counter()
        tokenizer.train(corpus)
        train_seconds.append(time.perf_counter() - start)
    runs = ", ".join(f"{seconds:.3f}" for seconds in train_seconds)
    print(
        f"train to vocab_size {tokenizer.vocab_size}: median {statistics.median(train_seconds):.3f} s "
        f"over {arguments.repeats} runs ({runs})"
    )

    start = time.perf_counter()
    ids = tokenizer.encode(corpus)
    encode_seconds = time.perf_counter() - start
    print(
        f"encode whole corpus: {encode_seconds:.3f} s, {len(ids):,} ids "
        f"({len(corpus.encode('utf-8')) / len(ids):.2f} bytes per id)"
    )

    round_trip = tokenizer.decode(ids) == corpus
    print(f"round trip decode(encode(corpus)) == corpus: {round_trip}")
    return 0 if round_trip else 1


if __name__ == "__main__":
    sys.exit(main())
