"""A small causal transformer language model, built from tinytorch layers.

Positional information enters only through the chosen encoding
(``'sinusoidal'``, ``'learned'`` or ``'none'``), so the effect of that choice
shows directly in the held-out loss.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tinytorch._checks import check_bool, check_choice, check_int, check_non_negative, describe
from tinytorch.core import functional as F
from tinytorch.core.embeddings import Embedding, LearnedPositionalEmbedding, PositionalEncoding
from tinytorch.core.layers import LayerNorm, Linear, Module
from tinytorch.core.random import resolve_rng
from tinytorch.core.tensor import Tensor, no_grad

POSITIONAL_KINDS = ("sinusoidal", "learned", "none")
# Rows of the sinusoidal table: evaluation may run windows longer than the
# training context, and the formula has no limit, so the table is generous.
SINUSOIDAL_ROWS = 4096


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a ``TransformerLM``; saved with every checkpoint."""

    vocab_size: int
    context: int = 64
    embedding_dim: int = 64
    num_heads: int = 4
    hidden_dim: int = 256
    positional: str = "sinusoidal"
    tie_weights: bool = False

    def __post_init__(self) -> None:
        check_int("vocab_size", self.vocab_size, minimum=1)
        check_int("context", self.context, minimum=1)
        check_int("embedding_dim", self.embedding_dim, minimum=1)
        check_int("num_heads", self.num_heads, minimum=1)
        check_int("hidden_dim", self.hidden_dim, minimum=1)
        check_choice("positional", self.positional, POSITIONAL_KINDS)
        if self.embedding_dim % self.num_heads:
            raise ValueError(
                f"embedding_dim must be divisible by num_heads; received embedding_dim={self.embedding_dim}, "
                f"num_heads={self.num_heads}"
            )
        check_bool("tie_weights", self.tie_weights)

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-ready dict."""
        return asdict(self)


class CausalSelfAttention(Module):
    """Multi-head self-attention in which position t attends to positions 0..t only.

    Shape:
        ``(batch, seq, embedding_dim)`` -> same shape.
    """

    def __init__(self, embedding_dim: int, num_heads: int, *, rng: np.random.Generator) -> None:
        self.num_heads = num_heads
        self.head_dim = embedding_dim // num_heads
        self.query = Linear(embedding_dim, embedding_dim, rng=rng)
        self.key = Linear(embedding_dim, embedding_dim, rng=rng)
        self.value = Linear(embedding_dim, embedding_dim, rng=rng)
        self.output = Linear(embedding_dim, embedding_dim, rng=rng)

    def _split_heads(self, x: Tensor, batch: int, seq: int) -> Tensor:
        return x.reshape(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)  # (batch, heads, seq, head_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Return the attention output for every position."""
        batch, seq, dim = x.shape
        q = self._split_heads(self.query(x), batch, seq)
        k = self._split_heads(self.key(x), batch, seq)
        v = self._split_heads(self.value(x), batch, seq)

        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))  # (batch, heads, seq, seq)
        future = np.triu(np.ones((seq, seq), dtype=bool), k=1)
        weights = scores.masked_fill(future, -np.inf).softmax(axis=-1)
        mixed = weights @ v  # (batch, heads, seq, head_dim)

        merged = mixed.transpose(1, 2).reshape(batch, seq, dim)  # (batch, seq, dim)
        return self.output(merged)


class TransformerBlock(Module):
    """One pre-norm transformer block: ``x + attention(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, embedding_dim: int, num_heads: int, hidden_dim: int, *, rng: np.random.Generator) -> None:
        self.attention_norm = LayerNorm(embedding_dim)
        self.attention = CausalSelfAttention(embedding_dim, num_heads, rng=rng)
        self.mlp_norm = LayerNorm(embedding_dim)
        self.mlp_in = Linear(embedding_dim, hidden_dim, rng=rng)
        self.mlp_out = Linear(hidden_dim, embedding_dim, rng=rng)

    def forward(self, x: Tensor) -> Tensor:
        """Return the block's output, of the input's shape."""
        x = x + self.attention(self.attention_norm(x))
        x = x + self.mlp_out(F.gelu(self.mlp_in(self.mlp_norm(x))))
        return x


class TransformerLM(Module):
    """A causal language model: token embedding, positions, one transformer block, logits.

    Token vectors are scaled by ``sqrt(embedding_dim)`` before the positions
    are added, as in the original transformer, so that neither signal swamps
    the other. With ``tie_weights`` the output layer is
    ``token_embedding.attend``.

    Shape:
        ids ``(batch, seq)`` -> logits ``(batch, seq, vocab_size)``.
    """

    def __init__(self, config: ModelConfig, *, rng: np.random.Generator | None = None) -> None:
        generator = resolve_rng(rng)
        self.config = config
        dim = config.embedding_dim
        self.token_embedding = Embedding(config.vocab_size, dim, init_type="normal", rng=generator)
        if config.positional == "sinusoidal":
            self.position = PositionalEncoding(dim, max_seq_length=max(SINUSOIDAL_ROWS, 2 * config.context))
        elif config.positional == "learned":
            self.position = LearnedPositionalEmbedding(config.context, dim, rng=generator)
        else:
            self.position = None
        self.block = TransformerBlock(dim, config.num_heads, config.hidden_dim, rng=generator)
        self.final_norm = LayerNorm(dim)
        self.head = None if config.tie_weights else Linear(dim, config.vocab_size, rng=generator)

    @property
    def max_seq_length(self) -> int | None:
        """The maximum window length the model accepts, or ``None`` when only memory limits it."""
        if self.config.positional == "learned":
            return self.config.context
        if self.config.positional == "sinusoidal":
            return self.position.max_seq_length
        return None

    def forward(self, ids: Any) -> Tensor:
        """Return next-token logits for every position of every sequence."""
        tokens = self.token_embedding(ids) * math.sqrt(self.config.embedding_dim)  # (batch, seq, dim)
        if tokens.ndim != 3:
            raise ValueError(f"ids must have shape (batch, seq); received shape {tokens.shape[:-1]}")
        x = tokens if self.position is None else self.position(tokens)

        x = self.final_norm(self.block(x))

        if self.head is None:
            return self.token_embedding.attend(x)  # (batch, seq, vocab_size)
        return self.head(x)  # (batch, seq, vocab_size)


def generate(
    model: TransformerLM,
    prompt_ids: list[int],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    rng: np.random.Generator | None = None,
) -> list[int]:
    """Sample ``max_new_tokens`` ids after ``prompt_ids``, one at a time.

    Each step feeds the last ``context`` ids (the window the model was
    trained on) and samples from ``softmax(logits / temperature)``;
    ``temperature=0`` picks the most likely id instead.
    """
    check_int("max_new_tokens", max_new_tokens, minimum=0)
    temperature = check_non_negative("temperature", temperature)
    generator = resolve_rng(rng)
    ids = [int(token_id) for token_id in np.asarray(prompt_ids).reshape(-1)]
    if not ids:
        raise ValueError("prompt_ids must hold at least one id; start from the tokenizer's <BOS> id")
    was_training = model.training
    model.eval()
    with no_grad():
        for _ in range(max_new_tokens):
            window = np.asarray(ids[-model.config.context :])[np.newaxis]  # (1, seq)
            logits = model(window).data[0, -1].astype(np.float64)  # (vocab_size,)
            if temperature == 0:
                ids.append(int(np.argmax(logits)))
                continue
            with np.errstate(over="ignore", under="ignore"):
                # A tiny temperature overflows to -inf away from the maximum: probability 0.
                scaled = (logits - logits.max()) / temperature
                probabilities = np.exp(scaled)
            probabilities /= probabilities.sum()
            ids.append(int(generator.choice(probabilities.size, p=probabilities)))
    model.train(was_training)
    return ids
