"""Tests for save_checkpoint and load_checkpoint: round trips, atomic replacement, bad files."""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import hashlib
import json
import logging
import math
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given, settings
from hypothesis import strategies as st

import tinytorch.checkpoint as checkpoint_module
from tinytorch.checkpoint import (
    CONFIG_FILE,
    FORMAT_TAG,
    FORMAT_VERSION,
    MODEL_FILE,
    TOKENIZER_FILE,
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from tinytorch.core.tokenization import BPETokenizer, CharTokenizer

LOGGER = "tinytorch.checkpoint"

# Written for these tests: enough repeated words for a few dozen BPE merges.
CORPUS = (
    "Checkpoints store the embedding table, the tokenizer and the config together. "
    "A crash while saving leaves the old checkpoint or the new one, never a mix. "
    "Café and 東京 appear so that merges cover multi-byte characters.\n"
) * 6

SAMPLE_TEXTS = ["", "hello world", "Checkpoints store the config", "Café 東京 ~!"]


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    tokenizer = BPETokenizer(vocab_size=300)
    tokenizer.train(CORPUS)
    return tokenizer


@pytest.fixture
def old_contents() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    return {
        "state": {
            "token_embedding.weight": rng.standard_normal((5, 3)).astype(np.float32),
            "position.table": rng.standard_normal((4, 3)),
        },
        "tokenizer": CharTokenizer(),
        "config": {"embedding_dim": 3, "name": "old"},
        "metadata": {"step": 100},
    }


@pytest.fixture
def new_contents(bpe: BPETokenizer) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    return {
        "state": {
            "token_embedding.weight": rng.standard_normal((7, 4)).astype(np.float32),
            "head.bias": np.arange(7, dtype=np.int64),
        },
        "tokenizer": bpe,
        "config": {"embedding_dim": 4, "name": "new", "layers": [1, 2]},
        "metadata": {"step": 200, "loss": 1.25},
    }


def same_state(loaded: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> bool:
    if loaded.keys() != expected.keys():
        return False
    return all(
        loaded[name].dtype == expected[name].dtype
        and loaded[name].shape == expected[name].shape
        and loaded[name].tobytes() == expected[name].tobytes()
        for name in expected
    )


def component_matches(loaded: Checkpoint, contents: dict[str, Any]) -> dict[str, bool]:
    return {
        "state": same_state(loaded.state, contents["state"]),
        "tokenizer": loaded.tokenizer == contents["tokenizer"],
        "config": loaded.config == contents["config"],
        "metadata": loaded.metadata == contents["metadata"],
    }


ALL_MATCH = {"state": True, "tokenizer": True, "config": True, "metadata": True}


def identify(loaded: Checkpoint, old: dict[str, Any], new: dict[str, Any]) -> str:
    """Return "old" or "new" when every part of ``loaded`` comes from that checkpoint."""
    old_parts = component_matches(loaded, old)
    new_parts = component_matches(loaded, new)
    if all(old_parts.values()):
        return "old"
    if all(new_parts.values()):
        return "new"
    raise AssertionError(f"mixed checkpoint: matches old {old_parts}, matches new {new_parts}")


def siblings(path: Path) -> list[str]:
    return sorted(entry.name for entry in path.parent.iterdir())


def snapshot(root: Path) -> list[tuple[str, int, int]]:
    """List every file and directory under ``root`` with its size and modification time."""
    entries = []
    for directory, names, files in os.walk(root):
        for name in names + files:
            entry = Path(directory) / name
            info = entry.stat()
            entries.append((str(entry.relative_to(root)), info.st_size, info.st_mtime_ns))
    return sorted(entries)


def force_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make save_checkpoint behave as on a system without renameat2."""
    monkeypatch.setattr(checkpoint_module, "_load_renameat2", lambda: None)


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------


def test_state_round_trip_bit_identical(tmp_path):
    rng = np.random.default_rng(2)
    special = np.array([np.nan, -0.0, np.inf, -np.inf, 1e-45, 3.4e38], dtype=np.float32)
    state = {
        "token_embedding.weight": rng.standard_normal((6, 4)).astype(np.float32),
        "special": special,
        "double": rng.standard_normal((2, 3, 4)),
        "half": rng.standard_normal(5).astype(np.float16),
        "ids": rng.integers(-(2**40), 2**40, size=7, dtype=np.int64),
        "small": np.array([-128, 0, 127], dtype=np.int8),
        "counts": np.array([0, 2**64 - 1], dtype=np.uint64),
        "bytes": np.arange(256, dtype=np.uint8),
        "mask": np.array([True, False, True]),
        "phase": (rng.standard_normal(3) + 1j * rng.standard_normal(3)).astype(np.complex64),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "": np.array([1, 2], dtype=np.int32),
    }
    save_checkpoint(tmp_path / "ckpt", state=state, tokenizer=CharTokenizer(), config={})

    loaded = load_checkpoint(tmp_path / "ckpt").state

    assert loaded.keys() == state.keys()
    for name, expected in state.items():
        assert loaded[name].dtype == expected.dtype, name
        assert loaded[name].shape == expected.shape, name
        assert np.array_equal(loaded[name], expected, equal_nan=expected.dtype.kind in "fc"), name
        assert loaded[name].tobytes() == expected.tobytes(), name


def test_state_non_contiguous_and_big_endian(tmp_path):
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    state = {
        "strided": base[:, ::2],
        "fortran": np.asfortranarray(base),
        "transposed": base.T,
        "big_endian": base.astype(">f4"),
        "big_endian_ints": np.arange(5, dtype=">i8"),
    }
    save_checkpoint(tmp_path / "ckpt", state=state, tokenizer=CharTokenizer(), config={})

    loaded = load_checkpoint(tmp_path / "ckpt").state

    for name, expected in state.items():
        assert np.array_equal(loaded[name], expected), name
        assert loaded[name].dtype == expected.dtype.newbyteorder("<"), name
        assert loaded[name].flags.c_contiguous, name
    assert state["big_endian"].dtype == np.dtype(">f4")


def test_state_empty_mapping(tmp_path):
    save_checkpoint(tmp_path / "ckpt", state={}, tokenizer=CharTokenizer(), config={})

    assert load_checkpoint(tmp_path / "ckpt").state == {}


def test_state_input_unchanged(tmp_path):
    weight = np.arange(6, dtype=">f4").reshape(2, 3)
    original = weight.copy()

    save_checkpoint(tmp_path / "ckpt", state={"w": weight}, tokenizer=CharTokenizer(), config={})

    assert weight.dtype == np.dtype(">f4")
    assert np.array_equal(weight, original)


@pytest.mark.parametrize(
    "make_tokenizer",
    [
        CharTokenizer,
        lambda: CharTokenizer(special_tokens={"<MASK>": 4, "<SEP>": 9}),
        lambda: BPETokenizer(vocab_size=500),
    ],
    ids=["char", "char-custom-specials", "bpe-untrained"],
)
def test_tokenizer_round_trip(tmp_path, make_tokenizer):
    tokenizer = make_tokenizer()
    save_checkpoint(tmp_path / "ckpt", state={}, tokenizer=tokenizer, config={})

    loaded = load_checkpoint(tmp_path / "ckpt").tokenizer

    assert type(loaded) is type(tokenizer)
    assert loaded == tokenizer
    assert loaded.vocab_size == tokenizer.vocab_size
    for text in SAMPLE_TEXTS:
        assert loaded.encode(text) == tokenizer.encode(text)


def test_trained_bpe_round_trip(tmp_path, bpe):
    save_checkpoint(tmp_path / "ckpt", state={}, tokenizer=bpe, config={})

    loaded = load_checkpoint(tmp_path / "ckpt").tokenizer

    assert isinstance(loaded, BPETokenizer)
    assert loaded == bpe
    assert loaded.merges == bpe.merges
    assert loaded.target_vocab_size == bpe.target_vocab_size
    for text in SAMPLE_TEXTS + [CORPUS]:
        assert loaded.encode(text) == bpe.encode(text)
        assert loaded.decode(loaded.encode(text)) == text


def test_config_and_metadata_round_trip(tmp_path):
    config = {
        "embedding_dim": 64,
        "dropout": 0.1,
        "vocab": {"size": 2**70, "name": "東京 ✓", "specials": ["<PAD>", "<EOS>"]},
        "tied": True,
        "scheduler": None,
        "empty_list": [],
        "empty_dict": {},
        "nested": [[1, 2.5], {"deep": [False, "x"]}],
    }
    metadata = {"step": 1200, "loss": 2.718281828459045, "notes": "line 1\nline 2"}
    save_checkpoint(
        tmp_path / "ckpt", state={}, tokenizer=CharTokenizer(), config=config, metadata=metadata
    )

    loaded = load_checkpoint(tmp_path / "ckpt")

    assert loaded.config == config
    assert loaded.metadata == metadata
    assert list(loaded.config) == list(config)


def test_metadata_defaults_to_empty_dict(tmp_path):
    save_checkpoint(tmp_path / "ckpt", state={}, tokenizer=CharTokenizer(), config={"a": 1})

    assert load_checkpoint(tmp_path / "ckpt").metadata == {}


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=25, deadline=None)
@given(config=st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_config_round_trip_property(config):
    with tempfile.TemporaryDirectory() as root:
        path = Path(root) / "ckpt"
        save_checkpoint(path, state={}, tokenizer=CharTokenizer(), config=config)

        assert load_checkpoint(path).config == config


def test_config_file_layout(tmp_path, bpe):
    save_checkpoint(
        tmp_path / "ckpt", state={}, tokenizer=bpe, config={"embedding_dim": 8}, metadata={"a": 1}
    )

    directory = tmp_path / "ckpt"
    assert sorted(os.listdir(directory)) == sorted([CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE])
    document = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    assert document == {
        "format": FORMAT_TAG,
        "version": FORMAT_VERSION,
        "tokenizer": "BPETokenizer",
        "config": {"embedding_dim": 8},
        "metadata": {"a": 1},
        "sha256": {
            MODEL_FILE: hashlib.sha256((directory / MODEL_FILE).read_bytes()).hexdigest(),
            TOKENIZER_FILE: hashlib.sha256((directory / TOKENIZER_FILE).read_bytes()).hexdigest(),
        },
    }
    assert BPETokenizer.load(directory / TOKENIZER_FILE) == bpe
    assert safetensors.numpy.load_file(directory / MODEL_FILE) == {}


def test_save_returns_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    path = save_checkpoint("runs/ckpt", state={}, tokenizer=CharTokenizer(), config={})

    assert path == tmp_path / "runs" / "ckpt"
    assert path.is_absolute()
    assert load_checkpoint("runs/ckpt").config == {}


def test_save_creates_missing_parents(tmp_path):
    path = tmp_path / "a" / "b" / "ckpt"

    save_checkpoint(path, state={}, tokenizer=CharTokenizer(), config={})

    assert load_checkpoint(path).config == {}


def test_modes_follow_umask(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt", state={}, tokenizer=CharTokenizer(), config={})
    os.mkdir(tmp_path / "plain-directory")
    (tmp_path / "plain-file").write_text("x")

    def mode(entry: Path) -> int:
        return stat.S_IMODE(entry.stat().st_mode)

    assert mode(path) == mode(tmp_path / "plain-directory")
    for name in [CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE]:
        assert mode(path / name) == mode(tmp_path / "plain-file"), name


def test_checkpoint_is_frozen(tmp_path):
    save_checkpoint(tmp_path / "ckpt", state={}, tokenizer=CharTokenizer(), config={})
    loaded = load_checkpoint(tmp_path / "ckpt")

    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.config = {}  # type: ignore[misc]
    assert "state" not in repr(loaded)


# ---------------------------------------------------------------------------
# Replacing an existing checkpoint
# ---------------------------------------------------------------------------


def test_overwrite_replaces_contents(tmp_path, old_contents, new_contents):
    path = tmp_path / "ckpt"
    save_checkpoint(path, **old_contents)
    (path / "notes.txt").write_text("added by hand")

    save_checkpoint(path, **new_contents)

    assert identify(load_checkpoint(path), old_contents, new_contents) == "new"
    assert siblings(path) == ["ckpt"]
    assert sorted(os.listdir(path)) == sorted([CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE])


def test_overwrite_empty_directory(tmp_path, new_contents):
    path = tmp_path / "ckpt"
    path.mkdir()

    save_checkpoint(path, **new_contents)

    assert component_matches(load_checkpoint(path), new_contents) == ALL_MATCH
    assert siblings(path) == ["ckpt"]


def test_overwrite_uses_exchange_on_linux(tmp_path, monkeypatch, old_contents, new_contents):
    path = tmp_path / "ckpt"
    save_checkpoint(path, **old_contents)
    renames: list[tuple[Any, Any]] = []
    original_rename = os.rename

    def recording_rename(source: Any, target: Any) -> None:
        renames.append((source, target))
        original_rename(source, target)

    monkeypatch.setattr(os, "rename", recording_rename)

    save_checkpoint(path, **new_contents)

    if checkpoint_module._load_renameat2() is None:
        assert len(renames) == 2
    else:
        assert renames == []
    assert identify(load_checkpoint(path), old_contents, new_contents) == "new"
    assert siblings(path) == ["ckpt"]


def test_exchange_swaps_two_directories(tmp_path):
    first = tmp_path / "first"
    second = tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "a").write_text("a")
    (second / "b").write_text("b")

    swapped = checkpoint_module._exchange(first, second)

    if checkpoint_module._load_renameat2() is None:
        assert swapped is False
        assert os.listdir(first) == ["a"]
    else:
        assert swapped is True
        assert os.listdir(first) == ["b"]
        assert os.listdir(second) == ["a"]


def test_exchange_einval_uses_fallback(tmp_path, monkeypatch, old_contents, new_contents):
    def renameat2_without_exchange(*arguments: Any) -> int:
        ctypes.set_errno(errno.EINVAL)
        return -1

    monkeypatch.setattr(checkpoint_module, "_load_renameat2", lambda: renameat2_without_exchange)
    path = tmp_path / "ckpt"
    save_checkpoint(path, **old_contents)

    save_checkpoint(path, **new_contents)

    assert identify(load_checkpoint(path), old_contents, new_contents) == "new"
    assert siblings(path) == ["ckpt"]


def test_exchange_other_errno_raises(tmp_path, monkeypatch, old_contents, new_contents):
    def renameat2_denied(*arguments: Any) -> int:
        ctypes.set_errno(errno.EACCES)
        return -1

    monkeypatch.setattr(checkpoint_module, "_load_renameat2", lambda: renameat2_denied)
    path = tmp_path / "ckpt"
    save_checkpoint(path, **old_contents)

    with pytest.raises(PermissionError, match="Permission denied"):
        save_checkpoint(path, **new_contents)

    assert identify(load_checkpoint(path), old_contents, new_contents) == "old"
    assert siblings(path) == ["ckpt"]


def test_fallback_overwrite(tmp_path, monkeypatch, old_contents, new_contents):
    force_fallback(monkeypatch)
    path = tmp_path / "ckpt"
    save_checkpoint(path, **old_contents)

    save_checkpoint(path, **new_contents)

    assert identify(load_checkpoint(path), old_contents, new_contents) == "new"
    assert siblings(path) == ["ckpt"]


def test_fallback_rolls_back_failed_rename(tmp_path, monkeypatch, old_contents, new_contents):
    force_fallback(monkeypatch)
    path = tmp_path / "ckpt"
    save_checkpoint(path, **old_contents)
    original_rename = os.rename

    def rename_failing_on_publish(source: Any, target: Any) -> None:
        if Path(target) == path and ".tmp-" in Path(source).name:
            raise OSError(errno.EIO, "simulated I/O error")
        original_rename(source, target)

    monkeypatch.setattr(os, "rename", rename_failing_on_publish)

    with pytest.raises(OSError, match="simulated I/O error"):
        save_checkpoint(path, **new_contents)

    assert siblings(path) == ["ckpt"]
    assert identify(load_checkpoint(path), old_contents, new_contents) == "old"


def test_failed_write_leaves_old_checkpoint(tmp_path, monkeypatch, old_contents, new_contents):
    path = tmp_path / "ckpt"
    save_checkpoint(path, **old_contents)

    def full_disk(*arguments: Any, **keywords: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.numpy, "save_file", full_disk)

    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, **new_contents)

    assert identify(load_checkpoint(path), old_contents, new_contents) == "old"
    assert siblings(path) == ["ckpt"]


@pytest.mark.parametrize("swap", ["exchange", "fallback"])
def test_save_fsyncs_files_and_directories(tmp_path, monkeypatch, swap, old_contents, new_contents):
    if swap == "fallback":
        force_fallback(monkeypatch)
    path = tmp_path / "ckpt"
    save_checkpoint(path, **old_contents)
    synced: list[tuple[int, int]] = []
    original_fsync = os.fsync

    def recording_fsync(descriptor: int) -> None:
        info = os.fstat(descriptor)
        synced.append((info.st_dev, info.st_ino))
        original_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", recording_fsync)

    save_checkpoint(path, **new_contents)

    # Renames keep inodes, so the published entries are the ones synced in staging.
    def last_sync(entry: Path) -> int:
        info = entry.stat()
        identity = (info.st_dev, info.st_ino)
        assert identity in synced, entry
        return len(synced) - 1 - synced[::-1].index(identity)

    files = [path / MODEL_FILE, path / TOKENIZER_FILE, path / CONFIG_FILE]
    # The directory is synced after its last file is created, and the parent after the swap.
    assert last_sync(path) > max(last_sync(file) for file in files)
    assert last_sync(tmp_path) > last_sync(path)


def test_save_removes_leftovers(tmp_path, caplog, old_contents, new_contents):
    path = tmp_path / "ckpt"
    save_checkpoint(path, **old_contents)
    stale_staging = tmp_path / ".ckpt.tmp-0123abcd"
    stale_staging.mkdir()
    (stale_staging / MODEL_FILE).write_bytes(b"partial")
    stale_retired = tmp_path / ".ckpt.old-4567ef01"
    shutil.copytree(path, stale_retired)
    # Names that only look similar belong to other checkpoints or to the user.
    unrelated = [".ckpt.tmp-other.tmp-89ab", "ckpt.tmp-notes", ".ckpt2.tmp-0123abcd"]
    for name in unrelated:
        (tmp_path / name).mkdir()

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        save_checkpoint(path, **new_contents)

    assert identify(load_checkpoint(path), old_contents, new_contents) == "new"
    assert siblings(path) == sorted(["ckpt", *unrelated])
    assert str(stale_staging) in caplog.text
    assert str(stale_retired) in caplog.text


def test_save_after_interrupted_rename(tmp_path, old_contents, new_contents):
    path = tmp_path / "ckpt"
    save_checkpoint(path, **old_contents)
    os.rename(path, tmp_path / ".ckpt.old-0123abcd")

    save_checkpoint(path, **new_contents)

    assert identify(load_checkpoint(path), old_contents, new_contents) == "new"
    assert siblings(path) == ["ckpt"]


# ---------------------------------------------------------------------------
# Crashes at every step of a save
# ---------------------------------------------------------------------------


class SimulatedCrash(BaseException):
    """Raised by a patched file-system call in place of the process dying there."""


# The calls a save makes that change or persist files. Each one is a point
# where the process may die.
CRASH_POINTS: list[tuple[Any, str]] = [
    (os, "mkdir"),
    (os, "rename"),
    (os, "replace"),
    (os, "fsync"),
    (shutil, "rmtree"),
    (safetensors.numpy, "save_file"),
    (checkpoint_module, "_exchange"),
]


class CrashInjector:
    """Count patched calls and raise ``SimulatedCrash`` at call number ``crash_at`` (from 0).

    After the crash every patched call raises too, because a dead process runs
    no cleanup code.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, crash_at: int | None) -> None:
        self.crash_at = crash_at
        self.calls: list[str] = []
        self.crashed = False
        for owner, name in CRASH_POINTS:
            monkeypatch.setattr(owner, name, self._wrap(getattr(owner, name), name))

    def _wrap(self, function: Callable[..., Any], name: str) -> Callable[..., Any]:
        def wrapper(*arguments: Any, **keywords: Any) -> Any:
            if self.crashed:
                raise SimulatedCrash(f"{name} after the crash")
            if len(self.calls) == self.crash_at:
                self.crashed = True
                raise SimulatedCrash(f"crash at call {self.crash_at} ({name})")
            self.calls.append(name)
            return function(*arguments, **keywords)

        return wrapper


def save_with_crash(path: Path, contents: dict[str, Any], crash_at: int | None) -> CrashInjector:
    with pytest.MonkeyPatch.context() as patch:
        injector = CrashInjector(patch, crash_at)
        if crash_at is None:
            save_checkpoint(path, **contents)
        else:
            with pytest.raises(SimulatedCrash):
                save_checkpoint(path, **contents)
    return injector


@pytest.mark.parametrize("swap", ["exchange", "fallback"])
def test_crash_at_every_step(tmp_path, monkeypatch, caplog, swap, old_contents, new_contents):
    if swap == "fallback":
        force_fallback(monkeypatch)
    counting_path = tmp_path / "count" / "ckpt"
    save_checkpoint(counting_path, **old_contents)
    steps = save_with_crash(counting_path, new_contents, crash_at=None).calls
    assert steps.count("save_file") == 1
    assert "_exchange" in steps

    outcomes = []
    for crash_at in range(len(steps)):
        path = tmp_path / f"crash-{crash_at}" / "ckpt"
        save_checkpoint(path, **old_contents)
        save_with_crash(path, new_contents, crash_at)

        with caplog.at_level(logging.WARNING, logger=LOGGER):
            outcome = identify(load_checkpoint(path), old_contents, new_contents)
        outcomes.append((steps[crash_at], outcome))

        # The next save succeeds and clears whatever the crash left behind.
        save_checkpoint(path, **new_contents)
        assert identify(load_checkpoint(path), old_contents, new_contents) == "new"
        assert siblings(path) == ["ckpt"], f"crash at step {crash_at} ({steps[crash_at]})"

    results = {outcome for _, outcome in outcomes}
    assert results == {"old", "new"}, outcomes
    # Until the new checkpoint is published, the old one stays in place.
    assert outcomes[0][1] == "old"
    assert outcomes[steps.index("save_file")][1] == "old"
    assert outcomes[-1][1] == "new"
    if swap == "fallback":
        assert "restored" in caplog.text


def test_crash_during_first_save(tmp_path, new_contents):
    steps = save_with_crash(tmp_path / "count" / "ckpt", new_contents, crash_at=None).calls

    published = 0
    for crash_at in range(len(steps)):
        path = tmp_path / f"crash-{crash_at}" / "ckpt"
        save_with_crash(path, new_contents, crash_at)
        if path.exists():
            assert component_matches(load_checkpoint(path), new_contents) == ALL_MATCH
            published += 1
        else:
            with pytest.raises(FileNotFoundError):
                load_checkpoint(path)

    assert 0 < published < len(steps)


# ---------------------------------------------------------------------------
# Recovery in load_checkpoint
# ---------------------------------------------------------------------------


def test_load_restores_renamed_checkpoint(tmp_path, caplog, old_contents, new_contents):
    path = tmp_path / "ckpt"
    save_checkpoint(path, **old_contents)
    retired = tmp_path / ".ckpt.old-0123abcd"
    os.rename(path, retired)

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        loaded = load_checkpoint(path)

    assert identify(loaded, old_contents, new_contents) == "old"
    assert siblings(path) == ["ckpt"]
    assert "restored" in caplog.text
    assert str(retired) in caplog.text
    assert identify(load_checkpoint(path), old_contents, new_contents) == "old"


def test_load_skips_incomplete_retired(tmp_path, caplog, old_contents):
    path = tmp_path / "ckpt"
    save_checkpoint(path, **old_contents)
    retired = tmp_path / ".ckpt.old-0123abcd"
    os.rename(path, retired)
    (retired / MODEL_FILE).unlink()
    before = snapshot(tmp_path)

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        with pytest.raises(FileNotFoundError, match="checkpoint directory not found"):
            load_checkpoint(path)

    assert snapshot(tmp_path) == before
    assert "not a complete checkpoint" in caplog.text


def test_load_skips_ambiguous_retired(tmp_path, caplog, old_contents):
    path = tmp_path / "ckpt"
    save_checkpoint(path, **old_contents)
    shutil.copytree(path, tmp_path / ".ckpt.old-0123abcd")
    os.rename(path, tmp_path / ".ckpt.old-4567ef01")
    before = snapshot(tmp_path)

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        with pytest.raises(FileNotFoundError, match="checkpoint directory not found"):
            load_checkpoint(path)

    assert snapshot(tmp_path) == before
    assert "2 replaced checkpoints" in caplog.text


def test_load_ignores_retired_beside_target(tmp_path, old_contents, new_contents):
    path = tmp_path / "ckpt"
    save_checkpoint(path, **old_contents)
    shutil.copytree(path, tmp_path / ".ckpt.old-0123abcd")
    save_checkpoint(tmp_path / "other", **new_contents)
    shutil.rmtree(path)
    os.rename(tmp_path / "other", path)
    before = snapshot(tmp_path)

    assert identify(load_checkpoint(path), old_contents, new_contents) == "new"
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------
# Missing, truncated, corrupt and foreign files
# ---------------------------------------------------------------------------


def write_json(path: Path, document: Any) -> None:
    path.write_text(json.dumps(document), encoding="utf-8")


def edit_config(**changes: Any) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        document = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        document.update(changes)
        write_json(directory / CONFIG_FILE, document)

    return edit


def truncate_model(directory: Path) -> None:
    data = (directory / MODEL_FILE).read_bytes()
    (directory / MODEL_FILE).write_bytes(data[: len(data) - 10])


def bfloat16_model(directory: Path) -> None:
    header = json.dumps({"w": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}}).encode()
    (directory / MODEL_FILE).write_bytes(len(header).to_bytes(8, "little") + header + b"\x00\x00")


# Valid JSON syntax, but deeper than Python's json parser can recurse.
DEEPLY_NESTED_JSON = "[" * 100_000 + "]" * 100_000


def model_as_directory(directory: Path) -> None:
    (directory / MODEL_FILE).unlink()
    (directory / MODEL_FILE).mkdir()


CORRUPTIONS: list[tuple[str, Callable[[Path], None], str, str]] = [
    ("model truncated", truncate_model, MODEL_FILE, "not a readable safetensors file"),
    (
        "model garbage",
        lambda d: (d / MODEL_FILE).write_bytes(b"this is not a safetensors file at all"),
        MODEL_FILE,
        "not a readable safetensors file",
    ),
    ("model empty", lambda d: (d / MODEL_FILE).write_bytes(b""), MODEL_FILE, "not a readable"),
    ("model bfloat16", bfloat16_model, MODEL_FILE, "dtype NumPy cannot load"),
    ("model missing", lambda d: (d / MODEL_FILE).unlink(), MODEL_FILE, "is missing"),
    ("model directory", model_as_directory, MODEL_FILE, "is not a regular file"),
    ("config missing", lambda d: (d / CONFIG_FILE).unlink(), CONFIG_FILE, "is missing"),
    (
        "config malformed",
        lambda d: (d / CONFIG_FILE).write_text('{"format": "tinytorch.checkp'),
        CONFIG_FILE,
        "not valid JSON",
    ),
    (
        "config nested too deeply",
        lambda d: (d / CONFIG_FILE).write_text(DEEPLY_NESTED_JSON),
        CONFIG_FILE,
        "nested too deeply to parse",
    ),
    (
        "config not utf8",
        lambda d: (d / CONFIG_FILE).write_bytes(b'{"format": "\xff"}'),
        CONFIG_FILE,
        "not UTF-8 text",
    ),
    (
        "config not object",
        lambda d: write_json(d / CONFIG_FILE, [FORMAT_TAG]),
        CONFIG_FILE,
        "top level must be a JSON object",
    ),
    (
        "config foreign",
        lambda d: write_json(d / CONFIG_FILE, {"model_type": "gpt2", "n_embd": 768}),
        CONFIG_FILE,
        "'format' must be 'tinytorch.checkpoint'",
    ),
    ("config other tag", edit_config(format="other.tool"), CONFIG_FILE, "received 'other.tool'"),
    ("config version", edit_config(version=2), CONFIG_FILE, "'version' must be 1"),
    ("config version bool", edit_config(version=True), CONFIG_FILE, "'version' must be 1"),
    ("config tokenizer", edit_config(tokenizer="WordPiece"), CONFIG_FILE, "'tokenizer' must be"),
    ("config tokenizer list", edit_config(tokenizer=["x"]), CONFIG_FILE, "received ['x'] (list)"),
    ("config format missing", edit_config(format=None), CONFIG_FILE, "received None (NoneType)"),
    ("config not dict", edit_config(config=[1, 2]), CONFIG_FILE, "'config' must be a JSON object"),
    ("metadata not dict", edit_config(metadata="x"), CONFIG_FILE, "'metadata' must be"),
    ("tokenizer missing", lambda d: (d / TOKENIZER_FILE).unlink(), TOKENIZER_FILE, "is missing"),
    (
        "tokenizer garbage",
        lambda d: (d / TOKENIZER_FILE).write_text("not json"),
        TOKENIZER_FILE,
        "not valid JSON",
    ),
    (
        "tokenizer other class",
        lambda d: BPETokenizer().save(d / TOKENIZER_FILE),
        TOKENIZER_FILE,
        "'format' must be 'tinytorch.CharTokenizer'",
    ),
    (
        "tokenizer bad field",
        lambda d: write_json(
            d / TOKENIZER_FILE,
            {
                "format": "tinytorch.CharTokenizer",
                "version": 1,
                "special_tokens": {},
                "vocab_size": 5,
            },
        ),
        TOKENIZER_FILE,
        "'vocab_size' must be",
    ),
]


@pytest.mark.parametrize(
    ("corrupt", "file_name", "problem"),
    [case[1:] for case in CORRUPTIONS],
    ids=[case[0] for case in CORRUPTIONS],
)
def test_load_rejects_bad_file(tmp_path, old_contents, corrupt, file_name, problem):
    path = tmp_path / "ckpt"
    save_checkpoint(path, **old_contents)
    corrupt(path)
    before = snapshot(tmp_path)

    with pytest.raises(ValueError, match=re.escape(str(path / file_name))) as caught:
        load_checkpoint(path)

    assert problem in str(caught.value)
    assert snapshot(tmp_path) == before


def test_load_wraps_safetensors_error(tmp_path, old_contents):
    path = tmp_path / "ckpt"
    save_checkpoint(path, **old_contents)
    truncate_model(path)

    with pytest.raises(ValueError, match="is invalid") as caught:
        load_checkpoint(path)

    assert isinstance(caught.value.__cause__, safetensors.SafetensorError)


def test_load_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint directory not found") as caught:
        load_checkpoint(tmp_path / "absent")

    assert caught.value.filename == str(tmp_path / "absent")
    assert os.listdir(tmp_path) == []


def test_load_file_instead_of_directory(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"data")

    with pytest.raises(ValueError, match=re.escape(f"received {str(path)!r}, which is not a")):
        load_checkpoint(path)


def test_load_changes_nothing(tmp_path, old_contents):
    path = tmp_path / "ckpt"
    save_checkpoint(path, **old_contents)
    before = snapshot(tmp_path)

    load_checkpoint(path)

    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------
# Refusing to replace what is not a checkpoint
# ---------------------------------------------------------------------------


def test_save_rejects_unrelated_directory(tmp_path, new_contents):
    path = tmp_path / "photos"
    path.mkdir()
    (path / "holiday.jpg").write_bytes(b"\xff\xd8 jpeg bytes")
    before = snapshot(tmp_path)

    with pytest.raises(ValueError, match="non-empty directory without a config.json"):
        save_checkpoint(path, **new_contents)

    assert snapshot(tmp_path) == before


def test_save_rejects_foreign_config_directory(tmp_path, new_contents):
    path = tmp_path / "hf-model"
    path.mkdir()
    write_json(path / CONFIG_FILE, {"model_type": "gpt2"})
    before = snapshot(tmp_path)

    with pytest.raises(ValueError, match=re.escape(repr(str(path)))):
        save_checkpoint(path, **new_contents)

    assert snapshot(tmp_path) == before


def test_save_rejects_deeply_nested_config(tmp_path, new_contents):
    path = tmp_path / "nested"
    path.mkdir()
    (path / CONFIG_FILE).write_text(DEEPLY_NESTED_JSON, encoding="utf-8")
    before = snapshot(tmp_path)

    with pytest.raises(ValueError, match="non-empty directory without a config.json"):
        save_checkpoint(path, **new_contents)

    assert snapshot(tmp_path) == before


def test_save_rejects_file(tmp_path, new_contents):
    path = tmp_path / "ckpt"
    path.write_text("keep me")

    with pytest.raises(ValueError, match=re.escape(f"received {str(path)!r}, which is not a")):
        save_checkpoint(path, **new_contents)

    assert path.read_text() == "keep me"
    assert siblings(path) == ["ckpt"]


def test_save_rejects_symlink(tmp_path, old_contents, new_contents):
    real = tmp_path / "real"
    save_checkpoint(real, **old_contents)
    link = tmp_path / "latest"
    link.symlink_to(real, target_is_directory=True)

    with pytest.raises(ValueError, match="must not be a symbolic link"):
        save_checkpoint(link, **new_contents)

    assert link.is_symlink()
    assert identify(load_checkpoint(link), old_contents, new_contents) == "old"


def test_save_repairs_corrupt_checkpoint(tmp_path, old_contents, new_contents):
    path = tmp_path / "ckpt"
    save_checkpoint(path, **old_contents)
    truncate_model(path)

    save_checkpoint(path, **new_contents)

    assert identify(load_checkpoint(path), old_contents, new_contents) == "new"


# ---------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------


def cyclic_config() -> dict[str, Any]:
    config: dict[str, Any] = {"name": "loop"}
    config["self"] = config
    return config


BAD_ARGUMENTS: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("directory int", {"directory": 123}, TypeError, "received 123 (int)"),
    ("directory bytes", {"directory": b"ckpt"}, TypeError, "received b'ckpt' (bytes)"),
    ("directory empty", {"directory": ""}, ValueError, "non-empty path; received '' (str)"),
    ("state list", {"state": [np.zeros(2)]}, TypeError, "received [array"),
    ("state key int", {"state": {1: np.zeros(2)}}, TypeError, "received 1 (int)"),
    ("state value list", {"state": {"w": [1.0, 2.0]}}, TypeError, r"received [1.0, 2.0] (list)"),
    (
        "state value tensor-like",
        {"state": {"w": memoryview(b"ab")}},
        TypeError,
        "state['w'] must be a numpy.ndarray",
    ),
    ("state dtype str", {"state": {"w": np.array(["a"])}}, TypeError, "dtype <U1"),
    ("state dtype object", {"state": {"w": np.array([None])}}, TypeError, "dtype object"),
    ("state dtype complex128", {"state": {"w": np.zeros(2, complex)}}, TypeError, "complex128"),
    ("state reserved key", {"state": {"__metadata__": np.zeros(2)}}, ValueError, "reserved"),
    ("tokenizer str", {"tokenizer": "char"}, TypeError, "received 'char' (str)"),
    ("tokenizer None", {"tokenizer": None}, TypeError, "received None (NoneType)"),
    ("config list", {"config": [("a", 1)]}, TypeError, "received [('a', 1)] (list)"),
    ("config object", {"config": {"a": object()}}, TypeError, "config['a'] must be JSON data"),
    (
        "config numpy scalar",
        {"config": {"layers": [1, {"scale": np.float32(1)}]}},
        TypeError,
        "config['layers'][1]['scale'] must be JSON data",
    ),
    ("config tuple", {"config": {"betas": (0.9, 0.99)}}, TypeError, "use a list"),
    ("config int key", {"config": {1: "x"}}, TypeError, "config keys must be str"),
    ("config nan", {"config": {"lr": math.nan}}, ValueError, "config['lr'] must be a finite"),
    ("config inf", {"config": {"lr": -math.inf}}, ValueError, "received -inf (float)"),
    ("config cycle", {"config": cyclic_config()}, ValueError, "config['self'] must not contain"),
    ("metadata str", {"metadata": "step 3"}, TypeError, "received 'step 3' (str)"),
    ("metadata numpy int", {"metadata": {"step": np.int64(3)}}, TypeError, "metadata['step']"),
    ("metadata set", {"metadata": {"tags": {"a"}}}, TypeError, "received {'a'} (set)"),
]


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [case[1:] for case in BAD_ARGUMENTS],
    ids=[case[0] for case in BAD_ARGUMENTS],
)
def test_save_rejects_bad_argument(tmp_path, arguments, error, message):
    call: dict[str, Any] = {
        "directory": tmp_path / "ckpt",
        "state": {"w": np.zeros(2, np.float32)},
        "tokenizer": CharTokenizer(),
        "config": {},
        "metadata": None,
    }
    call.update(arguments)
    directory = call.pop("directory")

    with pytest.raises(error, match=re.escape(message)):
        save_checkpoint(directory, **call)

    assert os.listdir(tmp_path) == []


def test_load_rejects_bad_directory_type():
    with pytest.raises(TypeError, match=re.escape("received 3.5 (float)")):
        load_checkpoint(3.5)  # type: ignore[arg-type]


def test_tokenizer_subclass_saved_as_base(tmp_path):
    class ShoutingTokenizer(CharTokenizer):
        pass

    save_checkpoint(tmp_path / "ckpt", state={}, tokenizer=ShoutingTokenizer(), config={})

    loaded = load_checkpoint(tmp_path / "ckpt").tokenizer
    assert type(loaded) is CharTokenizer


def test_flipped_byte_in_tensor_data_is_rejected(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt", state={"w": np.arange(64, dtype=np.float32)}, tokenizer=CharTokenizer(), config={})
    model = path / MODEL_FILE
    data = bytearray(model.read_bytes())
    data[-10] ^= 0x01  # inside the tensor data, so the file still parses
    model.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model.safetensors.*SHA-256 does not match"):
        load_checkpoint(path)


def test_config_without_checksums_is_rejected(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt", state={}, tokenizer=CharTokenizer(), config={})
    document = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    del document["sha256"]
    (path / CONFIG_FILE).write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(ValueError, match=r"config.json.*'sha256' must map"):
        load_checkpoint(path)


def test_save_follows_link_before_dotdot(tmp_path, old_contents, new_contents):
    # The OS resolves "link/../ck" by following the link first, so the
    # checkpoint belongs beside the link's target, as every other file the
    # caller writes to that path does.
    (tmp_path / "elsewhere" / "sub").mkdir(parents=True)
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "link").symlink_to(tmp_path / "elsewhere" / "sub")
    save_checkpoint(tmp_path / "cwd" / "ck", **old_contents)

    saved = save_checkpoint(tmp_path / "cwd" / "link" / ".." / "ck", **new_contents)

    assert saved == tmp_path / "elsewhere" / "ck"
    assert load_checkpoint(tmp_path / "elsewhere" / "ck").config == new_contents["config"]
    assert load_checkpoint(tmp_path / "cwd" / "ck").config == old_contents["config"]
