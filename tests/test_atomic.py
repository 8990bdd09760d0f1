"""Atomic writes: content, permissions, links, and what they refuse to replace."""

import os
import stat

import pytest

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
