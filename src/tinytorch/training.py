"""Train a ``TransformerLM`` on text and measure it in bits per character.

The corpus is split by characters: the first 90% trains, the last 10% is held
out. Held-out cross-entropy is reported in bits per character (total bits
over the number of held-out characters), so figures compare across
tokenizers, beside unigram and bigram baselines counted on the same split
with the same tokenizer.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinytorch._checks import check_choice, check_int, check_non_negative, describe
from tinytorch.checkpoint import CONFIG_FILE, MODEL_FILE, load_checkpoint, save_checkpoint
from tinytorch.core.losses import cross_entropy
from tinytorch.core.optimizers import AdamW, clip_grad_norm
from tinytorch.core.tensor import no_grad
from tinytorch.core.tokenization import FIRST_MERGE_ID, BPETokenizer, CharTokenizer
from tinytorch.models import POSITIONAL_KINDS, ModelConfig, TransformerLM

logger = logging.getLogger(__name__)

TRAIN_FRACTION = 0.9
TOKENIZERS = ("char", "bpe")
Tokenizer = CharTokenizer | BPETokenizer


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe. The defaults are the reference recipe."""

    tokenizer: str = "char"
    bpe_vocab_size: int = 1000
    positional: str = "sinusoidal"
    context: int = 64
    embedding_dim: int = 64
    num_heads: int = 4
    hidden_dim: int = 256
    tie_weights: bool = False
    batch_size: int = 32
    steps: int = 1500
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("tokenizer", self.tokenizer, TOKENIZERS)
        for name in ("context", "batch_size", "steps"):
            check_int(name, getattr(self, name), minimum=1)
        if self.tokenizer == "bpe":
            check_int("bpe_vocab_size", self.bpe_vocab_size, minimum=FIRST_MERGE_ID)
        check_int("warmup_steps", self.warmup_steps, minimum=0)
        check_int("seed", self.seed, minimum=0)
        for name in ("lr", "weight_decay", "grad_clip"):
            # Stored as a Python float, so that a NumPy scalar still saves as JSON.
            object.__setattr__(self, name, check_non_negative(name, getattr(self, name)))
        object.__setattr__(self, "min_lr_ratio", check_non_negative("min_lr_ratio", self.min_lr_ratio))
        if self.min_lr_ratio > 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1]; received {describe(self.min_lr_ratio)}")
        self.model_config(vocab_size=1)  # checks the model's fields (dimensions, heads, positional, tie_weights) now

    def model_config(self, vocab_size: int) -> ModelConfig:
        """Return the model shape this recipe trains, for a tokenizer of ``vocab_size`` ids."""
        return ModelConfig(
            vocab_size=vocab_size,
            context=self.context,
            embedding_dim=self.embedding_dim,
            num_heads=self.num_heads,
            hidden_dim=self.hidden_dim,
            positional=self.positional,
            tie_weights=self.tie_weights,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-ready dict."""
        return asdict(self)


def learning_rate(step: int, config: TrainConfig) -> float:
    """Return the learning rate at ``step`` (from 0): linear warmup, then cosine decay to ``min_lr_ratio * lr``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    decay_steps = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.lr * (config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine)


def split_text(text: str) -> tuple[str, str]:
    """Split ``text`` by characters: the first 90% for training, the rest held out."""
    cut = int(len(text) * TRAIN_FRACTION)
    return text[:cut], text[cut:]


def build_tokenizer(config: TrainConfig, train_text: str) -> Tokenizer:
    """Return the recipe's tokenizer; BPE is trained on the training text only."""
    if config.tokenizer == "char":
        return CharTokenizer()
    tokenizer = BPETokenizer(vocab_size=config.bpe_vocab_size)
    tokenizer.train(train_text)
    return tokenizer


def encode_ids(tokenizer: Tokenizer, text: str) -> np.ndarray:
    """Encode ``text`` with ``<BOS>`` in front, so that its first token is predicted too."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    return np.asarray([tokenizer.bos_token_id, *ids], dtype=np.int64)


def sample_batch(ids: np.ndarray, batch_size: int, context: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw random windows: inputs ``ids[o : o + context]`` and targets shifted by one.

    Shape:
        ``(batch_size, context)`` twice.
    """
    starts = rng.integers(0, ids.size - context, size=batch_size)
    offsets = starts[:, np.newaxis] + np.arange(context)  # (batch, context)
    return ids[offsets], ids[offsets + 1]


def evaluate_bits_per_char(model: TransformerLM, ids: np.ndarray, num_chars: int, *, window: int, batch_size: int = 64) -> float:
    """Return the model's cross-entropy on ``ids`` in bits per character.

    ``ids`` starts with ``<BOS>`` and is cut into consecutive windows of
    ``window`` predictions. Every token after the first is predicted once,
    from the tokens before it in its window. The total is divided by
    ``num_chars``, the length of the text that ``ids`` encodes.
    """
    check_int("window", window, minimum=1)
    if ids.size < 2:
        raise ValueError(f"ids must hold at least 2 tokens to predict one; received {ids.size}")
    total_nats = 0.0
    starts = list(range(0, ids.size - 1, window))
    was_training = model.training
    model.eval()
    with no_grad():
        full = [s for s in starts if s + window < ids.size]
        for first in range(0, len(full), batch_size):
            chunk = np.asarray(full[first : first + batch_size])
            offsets = chunk[:, np.newaxis] + np.arange(window)  # (batch, window)
            logits = model(ids[offsets])
            total_nats += float(cross_entropy(logits, ids[offsets + 1], reduction="sum").item())
        tail = [s for s in starts if s + window >= ids.size]
        for start in tail:
            inputs, targets = ids[start:-1], ids[start + 1 :]
            logits = model(inputs[np.newaxis])
            total_nats += float(cross_entropy(logits, targets[np.newaxis], reduction="sum").item())
    model.train(was_training)
    return total_nats / math.log(2) / num_chars


def ngram_baselines(train_ids: np.ndarray, heldout_ids: np.ndarray, vocab_size: int, num_chars: int) -> dict[str, float]:
    """Return held-out bits per character of unigram and bigram counts with add-one smoothing.

    Unigram: ``p(t) = (c(t) + 1) / (N + V)``. Bigram:
    ``p(t | s) = (c(s, t) + 1) / (c(s) + V)``, where ``c(s)`` counts ``s`` as a
    left neighbour. Both score every held-out token after the first.
    """
    unigram_counts = np.bincount(train_ids, minlength=vocab_size).astype(np.float64)
    unigram_log_p = np.log2((unigram_counts + 1.0) / (unigram_counts.sum() + vocab_size))
    unigram_bits = -unigram_log_p[heldout_ids[1:]].sum()

    # Count only the pairs that occur, so memory grows with the text, not with vocab_size squared.
    pair_codes, pair_counts = np.unique(train_ids[:-1] * vocab_size + train_ids[1:], return_counts=True)
    left_counts = np.bincount(train_ids[:-1], minlength=vocab_size)
    heldout_codes = heldout_ids[:-1] * vocab_size + heldout_ids[1:]
    heldout_pair_counts = np.zeros(heldout_codes.size, dtype=np.int64)
    if pair_codes.size:
        slots = np.minimum(np.searchsorted(pair_codes, heldout_codes), pair_codes.size - 1)
        seen = pair_codes[slots] == heldout_codes
        heldout_pair_counts[seen] = pair_counts[slots[seen]]
    bigram_log_p = np.log2((heldout_pair_counts + 1.0) / (left_counts[heldout_ids[:-1]] + vocab_size))
    bigram_bits = -bigram_log_p.sum()
    return {"unigram_bits_per_char": unigram_bits / num_chars, "bigram_bits_per_char": bigram_bits / num_chars}


@dataclass
class TrainResult:
    """The outcome of a training run: the model, its tokenizer, the loss history and timings."""

    model: TransformerLM
    tokenizer: Tokenizer
    config: TrainConfig
    losses: list[float] = field(default_factory=list)
    steps_done: int = 0
    train_seconds: float = 0.0
    tokens_per_second: float = 0.0
    interrupted: bool = False


StepCallback = Callable[[int, float, float], None]  # (step, loss, tokens_per_second)


def train_language_model(
    config: TrainConfig,
    train_ids: np.ndarray,
    tokenizer: Tokenizer,
    *,
    on_step: StepCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train a fresh ``TransformerLM`` on ``train_ids`` for ``config.steps`` steps.

    ``on_step(step, loss, tokens_per_second)`` is called after every step, so
    a caller can draw progress. A loss that is not finite (divergence)
    raises ``FloatingPointError`` naming the step and the learning rate.
    ``should_stop()`` is checked between steps;
    when it returns true, training ends early with ``interrupted=True`` and
    the model as it was after the last complete step. (The command line sets
    it from Ctrl-C, so an interrupt never lands in the middle of an update.)
    """
    if train_ids.size <= config.context + 1:
        raise ValueError(
            f"the training text has {train_ids.size} tokens, too few for context={config.context}; "
            "use a longer text or a smaller context"
        )
    rng = np.random.default_rng(config.seed)
    model = TransformerLM(config.model_config(tokenizer.vocab_size), rng=rng)
    optimizer = AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    result = TrainResult(model=model, tokenizer=tokenizer, config=config)
    tokens_per_step = config.batch_size * config.context

    start = time.perf_counter()
    for step in range(config.steps):
        if should_stop is not None and should_stop():
            result.interrupted = True
            logger.warning("training stopped after %d of %d steps", result.steps_done, config.steps)
            break
        inputs, targets = sample_batch(train_ids, config.batch_size, config.context, rng)
        # A diverging run overflows; the finite-loss check below reports it once,
        # instead of NumPy warning from every operation.
        with np.errstate(over="ignore", invalid="ignore"):
            logits = model(inputs)
            loss = cross_entropy(logits, targets)

            optimizer.zero_grad()
            loss.backward()
            if config.grad_clip:
                clip_grad_norm(optimizer.params, config.grad_clip)
            optimizer.lr = learning_rate(step, config)
            optimizer.step()

        loss_value = float(loss.item())
        if not math.isfinite(loss_value):
            # Training has diverged: a checkpoint of these weights would be useless.
            # A smaller grad_clip clips harder, and 0 turns clipping off.
            if config.grad_clip:
                clipping = f"lower TrainConfig.grad_clip (now {config.grad_clip}) to clip gradients harder"
            else:
                clipping = "set TrainConfig.grad_clip to a positive value such as 1.0 to clip gradients"
            raise FloatingPointError(
                f"training diverged at step {step + 1}: the loss is {loss_value}; "
                f"lower the learning rate (lr={config.lr}), or, when calling the library, {clipping}"
            )
        result.losses.append(loss_value)
        result.steps_done = step + 1
        if on_step is not None:
            elapsed = time.perf_counter() - start
            on_step(result.steps_done, result.losses[-1], result.steps_done * tokens_per_step / elapsed)

    result.train_seconds = time.perf_counter() - start
    if result.steps_done:
        result.tokens_per_second = result.steps_done * tokens_per_step / result.train_seconds
    return result


def save_trained_model(
    directory: str | os.PathLike[str],
    model: TransformerLM,
    tokenizer: Tokenizer,
    config: TrainConfig,
    *,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Save the model, its tokenizer and both configurations as one checkpoint directory, atomically."""
    return save_checkpoint(
        directory,
        state=model.state_dict(),
        tokenizer=tokenizer,
        config={"model": model.config.to_dict(), "train": config.to_dict()},
        metadata=metadata,
    )


def load_trained_model(directory: str | os.PathLike[str]) -> tuple[TransformerLM, Tokenizer, TrainConfig]:
    """Load a checkpoint written by ``save_trained_model``.

    Raises:
        FileNotFoundError: ``directory`` does not exist.
        ValueError: a file is truncated, corrupt, or does not match the
            model its configuration describes, or a tensor is not floating
            point or contains NaN or infinite values. The message names the file.
    """
    checkpoint = load_checkpoint(directory)
    config_path = Path(directory) / CONFIG_FILE
    tensors_path = Path(directory) / MODEL_FILE
    missing = [section for section in ("model", "train") if section not in checkpoint.config]
    if missing:
        raise ValueError(
            f"{str(config_path)!r} does not describe a TransformerLM: it has no {' or '.join(map(repr, missing))} "
            "section; save the model with save_trained_model"
        )
    try:
        model_config = ModelConfig(**checkpoint.config["model"])
        train_config = TrainConfig(**checkpoint.config["train"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{str(config_path)!r} does not describe a TransformerLM: {error}") from error
    if model_config.vocab_size != checkpoint.tokenizer.vocab_size:
        raise ValueError(
            f"{str(config_path)!r} gives vocab_size={model_config.vocab_size}, but the tokenizer "
            f"has {checkpoint.tokenizer.vocab_size} ids"
        )
    _check_weights(checkpoint.state, tensors_path)
    _check_sizes(model_config, checkpoint.state, config_path, tensors_path)

    try:
        model = TransformerLM(model_config, rng=np.random.default_rng(0))
    except (MemoryError, ValueError) as error:
        # NOTE: with positional 'sinusoidal' the context sets the rows of a
        # table that no stored tensor shapes, so only this allocation bounds it.
        raise ValueError(
            f"{str(config_path)!r} describes a model too large to build (context={model_config.context}, "
            f"embedding_dim={model_config.embedding_dim}): {error}; check that this config.json "
            f"was saved with {str(tensors_path)!r}"
        ) from error
    try:
        model.load_state_dict(checkpoint.state)
    except ValueError as error:
        raise ValueError(f"{str(tensors_path)!r} does not match its config: {error}") from error
    return model, checkpoint.tokenizer, train_config


def _check_weights(state: dict[str, np.ndarray], tensors_path: Path) -> None:
    """Raise ``ValueError`` naming the file and tensor unless every tensor is finite floating point."""
    for name, array in state.items():
        if array.dtype.kind != "f":
            raise ValueError(
                f"{str(tensors_path)!r} is not a tinytorch checkpoint of a TransformerLM: tensor {name!r} "
                f"has dtype {array.dtype}, but the model's weights are floating point; "
                "re-save the model with save_trained_model"
            )
        # Checked here and not in load_checkpoint, because that stores arbitrary
        # arrays, where an infinite mask is valid data. A language model with NaN
        # or infinite weights loads, but generate then fails on NaN probabilities.
        if not np.isfinite(array).all():
            raise ValueError(
                f"{str(tensors_path)!r} contains NaN or infinite values in tensor {name!r}, as a diverged "
                "training run leaves; load an earlier checkpoint"
            )


def _check_sizes(config: ModelConfig, state: dict[str, np.ndarray], config_path: Path, tensors_path: Path) -> None:
    """Raise ``ValueError`` naming ``config.json`` when its sizes disagree with the stored tensors.

    Runs before the model is built, so that an absurd size such as
    ``hidden_dim=10**12`` is rejected before anything of that size is allocated.
    """
    # Each stored tensor below has a shape that a pair of config fields fixes.
    # load_state_dict checks every other shape after the model is built.
    sized_tensors = {
        "token_embedding.weight": ("vocab_size", "embedding_dim"),
        "block.mlp_in.weight": ("hidden_dim", "embedding_dim"),
    }
    if config.positional == "learned":
        sized_tensors["position.position_embedding.weight"] = ("context", "embedding_dim")

    for name, fields in sized_tensors.items():
        expected = tuple(getattr(config, field_name) for field_name in fields)
        array = state.get(name)
        if array is not None and array.shape == expected:
            continue
        sizes = " and ".join(f"{field_name}={value}" for field_name, value in zip(fields, expected))
        found = "has no such tensor" if array is None else f"stores shape {array.shape}"
        raise ValueError(
            f"{str(config_path)!r} does not match the stored tensors: its {sizes} give tensor {name!r} "
            f"the shape {expected}, but {str(tensors_path)!r} {found}; config.json was edited or "
            "belongs to another checkpoint, so re-save the model with save_trained_model"
        )


@dataclass(frozen=True)
class PreparedText:
    """A corpus split, tokenized and scored by the n-gram baselines, ready for training."""

    tokenizer: Tokenizer
    train_ids: np.ndarray
    heldout_ids: np.ndarray
    train_chars: int
    heldout_chars: int
    baselines: dict[str, float]


def prepare_text(config: TrainConfig, text: str) -> PreparedText:
    """Split ``text``, build the recipe's tokenizer on the training part, encode both parts and score the baselines."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str; received {describe(text)}")
    train_text, heldout_text = split_text(text)
    if len(heldout_text) < 2:
        raise ValueError(
            f"the text has {len(text)} characters, too few to hold out 10% for evaluation; use a longer text"
        )
    tokenizer = build_tokenizer(config, train_text)
    train_ids = encode_ids(tokenizer, train_text)
    heldout_ids = encode_ids(tokenizer, heldout_text)
    baselines = ngram_baselines(train_ids, heldout_ids, tokenizer.vocab_size, len(heldout_text))
    return PreparedText(tokenizer, train_ids, heldout_ids, len(train_text), len(heldout_text), baselines)
