"""Tests for CharTokenizer, BPETokenizer and their vocabulary files."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinytorch._atomic
from tinytorch.core.tokenization import (
    BYTE_OFFSET,
    FIRST_MERGE_ID,
    BPETokenizer,
    CharTokenizer,
    apply_merges,
    learn_merges,
    merge_pair,
    split_chunks,
)

# Written for these tests: repetitive English with a little code and non-ASCII,
# so that a few dozen merges have frequent pairs to learn.
SMALL_CORPUS = (
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs.\n"
    "def lookup(table, ids):\n    return [table[i] for i in ids]\n\n"
    "Embeddings map token ids to rows of a table. Rows are learned by gradient descent.\n"
    "Café, naïve, über — 東京 and 😀 appear once or twice.\n"
) * 8

printable_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126))
any_text_with_surrogates = st.text(st.characters(exclude_categories=()))


def char_id(character: str) -> int:
    """Id of a printable ASCII character in a default CharTokenizer."""
    return ord(character) - 32 + 4


def naive_learn_merges(text: str, num_merges: int) -> list[tuple[int, int]]:
    """Learn merges by recounting every pair after each merge: the slow reference."""
    counts = Counter(split_chunks(text))
    words = [[byte + BYTE_OFFSET for byte in chunk.encode("utf-8")] for chunk in counts]
    frequencies = list(counts.values())
    merges: list[tuple[int, int]] = []
    for rank in range(num_merges):
        pair_counts: Counter[tuple[int, int]] = Counter()
        for word, frequency in zip(words, frequencies):
            for index in range(len(word) - 1):
                pair_counts[(word[index], word[index + 1])] += frequency
        if not pair_counts:
            break
        best_count = max(pair_counts.values())
        best = min(pair for pair, count in pair_counts.items() if count == best_count)
        merges.append(best)
        words = [merge_pair(word, best, FIRST_MERGE_ID + rank) for word in words]
    return merges


def naive_encode_chunk(chunk: str, merges: list[tuple[int, int]]) -> list[int]:
    """Encode one chunk by applying every merge in rank order: the slow reference."""
    ids = [byte + BYTE_OFFSET for byte in chunk.encode("utf-8", "surrogatepass")]
    for rank, pair in enumerate(merges):
        ids = merge_pair(ids, pair, FIRST_MERGE_ID + rank)
    return ids


@pytest.fixture(scope="module")
def trained_bpe() -> BPETokenizer:
    tokenizer = BPETokenizer(vocab_size=330)
    tokenizer.train(SMALL_CORPUS)
    return tokenizer


# ---------------------------------------------------------------------------
# CharTokenizer: vocabulary layout
# ---------------------------------------------------------------------------


def test_char_default_vocabulary_layout():
    tokenizer = CharTokenizer()

    assert tokenizer.vocab_size == 99
    assert len(tokenizer) == 99
    assert tokenizer.char_to_idx["<PAD>"] == 0
    assert tokenizer.char_to_idx["<UNK>"] == 1
    assert tokenizer.char_to_idx["<BOS>"] == 2
    assert tokenizer.char_to_idx["<EOS>"] == 3
    assert tokenizer.char_to_idx[" "] == 4
    assert tokenizer.char_to_idx["~"] == 98
    assert tokenizer.idx_to_char == {index: token for token, index in tokenizer.char_to_idx.items()}
    assert sorted(tokenizer.idx_to_char) == list(range(99))


def test_char_token_id_properties():
    tokenizer = CharTokenizer()

    assert tokenizer.pad_token_id == 0
    assert tokenizer.unk_token_id == 1
    assert tokenizer.bos_token_id == 2
    assert tokenizer.eos_token_id == 3


def test_char_custom_special_renumbers_characters():
    tokenizer = CharTokenizer(special_tokens={"<MASK>": 4})

    assert tokenizer.char_to_idx["<MASK>"] == 4
    assert tokenizer.char_to_idx[" "] == 5
    assert tokenizer.char_to_idx["~"] == 99
    assert tokenizer.vocab_size == 100
    assert tokenizer.encode("A", add_special_tokens=False) == [ord("A") - 32 + 5]


def test_char_special_moves_default():
    tokenizer = CharTokenizer(special_tokens={"<PAD>": 10})

    assert tokenizer.pad_token_id == 10
    assert tokenizer.unk_token_id == 1
    assert tokenizer.char_to_idx[" "] == 11
    assert tokenizer.vocab_size == 11 + 95
    assert 0 not in tokenizer.idx_to_char
    assert tokenizer.pad_sequences([[2, 3]], max_length=3) == [[2, 3, 10]]
    with pytest.raises(ValueError, match=r"tokens\[0\] .* except 0, 4, 5, .*received 0 \(int\)"):
        tokenizer.decode([0])


def test_char_special_named_like_character():
    tokenizer = CharTokenizer(special_tokens={"a": 4})

    assert tokenizer.char_to_idx["a"] == 4
    assert tokenizer.char_to_idx[" "] == 5
    assert tokenizer.char_to_idx["b"] == ord("b") - 32 + 5 - 1
    assert tokenizer.vocab_size == 99
    assert tokenizer.encode("ab", add_special_tokens=False) == [4, tokenizer.char_to_idx["b"]]
    assert tokenizer.decode(tokenizer.encode("ab")) == "b"
    assert tokenizer.decode(tokenizer.encode("ab"), skip_special_tokens=False) == "<BOS>ab<EOS>"


@pytest.mark.parametrize(
    ("special_tokens", "error", "message"),
    [
        ({"<PAD>": -1}, ValueError, r"special_tokens\['<PAD>'\] must be an integer >= 0; received -1 \(int\)"),
        ({"<MASK>": 1.5}, TypeError, r"special_tokens\['<MASK>'\] .* received 1\.5 \(float\)"),
        ({"<MASK>": True}, TypeError, r"received True \(bool\)"),
        ({"<MASK>": "4"}, TypeError, r"received '4' \(str\)"),
        ({7: 4}, TypeError, r"names must be strings; received 7 \(int\)"),
        ({"": 4}, ValueError, r"non-empty strings; received '' \(str\)"),
        ({"<MASK>": 0}, ValueError, r"'<PAD>' and '<MASK>' both have id 0"),
        ({"<PAD>": 3}, ValueError, r"'<PAD>' and '<EOS>' both have id 3"),
        (["<MASK>"], TypeError, r"special_tokens must be a dict .*received \['<MASK>'\] \(list\)"),
    ],
)
def test_char_rejects_bad_special_tokens(special_tokens, error, message):
    with pytest.raises(error, match=message):
        CharTokenizer(special_tokens=special_tokens)


# ---------------------------------------------------------------------------
# CharTokenizer: encode and decode
# ---------------------------------------------------------------------------


def test_char_encode_hello_world_ids():
    tokenizer = CharTokenizer()

    ids = tokenizer.encode("Hello world!")

    assert len(ids) == 14
    assert ids == [2] + [char_id(character) for character in "Hello world!"] + [3]
    assert ids[1] == ord("H") - 32 + 4 == 44


def test_char_encode_without_special_tokens():
    tokenizer = CharTokenizer()

    assert tokenizer.encode("ab", add_special_tokens=False) == [char_id("a"), char_id("b")]
    assert tokenizer.encode("", add_special_tokens=False) == []
    assert tokenizer.encode("") == [2, 3]


def test_char_unknown_characters_map_to_unk():
    tokenizer = CharTokenizer()

    ids = tokenizer.encode("a\nb\tc é😀", add_special_tokens=False)

    assert ids == [char_id("a"), 1, char_id("b"), 1, char_id("c"), char_id(" "), 1, 1]
    assert tokenizer.decode(ids) == "abc "
    assert tokenizer.decode(ids, skip_special_tokens=False) == "a<UNK>b<UNK>c <UNK><UNK>"


def test_char_special_token_names_in_text_are_characters():
    tokenizer = CharTokenizer()

    ids = tokenizer.encode("<EOS>", add_special_tokens=False)

    assert ids == [char_id(character) for character in "<EOS>"]


def test_char_decode_skip_and_no_skip():
    tokenizer = CharTokenizer()
    ids = [0, 2, char_id("H"), char_id("i"), 3, 0]

    assert tokenizer.decode(ids) == "Hi"
    assert tokenizer.decode(ids, skip_special_tokens=False) == "<PAD><BOS>Hi<EOS><PAD>"
    assert tokenizer.decode([]) == ""


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint64])
def test_char_decode_accepts_numpy_ids(dtype):
    tokenizer = CharTokenizer()
    ids = tokenizer.encode("Hi!")

    assert tokenizer.decode(np.array(ids, dtype=dtype)) == "Hi!"
    assert tokenizer.decode([dtype(token_id) for token_id in ids]) == "Hi!"
    assert tokenizer.decode(tuple(ids)) == "Hi!"


@given(printable_text)
def test_char_round_trip_printable_ascii(text):
    tokenizer = CharTokenizer()

    ids = tokenizer.encode(text)

    assert len(ids) == len(text) + 2
    assert tokenizer.decode(ids) == text


@given(st.text())
def test_char_any_text_maps_unknowns_to_unk(text):
    tokenizer = CharTokenizer()

    ids = tokenizer.encode(text, add_special_tokens=False)

    expected = "".join(character if 32 <= ord(character) <= 126 else "" for character in text)
    assert len(ids) == len(text)
    assert tokenizer.decode(ids) == expected
    assert ids.count(1) == sum(1 for character in text if not 32 <= ord(character) <= 126)


# ---------------------------------------------------------------------------
# Errors shared by both tokenizers
# ---------------------------------------------------------------------------

BAD_TEXTS = [
    (None, r"received None \(NoneType\)"),
    (b"bytes", r"received b'bytes' \(bytes\)"),
    (42, r"received 42 \(int\)"),
    (["a"], r"received \['a'\] \(list\)"),
]


@pytest.mark.parametrize("tokenizer_class", [CharTokenizer, BPETokenizer])
@pytest.mark.parametrize(("text", "message"), BAD_TEXTS)
def test_encode_rejects_non_str(tokenizer_class, text, message):
    tokenizer = tokenizer_class()

    with pytest.raises(TypeError, match=r"text must be a str; " + message):
        tokenizer.encode(text)


BAD_IDS = [
    ([2, 5000], ValueError, r"tokens\[1\] is not a token id .*received 5000 \(int\)"),
    ([-1], ValueError, r"tokens\[0\] is not a token id .*valid ids are 0 to \d+.*received -1 \(int\)"),
    ([np.int64(-3)], ValueError, r"tokens\[0\] .*received np\.int64\(-3\) \(int64\)"),
    (np.array([4, 7000]), ValueError, r"tokens\[1\] .*received 7000 \(int\)"),
    ([1.0], TypeError, r"tokens\[0\] must be an integer token id; received 1\.0 \(float\)"),
    ([True], TypeError, r"tokens\[0\] must be an integer token id; received True \(bool\)"),
    ([np.True_], TypeError, r"tokens\[0\] must be an integer .*received np\.True_ \(bool"),
    (["a"], TypeError, r"tokens\[0\] must be an integer token id; received 'a' \(str\)"),
    ("abc", TypeError, r"tokens must be a list, tuple or 1-D integer array .*received 'abc' \(str\)"),
    (None, TypeError, r"received None \(NoneType\)"),
    (np.array([1.0, 2.0]), TypeError, r"array of dtype float64"),
    (np.array([True]), TypeError, r"array of dtype bool"),
    (np.array([[2, 3]]), ValueError, r"1-D array .*shape \(1, 2\)"),
]


@pytest.mark.parametrize("tokenizer_class", [CharTokenizer, BPETokenizer])
@pytest.mark.parametrize(("tokens", "error", "message"), BAD_IDS)
def test_decode_rejects_bad_ids(tokenizer_class, tokens, error, message):
    tokenizer = tokenizer_class()

    with pytest.raises(error, match=message):
        tokenizer.decode(tokens)


def test_char_decode_range_names_vocabulary():
    with pytest.raises(ValueError, match=r"valid ids are 0 to 98; received 99 \(int\)"):
        CharTokenizer().decode([99])


def test_bpe_decode_range_names_vocabulary():
    with pytest.raises(ValueError, match=r"valid ids are 0 to 259; received 260 \(int\)"):
        BPETokenizer().decode([260])


# ---------------------------------------------------------------------------
# pad_sequences
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("tokenizer_class", [CharTokenizer, BPETokenizer])
def test_pad_sequences_values(tokenizer_class):
    tokenizer = tokenizer_class()
    sequences = [[2, 10, 11, 3], [2, 3], []]

    assert tokenizer.pad_sequences(sequences) == [[2, 10, 11, 3], [2, 3, 0, 0], [0, 0, 0, 0]]
    assert tokenizer.pad_sequences(sequences, max_length=2) == [[2, 10], [2, 3], [0, 0]]
    assert tokenizer.pad_sequences(sequences, max_length=5) == [
        [2, 10, 11, 3, 0],
        [2, 3, 0, 0, 0],
        [0, 0, 0, 0, 0],
    ]
    assert tokenizer.pad_sequences([]) == []
    assert tokenizer.pad_sequences([np.array([2, 3]), (4,)]) == [[2, 3], [4, 0]]


def test_pad_sequences_does_not_modify_input():
    tokenizer = CharTokenizer()
    sequences = [[2, 3], [2, 5, 6, 3]]

    tokenizer.pad_sequences(sequences, max_length=3)

    assert sequences == [[2, 3], [2, 5, 6, 3]]


@pytest.mark.parametrize(
    ("max_length", "error", "message"),
    [
        (0, ValueError, r"max_length must be a positive integer; received 0 \(int\)"),
        (-2, ValueError, r"max_length must be a positive integer; received -2 \(int\)"),
        (2.0, TypeError, r"max_length must be an integer; received 2\.0 \(float\)"),
        (True, TypeError, r"max_length must be an integer; received True \(bool\)"),
        ("3", TypeError, r"max_length must be an integer; received '3' \(str\)"),
    ],
)
def test_pad_sequences_rejects_bad_max_length(max_length, error, message):
    with pytest.raises(error, match=message):
        CharTokenizer().pad_sequences([[2, 3]], max_length=max_length)


@pytest.mark.parametrize(
    ("sequences", "error", "message"),
    [
        ("abc", TypeError, r"sequences must be an iterable .*received 'abc' \(str\)"),
        (5, TypeError, r"sequences must be an iterable .*received 5 \(int\)"),
        ([[2, 500]], ValueError, r"sequences\[0\]\[1\] is not a token id .*received 500 \(int\)"),
        ([[2], "ab"], TypeError, r"sequences\[1\] must be a list, tuple .*received 'ab' \(str\)"),
        ([[2.5]], TypeError, r"sequences\[0\]\[0\] must be an integer token id; received 2\.5"),
    ],
)
def test_pad_sequences_rejects_bad_sequences(sequences, error, message):
    with pytest.raises(error, match=message):
        CharTokenizer().pad_sequences(sequences)


# ---------------------------------------------------------------------------
# BPE functions
# ---------------------------------------------------------------------------


@given(any_text_with_surrogates)
def test_split_chunks_concatenate_to_text(text):
    assert "".join(split_chunks(text)) == text


def test_split_chunks_examples():
    assert split_chunks("Hello,  world!\n") == ["Hello", ",", " ", " world", "!", "\n"]
    assert split_chunks("a\n\nb") == ["a", "\n\n", "b"]
    assert split_chunks("x = f(y)") == ["x", " =", " f", "(", "y", ")"]
    assert split_chunks("") == []


def test_merge_pair_replaces_without_overlap():
    assert merge_pair([7, 7, 7], (7, 7), 300) == [300, 7]
    assert merge_pair([1, 2, 3, 1, 2], (1, 2), 300) == [300, 3, 300]
    assert merge_pair([1], (1, 2), 300) == [1]
    assert merge_pair([], (1, 2), 300) == []


def test_apply_merges_lowest_rank_first():
    merges = {(5, 6): 261, (6, 7): 260, (5, 260): 262}

    assert apply_merges([5, 6, 7], merges) == [262]
    assert apply_merges([5, 6], merges) == [261]
    assert apply_merges([8, 9], merges) == [8, 9]


def test_learn_merges_matches_naive_reference():
    fast = learn_merges(Counter(split_chunks(SMALL_CORPUS)), 150)

    assert fast == naive_learn_merges(SMALL_CORPUS, 150)


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet="ab c\n.", max_size=60), st.integers(min_value=0, max_value=12))
def test_learn_merges_matches_naive_on_random_text(text, num_merges):
    fast = learn_merges(Counter(split_chunks(text)), num_merges)

    assert fast == naive_learn_merges(text, num_merges)


# ---------------------------------------------------------------------------
# BPETokenizer
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vocab_size", "error", "message"),
    [
        (259, ValueError, r"vocab_size must be an integer >= 260; received 259 \(int\)"),
        (0, ValueError, r"vocab_size must be an integer >= 260; received 0 \(int\)"),
        (300.0, TypeError, r"vocab_size must be an integer; received 300\.0 \(float\)"),
        ("300", TypeError, r"vocab_size must be an integer; received '300' \(str\)"),
        (True, TypeError, r"vocab_size must be an integer; received True \(bool\)"),
    ],
)
def test_bpe_rejects_bad_vocab_size(vocab_size, error, message):
    with pytest.raises(error, match=message):
        BPETokenizer(vocab_size=vocab_size)


def test_bpe_untrained_is_byte_level():
    tokenizer = BPETokenizer()

    ids = tokenizer.encode("hé")

    assert tokenizer.vocab_size == 260
    assert len(tokenizer) == 260
    assert ids == [2, ord("h") + 4, 0xC3 + 4, 0xA9 + 4, 3]
    assert tokenizer.decode(ids) == "hé"
    assert tokenizer.decode(ids, skip_special_tokens=False) == "<BOS>hé<EOS>"


def test_bpe_token_id_properties():
    tokenizer = BPETokenizer()

    assert tokenizer.pad_token_id == 0
    assert tokenizer.unk_token_id == 1
    assert tokenizer.bos_token_id == 2
    assert tokenizer.eos_token_id == 3


def test_bpe_train_reaches_vocab_size(trained_bpe):
    assert trained_bpe.vocab_size == 330
    assert len(trained_bpe.merges) == 70
    assert sorted(trained_bpe.merges.values()) == list(range(260, 330))
    assert sorted(trained_bpe.vocab) == list(range(330))


def test_bpe_merges_shorten_training_text(trained_bpe):
    ids = trained_bpe.encode(SMALL_CORPUS, add_special_tokens=False)
    byte_count = len(SMALL_CORPUS.encode("utf-8"))

    assert len(ids) < 0.6 * byte_count
    assert any(token_id >= FIRST_MERGE_ID for token_id in ids)
    assert trained_bpe.decode(ids) == SMALL_CORPUS


def test_bpe_merges_stay_inside_chunks():
    # ASCII only, so that every learned token decodes on its own.
    ascii_corpus = SMALL_CORPUS.encode("ascii", "ignore").decode("ascii")
    tokenizer = BPETokenizer(vocab_size=400)
    tokenizer.train(ascii_corpus)

    for token_id in range(FIRST_MERGE_ID, tokenizer.vocab_size):
        token = tokenizer.vocab[token_id].decode("ascii")
        assert split_chunks(token) == [token]


def test_bpe_training_is_deterministic(trained_bpe):
    again = BPETokenizer(vocab_size=330)
    again.train(SMALL_CORPUS)

    assert list(again.merges) == list(trained_bpe.merges)
    assert again == trained_bpe


def test_bpe_ties_break_to_smallest_pair():
    tokenizer = BPETokenizer(vocab_size=261)

    tokenizer.train("ab cd")

    # Chunks "ab" and " cd" give three pairs of count 1, and (" ", "c") has the smallest ids.
    assert list(tokenizer.merges) == [(ord(" ") + 4, ord("c") + 4)]


def test_bpe_train_accepts_iterable_of_str(trained_bpe):
    tokenizer = BPETokenizer(vocab_size=330)

    tokenizer.train(iter([SMALL_CORPUS[:1000], SMALL_CORPUS[1000:]]))

    assert tokenizer.vocab_size == 330
    assert tokenizer.decode(tokenizer.encode(SMALL_CORPUS)) == SMALL_CORPUS


def test_bpe_retrain_replaces_merges(trained_bpe):
    tokenizer = BPETokenizer(vocab_size=330)
    tokenizer.train("zzzz zzzz")
    tokenizer.train(SMALL_CORPUS)

    assert tokenizer == trained_bpe


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (None, r"texts must be a str or an iterable of str; received None \(NoneType\)"),
        (5, r"texts must be a str or an iterable of str; received 5 \(int\)"),
        (b"abc", r"texts must be a str or an iterable of str; received b'abc' \(bytes\)"),
        (["ok", 7], r"texts\[1\] must be a str; received 7 \(int\)"),
        ([b"abc"], r"texts\[0\] must be a str; received b'abc' \(bytes\)"),
    ],
)
def test_bpe_train_rejects_non_str(texts, message):
    with pytest.raises(TypeError, match=message):
        BPETokenizer(vocab_size=270).train(texts)


def test_bpe_stops_when_pairs_run_out(caplog):
    tokenizer = BPETokenizer(vocab_size=300)

    with caplog.at_level(logging.WARNING, logger="tinytorch.core.tokenization"):
        tokenizer.train("abab")

    # "abab" is one chunk: merge (a, b), then merge (ab, ab), then no pair is left.
    assert tokenizer.vocab_size == 262
    assert len(tokenizer) == 262
    assert tokenizer.target_vocab_size == 300
    assert tokenizer.encode("abab", add_special_tokens=False) == [261]
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "stopped at vocab_size 262, short of the requested 300" in warnings[0].getMessage()


def test_bpe_train_on_empty_text(caplog):
    tokenizer = BPETokenizer(vocab_size=270)

    with caplog.at_level(logging.WARNING, logger="tinytorch.core.tokenization"):
        tokenizer.train([])

    assert tokenizer.vocab_size == 260
    assert "stopped at vocab_size 260" in caplog.text


@pytest.mark.parametrize(
    "text",
    ["", "\n", "\n\n", "  \t\n ", "a\r\nb", "Ünïcödé 😀 東京", "  leading and trailing  ", "\ud800", "x\udfffy"],
)
def test_bpe_round_trip_edge_cases(trained_bpe, text):
    assert trained_bpe.decode(trained_bpe.encode(text)) == text
    assert trained_bpe.decode(trained_bpe.encode(text, add_special_tokens=False)) == text


@given(st.text())
def test_bpe_round_trip_any_text(trained_bpe, text):
    ids = trained_bpe.encode(text)

    assert ids[0] == 2
    assert ids[-1] == 3
    assert trained_bpe.decode(ids) == text
    assert trained_bpe.decode(np.array(ids)) == text


@given(any_text_with_surrogates)
def test_bpe_round_trip_with_surrogates(trained_bpe, text):
    assert trained_bpe.decode(trained_bpe.encode(text)) == text


@given(st.text())
def test_bpe_untrained_round_trip(text):
    tokenizer = BPETokenizer()

    assert tokenizer.decode(tokenizer.encode(text)) == text


@given(st.text(alphabet=st.sampled_from(sorted(set(SMALL_CORPUS))), max_size=80))
def test_bpe_encode_matches_naive_reference(trained_bpe, text):
    merges = list(trained_bpe.merges)
    expected = [token_id for chunk in split_chunks(text) for token_id in naive_encode_chunk(chunk, merges)]

    assert trained_bpe.encode(text, add_special_tokens=False) == expected


def test_bpe_decode_skip_and_no_skip(trained_bpe):
    ids = [0, 2, *trained_bpe.encode("the fox", add_special_tokens=False), 3, 1]

    assert trained_bpe.decode(ids) == "the fox"
    assert trained_bpe.decode(ids, skip_special_tokens=False) == "<PAD><BOS>the fox<EOS><UNK>"


def test_bpe_decode_invalid_utf8_is_replaced():
    tokenizer = BPETokenizer()

    assert tokenizer.decode([0xFF + 4]) == "\ufffd"
    assert tokenizer.decode([ord("a") + 4, 0xC3 + 4]) == "a\ufffd"


def test_repr_and_len():
    assert repr(CharTokenizer()) == "CharTokenizer(vocab_size=99)"
    assert repr(CharTokenizer({"<MASK>": 4})) == (
        "CharTokenizer(special_tokens={'<PAD>': 0, '<UNK>': 1, '<BOS>': 2, '<EOS>': 3, "
        "'<MASK>': 4}, vocab_size=100)"
    )
    assert repr(BPETokenizer(vocab_size=512)) == "BPETokenizer(vocab_size=512, merges=0)"
    assert len(CharTokenizer({"<MASK>": 4})) == 100


# ---------------------------------------------------------------------------
# Vocabulary files
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("special_tokens", [None, {"<MASK>": 4}, {"<PAD>": 10, "a": 11}])
def test_char_save_load_round_trip(tmp_path, special_tokens):
    tokenizer = CharTokenizer(special_tokens=special_tokens)
    path = tmp_path / "char.json"

    returned = tokenizer.save(path)
    loaded = CharTokenizer.load(path)

    assert returned == path
    assert json.loads(path.read_text())["format"] == "tinytorch.CharTokenizer"
    assert loaded == tokenizer
    assert loaded.char_to_idx == tokenizer.char_to_idx
    assert loaded.vocab_size == tokenizer.vocab_size
    assert loaded.encode("Hello world!") == tokenizer.encode("Hello world!")


def test_bpe_save_load_round_trip(tmp_path, trained_bpe):
    path = tmp_path / "bpe.json"

    trained_bpe.save(str(path))
    loaded = BPETokenizer.load(str(path))

    assert json.loads(path.read_text())["format"] == "tinytorch.BPETokenizer"
    assert loaded == trained_bpe
    assert loaded.vocab == trained_bpe.vocab
    assert loaded.encode(SMALL_CORPUS) == trained_bpe.encode(SMALL_CORPUS)


def test_bpe_save_load_untrained(tmp_path):
    path = tmp_path / "bpe.json"

    BPETokenizer(vocab_size=400).save(path)
    loaded = BPETokenizer.load(path)

    assert loaded.vocab_size == 260
    assert loaded.target_vocab_size == 400


@pytest.mark.parametrize("tokenizer_class", [CharTokenizer, BPETokenizer])
def test_load_missing_file(tmp_path, tokenizer_class):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "missing.json"))):
        tokenizer_class.load(tmp_path / "missing.json")


def char_document(**changes):
    document = {
        "format": "tinytorch.CharTokenizer",
        "version": 1,
        "special_tokens": {"<PAD>": 0, "<UNK>": 1, "<BOS>": 2, "<EOS>": 3},
        "vocab_size": 99,
    }
    document.update(changes)
    return json.dumps(document)


def bpe_document(**changes):
    document = {"format": "tinytorch.BPETokenizer", "version": 1, "vocab_size": 300, "merges": [[4, 5]]}
    document.update(changes)
    return json.dumps(document)


def without(document_text, key):
    document = json.loads(document_text)
    del document[key]
    return json.dumps(document)


MALFORMED_CHAR_FILES = [
    ("not json at all", r"not valid JSON"),
    (char_document()[:40], r"not valid JSON"),
    ("", r"not valid JSON"),
    ("[1, 2]", r"top level must be a JSON object; received \[1, 2\] \(list\)"),
    (char_document(format="other"), r"'format' must be 'tinytorch.CharTokenizer'; received 'other'"),
    (without(char_document(), "format"), r"received None"),
    (bpe_document(), r"received 'tinytorch.BPETokenizer' \(str\); load this file with BPETokenizer.load"),
    (char_document(version=2), r"'version' must be 1.*received 2 \(int\)"),
    (char_document(version=True), r"'version' must be 1.*received True \(bool\)"),
    (without(char_document(), "special_tokens"), r"'special_tokens' must be an object .*received None"),
    (char_document(special_tokens=[1]), r"'special_tokens' must be an object .*received \[1\] \(list\)"),
    (char_document(special_tokens={"<MASK>": -4}), r"received -4 \(int\)"),
    (char_document(special_tokens={"<MASK>": "x"}), r"received 'x' \(str\)"),
    (char_document(special_tokens={"<MASK>": 0}), r"both have id 0"),
    (char_document(vocab_size=100), r"'vocab_size' must be 99.*received 100 \(int\)"),
    (without(char_document(), "vocab_size"), r"'vocab_size' must be 99.*received None"),
]


@pytest.mark.parametrize(("content", "message"), MALFORMED_CHAR_FILES)
def test_char_load_rejects_malformed_file(tmp_path, content, message):
    path = tmp_path / "vocab.json"
    path.write_text(content, encoding="utf-8")

    with pytest.raises(ValueError, match=re.escape(repr(str(path))) + ".*" + message):
        CharTokenizer.load(path)


MALFORMED_BPE_FILES = [
    ("{", r"not valid JSON"),
    (bpe_document()[:30], r"not valid JSON"),
    ('"a string"', r"top level must be a JSON object; received 'a string' \(str\)"),
    (char_document(), r"received 'tinytorch.CharTokenizer' \(str\); load this file with CharTokenizer.load"),
    (bpe_document(version="1"), r"'version' must be 1.*received '1' \(str\)"),
    (without(bpe_document(), "vocab_size"), r"'vocab_size': vocab_size must be an integer; received None"),
    (bpe_document(vocab_size=100), r"'vocab_size': vocab_size must be an integer >= 260; received 100"),
    (bpe_document(vocab_size=260), r"1 merges do not fit in vocab_size 260"),
    (without(bpe_document(), "merges"), r"'merges' must be a list of id pairs; received None"),
    (bpe_document(merges={"a": 1}), r"'merges' must be a list .*received \{'a': 1\} \(dict\)"),
    (bpe_document(merges=[[4, 300]]), r"merges\[0\] must be a pair of ids from 4 to 259 .*received \[4, 300\]"),
    (bpe_document(merges=[[4, 5], [4, 261]]), r"merges\[1\] must be a pair of ids from 4 to 260 .*received \[4, 261\]"),
    (bpe_document(merges=[[0, 5]]), r"merges\[0\] .*received \[0, 5\] \(list\)"),
    (bpe_document(merges=[[4, 5, 6]]), r"merges\[0\] .*received \[4, 5, 6\] \(list\)"),
    (bpe_document(merges=[[4, True]]), r"merges\[0\] .*received \[4, True\] \(list\)"),
    (bpe_document(merges=[[4, 5.0]]), r"merges\[0\] .*received \[4, 5\.0\] \(list\)"),
    (bpe_document(merges=["45"]), r"merges\[0\] .*received '45' \(str\)"),
    (bpe_document(merges=[[4, 5], [4, 5]]), r"merges\[1\] repeats an earlier merge.*received \[4, 5\]"),
]


@pytest.mark.parametrize(("content", "message"), MALFORMED_BPE_FILES)
def test_bpe_load_rejects_malformed_file(tmp_path, content, message):
    path = tmp_path / "vocab.json"
    path.write_text(content, encoding="utf-8")

    with pytest.raises(ValueError, match=re.escape(repr(str(path))) + ".*" + message):
        BPETokenizer.load(path)


@pytest.mark.parametrize("tokenizer_class", [CharTokenizer, BPETokenizer])
def test_load_rejects_non_utf8_file(tmp_path, tokenizer_class):
    path = tmp_path / "vocab.json"
    path.write_bytes(b"\xff\xfe{}")

    with pytest.raises(ValueError, match=re.escape(repr(str(path))) + ".*not UTF-8 text"):
        tokenizer_class.load(path)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (CharTokenizer(), CharTokenizer({"<MASK>": 4})),
        (BPETokenizer(vocab_size=300), BPETokenizer(vocab_size=400)),
    ],
)
def test_save_is_atomic(tmp_path, monkeypatch, old, new):
    path = tmp_path / "vocab.json"
    old.save(path)
    before = path.read_bytes()

    def failing_fsync(descriptor):
        raise OSError("disk full")

    monkeypatch.setattr(tinytorch._atomic.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        new.save(path)
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["vocab.json"]
    assert type(old).load(path) == old


def test_save_overwrites_existing_file(tmp_path: Path):
    path = tmp_path / "vocab.json"
    CharTokenizer().save(path)

    CharTokenizer({"<MASK>": 4}).save(path)

    assert CharTokenizer.load(path).vocab_size == 100


@pytest.mark.parametrize("tokenizer_class", [CharTokenizer, BPETokenizer])
def test_load_rejects_directory_and_deep_json(tmp_path, tokenizer_class):
    with pytest.raises(ValueError, match="it is a directory"):
        tokenizer_class.load(tmp_path)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(ValueError, match="deep.json.*nested too deeply"):
        tokenizer_class.load(deep)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike; received None"):
        tokenizer_class.load(None)


def test_library_warning_prints_nothing():
    # A BPE vocabulary that cannot reach its size logs a warning. Without a
    # logging setup in the program, nothing may reach stdout or stderr.
    script = "from tinytorch.core.tokenization import BPETokenizer\nBPETokenizer(1000).train('tiny text')\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == ""


def test_library_warning_reaches_configured_logging(caplog):
    with caplog.at_level(logging.WARNING, logger="tinytorch"):
        BPETokenizer(1000).train("tiny text")
    assert "BPE training stopped" in caplog.text
