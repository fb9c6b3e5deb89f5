"""File names, ordering, locking and small POSIX utilities for the Bitcask engine.

Theory of operation: a store directory holds

* ``<id>.data``: data files written by ``put``/``delete``, ``id`` a 12-digit integer that
  grows by one each time the active file rotates;
* ``<id>-m<j>.data`` and ``<id>-m<j>.hint``: outputs of the merge that started when the
  active file was ``<id>``; they hold the live values of every file older than ``<id>``;
* ``<id>.merged``: the commit marker of that merge. Until it exists the merge outputs are
  ignored (and deleted on open); once it exists every file older than the outputs is
  obsolete. A single rename makes a merge take effect, whatever the crash point;
* ``LOCK``: held with ``flock`` by the one open writer.

``FileId`` orders files so that later records win: merge outputs of ``A`` sort just before
data file ``A`` and after everything the merge read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from blocks.core.directory_lock import DirectoryLock  # re-exported: the engine imports it here
from blocks.core.files import (
    fsync_directory,  # re-exported: the engine's modules import it here
    pwrite_all,
)

__all__ = [
    "DirectoryLock",
    "FileId",
    "StoreListing",
    "fsync_directory",
    "list_store",
    "marker_path",
    "write_zeros",
]

_DATA = re.compile(r"^(\d{12})\.data$")
_MERGED = re.compile(r"^(\d{12})-m(\d{6})\.(data|hint)$")
_MARKER = re.compile(r"^(\d{12})\.merged$")
_MARKER_TEMP = re.compile(r"^(\d{12})\.merged\.tmp$")

REGULAR = 1
MERGE_OUTPUT = 0


@dataclass(frozen=True, slots=True, order=True)
class FileId:
    """Position of a data file in the store's history (compare with ``<``)."""

    major: int
    kind: int  # MERGE_OUTPUT (0) sorts before REGULAR (1) of the same major
    minor: int = 0

    def data_name(self) -> str:
        if self.kind == REGULAR:
            return f"{self.major:012d}.data"
        return f"{self.major:012d}-m{self.minor:06d}.data"

    def hint_name(self) -> str:
        assert self.kind == MERGE_OUTPUT, "only merge outputs have hint files"
        return f"{self.major:012d}-m{self.minor:06d}.hint"


def marker_path(directory: Path, major: int) -> Path:
    return directory / f"{major:012d}.merged"


@dataclass(frozen=True, slots=True)
class StoreListing:
    """What a store directory holds, by role (names not matching any role are left alone)."""

    regular: tuple[FileId, ...]
    merge_outputs: tuple[FileId, ...]
    hints: frozenset[FileId]
    markers: tuple[int, ...]
    temporaries: tuple[str, ...]


def list_store(directory: Path) -> StoreListing:
    regular: list[FileId] = []
    outputs: list[FileId] = []
    hints: set[FileId] = set()
    markers: list[int] = []
    temporaries: list[str] = []
    for name in os.listdir(directory):
        if match := _DATA.match(name):
            regular.append(FileId(int(match[1]), REGULAR))
        elif match := _MERGED.match(name):
            file_id = FileId(int(match[1]), MERGE_OUTPUT, int(match[2]))
            (outputs.append(file_id) if match[3] == "data" else hints.add(file_id))
        elif match := _MARKER.match(name):
            markers.append(int(match[1]))
        elif _MARKER_TEMP.match(name):
            temporaries.append(name)
    return StoreListing(
        regular=tuple(sorted(regular)),
        merge_outputs=tuple(sorted(outputs)),
        hints=frozenset(hints),
        markers=tuple(sorted(markers)),
        temporaries=tuple(temporaries),
    )


_ZEROS = bytes(256 * 1024)


def write_zeros(fd: int, start: int, end: int) -> None:
    """Write zero bytes over ``[start, end)`` of the file (extending it if need be)."""
    while start < end:
        count = min(end - start, len(_ZEROS))
        pwrite_all(fd, _ZEROS[:count] if count < len(_ZEROS) else _ZEROS, start)
        start += count
