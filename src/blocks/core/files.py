"""Durable changes to small files and directories, the steps a power cut must not reorder.

A file's bytes survive power loss once the file is fsynced; its *name* (a create, a rename, a
removal) survives only once the directory holding it is fsynced. A block that keeps a small
state file (a topic's configuration, a replica's vote) must therefore write a temporary file,
fsync it, rename it over the old one, then fsync the directory: forget the last step and the
rename can be undone by a power cut while the new bytes are already counted on, which is how a
replica can forget its vote and vote twice in one epoch.

``os.fsync`` is looked up at each call, so the simulator's power-loss disk
(``blocks.testing.powerloss``) sees every sync these helpers make.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_directory", "make_directories", "pwrite_all", "write_atomically"]

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make the creations, renames and removals of entries in ``directory`` durable."""
    descriptor = os.open(directory, os.O_RDONLY | _CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def pwrite_all(descriptor: int, data: bytes, position: int) -> None:
    """``os.pwrite`` ``data`` at ``position`` until every byte is written (a short write is
    legal for regular files); an ``OSError`` leaves a prefix written."""
    view = memoryview(data)
    while view:
        written = os.pwrite(descriptor, view, position)
        view = view[written:]
        position += written


def make_directories(path: str | os.PathLike[str]) -> None:
    """``mkdir -p`` whose new entries survive power loss: each directory it creates is made
    durable in its parent. Existing directories are left as they are."""
    missing: list[Path] = []
    current = Path(path)
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        fsync_directory(directory.parent)


def write_atomically(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` so that after a crash or power cut it holds either the old
    contents or the new, whole. The directory must exist. Raises ``OSError`` (ENOSPC, EIO) with
    the old file untouched when the new contents cannot be made durable."""
    target = Path(path)
    temporary = target.with_name(target.name + ".tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, target)
    fsync_directory(target.parent)
