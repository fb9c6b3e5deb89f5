"""A simulated disk that loses power: what was not fsynced is gone after a crash.

Theory of operation
-------------------
``kill -9`` keeps the page cache, so a crash test built on it never shows what an fsync
policy is worth. ``PowerLossDisk`` does: it remembers, per file, the bytes the last fsync made
durable, and per directory, the entries the last directory fsync made durable. A power cut
resets every file under a tracked root to that durable image, optionally keeping a torn
prefix of the bytes appended since (some pages reached the platter, some did not).

The seam is the ``os`` module's ``fsync`` and ``fdatasync``, which every block's storage
(``core.log``, kv's Bitcask, pubsub, queue, blob, sequencer) looks up at call time. Installed
(``with disk.installed():``), the disk wraps both: an fsync of a file descriptor under a
tracked root snapshots the file (or, for a directory, its entries) as durable, and everything
else passes through unchanged. Writes themselves go to real files in a temporary directory;
they play the page cache, so reads need no interception. The real ``fsync`` is skipped for
tracked files unless ``real_fsync=True``: the simulation needs the model, not the platter.

The model, stated so a test knows what it checks:

* A file's durable content is what it held at its last data fsync (``fsync`` and
  ``fdatasync`` are the same here), keyed by inode, so a rename carries it along. A file never
  fsynced is durable as empty.
* A directory's durable entries are those at its last fsync. Under ``strict_directories``
  (the default, what POSIX promises), a file created since is gone after a power cut and a
  file deleted since comes back with its durable content; a directory created since and
  never fsynced loses every file in it. Directories themselves are never lost.
* At a cut, a file whose current content extends its durable content may keep a random prefix
  of the extra bytes (``torn_tail_probability``); with ``zeroed_tail_probability`` those kept
  bytes read as zeros (the size reached the disk, the data did not). Any other change since
  the last fsync is dropped whole.
* ``cut_power(root)`` freezes the root's durable image: fsyncs the dying process makes after
  the cut (say, while a test closes it) change nothing. ``restore(root)`` then rewrites the
  files and makes the result the new durable image. ``power_cut(root)`` does both around a
  block of code.

Linux only: a descriptor's path comes from ``/proc/self/fd``. Thread-safe (a lock around the
bookkeeping), so group commits in worker threads are seen too. Every random choice comes from
the injected ``random.Random``, so a run replays from its seed.
"""

from __future__ import annotations

import os
import random
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from blocks.core.errors import FailedPrecondition, InvalidArgument

__all__ = ["PowerLossDisk", "PowerLossReport"]

_Inode = tuple[int, int]  # (st_dev, st_ino)
_Fsync = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class PowerLossReport:
    """What one power cut did to the files under a root."""

    files_restored: int  # files rewritten to their durable content (torn tail included)
    bytes_dropped: int  # unsynced bytes that did not survive
    bytes_torn: int  # unsynced bytes that survived as a torn tail (data or zeros)
    files_removed: int  # created without a directory fsync: gone
    files_resurrected: int  # deleted without a directory fsync: back


@dataclass(slots=True)
class _Counts:
    restored: int = 0
    dropped: int = 0
    torn: int = 0
    removed: int = 0
    resurrected: int = 0


class PowerLossDisk:
    """Durable images of files under tracked roots, and power cuts that fall back to them."""

    def __init__(
        self,
        rng: random.Random,
        *,
        torn_tail_probability: float = 0.5,
        zeroed_tail_probability: float = 0.2,
        strict_directories: bool = True,
        real_fsync: bool = False,
    ) -> None:
        for name, value in (
            ("torn_tail_probability", torn_tail_probability),
            ("zeroed_tail_probability", zeroed_tail_probability),
        ):
            if not 0.0 <= value <= 1.0:
                raise InvalidArgument(f"{name} must be within [0, 1], got {value}")
        self._rng = rng
        self.torn_tail_probability = torn_tail_probability
        self.zeroed_tail_probability = zeroed_tail_probability
        self.strict_directories = strict_directories
        self.real_fsync = real_fsync
        self._lock = threading.Lock()
        self._roots: set[str] = set()
        self._frozen: set[str] = set()
        self._contents: dict[_Inode, bytes] = {}  # durable bytes of each known inode
        self._entries: dict[str, dict[str, _Inode]] = {}  # durable entries per directory
        self._real: tuple[_Fsync, _Fsync] | None = None
        self.fsyncs_seen = 0  # fsyncs of tracked files and directories, frozen ones included
        self.last_report: PowerLossReport | None = None  # of the last ``power_cut`` block

    # -- tracking ---------------------------------------------------------------------------

    def track(self, root: str | os.PathLike[str]) -> None:
        """Watch every file under ``root`` (created if missing); what is there now is durable."""
        path = os.path.realpath(os.fspath(root))
        os.makedirs(path, exist_ok=True)
        with self._lock:
            for other in self._roots:
                if _inside(path, other) or _inside(other, path):
                    raise InvalidArgument(f"{path} overlaps the tracked root {other}")
            self._roots.add(path)
            self._settle(path)

    @contextmanager
    def installed(self) -> Iterator[PowerLossDisk]:
        """Route ``os.fsync`` and ``os.fdatasync`` through the disk for the ``with`` block."""
        if self._real is not None:
            raise FailedPrecondition("this PowerLossDisk is already installed")
        real_fsync = os.fsync
        real_fdatasync = getattr(os, "fdatasync", os.fsync)
        self._real = (real_fsync, real_fdatasync)
        os.fsync = lambda fd: self._on_fsync(_descriptor(fd), real_fsync)
        if hasattr(os, "fdatasync"):
            os.fdatasync = lambda fd: self._on_fsync(_descriptor(fd), real_fdatasync)
        try:
            yield self
        finally:
            os.fsync = real_fsync
            if hasattr(os, "fdatasync"):
                os.fdatasync = real_fdatasync
            self._real = None

    # -- power cuts -------------------------------------------------------------------------

    def cut_power(self, root: str | os.PathLike[str]) -> None:
        """Freeze ``root``'s durable image: later fsyncs under it are ignored until restore."""
        path = self._tracked_root(root)
        with self._lock:
            self._frozen.add(path)

    def restore(self, root: str | os.PathLike[str]) -> PowerLossReport:
        """Rewrite the files under ``root`` to what survives the cut (see the module docs).

        The process that wrote them must be gone (or at least idle): its open descriptors still
        point at the same files. The result is the new durable image, and fsyncs count again.
        """
        path = self._tracked_root(root)
        counts = _Counts()
        with self._lock:
            for directory in sorted(set(_directories(path)) | _under(self._entries, path)):
                os.makedirs(directory, exist_ok=True)
                self._restore_directory(directory, counts)
            self._frozen.discard(path)
            self._settle(path)
        return PowerLossReport(
            files_restored=counts.restored,
            bytes_dropped=counts.dropped,
            bytes_torn=counts.torn,
            files_removed=counts.removed,
            files_resurrected=counts.resurrected,
        )

    @contextmanager
    def power_cut(self, root: str | os.PathLike[str]) -> Iterator[None]:
        """Cut the power of ``root``, run the block (stop the dead node there), then restore."""
        self.cut_power(root)
        try:
            yield
        finally:
            self.last_report = self.restore(root)

    # -- internals --------------------------------------------------------------------------

    def _tracked_root(self, root: str | os.PathLike[str]) -> str:
        path = os.path.realpath(os.fspath(root))
        if path not in self._roots:
            raise InvalidArgument(f"{path} is not a tracked root; call track() first")
        return path

    def _root_of(self, path: str) -> str | None:
        return next((root for root in self._roots if _inside(path, root)), None)

    def _on_fsync(self, descriptor: int, real: _Fsync) -> None:
        try:
            path = os.readlink(f"/proc/self/fd/{descriptor}")
        except OSError:
            real(descriptor)
            return
        path = path.removesuffix(" (deleted)")
        root = self._root_of(path)
        if root is None:
            real(descriptor)
            return
        if self.real_fsync:
            real(descriptor)
        info = os.fstat(descriptor)
        with self._lock:
            self.fsyncs_seen += 1
            if root in self._frozen:
                return
            if stat.S_ISDIR(info.st_mode):
                self._entries[path] = _list_files(path)
            elif stat.S_ISREG(info.st_mode):
                with open(f"/proc/self/fd/{descriptor}", "rb") as file:
                    self._contents[(info.st_dev, info.st_ino)] = file.read()

    def _settle(self, root: str) -> None:
        """Make everything under ``root`` durable as it is now (caller holds the lock)."""
        for directory in _directories(root):
            entries = _list_files(directory)
            self._entries[directory] = entries
            for name, inode in entries.items():
                self._contents[inode] = Path(directory, name).read_bytes()

    def _restore_directory(self, directory: str, counts: _Counts) -> None:
        current = _list_files(directory)
        durable = self._entries.get(directory)
        if not self.strict_directories:
            durable = current
        elif durable is None:
            durable = {}  # created since the last settle and never fsynced: no entry survives
        for name in current:
            if name not in durable:
                path = os.path.join(directory, name)
                counts.dropped += os.path.getsize(path)
                os.unlink(path)
                counts.removed += 1
        for name, inode in sorted(durable.items()):
            path = os.path.join(directory, name)
            content = self._contents.get(inode, b"")
            now = Path(path).read_bytes() if current.get(name) == inode else None
            if name not in current:
                counts.resurrected += 1
            if now is not None and now == content:
                continue
            if now is not None and len(now) > len(content) and now.startswith(content):
                extra = now[len(content) :]
                kept = 0
                if self._rng.random() < self.torn_tail_probability:
                    kept = self._rng.randint(0, len(extra))
                tail = extra[:kept]
                if kept and self._rng.random() < self.zeroed_tail_probability:
                    tail = bytes(kept)
                counts.torn += kept
                counts.dropped += len(extra) - kept
                content += tail
            elif now is not None:
                counts.dropped += max(0, len(now) - len(content))
            with open(path, "wb") as file:
                file.write(content)
            counts.restored += 1


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


def _descriptor(file: int | _HasFileno) -> int:
    return file if isinstance(file, int) else file.fileno()


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _under(entries: dict[str, dict[str, _Inode]], root: str) -> set[str]:
    return {directory for directory in entries if _inside(directory, root)}


def _directories(root: str) -> list[str]:
    return [os.path.realpath(directory) for directory, _, _ in os.walk(root)]


def _list_files(directory: str) -> dict[str, _Inode]:
    """Regular files directly in ``directory``, by name."""
    found: dict[str, _Inode] = {}
    with os.scandir(directory) as scan:
        for entry in scan:
            if entry.is_file(follow_symlinks=False):
                info = entry.stat(follow_symlinks=False)
                found[entry.name] = (info.st_dev, info.st_ino)
    return found
