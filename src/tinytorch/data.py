"""Text sources: the built-in corpus and users' own text files."""

from __future__ import annotations

import os
from pathlib import Path


def builtin_corpus() -> str:
    """Return the built-in corpus: the Python documentation topics shipped with CPython.

    The topics of ``pydoc_data.topics`` are joined in sorted key order and
    separated by blank lines. The text is real English prose and code, about
    half a million characters, available offline wherever Python is. Its exact
    content differs between Python versions.
    """
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def read_text_file(path: str | os.PathLike[str]) -> str:
    """Read a UTF-8 text file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is a directory or is not valid UTF-8 text.
    """
    file_path = Path(path)
    if file_path.is_dir():
        raise ValueError(f"expected a text file, but {str(file_path)!r} is a directory")
    try:
        return file_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{str(file_path)!r} is not valid UTF-8 text (byte {error.start}); "
            "convert it to UTF-8 first"
        ) from error
