"""Train the reference language model in tinytorch and in PyTorch, and compare them.

Run with ``python benchmarks/train_vs_torch.py``. Both sides train the same
model (``TransformerLM`` with the ``TrainConfig`` defaults) from the same
initial weights on the same batches, with the same AdamW settings, learning
rate schedule and gradient clipping, in one process on one machine. The script
then reports two criteria:

* held-out loss: ``|bpc_tinytorch - bpc_torch| / bpc_torch`` is at most 5%;
* training throughput: tinytorch's tokens per second are at least 0.4 times
  PyTorch's.

The PyTorch side is written here with ``torch.nn`` layers and the same
explicit masked-softmax attention as tinytorch. Its initial weights are
copied from a freshly built tinytorch model, and its batches come from the
same NumPy generator, drawn in the same order as in ``train_language_model``.
The output is Markdown that can be pasted into ``docs/benchmarks.md``. The
exit status is 0 whether the criteria pass or fail, because this is a
measurement. It is 2 only when PyTorch is missing or an argument is invalid.

PyTorch is a benchmark and test dependency, not a tinytorch dependency:
``pip install torch==2.13.0``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import tinytorch
from tinytorch.core.tensor import Tensor
from tinytorch.data import builtin_corpus
from tinytorch.models import POSITIONAL_KINDS, TransformerLM
from tinytorch.training import (
    TrainConfig,
    build_tokenizer,
    encode_ids,
    evaluate_bits_per_char,
    learning_rate,
    ngram_baselines,
    sample_batch,
    split_text,
    Tokenizer,
    train_language_model,
)

MAX_LOSS_DIFFERENCE = 0.05  # relative to PyTorch's held-out bits per character
MIN_THROUGHPUT_RATIO = 0.4  # tinytorch tokens/s over PyTorch tokens/s
TAIL_STEPS = 100  # training losses averaged at the end of each run
EARLY_STEPS = 10  # steps over which the two loss trajectories are compared closely


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; received {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0; received {value}")
    return value


def parse_arguments() -> argparse.Namespace:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=positive_int, default=defaults.steps, help="training steps of each full run"
    )
    parser.add_argument(
        "--positional",
        choices=POSITIONAL_KINDS,
        default=defaults.positional,
        help="positional encoding of the model (default: %(default)s)",
    )
    parser.add_argument(
        "--timing-repeats",
        type=non_negative_int,
        default=3,
        help="short timing runs per library after the full runs, alternating PyTorch and tinytorch; 0 skips them",
    )
    parser.add_argument(
        "--timing-steps", type=positive_int, default=100, help="training steps of each short timing run"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures to this JSON file")
    return parser.parse_args()


def describe_processor() -> str:
    """Return the CPU model name from ``/proc/cpuinfo``, or the architecture where that file is missing."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def read_load_average() -> float | None:
    """Return the one-minute load average, or ``None`` where the platform has none (Windows)."""
    if not hasattr(os, "getloadavg"):
        return None
    return os.getloadavg()[0]


def describe_blas_threads() -> str:
    """Return the thread-count environment variables that NumPy's BLAS reads, or a note that none is set."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    settings = [f"{name}={os.environ[name]}" for name in names if name in os.environ]
    return ", ".join(settings) if settings else "BLAS default (no thread variable set)"


# ---------------------------------------------------------------------------
# The PyTorch mirror of TransformerLM
# ---------------------------------------------------------------------------


def build_torch_layers(torch: Any, tiny_model: TransformerLM) -> Any:
    """Build ``torch.nn`` layers named like ``tiny_model``'s parameters and copy its weights into them.

    The layers sit in nested ``nn.ModuleDict`` objects, so the PyTorch state
    dict has exactly the tinytorch names, and a strict ``load_state_dict``
    fails on any missing, extra or misshapen parameter.
    """
    nn = torch.nn
    config = tiny_model.config
    dim = config.embedding_dim
    attention = nn.ModuleDict({name: nn.Linear(dim, dim) for name in ("query", "key", "value", "output")})
    block = nn.ModuleDict(
        {
            "attention_norm": nn.LayerNorm(dim, eps=1e-5),
            "attention": attention,
            "mlp_norm": nn.LayerNorm(dim, eps=1e-5),
            "mlp_in": nn.Linear(dim, config.hidden_dim),
            "mlp_out": nn.Linear(config.hidden_dim, dim),
        }
    )
    layers = nn.ModuleDict(
        {
            "token_embedding": nn.Embedding(config.vocab_size, dim),
            "block": block,
            "final_norm": nn.LayerNorm(dim, eps=1e-5),
        }
    )
    if config.positional == "learned":
        layers["position"] = nn.ModuleDict({"position_embedding": nn.Embedding(config.context, dim)})
    if not config.tie_weights:
        layers["head"] = nn.Linear(dim, config.vocab_size)

    state = {name: torch.from_numpy(np.array(array, dtype=np.float32)) for name, array in tiny_model.state_dict().items()}
    layers.load_state_dict(state, strict=True)
    return layers


def torch_attention(torch: Any, attention: Any, x: Any, num_heads: int) -> Any:
    """Return causal multi-head self-attention of ``x``, computed as in tinytorch's ``CausalSelfAttention``.

    Shape:
        ``(batch, seq, dim)`` -> same shape.
    """
    batch, seq, dim = x.shape
    head_dim = dim // num_heads
    q = attention["query"](x).view(batch, seq, num_heads, head_dim).transpose(1, 2)  # (batch, heads, seq, head_dim)
    k = attention["key"](x).view(batch, seq, num_heads, head_dim).transpose(1, 2)  # (batch, heads, seq, head_dim)
    v = attention["value"](x).view(batch, seq, num_heads, head_dim).transpose(1, 2)  # (batch, heads, seq, head_dim)

    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(head_dim))  # (batch, heads, seq, seq)
    future = torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1)
    weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    mixed = weights @ v  # (batch, heads, seq, head_dim)

    merged = mixed.transpose(1, 2).reshape(batch, seq, dim)  # (batch, seq, dim)
    return attention["output"](merged)


def torch_forward(torch: Any, layers: Any, position_table: Any, ids: Any, config: TrainConfig) -> Any:
    """Return next-token logits from the PyTorch mirror, in the same steps as ``TransformerLM.forward``.

    ``position_table`` is tinytorch's sinusoidal table for ``'sinusoidal'``
    positions and ``None`` otherwise.

    Shape:
        ids ``(batch, seq)`` -> logits ``(batch, seq, vocab_size)``.
    """
    seq = ids.shape[1]
    x = layers["token_embedding"](ids) * math.sqrt(config.embedding_dim)  # (batch, seq, dim)
    if config.positional == "sinusoidal":
        x = x + position_table[:seq]
    elif config.positional == "learned":
        x = x + layers["position"]["position_embedding"](torch.arange(seq))

    block = layers["block"]
    x = x + torch_attention(torch, block["attention"], block["attention_norm"](x), config.num_heads)
    hidden = torch.nn.functional.gelu(block["mlp_in"](block["mlp_norm"](x)), approximate="tanh")
    x = x + block["mlp_out"](hidden)
    x = layers["final_norm"](x)

    if config.tie_weights:
        return x @ layers["token_embedding"].weight.T  # (batch, seq, vocab_size)
    return layers["head"](x)  # (batch, seq, vocab_size)


class TorchEvaluationAdapter:
    """The PyTorch mirror behind the small interface that ``evaluate_bits_per_char`` calls.

    Evaluating through tinytorch's own function keeps the held-out windows
    identical on both sides. Only the finished logits cross over, as a
    tinytorch ``Tensor``.
    """

    def __init__(self, torch: Any, layers: Any, position_table: Any, config: TrainConfig) -> None:
        self.torch = torch
        self.layers = layers
        self.position_table = position_table
        self.config = config
        self.training = layers.training

    def train(self, mode: bool = True) -> TorchEvaluationAdapter:
        self.layers.train(mode)
        self.training = bool(mode)
        return self

    def eval(self) -> TorchEvaluationAdapter:
        return self.train(False)

    def __call__(self, ids: np.ndarray) -> Tensor:
        with self.torch.no_grad():
            ids_tensor = self.torch.from_numpy(np.ascontiguousarray(ids))
            logits = torch_forward(self.torch, self.layers, self.position_table, ids_tensor, self.config)
        return Tensor(logits.numpy())


# ---------------------------------------------------------------------------
# Training runs
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class TorchRun:
    """A finished PyTorch training run: its layers, per-step losses and timing."""

    layers: Any
    position_table: Any
    losses: list[float]
    train_seconds: float
    tokens_per_second: float


def train_torch(torch: Any, config: TrainConfig, vocab_size: int, train_ids: np.ndarray) -> TorchRun:
    """Train the PyTorch mirror the way ``train_language_model`` trains tinytorch.

    The generator is seeded with ``config.seed`` and first draws a tinytorch
    model, whose weights become the initial PyTorch weights, and then every
    batch. This is the order ``train_language_model`` uses, so both runs see
    the same initial weights and the same batches.
    """
    rng = np.random.default_rng(config.seed)
    tiny_model = TransformerLM(config.model_config(vocab_size), rng=rng)
    layers = build_torch_layers(torch, tiny_model)
    position_table = None
    if config.positional == "sinusoidal":
        position_table = torch.from_numpy(np.array(tiny_model.position.pe.data, dtype=np.float32))
    layers.train()

    parameters = list(layers.parameters())
    optimizer = torch.optim.AdamW(
        parameters, lr=config.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=config.weight_decay
    )
    loss_function = torch.nn.functional.cross_entropy
    losses: list[float] = []

    start = time.perf_counter()
    for step in range(config.steps):
        inputs, targets = sample_batch(train_ids, config.batch_size, config.context, rng)
        logits = torch_forward(torch, layers, position_table, torch.from_numpy(inputs), config)
        loss = loss_function(logits.reshape(-1, vocab_size), torch.from_numpy(targets).reshape(-1))

        optimizer.zero_grad()
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        optimizer.step()

        losses.append(float(loss.item()))
    train_seconds = time.perf_counter() - start

    tokens = config.steps * config.batch_size * config.context
    return TorchRun(layers, position_table, losses, train_seconds, tokens / train_seconds)


def time_interleaved(
    torch: Any, config: TrainConfig, vocab_size: int, train_ids: np.ndarray, tokenizer: Tokenizer, *, repeats: int
) -> list[dict[str, float]]:
    """Time short runs of ``config.steps`` steps, PyTorch then tinytorch, ``repeats`` times.

    Alternating the two spreads slow phases of a shared machine over both.
    Returns one record per repeat with both tokens per second and their ratio.
    """
    records = []
    for repeat in range(repeats):
        log(f"timing repeat {repeat + 1} of {repeats}: {config.steps} steps each")
        torch_run = train_torch(torch, config, vocab_size, train_ids)
        tiny_run = train_language_model(config, train_ids, tokenizer)
        records.append(
            {
                "torch_tokens_per_second": torch_run.tokens_per_second,
                "tinytorch_tokens_per_second": tiny_run.tokens_per_second,
                "ratio": tiny_run.tokens_per_second / torch_run.tokens_per_second,
            }
        )
    return records


def log(message: str) -> None:
    """Write a progress line to stderr, so that stdout carries only the report."""
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def format_load(load: float | None) -> str:
    return "unknown" if load is None else f"{load:.2f}"


def format_report(figures: dict[str, Any]) -> str:
    """Return the Markdown report: setup lines, a figures table and a criteria table."""
    environment = figures["environment"]
    config = figures["config"]
    tiny = figures["tinytorch"]
    reference = figures["torch"]
    timing = figures["timing"]

    lines = [
        "## Training against PyTorch",
        "",
        f"Command: `{figures['command']}`, run on {figures['date']}.",
        f"Machine: {environment['machine']}, {environment['processor']}, {environment['cpu_count']} CPUs; "
        f"Python {environment['python']}, NumPy {environment['numpy']}, PyTorch {environment['torch']}, "
        f"tinytorch {environment['tinytorch']}; PyTorch threads {environment['torch_threads']}, "
        f"NumPy threads: {environment['numpy_threads']}.",
        f"Recipe: `TrainConfig` defaults with steps={config['steps']}, positional={config['positional']!r} "
        f"({config['batch_size']} × {config['context']} tokens per step, float32). Both runs start from the same "
        "weights and see the same batches; held-out text is the last 10% of the built-in corpus "
        f"({figures['heldout_chars']:,} characters).",
        f"One-minute load average before and after: {format_load(figures['load_before'])} and "
        f"{format_load(figures['load_after'])}. This run adds up to {environment['cpu_count']} to it; "
        "a higher load means other processes competed for the CPUs, which slows the two sides unevenly.",
        "",
        "| figure | tinytorch | PyTorch |",
        "| --- | ---: | ---: |",
        f"| held-out bits per character | {tiny['heldout_bits_per_char']:.4f} | {reference['heldout_bits_per_char']:.4f} |",
        f"| training loss at step 1 (nats) | {tiny['losses'][0]:.6f} | {reference['losses'][0]:.6f} |",
        f"| training loss, mean of the last {figures['tail_steps']} steps (nats) "
        f"| {tiny['tail_loss']:.4f} | {reference['tail_loss']:.4f} |",
        f"| full run: training time (s) | {tiny['train_seconds']:.1f} | {reference['train_seconds']:.1f} |",
        f"| full run: tokens/s | {tiny['tokens_per_second']:,.0f} | {reference['tokens_per_second']:,.0f} |",
    ]
    if timing["records"]:
        lines.append(
            f"| tokens/s, median of {len(timing['records'])} alternating {timing['steps']}-step runs "
            f"| {timing['tinytorch_median']:,.0f} | {timing['torch_median']:,.0f} |"
        )
    lines += [
        "",
        f"Baselines with the same tokenizer and split: unigram {figures['baselines']['unigram_bits_per_char']:.4f}, "
        f"bigram {figures['baselines']['bigram_bits_per_char']:.4f} bits per character. Largest training-loss "
        f"difference over the first {figures['early_steps']} steps: {figures['early_loss_difference']:.2e} nats.",
        "",
        "| criterion | measured | required | result |",
        "| --- | ---: | ---: | --- |",
    ]
    loss = figures["criteria"]["heldout_loss"]
    lines.append(
        f"| held-out loss: abs(bpc_tinytorch - bpc_torch) / bpc_torch | {loss['value']:.2%} "
        f"| ≤ {loss['limit']:.0%} | {verdict(loss['passed'])} |"
    )
    speed = figures["criteria"]["throughput"]
    lines.append(
        f"| throughput: tinytorch / PyTorch tokens/s ({speed['source']}) | {speed['value']:.2f}× "
        f"| ≥ {speed['limit']}× | {verdict(speed['passed'])} |"
    )
    if timing["records"]:
        ratios = ", ".join(f"{record['ratio']:.2f}" for record in timing["records"])
        lines += ["", f"Throughput ratios of the alternating runs: {ratios}; full run: {figures['full_run_ratio']:.2f}."]
    return "\n".join(lines)


def main() -> int:
    arguments = parse_arguments()
    try:
        import torch
    except ImportError as error:
        print(
            f"PyTorch is not installed ({error}). This benchmark compares against it: "
            "pip install torch==2.13.0",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(os.cpu_count() or 1)
    config = TrainConfig(steps=arguments.steps, positional=arguments.positional)
    load_before = read_load_average()

    corpus = builtin_corpus()
    train_text, heldout_text = split_text(corpus)
    tokenizer = build_tokenizer(config, train_text)
    train_ids = encode_ids(tokenizer, train_text)
    heldout_ids = encode_ids(tokenizer, heldout_text)
    baselines = ngram_baselines(train_ids, heldout_ids, tokenizer.vocab_size, len(heldout_text))

    log(f"training PyTorch for {config.steps} steps")
    torch_run = train_torch(torch, config, tokenizer.vocab_size, train_ids)
    log(f"training tinytorch for {config.steps} steps")
    tiny_run = train_language_model(config, train_ids, tokenizer)

    log("evaluating both on the held-out text")
    window = config.context
    tiny_bpc = evaluate_bits_per_char(tiny_run.model, heldout_ids, len(heldout_text), window=window)
    adapter = TorchEvaluationAdapter(torch, torch_run.layers, torch_run.position_table, config)
    torch_bpc = evaluate_bits_per_char(adapter, heldout_ids, len(heldout_text), window=window)  # type: ignore[arg-type]

    timing_config = dataclasses.replace(config, steps=arguments.timing_steps)
    records = time_interleaved(
        torch, timing_config, tokenizer.vocab_size, train_ids, tokenizer, repeats=arguments.timing_repeats
    )

    full_run_ratio = tiny_run.tokens_per_second / torch_run.tokens_per_second
    if records:
        throughput_ratio = statistics.median(record["ratio"] for record in records)
        throughput_source = f"median of {len(records)} alternating runs"
    else:
        throughput_ratio = full_run_ratio
        throughput_source = "full runs"
    loss_difference = abs(tiny_bpc - torch_bpc) / torch_bpc
    tail = min(TAIL_STEPS, config.steps)
    early = min(EARLY_STEPS, config.steps)

    figures: dict[str, Any] = {
        "command": shlex.join(["python", *sys.argv]),
        "date": datetime.date.today().isoformat(),
        "environment": {
            "machine": platform.platform(),
            "processor": describe_processor(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "tinytorch": tinytorch.__version__,
            "torch_threads": torch.get_num_threads(),
            "numpy_threads": describe_blas_threads(),
        },
        "config": config.to_dict(),
        "load_before": load_before,
        "load_after": read_load_average(),
        "heldout_chars": len(heldout_text),
        "baselines": baselines,
        "tail_steps": tail,
        "early_steps": early,
        "early_loss_difference": max(abs(a - b) for a, b in zip(tiny_run.losses[:early], torch_run.losses[:early])),
        "full_run_ratio": full_run_ratio,
        "tinytorch": {
            "heldout_bits_per_char": tiny_bpc,
            "losses": tiny_run.losses,
            "tail_loss": statistics.fmean(tiny_run.losses[-tail:]),
            "train_seconds": tiny_run.train_seconds,
            "tokens_per_second": tiny_run.tokens_per_second,
        },
        "torch": {
            "heldout_bits_per_char": torch_bpc,
            "losses": torch_run.losses,
            "tail_loss": statistics.fmean(torch_run.losses[-tail:]),
            "train_seconds": torch_run.train_seconds,
            "tokens_per_second": torch_run.tokens_per_second,
        },
        "timing": {
            "steps": arguments.timing_steps,
            "records": records,
            "tinytorch_median": statistics.median(r["tinytorch_tokens_per_second"] for r in records) if records else None,
            "torch_median": statistics.median(r["torch_tokens_per_second"] for r in records) if records else None,
        },
        "criteria": {
            "heldout_loss": {
                "value": loss_difference,
                "limit": MAX_LOSS_DIFFERENCE,
                "passed": loss_difference <= MAX_LOSS_DIFFERENCE,
            },
            "throughput": {
                "value": throughput_ratio,
                "limit": MIN_THROUGHPUT_RATIO,
                "passed": throughput_ratio >= MIN_THROUGHPUT_RATIO,
                "source": throughput_source,
            },
        },
    }

    print(format_report(figures))
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
        log(f"figures written to {arguments.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
