"""Embedding tables and positional encodings: token ids to position-aware vectors.

Example:
    >>> from tinytorch.core.embeddings import Embedding, PositionalEncoding
    >>> embedding = Embedding(vocab_size=99, embedding_dim=8)
    >>> vectors = embedding([2, 44, 3])
    >>> PositionalEncoding(embedding_dim=8, max_seq_length=16)(vectors).shape
    (3, 8)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from tinytorch._checks import check_bool, check_choice, check_int, check_probability, describe
from tinytorch._plotting import import_figure
from tinytorch.core import functional as F
from tinytorch.core.layers import Module, Parameter
from tinytorch.core.random import resolve_rng
from tinytorch.core.tensor import Tensor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from tinytorch.profiling import EmbeddingProfiler

__all__ = [
    "Embedding",
    "EmbeddingBag",
    "EmbeddingProfiler",
    "LearnedPositionalEmbedding",
    "PositionalEncoding",
    "init_table",
    "sinusoidal_table",
]

INIT_TYPES = ("uniform", "normal", "xavier")
BYTES_PER_MB = 2**20  # memory sizes use binary megabytes throughout tinytorch
TABLE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def __getattr__(name: str) -> Any:
    # The profiling layer sits above this one; importing it lazily keeps
    # `from tinytorch.core.embeddings import EmbeddingProfiler` working
    # without loading the profiler whenever embeddings are imported.
    if name == "EmbeddingProfiler":
        from tinytorch.profiling import EmbeddingProfiler

        return EmbeddingProfiler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_table_dtype(dtype: Any) -> np.dtype:
    if dtype is None:
        raise TypeError("dtype must be np.float32 or np.float64; received None")
    try:
        resolved = np.dtype(dtype)
    except TypeError as error:
        raise TypeError(f"dtype must be a NumPy dtype; received {describe(dtype)}") from error
    if resolved not in TABLE_DTYPES:
        raise ValueError(f"dtype must be float32 or float64; received {resolved}")
    return resolved


@contextlib.contextmanager
def table_memory(rows_name: str, rows: int, columns_name: str, columns: int, itemsize: int) -> Iterator[None]:
    """Raise a clear error when a ``(rows, columns)`` table built inside the block cannot be allocated.

    A size beyond what any array can address raises ``ValueError`` before the
    block runs. A ``MemoryError`` inside the block is raised again with the
    two sizes named, because NumPy's own message names only the shape.
    """
    nbytes = rows * columns * itemsize
    sizes = f"{rows_name}={rows} x {columns_name}={columns}"
    fix = f"use a smaller {rows_name} or {columns_name}"
    if nbytes > np.iinfo(np.intp).max:
        raise ValueError(f"a table of {sizes} has more bytes than any array can address; {fix}")
    try:
        yield
    except MemoryError as error:
        raise MemoryError(f"not enough memory for a table of {sizes} ({nbytes / 2**30:.3g} GiB); {fix}") from error


def init_table(
    vocab_size: int,
    embedding_dim: int,
    init_type: str,
    dtype: np.dtype,
    rng: np.random.Generator,
) -> np.ndarray:
    """Draw a ``(vocab_size, embedding_dim)`` table.

    ``'uniform'`` draws from U(-1/sqrt(d), 1/sqrt(d)), ``'normal'`` from
    N(0, 1/d) (standard deviation 1/sqrt(d)), and ``'xavier'`` from
    U(-a, a) with a = sqrt(6 / (vocab_size + embedding_dim)).
    """
    shape = (vocab_size, embedding_dim)
    # Drawn directly in the table's dtype (in place), so a large float32
    # table never needs a float64 copy.
    with table_memory("vocab_size", vocab_size, "embedding_dim", embedding_dim, np.dtype(dtype).itemsize):
        if init_type == "normal":
            table = rng.standard_normal(shape, dtype=dtype)
            table *= 1.0 / math.sqrt(embedding_dim)
            return table
        table = rng.random(shape, dtype=dtype)  # [0, 1)
    if init_type == "uniform":
        bound = 1.0 / math.sqrt(embedding_dim)
    else:
        bound = math.sqrt(6.0 / (vocab_size + embedding_dim))
    table *= 2.0 * bound
    table -= bound
    return table


class Embedding(Module):
    """A learnable lookup table mapping token ids to dense vectors.

    Args:
        vocab_size: Number of rows, one per token id.
        embedding_dim: Length of each vector.
        padding_idx: A row that starts as zeros and never receives a
            gradient. Negative values count from the end, as in PyTorch.
        init_type: ``'uniform'``, ``'normal'`` or ``'xavier'`` (see ``init_table``).
        dtype: ``np.float32`` (default) or ``np.float64``, for gradient checks.
        rng: Generator for the initial values; the seeded default one if omitted.

    Shape:
        ids ``(*)`` of any rank, a scalar included -> ``(*, embedding_dim)``.

    Example:
        >>> table = Embedding(vocab_size=10, embedding_dim=4)
        >>> table([[1, 2, 3]]).shape
        (1, 3, 4)

    Note:
        Ids are checked before any indexing: an id outside ``[0, vocab_size)``
        raises ``ValueError`` and a float, bool or string id raises ``TypeError``.
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        init_type: str = "uniform",
        dtype: Any = np.float32,
        *,
        sparse: bool = False,
        rng: np.random.Generator | None = None,
        _weight: np.ndarray | None = None,
    ) -> None:
        self.vocab_size = check_int("vocab_size", vocab_size, minimum=1)
        self.embedding_dim = check_int("embedding_dim", embedding_dim, minimum=1)
        self.init_type = check_choice("init_type", init_type, INIT_TYPES)
        table_dtype = _check_table_dtype(dtype)
        self.padding_idx = F.normalize_padding_idx(padding_idx, self.vocab_size)
        self.sparse = check_bool("sparse", sparse)

        if _weight is None:
            table = init_table(self.vocab_size, self.embedding_dim, init_type, table_dtype, resolve_rng(rng))
            if self.padding_idx is not None:
                table[self.padding_idx] = 0
            self.weight = Parameter(table, dtype=table_dtype)
        else:
            # from_pretrained: the given table, used as it is, and no random draw.
            self.weight = Parameter(_weight, dtype=table_dtype)

    @classmethod
    def from_pretrained(
        cls,
        weights: Any,
        freeze: bool = True,
        padding_idx: int | None = None,
        *,
        sparse: bool = False,
        **options: Any,
    ) -> Embedding:
        """Build a table from a ``(vocab_size, embedding_dim)`` array of trained vectors.

        The array is copied (as float32 unless it is float64). A frozen table
        has ``requires_grad=False``: it gets no gradient, so optimizers leave
        it alone. The ``padding_idx`` row keeps its given values. Other
        keyword options go to the constructor, such as ``mode`` and
        ``include_last_offset`` for ``EmbeddingBag``.
        """
        array = np.asarray(weights.data if isinstance(weights, Tensor) else weights)
        if array.dtype.kind != "f":
            raise TypeError(f"weights must be a floating-point array; received dtype {array.dtype}")
        if array.ndim != 2 or 0 in array.shape:
            raise ValueError(
                f"weights must be a non-empty 2-D array (vocab_size, embedding_dim); received shape {array.shape}"
            )
        check_bool("freeze", freeze)
        dtype = np.float64 if array.dtype == np.float64 else np.float32
        table = np.array(array, dtype=dtype)  # a copy: later edits to weights do not reach the layer
        layer = cls(
            array.shape[0], array.shape[1], padding_idx=padding_idx, dtype=dtype, sparse=sparse, _weight=table, **options
        )
        layer.weight.requires_grad = not freeze
        return layer

    @property
    def num_embeddings(self) -> int:
        """``vocab_size`` under PyTorch's name."""
        return self.vocab_size

    def forward(self, input_ids: Any) -> Tensor:
        """Return the table rows for ``input_ids`` (see the class docstring for shapes)."""
        return F.embedding(input_ids, self.weight, self.padding_idx, sparse=self.sparse)

    def attend(self, hidden: Tensor) -> Tensor:
        """Score ``hidden`` vectors against every row of the table: ``hidden @ weight.T``.

        Used as a weight-tied output layer, the table then gets gradients from
        both the lookup and these logits, summed.

        Shape:
            ``(*, embedding_dim)`` -> ``(*, vocab_size)``.
        """
        if hidden.shape[-1] != self.embedding_dim:
            raise ValueError(
                f"attend expects vectors of embedding_dim={self.embedding_dim}; received shape {hidden.shape}"
            )
        return F.linear(hidden, self.weight)

    def most_similar(self, token_id: int, k: int = 10) -> list[tuple[int, float]]:
        """Return the ``k`` rows nearest to row ``token_id`` by cosine similarity, best first.

        Each entry is ``(id, similarity)``; the row itself is left out.
        """
        check_int("token_id", token_id)
        check_int("k", k, minimum=1)
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token_id must be in [0, {self.vocab_size}); received {describe(token_id)}")
        table = self.weight.data.astype(np.float64)
        norms = np.linalg.norm(table, axis=1)
        norms[norms == 0] = 1.0  # an all-zero row (padding) has similarity 0 with everything
        similarity = table @ table[token_id] / (norms * norms[token_id])
        similarity[token_id] = -np.inf
        order = np.argsort(-similarity, kind="stable")[: min(k, self.vocab_size - 1)]
        return [(int(index), float(similarity[index])) for index in order]

    def get_memory_usage(self) -> dict[str, float | int]:
        """Return the table's memory use, computed from its real dtype.

        ``total_memory_mb`` and ``memory_per_token_kb`` use binary units
        (1 MB = 2**20 bytes, 1 KB = 2**10 bytes).
        """
        itemsize = self.weight.dtype.itemsize
        return {
            "total_memory_mb": self.weight.data.nbytes / BYTES_PER_MB,
            "memory_per_token_kb": self.embedding_dim * itemsize / 2**10,
            "total_parameters": self.vocab_size * self.embedding_dim,
            "vocab_size": self.vocab_size,
            "embedding_dim": self.embedding_dim,
        }

    def __repr__(self) -> str:
        settings = [str(self.vocab_size), str(self.embedding_dim)]
        if self.padding_idx is not None:
            settings.append(f"padding_idx={self.padding_idx}")
        if self.init_type != "uniform":
            settings.append(f"init_type={self.init_type!r}")
        if self.weight.dtype != np.float32:
            settings.append(f"dtype={self.weight.dtype}")
        if self.sparse:
            settings.append("sparse=True")
        return f"Embedding({', '.join(settings)})"


class EmbeddingBag(Embedding):
    """A lookup table that pools each bag of ids into one vector, as ``torch.nn.EmbeddingBag``.

    Called as ``bag(input, offsets=None, per_sample_weights=None)``; see
    ``tinytorch.core.functional.embedding_bag`` for the rules on bags,
    offsets, padding and weights. Construction, initialization and
    ``padding_idx`` follow ``Embedding``.

    Shape:
        ``(bags, length)`` or ``(n,)`` with ``offsets (bags,)`` -> ``(bags, embedding_dim)``.

    Example:
        >>> bag = EmbeddingBag(vocab_size=10, embedding_dim=4, mode="sum")
        >>> bag([1, 2, 3, 4], offsets=[0, 1]).shape
        (2, 4)
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        mode: str = "mean",
        padding_idx: int | None = None,
        *,
        include_last_offset: bool = False,
        init_type: str = "uniform",
        dtype: Any = np.float32,
        sparse: bool = False,
        rng: np.random.Generator | None = None,
        _weight: np.ndarray | None = None,
    ) -> None:
        if sparse:
            # TODO: row-sparse gradients for bags; the dense backward is the only one implemented.
            raise ValueError("EmbeddingBag supports only dense gradients; pass sparse=False")
        super().__init__(vocab_size, embedding_dim, padding_idx, init_type, dtype, rng=rng, _weight=_weight)
        self.mode = check_choice("mode", mode, F.BAG_MODES)
        self.include_last_offset = check_bool("include_last_offset", include_last_offset)

    def forward(self, input_ids: Any, offsets: Any = None, per_sample_weights: Any = None) -> Tensor:  # type: ignore[override]
        """Return one pooled vector per bag."""
        return F.embedding_bag(
            input_ids,
            self.weight,
            offsets,
            self.mode,
            per_sample_weights,
            self.padding_idx,
            self.include_last_offset,
        )

    def __repr__(self) -> str:
        settings = [str(self.vocab_size), str(self.embedding_dim), f"mode={self.mode!r}"]
        if self.padding_idx is not None:
            settings.append(f"padding_idx={self.padding_idx}")
        if self.include_last_offset:
            settings.append("include_last_offset=True")
        return f"EmbeddingBag({', '.join(settings)})"


def sinusoidal_table(max_seq_length: int, embedding_dim: int) -> np.ndarray:
    """Return the float64 sinusoidal table of shape ``(max_seq_length, embedding_dim)``.

    ``PE[pos, 2i] = sin(pos / 10000^(2i/d))`` and
    ``PE[pos, 2i+1] = cos(pos / 10000^(2i/d))``. For an odd ``d`` the last
    column is a sine, and the cosine columns use the first ``d // 2`` frequencies.
    """
    with table_memory("max_seq_length", max_seq_length, "embedding_dim", embedding_dim, np.dtype(np.float64).itemsize):
        positions = np.arange(max_seq_length, dtype=np.float64)[:, np.newaxis]  # (seq, 1)
        even_columns = np.arange(0, embedding_dim, 2, dtype=np.float64)  # the 2i values
        angles = positions / 10000.0 ** (even_columns / embedding_dim)  # (seq, ceil(d/2))

        table = np.empty((max_seq_length, embedding_dim), dtype=np.float64)
        table[:, 0::2] = np.sin(angles)
        table[:, 1::2] = np.cos(angles[:, : embedding_dim // 2])
    return table


def _check_embeddings_input(
    x: Any, embedding_dim: int, max_seq_length: int, layer_name: str
) -> tuple[Tensor, int]:
    """Return ``x`` as a floating-point Tensor and its sequence length, after checking its shape."""
    tensor = x if isinstance(x, Tensor) else Tensor(x)
    if tensor.dtype.kind != "f":
        raise TypeError(
            f"{layer_name} expects floating-point embeddings; received dtype {tensor.dtype}. "
            "If these are token ids, pass them through an Embedding first"
        )
    if tensor.ndim not in (2, 3):
        raise ValueError(
            f"{layer_name} expects input of shape (seq_len, embedding_dim) or "
            f"(batch, seq_len, embedding_dim); received shape {tensor.shape}"
        )
    if tensor.shape[-1] != embedding_dim:
        raise ValueError(
            f"{layer_name} was built for embedding_dim={embedding_dim}, "
            f"but the input's last dimension is {tensor.shape[-1]}"
        )
    seq_len = tensor.shape[-2]
    if seq_len > max_seq_length:
        raise ValueError(
            f"sequence length {seq_len} exceeds max_seq_length={max_seq_length}; "
            f"build {layer_name} with max_seq_length >= {seq_len} or shorten the input"
        )
    return tensor, seq_len


class PositionalEncoding(Module):
    """Add the fixed sinusoidal encoding of each position to a sequence of embeddings.

    The table ``pe`` is computed once in float64 and stored as a float32
    ``Tensor`` of shape ``(max_seq_length, embedding_dim)``; it has no
    learnable parameters.

    Args:
        embedding_dim: Length of each vector; odd values work.
        max_seq_length: The maximum sequence length ``forward`` accepts.
        dropout: Probability of inverted dropout after the addition, applied in
            training mode only.
        rng: Generator for the dropout masks; the seeded default one if omitted.

    Shape:
        ``(seq_len, embedding_dim)`` or ``(batch, seq_len, embedding_dim)`` -> same shape.

    Example:
        >>> pos = PositionalEncoding(embedding_dim=4, max_seq_length=8)
        >>> pos(Tensor(np.zeros((3, 4)))).shape
        (3, 4)
    """

    def __init__(
        self,
        embedding_dim: int,
        max_seq_length: int = 5000,
        dropout: float = 0.0,
        *,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.embedding_dim = check_int("embedding_dim", embedding_dim, minimum=1)
        self.max_seq_length = check_int("max_seq_length", max_seq_length, minimum=1)
        self.dropout = check_probability("dropout", dropout)
        resolve_rng(rng)  # type check now; resolved per call so manual_seed applies later
        self.rng = rng
        self.pe = Tensor(sinusoidal_table(self.max_seq_length, self.embedding_dim), dtype=np.float32)

    def forward(self, x: Any) -> Tensor:
        """Return ``x`` plus the encodings of positions ``0 .. seq_len - 1``, then dropout."""
        tensor, seq_len = _check_embeddings_input(
            x, self.embedding_dim, self.max_seq_length, "PositionalEncoding"
        )
        out = tensor + self.pe[:seq_len]  # (seq_len, dim) broadcast over batch
        return F.dropout(out, self.dropout, training=self.training, rng=resolve_rng(self.rng))

    def visualize_encoding(self, seq_length: int = 100, dims_to_show: int = 10) -> Figure:
        """Return a matplotlib ``Figure`` with a heatmap of the first positions and dimensions.

        Nothing is shown or saved; call ``figure.savefig(path)`` to keep it.
        Needs the ``plot`` extra: ``pip install 'tinytorch-embeddings[plot]'``.

        Note:
            ``seq_length`` and ``dims_to_show`` are capped at the table's size,
            so the defaults work for any table.
        """
        seq_length = min(check_int("seq_length", seq_length, minimum=1), self.max_seq_length)
        dims_to_show = min(check_int("dims_to_show", dims_to_show, minimum=1), self.embedding_dim)
        figure = import_figure()(figsize=(8, 4.5))
        axes = figure.add_subplot()
        image = axes.imshow(
            self.pe.data[:seq_length, :dims_to_show].T,
            aspect="auto",
            cmap="RdBu_r",
            vmin=-1.0,
            vmax=1.0,
            interpolation="nearest",
        )
        axes.set_xlabel("position")
        axes.set_ylabel("dimension")
        axes.set_title(f"Sinusoidal positional encoding (embedding_dim={self.embedding_dim})")
        figure.colorbar(image, ax=axes, label="value")
        return figure

    def __repr__(self) -> str:
        settings = [str(self.embedding_dim), f"max_seq_length={self.max_seq_length}"]
        if self.dropout:
            settings.append(f"dropout={self.dropout}")
        return f"PositionalEncoding({', '.join(settings)})"


class LearnedPositionalEmbedding(Module):
    """Add a learned vector for each position, as GPT-2 and BERT do.

    ``position_embedding`` is an ``Embedding`` with one row per position
    (``vocab_size == max_seq_length``, init ``'normal'``). Its gradient sums
    over the batch.

    Shape:
        ``(seq_len, embedding_dim)`` or ``(batch, seq_len, embedding_dim)`` -> same shape.

    Example:
        >>> learned = LearnedPositionalEmbedding(max_seq_length=8, embedding_dim=4)
        >>> learned(Tensor(np.zeros((2, 3, 4)))).shape
        (2, 3, 4)

    Note:
        Unlike the sinusoidal formula, the table has no rows past
        ``max_seq_length``, so longer sequences raise ``ValueError``.
    """

    def __init__(
        self,
        max_seq_length: int,
        embedding_dim: int,
        *,
        dtype: Any = np.float32,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.max_seq_length = check_int("max_seq_length", max_seq_length, minimum=1)
        self.embedding_dim = check_int("embedding_dim", embedding_dim, minimum=1)
        # Errors about the table's size name this layer's arguments, not the inner table's vocab_size.
        itemsize = _check_table_dtype(dtype).itemsize
        with table_memory("max_seq_length", self.max_seq_length, "embedding_dim", self.embedding_dim, itemsize):
            self.position_embedding = Embedding(
                self.max_seq_length, self.embedding_dim, init_type="normal", dtype=dtype, rng=rng
            )

    def forward(self, x: Any) -> Tensor:
        """Return ``x`` plus the learned rows for positions ``0 .. seq_len - 1``."""
        tensor, seq_len = _check_embeddings_input(
            x, self.embedding_dim, self.max_seq_length, "LearnedPositionalEmbedding"
        )
        positions = np.arange(seq_len)
        return tensor + self.position_embedding(positions)  # (seq_len, dim) broadcast over batch

    def __repr__(self) -> str:
        return f"LearnedPositionalEmbedding({self.max_seq_length}, {self.embedding_dim})"
