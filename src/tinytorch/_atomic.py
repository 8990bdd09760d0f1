"""Atomic file writes: a crash leaves either the old file or the new one, never a mix.

The data goes to a temporary sibling in the same directory, is flushed and
fsynced, and then replaces the target with ``os.replace``, which is atomic on
POSIX and Windows when source and target share a file system.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write`` with a binary file object, then move the result onto ``path``.

    Returns the target path. If ``write`` raises, the temporary file is removed
    and ``path`` keeps its previous content.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    descriptor, temporary_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp", dir=directory
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary_name, target)
    except BaseException:
        Path(temporary_name).unlink(missing_ok=True)
        raise
    _fsync_directory(directory)
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def _fsync_directory(directory: Path) -> None:
    # Persist the rename itself. Some platforms (Windows) cannot open a
    # directory for fsync, and the rename is still atomic there.
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
