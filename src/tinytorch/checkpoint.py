"""Checkpoints: a model's tensors, its tokenizer and its configuration in one directory.

A checkpoint directory contains three files:

- ``model.safetensors``: the state dict (tensor name -> NumPy array) in the
  safetensors format;
- ``tokenizer.json``: the tokenizer, written by its own ``save`` method;
- ``config.json``: a JSON object with the format tag, the format version, the
  tokenizer class name, the model configuration and free-form metadata.

``save_checkpoint`` replaces the whole directory in one atomic step, so after a
crash the path contains either the complete previous checkpoint or the complete
new one. ``load_checkpoint`` checks every file and raises ``ValueError`` naming
the file when one is missing, truncated, corrupt or written by another program.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import json
import logging
import math
import os
import re
import secrets
import shutil
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import safetensors
import safetensors.numpy

from tinytorch._atomic import default_file_mode, fsync_directory
from tinytorch._checks import describe
from tinytorch.core.tokenization import BPETokenizer, CharTokenizer

__all__ = [
    "CONFIG_FILE",
    "FORMAT_TAG",
    "FORMAT_VERSION",
    "MODEL_FILE",
    "TOKENIZER_FILE",
    "Checkpoint",
    "check_replaceable",
    "load_checkpoint",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

StrPath: TypeAlias = str | os.PathLike[str]
Tokenizer: TypeAlias = CharTokenizer | BPETokenizer

FORMAT_TAG = "tinytorch.checkpoint"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.json"

_TOKENIZER_CLASSES: dict[str, type[Tokenizer]] = {
    "CharTokenizer": CharTokenizer,
    "BPETokenizer": BPETokenizer,
}

# The NumPy dtypes that safetensors 0.8 both writes and reads back as NumPy arrays.
_SUPPORTED_DTYPES = (
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "complex64",
)

# A save of NAME writes the new checkpoint into the sibling ".NAME.tmp-<hex>".
# After an exchange, that sibling contains the replaced checkpoint until it is
# deleted. The fallback path moves the replaced checkpoint to ".NAME.old-<hex>".
_STAGING = "tmp"
_RETIRED = "old"

# renameat2(2) arguments: AT_FDCWD resolves relative paths against the working
# directory, and RENAME_EXCHANGE swaps two existing paths atomically.
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2

# errno values with which renameat2 reports that the kernel or the file system
# cannot exchange, as opposed to a real failure such as a permission error.
_EXCHANGE_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP})


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """The contents of a checkpoint directory, as returned by ``load_checkpoint``."""

    state: dict[str, npt.NDArray[Any]] = field(repr=False)
    tokenizer: Tokenizer
    config: dict[str, Any]
    metadata: dict[str, Any]


# ---------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------


def save_checkpoint(
    directory: StrPath,
    *,
    state: Mapping[str, npt.NDArray[Any]],
    tokenizer: Tokenizer,
    config: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write tensors, tokenizer and configuration to ``directory``, replacing it atomically.

    The files are written and fsynced in a hidden sibling directory, which then
    takes the place of ``directory``. Missing parent directories are created.
    Returns the absolute path of the checkpoint directory.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as root:
        ...     path = save_checkpoint(
        ...         f"{root}/run", state={"weight": np.ones((2, 3), np.float32)},
        ...         tokenizer=CharTokenizer(), config={"embedding_dim": 3},
        ...     )
        ...     load_checkpoint(path).state["weight"].shape
        (2, 3)

    Raises:
        TypeError: an argument has the wrong type, a state value is not a NumPy
            array of a dtype that safetensors stores, or ``config`` or
            ``metadata`` contains a value that JSON cannot store unchanged.
        ValueError: ``directory`` is a file, a symbolic link, or a non-empty
            directory that is not a tinytorch checkpoint. Also raised for the
            state key ``"__metadata__"`` and for a NaN, an infinity or a
            reference cycle in ``config`` or ``metadata``.

    Note:
        Arrays are stored little-endian, so a big-endian array loads back with
        equal values and the little-endian form of its dtype. Replacing a
        checkpoint deletes every file in the old directory, including files
        that other programs added. Two saves to one directory at the same time
        are not supported, because a save deletes every ``.NAME.tmp-*``
        sibling it finds, including one that another save is still writing.
    """
    target = _checkpoint_path(directory)
    arrays = _check_state(state)
    tokenizer_name = _tokenizer_name(tokenizer)
    document = _config_document(config, metadata, tokenizer_name)

    os.makedirs(target.parent, exist_ok=True)
    check_replaceable(target)
    _remove_leftovers(target, _STAGING)

    staging = _make_staging_directory(target)
    try:
        _write_files(staging, arrays, tokenizer, document)
        # Persist the directory entries of the three files before publishing them.
        fsync_directory(staging)
        _swap_into_place(staging, target)
    except BaseException:
        # Until the swap, the target is untouched and only the staging copy must go.
        # After an exchange, the staging name contains the replaced checkpoint.
        shutil.rmtree(staging, ignore_errors=True)
        raise

    # Replaced checkpoints left by an earlier crash are obsolete now that a new one is in place.
    _remove_leftovers(target, _RETIRED)
    logger.info("saved checkpoint with %d tensors to %s", len(arrays), target)
    return target


def _write_files(
    staging: Path, arrays: dict[str, npt.NDArray[Any]], tokenizer: Tokenizer, document: dict[str, Any]
) -> None:
    # safetensors 0.8 writes through its own temporary file with mode 0o600;
    # the model gets the mode a plain open() would give it.
    model_path = staging / MODEL_FILE
    safetensors.numpy.save_file(arrays, model_path)
    os.chmod(model_path, default_file_mode())
    _fsync_file(model_path)

    # Tokenizer.save writes through atomic_write_text, which fsyncs the file.
    tokenizer.save(staging / TOKENIZER_FILE)

    # config.json comes last and records both files' SHA-256, so loading can
    # detect a flipped byte that still parses as valid tensors.
    document = {**document, "sha256": {name: _sha256(staging / name) for name in (MODEL_FILE, TOKENIZER_FILE)}}
    with open(staging / CONFIG_FILE, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _make_staging_directory(target: Path) -> Path:
    # os.mkdir applies the umask, so the published checkpoint gets the usual
    # directory permissions. tempfile.mkdtemp would create it with mode 0o700.
    staging = target.parent / f".{target.name}.{_STAGING}-{secrets.token_hex(8)}"
    os.mkdir(staging)
    return staging


def _swap_into_place(staging: Path, target: Path) -> None:
    """Publish the complete checkpoint at ``staging`` under the name ``target``."""
    parent = target.parent

    if not os.path.lexists(target):
        # Nothing to replace, so a single rename publishes the new checkpoint.
        os.rename(staging, target)
        fsync_directory(parent)
        return

    if _exchange(staging, target):
        # One atomic step: target is the new checkpoint and staging the old one.
        # Persist the swap before deleting anything.
        fsync_directory(parent)
        _remove_tree(staging, "the replaced checkpoint")
        return

    # Fallback without an atomic exchange. Between the two renames the target
    # is missing, and load_checkpoint restores it from the retired sibling.
    retired = parent / f".{target.name}.{_RETIRED}-{secrets.token_hex(8)}"
    os.rename(target, retired)
    try:
        fsync_directory(parent)
        os.rename(staging, target)
    except BaseException:
        # Put the old checkpoint back so the failed save leaves nothing to recover.
        os.rename(retired, target)
        raise
    fsync_directory(parent)
    _remove_tree(retired, "the replaced checkpoint")


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic step, or return False where the system cannot."""
    renameat2 = _load_renameat2()
    if renameat2 is None:
        return False

    result = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if result == 0:
        return True

    code = ctypes.get_errno()
    if code in _EXCHANGE_UNSUPPORTED:
        logger.debug("renameat2 cannot exchange %s and %s: %s", first, second, os.strerror(code))
        return False
    raise OSError(code, os.strerror(code), os.fspath(first), None, os.fspath(second))


@functools.cache
def _load_renameat2() -> Callable[..., int] | None:
    """Return libc's renameat2 (Linux, glibc 2.28 or later), or None where it is missing."""
    # NOTE: the tests run on Linux only. They cover the fallback by disabling
    # renameat2, but macOS and Windows themselves are untested.
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    function = getattr(libc, "renameat2", None)
    if function is None:
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


def _fsync_file(path: Path) -> None:
    # Read-write, because os.fsync calls FlushFileBuffers on Windows, which
    # requires a handle with write access.
    descriptor = os.open(path, os.O_RDWR)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove_tree(path: Path, description: str) -> None:
    """Delete a directory that is no longer needed, logging a failure instead of raising it."""
    try:
        shutil.rmtree(path)
    except OSError as error:
        logger.warning(
            "failed to delete %s at %s (%s); the next save retries", description, path, error
        )


# ---------------------------------------------------------------------------
# Directories left by interrupted saves
# ---------------------------------------------------------------------------


def _leftovers(target: Path, kind: str) -> list[Path]:
    """List the ``.NAME.tmp-*`` or ``.NAME.old-*`` siblings of ``target``, sorted by name."""
    # A full match keeps ".a.tmp-x.tmp-1f" (staging for a checkpoint named
    # "a.tmp-x") out of the leftovers of a checkpoint named "a".
    pattern = re.compile(re.escape(f".{target.name}.{kind}-") + r"[0-9a-z_]+")
    try:
        entries = list(target.parent.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(entry for entry in entries if pattern.fullmatch(entry.name))


def _remove_leftovers(target: Path, kind: str) -> None:
    for path in _leftovers(target, kind):
        logger.warning("deleting %s, left by an interrupted save of %s", path, target)
        if path.is_dir() and not path.is_symlink():
            _remove_tree(path, "a leftover directory")
        else:
            path.unlink(missing_ok=True)


def _recover_interrupted_save(target: Path) -> Checkpoint | None:
    """Restore ``target`` from its single ``.NAME.old-*`` sibling, if that is a complete checkpoint.

    Only the fallback save, interrupted between renaming the old checkpoint
    away and renaming the new one into place, leaves this state.
    """
    candidates = _leftovers(target, _RETIRED)
    if len(candidates) != 1:
        if candidates:
            logger.warning(
                "%s is missing and %d replaced checkpoints are beside it (%s); "
                "restore one by renaming it to %s",
                target,
                len(candidates),
                ", ".join(candidate.name for candidate in candidates),
                target.name,
            )
        return None

    candidate = candidates[0]
    if not candidate.is_dir() or candidate.is_symlink():
        return None
    try:
        checkpoint = _read_checkpoint(candidate)
    except ValueError as error:
        logger.warning(
            "%s is missing and %s is not a complete checkpoint, so it was not restored: %s",
            target,
            candidate,
            error,
        )
        return None

    os.rename(candidate, target)
    fsync_directory(target.parent)
    logger.warning(
        "restored %s from %s, which an interrupted save had renamed away", target, candidate
    )
    return checkpoint


# ---------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------


def _checkpoint_path(directory: Any) -> Path:
    text = os.fspath(directory) if isinstance(directory, (str, os.PathLike)) else None
    if not isinstance(text, str):
        raise TypeError(
            f"directory must be a str or os.PathLike path; received {describe(directory)}"
        )
    if not text:
        raise ValueError(f"directory must be a non-empty path; received {describe(directory)}")

    # The parent is resolved as the OS resolves it. A link before ".." is followed
    # first, so "link/../run" is a sibling of the link's target, not of the link.
    # The last part stays unresolved, so that check_replaceable can reject a link
    # there. A last part of "." or ".." is resolved to the real directory name,
    # which the sibling names need.
    head, tail = os.path.split(text.rstrip(os.sep) or text)
    if tail in ("", os.curdir, os.pardir):
        path = Path(os.path.realpath(text))
    else:
        path = Path(os.path.realpath(head or os.curdir)) / tail
    if path.parent == path:
        raise ValueError(
            f"directory must not be a file system root; received {describe(directory)}"
        )
    return path


def check_replaceable(target: Path) -> None:
    """Raise ``ValueError`` unless ``target`` is missing, empty or a tinytorch checkpoint."""
    if target.is_symlink():
        raise ValueError(
            "directory must not be a symbolic link, because saving replaces the link "
            f"itself; pass the resolved path {str(target.resolve())!r}; "
            f"received {str(target)!r}"
        )
    if not target.exists():
        return
    if not target.is_dir():
        raise ValueError(
            "directory must be a new path, an empty directory or a tinytorch checkpoint; "
            f"received {str(target)!r}, which is not a directory"
        )
    if _has_checkpoint_config(target) or not any(target.iterdir()):
        return
    raise ValueError(
        "directory must be a new path, an empty directory or a tinytorch checkpoint, "
        "so saving never deletes unrelated files; "
        f"received {str(target)!r}, a non-empty directory without a {CONFIG_FILE} "
        f"whose 'format' is {FORMAT_TAG!r}"
    )


def _has_checkpoint_config(directory: Path) -> bool:
    try:
        document = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return False
    return isinstance(document, dict) and document.get("format") == FORMAT_TAG


def _check_state(state: Any) -> dict[str, npt.NDArray[Any]]:
    """Return the arrays of ``state`` as C-contiguous little-endian arrays after checking them."""
    if not isinstance(state, Mapping):
        raise TypeError(
            "state must be a mapping of tensor names to NumPy arrays, such as a model's "
            f"state_dict(); received {describe(state)}"
        )

    arrays: dict[str, npt.NDArray[Any]] = {}
    for name, value in state.items():
        if not isinstance(name, str):
            raise TypeError(f"state keys must be str tensor names; received {describe(name)}")
        if name == "__metadata__":
            raise ValueError(
                "state key '__metadata__' is reserved by the safetensors format; "
                f"rename the tensor; received {describe(name)}"
            )
        if not isinstance(value, np.ndarray):
            raise TypeError(
                f"state[{name!r}] must be a numpy.ndarray; received {describe(value)}"
            )
        if value.dtype.name not in _SUPPORTED_DTYPES:
            raise TypeError(
                f"state[{name!r}] must have a dtype that safetensors stores "
                f"({', '.join(_SUPPORTED_DTYPES)}); received an array of dtype {value.dtype} "
                f"and shape {value.shape}"
            )
        # safetensors copies the raw buffer, which must be contiguous and little-endian.
        # np.ascontiguousarray would turn a 0-d array into shape (1,), so use asarray.
        arrays[name] = np.asarray(value, dtype=value.dtype.newbyteorder("<"), order="C")
    return arrays


def _tokenizer_name(tokenizer: Any) -> str:
    for name, tokenizer_class in _TOKENIZER_CLASSES.items():
        if isinstance(tokenizer, tokenizer_class):
            return name
    raise TypeError(
        f"tokenizer must be a CharTokenizer or a BPETokenizer; received {describe(tokenizer)}"
    )


def _config_document(config: Any, metadata: Any, tokenizer_name: str) -> dict[str, Any]:
    """Return the content of ``config.json`` after checking that both mappings are plain JSON."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping with str keys; received {describe(config)}")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(
            f"metadata must be a mapping with str keys, or None; received {describe(metadata)}"
        )

    document = {
        "format": FORMAT_TAG,
        "version": FORMAT_VERSION,
        "tokenizer": tokenizer_name,
        "config": _json_copy("config", config, set()),
        "metadata": _json_copy("metadata", metadata or {}, set()),
    }
    return document


def _json_copy(where: str, value: Any, active: set[int]) -> Any:
    """Return a copy of ``value`` built from dict, list, str, int, float, bool and None.

    Raises ``TypeError`` or ``ValueError`` naming the offending key, such as
    ``config['sizes'][2]``, for any value that would not load back equal to itself.
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(
                f"{where} must be a finite float, because JSON has no NaN or infinity; "
                f"received {describe(value)}"
            )
        return value

    if isinstance(value, (Mapping, list)):
        if id(value) in active:
            raise ValueError(f"{where} must not contain itself; received a reference cycle")
        active.add(id(value))
        if isinstance(value, list):
            copy: Any = [
                _json_copy(f"{where}[{index}]", item, active) for index, item in enumerate(value)
            ]
        else:
            copy = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise TypeError(
                        f"{where} keys must be str, because JSON object keys are strings; "
                        f"received {describe(key)}"
                    )
                copy[key] = _json_copy(f"{where}[{key!r}]", item, active)
        active.discard(id(value))
        return copy

    if isinstance(value, tuple):
        hint = "; use a list, because a tuple loads back as a list"
    elif isinstance(value, np.generic):
        hint = "; convert NumPy scalars with .item()"
    else:
        hint = ""
    raise TypeError(
        f"{where} must be JSON data (dict with str keys, list, str, int, float, bool or None)"
        f"{hint}; received {describe(value)}"
    )


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def load_checkpoint(directory: StrPath) -> Checkpoint:
    """Read a checkpoint directory written by ``save_checkpoint``.

    Every file is read and checked before anything is returned. Loading changes
    nothing on disk, with one exception: if ``directory`` is missing because a
    save was interrupted between its two renames, the previous checkpoint is
    renamed back into place and a warning is logged.

    Raises:
        TypeError: ``directory`` is not a str or os.PathLike path.
        FileNotFoundError: ``directory`` does not exist.
        ValueError: ``directory`` is not a directory, or one of its files is
            missing, truncated, corrupt or not a tinytorch checkpoint file. The
            message names the file.
    """
    path = _checkpoint_path(directory)

    if not path.exists():
        recovered = None if os.path.lexists(path) else _recover_interrupted_save(path)
        if recovered is not None:
            return recovered
        raise FileNotFoundError(errno.ENOENT, "checkpoint directory not found", str(path))
    if not path.is_dir():
        raise ValueError(
            f"directory must be a checkpoint directory; received {str(path)!r}, "
            "which is not a directory"
        )
    return _read_checkpoint(path)


def _read_checkpoint(directory: Path) -> Checkpoint:
    document = _read_config(directory / CONFIG_FILE)
    state = _read_tensors(directory / MODEL_FILE)

    tokenizer_path = directory / TOKENIZER_FILE
    _require_file(tokenizer_path)
    # The tokenizer's own load raises ValueError naming tokenizer.json when it is corrupt.
    tokenizer = _TOKENIZER_CLASSES[document["tokenizer"]].load(tokenizer_path)

    # Parsing catches truncated or foreign files with a specific message; the
    # checksums then catch damage that still parses, such as a flipped byte.
    for name in (MODEL_FILE, TOKENIZER_FILE):
        if _sha256(directory / name) != document["sha256"][name]:
            raise _invalid_file(
                directory / name, f"its SHA-256 does not match the one recorded in {CONFIG_FILE}; the file is corrupt"
            )

    return Checkpoint(
        state=state,
        tokenizer=tokenizer,
        config=document["config"],
        metadata=document["metadata"],
    )


def _read_config(path: Path) -> dict[str, Any]:
    _require_file(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise _invalid_file(path, f"not UTF-8 text ({error})") from error
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise _invalid_file(path, f"not valid JSON ({error})") from error
    except RecursionError as error:
        # CPython's json parser recurses once per nested array or object, so
        # deep nesting exhausts the recursion limit.
        raise _invalid_file(path, f"its JSON is nested too deeply to parse ({error})") from error

    if not isinstance(document, dict):
        raise _invalid_file(
            path, f"the top level must be a JSON object; received {describe(document)}"
        )
    found = document.get("format")
    if found != FORMAT_TAG:
        raise _invalid_file(
            path,
            f"'format' must be {FORMAT_TAG!r}, the tag that save_checkpoint writes; "
            f"received {describe(found)}",
        )
    version = document.get("version")
    if isinstance(version, bool) or version != FORMAT_VERSION:
        raise _invalid_file(
            path,
            f"'version' must be {FORMAT_VERSION}, the only checkpoint version this tinytorch "
            f"reads; received {describe(version)}",
        )

    tokenizer_name = document.get("tokenizer")
    if not isinstance(tokenizer_name, str) or tokenizer_name not in _TOKENIZER_CLASSES:
        choices = ", ".join(repr(name) for name in _TOKENIZER_CLASSES)
        raise _invalid_file(
            path, f"'tokenizer' must be one of {choices}; received {describe(tokenizer_name)}"
        )
    checksums = document.get("sha256")
    if not isinstance(checksums, dict) or not all(
        isinstance(checksums.get(name), str) for name in (MODEL_FILE, TOKENIZER_FILE)
    ):
        raise _invalid_file(
            path, f"'sha256' must map {MODEL_FILE} and {TOKENIZER_FILE} to checksums; received {describe(checksums)}"
        )
    for key in ("config", "metadata"):
        if not isinstance(document.get(key), dict):
            raise _invalid_file(
                path, f"{key!r} must be a JSON object; received {describe(document.get(key))}"
            )
    return document


def _read_tensors(path: Path) -> dict[str, npt.NDArray[Any]]:
    _require_file(path)
    try:
        return safetensors.numpy.load_file(path)
    except safetensors.SafetensorError as error:
        raise _invalid_file(path, f"not a readable safetensors file ({error})") from error
    except TypeError as error:
        # NumPy has no dtype for some safetensors dtypes, such as bfloat16.
        raise _invalid_file(path, f"a tensor has a dtype NumPy cannot load ({error})") from error


def _require_file(path: Path) -> None:
    if path.is_file():
        return
    problem = "is not a regular file" if os.path.lexists(path) else "is missing"
    raise ValueError(
        f"checkpoint file {str(path)!r} {problem}; a checkpoint directory contains "
        f"{CONFIG_FILE}, {MODEL_FILE} and {TOKENIZER_FILE}"
    )


def _invalid_file(path: Path, problem: str) -> ValueError:
    return ValueError(f"checkpoint file {str(path)!r} is invalid: {problem}")
