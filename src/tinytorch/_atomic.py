"""Atomic file writes: a crash leaves either the old file or the new one, never a mix.

The data goes to a temporary sibling in the same directory, is flushed and
fsynced, and then replaces the target with ``os.replace``, which is atomic on
POSIX and Windows when source and target share a file system.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, NoReturn


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write`` with a binary file object, then move the result onto ``path``.

    Returns the target path. If ``write`` raises, the temporary file is removed
    and ``path`` keeps its previous content. A symbolic link is followed, so
    its target is replaced. The new file gets the usual permissions (0666
    less the umask), or the old file's permissions when it replaces one.

    Raises:
        FileNotFoundError: the parent directory of ``path`` does not exist.
        ValueError: ``path`` is a directory or another non-regular file (a
            device, a pipe), which a rename would destroy.
        OSError: creating, writing or renaming the temporary file failed. The
            error names ``path``, and the original error is its ``__cause__``.
    """
    target = Path(os.path.realpath(path))
    directory = target.parent
    if not directory.is_dir():
        problem = "is not a directory" if directory.exists() else "does not exist"
        raise FileNotFoundError(f"cannot write {str(path)!r}: {str(directory)!r} {problem}")
    try:
        existing = target.stat()
    except FileNotFoundError:
        mode = default_file_mode()
    else:
        if not stat.S_ISREG(existing.st_mode):
            kind = "a directory" if stat.S_ISDIR(existing.st_mode) else "not a regular file"
            raise ValueError(f"cannot write {str(path)!r}: it is {kind}; choose a file path")
        mode = stat.S_IMODE(existing.st_mode)

    try:
        # The name is cut, so that the temporary file's name fits wherever the target's does.
        descriptor, temporary_name = tempfile.mkstemp(prefix=f".{target.name[:200]}.", suffix=".tmp", dir=directory)
    except OSError as error:
        if error.errno is None:
            raise
        step = f"creating a temporary file in {str(directory)!r}"
        _raise_for_destination(error, path, step)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary_name, mode)
        os.replace(temporary_name, target)
    except BaseException as error:
        Path(temporary_name).unlink(missing_ok=True)
        # An error about the hidden temporary file, or one with no file name
        # (a full disk during write), is reported against ``path``. An error
        # that names another file comes from ``write`` itself and passes unchanged.
        if isinstance(error, OSError) and error.errno is not None and error.filename in (None, temporary_name):
            _raise_for_destination(error, path)
        raise
    fsync_directory(directory)
    return target


def _raise_for_destination(error: OSError, path: str | os.PathLike[str], step: str = "") -> NoReturn:
    """Raise an error of the same type and errno as ``error``, caused by it, whose message names ``path``.

    Callers pass only errors that have an errno. A subclass whose constructor
    takes other arguments is raised again as it is.
    """
    reason = error.strerror or str(error)
    if step:
        reason = f"{step} failed ({reason})"
    message = f"cannot write {os.fspath(path)!r}: {reason}"
    try:
        replacement = type(error)(error.errno, message)
    except TypeError:
        raise error from None
    raise replacement from error


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def default_file_mode() -> int:
    """Return the mode a plain ``open()`` gives a new file: 0666 less the umask.

    mkstemp creates files as 0600, so atomic writes set this mode themselves.
    Reading the umask means setting it, so it is restored at once.
    """
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_directory(directory: Path) -> None:
    """Persist renames inside ``directory``; a no-op where directories cannot be opened (Windows)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
