"""Tokenizers that turn text into integer ids: a character-level one and byte-level BPE.

Both tokenizers reserve the same four special tokens (``<PAD>``, ``<UNK>``,
``<BOS>``, ``<EOS>``), validate every id they decode, pad batches of id lists
and save their vocabulary as a JSON file. This module works on plain Python
lists and NumPy arrays and imports no ``Tensor`` code.
"""

from __future__ import annotations

import heapq
import json
import logging
import numbers
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from tinytorch._atomic import atomic_write_text
from tinytorch._checks import check_int, describe

__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "DEFAULT_SPECIAL_TOKENS",
    "apply_merges",
    "learn_merges",
    "merge_pair",
    "split_chunks",
]

logger = logging.getLogger(__name__)

Pair: TypeAlias = tuple[int, int]
TokenIds: TypeAlias = Sequence[int] | npt.NDArray[np.integer]

DEFAULT_SPECIAL_TOKENS: Mapping[str, int] = {"<PAD>": 0, "<UNK>": 1, "<BOS>": 2, "<EOS>": 3}

# Byte b has BPE id b + BYTE_OFFSET, and merge number r (from 0) creates id FIRST_MERGE_ID + r.
BYTE_OFFSET = len(DEFAULT_SPECIAL_TOKENS)
FIRST_MERGE_ID = BYTE_OFFSET + 256

# Printable ASCII, the characters of a CharTokenizer: space (32) to tilde (126).
_PRINTABLE_ASCII = "".join(chr(code) for code in range(32, 127))

# Pre-tokenization: an optional space with a run of word characters, an optional
# space with a run of punctuation, or a run of whitespace. The lazy whitespace
# branch stops before a last space that precedes a non-space, so that space
# starts the next chunk (" word"). Every character is a word character,
# whitespace or neither, so the chunks always concatenate back to the text.
_CHUNK_PATTERN = re.compile(r" ?\w+| ?[^\w\s]+|\s+?(?= \S)|\s+")

# Strings that BPE reads and writes as UTF-8. "surrogatepass" lets a str with a
# lone surrogate (valid in Python, invalid in UTF-8) survive the round trip.
_TEXT_ERRORS = "surrogatepass"

# The per-chunk encoding cache is cleared when it reaches this many chunks.
_CACHE_LIMIT = 100_000

_CHAR_FORMAT = "tinytorch.CharTokenizer"
_BPE_FORMAT = "tinytorch.BPETokenizer"
_FORMAT_VERSION = 1
_LOADERS = {_CHAR_FORMAT: "CharTokenizer.load", _BPE_FORMAT: "BPETokenizer.load"}


# ---------------------------------------------------------------------------
# BPE maths: plain functions on lists of ids
# ---------------------------------------------------------------------------


def split_chunks(text: str) -> list[str]:
    """Split ``text`` into the chunks that BPE merges never cross.

    A chunk is a run of word characters or a run of punctuation, each with at
    most one leading space, or a run of whitespace. ``"".join(split_chunks(text))``
    is always ``text``.

    Example:
        >>> split_chunks("Hello,  world!\\n")
        ['Hello', ',', ' ', ' world', '!', '\\n']
    """
    return _CHUNK_PATTERN.findall(text)


def merge_pair(ids: Sequence[int], pair: Pair, new_id: int) -> list[int]:
    """Replace each occurrence of ``pair`` in ``ids`` with ``new_id``, scanning left to right.

    Occurrences do not overlap: ``[7, 7, 7]`` with pair ``(7, 7)`` becomes
    ``[new_id, 7]``.
    """
    first, second = pair
    merged: list[int] = []
    position = 0
    length = len(ids)
    while position < length:
        if position + 1 < length and ids[position] == first and ids[position + 1] == second:
            merged.append(new_id)
            position += 2
        else:
            merged.append(ids[position])
            position += 1
    return merged


def apply_merges(ids: Sequence[int], merges: Mapping[Pair, int]) -> list[int]:
    """Apply learned merges to one chunk's ids, lowest-ranked pair first, until none applies.

    ``merges`` maps a pair to the id it creates. Ids grow with rank, so the pair
    with the smallest new id is the one learned earliest.
    """
    merged = list(ids)
    while len(merged) >= 2:
        best_id: int | None = None
        best_pair: Pair | None = None
        for pair in zip(merged, merged[1:]):
            new_id = merges.get(pair)
            if new_id is not None and (best_id is None or new_id < best_id):
                best_id = new_id
                best_pair = pair
        if best_pair is None or best_id is None:
            break
        merged = merge_pair(merged, best_pair, best_id)
    return merged


def learn_merges(chunk_counts: Mapping[str, int], num_merges: int) -> list[Pair]:
    """Learn up to ``num_merges`` BPE merges from chunk frequencies.

    Each step merges the most frequent adjacent pair of ids, counted over all
    chunks weighted by frequency. Ties go to the smallest pair, so training is
    deterministic. Pair counts are updated incrementally: a merge re-counts only
    the chunks that contain the merged pair. Fewer merges are returned when no
    pair is left.

    Returns:
        The merged pairs in order. Merge ``r`` creates id ``FIRST_MERGE_ID + r``.
    """
    words = [
        [byte + BYTE_OFFSET for byte in chunk.encode("utf-8", _TEXT_ERRORS)]
        for chunk in chunk_counts
    ]
    frequencies = list(chunk_counts.values())

    # Count every adjacent pair once and remember which chunks contain it.
    pair_counts: dict[Pair, int] = {}
    pair_chunks: dict[Pair, set[int]] = {}
    for index, word in enumerate(words):
        frequency = frequencies[index]
        for pair in zip(word, word[1:]):
            pair_counts[pair] = pair_counts.get(pair, 0) + frequency
            pair_chunks.setdefault(pair, set()).add(index)

    # A max-heap on count via negation. Entries go stale when a count changes,
    # so _pop_most_frequent skips those whose count no longer matches.
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    merges: list[Pair] = []
    while len(merges) < num_merges:
        best = _pop_most_frequent(heap, pair_counts)
        if best is None:
            break
        new_id = FIRST_MERGE_ID + len(merges)
        merges.append(best)

        changed: set[Pair] = set()
        for index in sorted(pair_chunks.pop(best)):
            word = words[index]
            frequency = frequencies[index]
            merged = merge_pair(word, best, new_id)
            old_pairs = list(zip(word, word[1:]))
            new_pairs = list(zip(merged, merged[1:]))

            for pair in old_pairs:
                pair_counts[pair] -= frequency
            for pair in new_pairs:
                pair_counts[pair] = pair_counts.get(pair, 0) + frequency

            old_set = set(old_pairs)
            new_set = set(new_pairs)
            for pair in old_set - new_set:
                chunks = pair_chunks.get(pair)
                if chunks is not None:
                    chunks.discard(index)
            for pair in new_set - old_set:
                pair_chunks.setdefault(pair, set()).add(index)
            changed |= old_set | new_set
            words[index] = merged

        for pair in changed:
            count = pair_counts.get(pair, 0)
            if count > 0:
                heapq.heappush(heap, (-count, pair))
            else:
                pair_counts.pop(pair, None)
                pair_chunks.pop(pair, None)
    return merges


def _pop_most_frequent(
    heap: list[tuple[int, Pair]], pair_counts: Mapping[Pair, int]
) -> Pair | None:
    while heap:
        negative_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) == -negative_count:
            return pair
    return None


# ---------------------------------------------------------------------------
# Validation shared by both tokenizers
# ---------------------------------------------------------------------------


def _merge_special_tokens(special_tokens: Mapping[str, int] | None) -> dict[str, int]:
    """Return the default special tokens updated with the user's, after checking them."""
    merged = dict(DEFAULT_SPECIAL_TOKENS)
    if special_tokens is None:
        return merged
    if not isinstance(special_tokens, Mapping):
        raise TypeError(
            "special_tokens must be a dict mapping token names to ids, or None; "
            f"received {describe(special_tokens)}"
        )

    for name, index in special_tokens.items():
        if not isinstance(name, str):
            raise TypeError(f"special token names must be strings; received {describe(name)}")
        if not name:
            raise ValueError(
                f"special token names must be non-empty strings; received {describe(name)}"
            )
        merged[name] = check_int(f"special_tokens[{name!r}]", index, minimum=0)

    owners: dict[int, str] = {}
    for name, index in merged.items():
        if index in owners:
            raise ValueError(
                f"special tokens {owners[index]!r} and {name!r} both have id {index}; "
                "each special token needs its own id (the defaults are "
                f"{dict(DEFAULT_SPECIAL_TOKENS)}); "
                f"received special_tokens={describe(special_tokens)}"
            )
        owners[index] = name
    return merged


class _Tokenizer:
    """State and checks that CharTokenizer and BPETokenizer share."""

    special_tokens: dict[str, int]
    vocab_size: int

    def _has_id(self, token_id: int) -> bool:
        raise NotImplementedError

    def _id_range_text(self) -> str:
        return f"0 to {self.vocab_size - 1}"

    def _check_ids(self, tokens: Any, name: str = "tokens") -> list[int]:
        """Return ``tokens`` as a list of ints after checking their types, dimensions and range."""
        if isinstance(tokens, np.ndarray):
            if tokens.dtype.kind not in "iu":
                raise TypeError(
                    f"{name} must contain integer token ids; received an array of dtype "
                    f"{tokens.dtype} and shape {tokens.shape}"
                )
            if tokens.ndim != 1:
                raise ValueError(
                    f"{name} must be a 1-D array of token ids; received an array of shape "
                    f"{tokens.shape}"
                )
            items: Sequence[Any] = tokens.tolist()
        elif isinstance(tokens, (list, tuple)):
            items = tokens
        else:
            raise TypeError(
                f"{name} must be a list, tuple or 1-D integer array of token ids; "
                f"received {describe(tokens)}"
            )

        ids: list[int] = []
        for position, item in enumerate(items):
            if isinstance(item, (bool, np.bool_)) or not isinstance(item, numbers.Integral):
                raise TypeError(
                    f"{name}[{position}] must be an integer token id; received {describe(item)}"
                )
            token_id = int(item)
            if not self._has_id(token_id):
                raise ValueError(
                    f"{name}[{position}] is not a token id of this vocabulary; valid ids are "
                    f"{self._id_range_text()}; received {describe(item)}"
                )
            ids.append(token_id)
        return ids

    def pad_sequences(
        self, sequences: Iterable[TokenIds], max_length: int | None = None
    ) -> list[list[int]]:
        """Pad each id sequence with ``<PAD>`` to one length, truncating longer ones.

        Shape:
            ``n`` sequences of any lengths -> ``n`` lists of length ``max_length``,
            or of the longest input length when ``max_length`` is None.

        Note:
            Truncation drops ids from the end, so a truncated sequence loses its
            ``<EOS>``.
        """
        if max_length is not None:
            max_length = check_int("max_length", max_length, minimum=1)
        if isinstance(sequences, (str, bytes)) or not isinstance(sequences, Iterable):
            raise TypeError(
                "sequences must be an iterable of token id sequences; "
                f"received {describe(sequences)}"
            )

        rows = [
            self._check_ids(sequence, name=f"sequences[{index}]")
            for index, sequence in enumerate(sequences)
        ]
        width = max_length if max_length is not None else max(map(len, rows), default=0)

        pad = self.pad_token_id
        return [row[:width] + [pad] * (width - len(row)) for row in rows]

    @property
    def pad_token_id(self) -> int:
        """Id of ``<PAD>``, the filler that ``pad_sequences`` appends."""
        return self.special_tokens["<PAD>"]

    @property
    def unk_token_id(self) -> int:
        """Id of ``<UNK>``, which replaces characters outside the vocabulary."""
        return self.special_tokens["<UNK>"]

    @property
    def bos_token_id(self) -> int:
        """Id of ``<BOS>``, the first id of an encoding with special tokens."""
        return self.special_tokens["<BOS>"]

    @property
    def eos_token_id(self) -> int:
        """Id of ``<EOS>``, the last id of an encoding with special tokens."""
        return self.special_tokens["<EOS>"]

    def __len__(self) -> int:
        return self.vocab_size


# ---------------------------------------------------------------------------
# Vocabulary files
# ---------------------------------------------------------------------------


def _invalid_file(path: Path, format_tag: str, problem: str) -> ValueError:
    return ValueError(f"{str(path)!r} is not a valid {format_tag} vocabulary file: {problem}")


def _read_vocabulary_file(
    path: str | os.PathLike[str], format_tag: str
) -> tuple[Path, dict[str, Any]]:
    """Read a JSON vocabulary file and check its format tag and version.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not UTF-8 JSON, or its tag or version is wrong.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike; received {describe(path)}")
    file_path = Path(path)
    if file_path.is_dir():
        raise _invalid_file(file_path, format_tag, "it is a directory, not a vocabulary file")
    try:
        text = file_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise _invalid_file(file_path, format_tag, f"not UTF-8 text ({error})") from error
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise _invalid_file(file_path, format_tag, f"not valid JSON ({error})") from error
    except RecursionError as error:
        raise _invalid_file(file_path, format_tag, "JSON nested too deeply to be a vocabulary") from error

    if not isinstance(data, dict):
        raise _invalid_file(
            file_path, format_tag, f"the top level must be a JSON object; received {describe(data)}"
        )
    found = data.get("format")
    if found != format_tag:
        problem = f"'format' must be {format_tag!r}; received {describe(found)}"
        if isinstance(found, str) and found in _LOADERS:
            problem += f"; load this file with {_LOADERS[found]} instead"
        raise _invalid_file(file_path, format_tag, problem)
    version = data.get("version")
    if isinstance(version, bool) or version != _FORMAT_VERSION:
        raise _invalid_file(
            file_path,
            format_tag,
            f"'version' must be {_FORMAT_VERSION}, the only version this tinytorch reads; "
            f"received {describe(version)}",
        )
    return file_path, data


# ---------------------------------------------------------------------------
# Character tokenizer
# ---------------------------------------------------------------------------


class CharTokenizer(_Tokenizer):
    """Map each printable ASCII character to one id, after the special tokens.

    By default ``<PAD>``, ``<UNK>``, ``<BOS>`` and ``<EOS>`` have ids 0 to 3 and
    the characters 32 (space) to 126 (``~``) follow in order, so ``vocab_size``
    is 99. ``special_tokens`` maps further names to ids or moves a default. The
    characters are then numbered from one past the largest special id. A
    character that is itself a special token name keeps its special id.

    Example:
        >>> tokenizer = CharTokenizer()
        >>> tokenizer.encode("Hi")
        [2, 44, 77, 3]
        >>> tokenizer.decode([2, 44, 77, 3])
        'Hi'

    Note:
        Newlines, tabs and non-ASCII characters map to ``<UNK>``, so
        ``decode(encode(text)) == text`` holds only for printable ASCII text.
        Special token names in the text, such as ``"<EOS>"``, are encoded
        character by character. A single-character special token name (say
        ``{"a": 5}``) takes that character's place, so ``decode`` with
        ``skip_special_tokens=True`` drops the character.
    """

    def __init__(self, special_tokens: Mapping[str, int] | None = None) -> None:
        self.special_tokens = _merge_special_tokens(special_tokens)

        self.char_to_idx: dict[str, int] = dict(self.special_tokens)
        next_id = max(self.special_tokens.values()) + 1
        for character in _PRINTABLE_ASCII:
            if character not in self.special_tokens:
                self.char_to_idx[character] = next_id
                next_id += 1

        self.idx_to_char: dict[int, str] = {
            index: token for token, index in self.char_to_idx.items()
        }
        self.vocab_size = next_id
        self._special_ids = frozenset(self.special_tokens.values())

    def _has_id(self, token_id: int) -> bool:
        return token_id in self.idx_to_char

    def _id_range_text(self) -> str:
        missing = sorted(set(range(self.vocab_size)) - self.idx_to_char.keys())
        if not missing:
            return super()._id_range_text()
        listed = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        return f"{super()._id_range_text()} except {listed}"

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Encode ``text`` as one id per character, wrapped in ``<BOS>`` and ``<EOS>``.

        Shape:
            ``len(text)`` characters -> ``len(text) + 2`` ids (``len(text)``
            without special tokens).
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str; received {describe(text)}")

        unknown = self.unk_token_id
        ids = [self.char_to_idx.get(character, unknown) for character in text]
        if add_special_tokens:
            ids = [self.bos_token_id, *ids, self.eos_token_id]
        return ids

    def decode(self, tokens: TokenIds, skip_special_tokens: bool = True) -> str:
        """Decode ids to text, dropping special tokens or writing their names.

        Raises:
            TypeError: ``tokens`` is not a list, tuple or integer array, or one id
                is not an integer.
            ValueError: an id is not in the vocabulary.
        """
        ids = self._check_ids(tokens)
        if skip_special_tokens:
            ids = [token_id for token_id in ids if token_id not in self._special_ids]
        return "".join(self.idx_to_char[token_id] for token_id in ids)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the vocabulary to ``path`` as JSON, atomically, and return the path."""
        document = {
            "format": _CHAR_FORMAT,
            "version": _FORMAT_VERSION,
            "special_tokens": self.special_tokens,
            "vocab_size": self.vocab_size,
        }
        return atomic_write_text(path, json.dumps(document, indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CharTokenizer:
        """Read a tokenizer written by ``CharTokenizer.save``.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: the file is malformed or belongs to another tokenizer.
                The message names the path.
        """
        file_path, data = _read_vocabulary_file(path, _CHAR_FORMAT)

        special_tokens = data.get("special_tokens")
        if not isinstance(special_tokens, dict):
            raise _invalid_file(
                file_path,
                _CHAR_FORMAT,
                "'special_tokens' must be an object of names to ids; "
                f"received {describe(special_tokens)}",
            )
        try:
            tokenizer = cls(special_tokens=special_tokens)
        except (TypeError, ValueError) as error:
            raise _invalid_file(file_path, _CHAR_FORMAT, str(error)) from error

        vocab_size = data.get("vocab_size")
        if isinstance(vocab_size, bool) or vocab_size != tokenizer.vocab_size:
            raise _invalid_file(
                file_path,
                _CHAR_FORMAT,
                f"'vocab_size' must be {tokenizer.vocab_size}, the size these special tokens "
                f"give; received {describe(vocab_size)}",
            )
        return tokenizer

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CharTokenizer):
            return NotImplemented
        return self.char_to_idx == other.char_to_idx

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        if self.special_tokens == DEFAULT_SPECIAL_TOKENS:
            return f"CharTokenizer(vocab_size={self.vocab_size})"
        return f"CharTokenizer(special_tokens={self.special_tokens}, vocab_size={self.vocab_size})"


# ---------------------------------------------------------------------------
# Byte-level BPE tokenizer
# ---------------------------------------------------------------------------


class BPETokenizer(_Tokenizer):
    """Byte-level byte-pair encoding: UTF-8 bytes merged into frequent multi-byte tokens.

    Ids 0 to 3 are the special tokens, ids 4 to 259 the 256 byte values, and
    ``train`` adds one id per learned merge up to ``vocab_size``. Merges never
    cross chunk boundaries (see ``split_chunks``). Any str round-trips:
    ``decode(encode(text)) == text``, also before training, when the tokenizer
    encodes plain bytes.

    Example:
        >>> tokenizer = BPETokenizer(vocab_size=264)
        >>> tokenizer.train("low lower lowest " * 10)
        >>> tokenizer.vocab_size
        264
        >>> ids = tokenizer.encode("lowest")
        >>> tokenizer.decode(ids)
        'lowest'

    Note:
        ``vocab_size`` is the number of ids the tokenizer has now: 260 before
        training and ``target_vocab_size`` after it, or less when the text runs
        out of pairs to merge (a warning is logged). Special token names in the
        text, such as ``"<EOS>"``, are encoded as plain bytes.
    """

    def __init__(self, vocab_size: int = 1000) -> None:
        self.target_vocab_size = check_int("vocab_size", vocab_size, minimum=FIRST_MERGE_ID)
        self.special_tokens = dict(DEFAULT_SPECIAL_TOKENS)
        self._set_merges([])

    def _set_merges(self, merges: Sequence[Pair]) -> None:
        """Rebuild the id tables from an ordered list of merged pairs."""
        self.merges: dict[Pair, int] = {
            pair: FIRST_MERGE_ID + rank for rank, pair in enumerate(merges)
        }
        vocab: dict[int, bytes] = {
            index: name.encode("utf-8") for name, index in self.special_tokens.items()
        }
        for byte in range(256):
            vocab[byte + BYTE_OFFSET] = bytes([byte])
        for (first, second), new_id in self.merges.items():
            vocab[new_id] = vocab[first] + vocab[second]
        self.vocab = vocab
        self.vocab_size = FIRST_MERGE_ID + len(self.merges)
        self._cache: dict[str, list[int]] = {}

    def _has_id(self, token_id: int) -> bool:
        return 0 <= token_id < self.vocab_size

    def train(self, texts: str | Iterable[str]) -> None:
        """Learn merges from ``texts`` until ``vocab_size`` reaches ``target_vocab_size``.

        Training starts afresh and replaces any earlier merges.

        Raises:
            TypeError: ``texts`` is neither a str nor an iterable of str.
        """
        if isinstance(texts, str):
            texts = [texts]
        elif isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
            raise TypeError(
                f"texts must be a str or an iterable of str; received {describe(texts)}"
            )

        chunk_counts: Counter[str] = Counter()
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{index}] must be a str; received {describe(text)}")
            chunk_counts.update(split_chunks(text))

        requested = self.target_vocab_size - FIRST_MERGE_ID
        merges = learn_merges(chunk_counts, requested)
        self._set_merges(merges)

        if len(merges) < requested:
            logger.warning(
                "BPE training stopped at vocab_size %d, short of the requested %d, because "
                "no adjacent pair was left to merge. Train on more text or request a "
                "smaller vocab_size",
                self.vocab_size,
                self.target_vocab_size,
            )
        logger.info(
            "trained BPE on %d distinct chunks: %d merges, vocab_size %d",
            len(chunk_counts),
            len(merges),
            self.vocab_size,
        )

    def _encode_chunk(self, chunk: str) -> list[int]:
        ids = self._cache.get(chunk)
        if ids is None:
            byte_ids = [byte + BYTE_OFFSET for byte in chunk.encode("utf-8", _TEXT_ERRORS)]
            ids = apply_merges(byte_ids, self.merges)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[chunk] = ids
        return ids

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Encode ``text`` as BPE ids, wrapped in ``<BOS>`` and ``<EOS>``.

        Shape:
            a str -> at most ``len(text.encode("utf-8")) + 2`` ids.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str; received {describe(text)}")

        ids: list[int] = [self.bos_token_id] if add_special_tokens else []
        for chunk in split_chunks(text):
            ids.extend(self._encode_chunk(chunk))
        if add_special_tokens:
            ids.append(self.eos_token_id)
        return ids

    def decode(self, tokens: TokenIds, skip_special_tokens: bool = True) -> str:
        """Decode ids to text, dropping special tokens or writing their names.

        Bytes that do not form valid UTF-8, which only arbitrary id sequences
        produce, decode to U+FFFD, except the UTF-8 form of a surrogate code
        point, which decodes to that lone surrogate so that every ``str``
        round-trips.

        Raises:
            TypeError: ``tokens`` is not a list, tuple or integer array, or one id
                is not an integer.
            ValueError: an id is not in the vocabulary.
        """
        ids = self._check_ids(tokens)
        if skip_special_tokens:
            ids = [token_id for token_id in ids if token_id >= BYTE_OFFSET]
        data = b"".join(self.vocab[token_id] for token_id in ids)
        try:
            return data.decode("utf-8", _TEXT_ERRORS)
        except UnicodeDecodeError:
            return data.decode("utf-8", "replace")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the merges to ``path`` as JSON, atomically, and return the path."""
        document = {
            "format": _BPE_FORMAT,
            "version": _FORMAT_VERSION,
            "vocab_size": self.target_vocab_size,
            "merges": [list(pair) for pair in self.merges],
        }
        return atomic_write_text(path, json.dumps(document) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BPETokenizer:
        """Read a tokenizer written by ``BPETokenizer.save``.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: the file is malformed or belongs to another tokenizer.
                The message names the path.
        """
        file_path, data = _read_vocabulary_file(path, _BPE_FORMAT)

        try:
            tokenizer = cls(vocab_size=data.get("vocab_size"))
        except (TypeError, ValueError) as error:
            raise _invalid_file(file_path, _BPE_FORMAT, f"'vocab_size': {error}") from error

        merges = data.get("merges")
        if not isinstance(merges, list):
            raise _invalid_file(
                file_path,
                _BPE_FORMAT,
                f"'merges' must be a list of id pairs; received {describe(merges)}",
            )
        if FIRST_MERGE_ID + len(merges) > tokenizer.target_vocab_size:
            raise _invalid_file(
                file_path,
                _BPE_FORMAT,
                f"{len(merges)} merges do not fit in vocab_size {tokenizer.target_vocab_size}; "
                f"at most {tokenizer.target_vocab_size - FIRST_MERGE_ID} are valid",
            )

        pairs: list[Pair] = []
        seen: set[Pair] = set()
        for rank, entry in enumerate(merges):
            next_id = FIRST_MERGE_ID + rank
            valid = (
                isinstance(entry, list)
                and len(entry) == 2
                and all(
                    isinstance(token_id, int)
                    and not isinstance(token_id, bool)
                    and BYTE_OFFSET <= token_id < next_id
                    for token_id in entry
                )
            )
            if not valid:
                raise _invalid_file(
                    file_path,
                    _BPE_FORMAT,
                    f"merges[{rank}] must be a pair of ids from {BYTE_OFFSET} to {next_id - 1} "
                    f"(bytes and earlier merges); received {describe(entry)}",
                )
            pair = (entry[0], entry[1])
            if pair in seen:
                raise _invalid_file(
                    file_path,
                    _BPE_FORMAT,
                    f"merges[{rank}] repeats an earlier merge; each pair may appear once; "
                    f"received {describe(entry)}",
                )
            seen.add(pair)
            pairs.append(pair)

        tokenizer._set_merges(pairs)
        return tokenizer

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BPETokenizer):
            return NotImplemented
        return self.target_vocab_size == other.target_vocab_size and self.merges == other.merges

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.target_vocab_size}, merges={len(self.merges)})"
