"""Atomic writes: content, permissions, links, and what they refuse to replace."""

import errno
import io
import os
import stat

import pytest

from tinytorch import _atomic
from tinytorch._atomic import atomic_write, atomic_write_text


def test_writes_and_replaces_content(tmp_path):
    path = tmp_path / "file.txt"
    atomic_write_text(path, "first")
    atomic_write_text(path, "second")
    assert path.read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_new_file_gets_umask_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "new.txt", "x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o644


def test_replacement_keeps_existing_permissions(tmp_path):
    path = tmp_path / "kept.txt"
    path.write_text("old")
    path.chmod(0o640)
    atomic_write_text(path, "new")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_symlink_target_is_replaced_and_link_kept(tmp_path):
    target = tmp_path / "real.txt"
    target.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink()
    assert target.read_text() == "new"


def test_failed_write_keeps_old_file(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("old")

    def fail(handle):
        handle.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_directory_target_rejected(tmp_path):
    with pytest.raises(ValueError, match="is a directory; choose a file path"):
        atomic_write_text(tmp_path, "x")


def test_missing_parent_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing' does not exist"):
        atomic_write_text(tmp_path / "missing" / "x.txt", "x")


def test_non_regular_file_rejected(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="it is not a regular file"):
        atomic_write_text(fifo, "x")
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_unwritable_directory_error_names_destination(tmp_path, monkeypatch):
    def deny(*, prefix, suffix, dir):
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, f"{prefix}abc{suffix}"))

    monkeypatch.setattr(_atomic.tempfile, "mkstemp", deny)
    path = tmp_path / "vectors.npy"
    with pytest.raises(PermissionError) as caught:
        atomic_write_text(path, "x")
    message = str(caught.value)
    assert f"cannot write {str(path)!r}: creating a temporary file in {str(tmp_path)!r} failed (Permission denied)" in message
    assert ".vectors.npy." not in message
    assert caught.value.errno == errno.EACCES
    assert isinstance(caught.value.__cause__, PermissionError)


def test_failed_rename_error_names_destination(tmp_path, monkeypatch):
    def read_only(source, target):
        raise OSError(errno.EROFS, "Read-only file system", source, target)

    monkeypatch.setattr(_atomic.os, "replace", read_only)
    path = tmp_path / "report.json"
    with pytest.raises(OSError) as caught:
        atomic_write_text(path, "x")
    message = str(caught.value)
    assert f"cannot write {str(path)!r}: Read-only file system" in message
    assert ".report.json." not in message
    assert caught.value.errno == errno.EROFS
    assert caught.value.__cause__.filename.endswith(".tmp")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory regardless of its mode")
def test_read_only_directory_error_names_destination(tmp_path):
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match=r"cannot write '.*ro/out\.txt': creating a temporary file"):
            atomic_write_text(directory / "out.txt", "x")
    finally:
        directory.chmod(0o755)


def test_error_about_another_file_passes_unchanged(tmp_path):
    def read_missing_input(handle):
        handle.write((tmp_path / "missing-input.txt").read_bytes())

    with pytest.raises(FileNotFoundError) as caught:
        atomic_write(tmp_path / "out.txt", read_missing_input)
    assert caught.value.filename == str(tmp_path / "missing-input.txt")
    assert caught.value.__cause__ is None
    assert list(tmp_path.iterdir()) == []


class QuotaError(OSError):
    """An OSError subclass of the caller's, which must come back as itself."""


@pytest.mark.parametrize(
    "error",
    [TimeoutError("write timed out"), io.UnsupportedOperation("not writable"), QuotaError(errno.EDQUOT, "Disk quota exceeded")],
)
def test_write_error_keeps_its_type(tmp_path, error):
    def fail(handle):
        raise error

    with pytest.raises(type(error)) as caught:
        atomic_write(tmp_path / "out.txt", fail)
    assert type(caught.value) is type(error)
    assert list(tmp_path.iterdir()) == []


def test_parent_that_is_a_file_is_named(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"'.*file' is not a directory"):
        atomic_write_text(tmp_path / "file" / "a.txt", "y")


class NoArgumentsError(OSError):
    """An OSError subclass whose constructor takes no arguments."""

    def __init__(self):
        super().__init__(errno.EIO, "device failed")


def test_subclass_without_arguments_passes_unchanged(tmp_path):
    error = NoArgumentsError()

    def fail(handle):
        raise error

    with pytest.raises(NoArgumentsError) as caught:
        atomic_write(tmp_path / "out.txt", fail)
    assert caught.value is error
    assert list(tmp_path.iterdir()) == []


def test_long_file_name_is_written(tmp_path):
    path = tmp_path / ("n" * 250)
    atomic_write_text(path, "x")
    assert path.read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n" * 250]
