"""Merge (compaction) of a Bitcask store, crash-safe at every step.

Theory of operation, in four phases:

1. *Seal* (store lock held, microseconds): rotate, so that the new active file ``A``
   receives every write from now on. The inputs are all other
   files: everything older than ``A``.
2. *Copy* (no lock): scan each input oldest first; a record is live when the keydir still
   points at it. Live records are copied byte for byte into outputs ``<A>-m<j>.data`` (rolled
   at ``file_bytes_max``) and a hint entry is written for each. Tombstones are dropped: every
   older value they hid is in an input too, so it is dropped with them. Reading the keydir
   without the lock is safe both ways: a record that goes stale right after being judged live
   is superseded by a newer record in ``A`` or later, and a record judged dead never becomes
   live again.
3. *Commit* (no lock): fsync outputs and hints, then write ``<A>.merged`` with a rename and
   fsync the directory. From this instant the next open uses the outputs instead of the
   inputs, even if the process dies before phase 4.
4. *Swap* (store lock held): point each copied key at its new home if the keydir still points
   at the old one, close the inputs and delete them (and older markers).

Merge always fsyncs, whatever the store's sync policy: it deletes the only other copy.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, Protocol

from blocks.kv.engine.datafile import DataFile
from blocks.kv.engine.files import (
    MERGE_OUTPUT,
    FileId,
    fsync_directory,
    list_store,
    marker_path,
)
from blocks.kv.engine.format import HintEntry, encode_hint, encode_hint_trailer, scan_records
from blocks.kv.engine.recovery import Location, remove_obsolete
from blocks.kv.limits import KEY_BYTES_MAX, VALUE_BYTES_MAX_LIMIT

__all__ = ["MergeTarget", "run_merge"]


class MergeTarget(Protocol):
    """What a merge reads and calls on the store it merges (``Bitcask`` is the one): the
    store's private state, which only the engine's own modules touch. Stated here so that
    this module need not import ``bitcask.py``, which imports it."""

    @property
    def directory(self) -> Path: ...
    @property
    def file_bytes_max(self) -> int: ...
    @property
    def _lock(self) -> AbstractContextManager[Any]: ...
    @property
    def _keydir(self) -> dict[bytes, Location]: ...
    @property
    def _files(self) -> list[DataFile | None]: ...
    @property
    def _active(self) -> DataFile: ...
    def _check_open(self) -> None: ...
    def _rotate(self) -> DataFile: ...
    def _register(self, file_id: FileId, fd: int, size: int) -> DataFile: ...


class _Move(NamedTuple):
    key: bytes
    old: Location
    output_index: int
    offset: int


@dataclass(slots=True)
class _Output:
    file_id: FileId
    handle: BinaryIO
    hint: BinaryIO
    size: int = 0
    hint_count: int = 0
    hint_crc: int = 0


def run_merge(store: MergeTarget) -> None:
    """Merge ``store`` in place; the caller holds the store's merge lock."""
    with store._lock:
        store._check_open()
        # Always rotate, even from an empty active file: outputs are named after the new
        # active file, and an earlier merge's outputs may carry the current one's name.
        store._rotate()
        major = store._active.file_id.major
        inputs = [f for f in store._files if f is not None and f is not store._active]
    if not inputs:
        return
    outputs: list[_Output] = []
    moves: list[_Move] = []
    try:
        for source in inputs:
            _copy_live(store, source.file_no, source.fd, source.size, major, outputs, moves)
        for output in outputs:
            _seal(output)
    except BaseException:
        for output in outputs:
            output.handle.close()
            output.hint.close()
            _unlink_quietly(store.directory / output.file_id.data_name())
            _unlink_quietly(store.directory / output.file_id.hint_name())
        raise
    _commit_marker(store, major)
    _swap(store, major, inputs, outputs, moves)


def _copy_live(
    store: MergeTarget,
    file_no: int,
    fd: int,
    size: int,
    major: int,
    outputs: list[_Output],
    moves: list[_Move],
) -> None:
    data = os.pread(fd, size, 0)
    records, _, _ = scan_records(
        data, key_len_max=KEY_BYTES_MAX, value_len_max=VALUE_BYTES_MAX_LIMIT
    )
    keydir = store._keydir
    for record in records:
        if record.tombstone:
            continue
        old = Location(file_no, record.offset, record.size, record.timestamp_ms)
        if keydir.get(record.key) != old:
            continue
        full = bool(outputs) and outputs[-1].size + record.size > store.file_bytes_max
        if not outputs or (full and outputs[-1].size > 0):
            outputs.append(_open_output(store, FileId(major, MERGE_OUTPUT, len(outputs))))
        output = outputs[-1]
        output.handle.write(data[record.offset : record.offset + record.size])
        hint = encode_hint(HintEntry(record.key, output.size, record.size, record.timestamp_ms))
        output.hint.write(hint)
        output.hint_crc = zlib.crc32(hint, output.hint_crc)
        output.hint_count += 1
        moves.append(_Move(record.key, old, len(outputs) - 1, output.size))
        output.size += record.size


def _open_output(store: MergeTarget, file_id: FileId) -> _Output:
    handle = open(store.directory / file_id.data_name(), "xb")  # noqa: SIM115 - closed in _seal
    hint = open(store.directory / file_id.hint_name(), "xb")  # noqa: SIM115
    return _Output(file_id, handle, hint)


def _seal(output: _Output) -> None:
    output.hint.write(encode_hint_trailer(output.hint_count, output.hint_crc))
    for handle in (output.handle, output.hint):
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()


def _commit_marker(store: MergeTarget, major: int) -> None:
    fsync_directory(store.directory)
    final = marker_path(store.directory, major)
    temporary = final.with_name(final.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, final)
    fsync_directory(store.directory)


def _swap(
    store: MergeTarget,
    major: int,
    inputs: list[DataFile],
    outputs: list[_Output],
    moves: list[_Move],
) -> None:
    with store._lock:
        registered = []
        for output in outputs:
            fd = os.open(store.directory / output.file_id.data_name(), os.O_RDONLY)
            registered.append(store._register(output.file_id, fd, output.size))
        keydir = store._keydir
        for move in moves:
            if keydir.get(move.key) == move.old:
                target = registered[move.output_index]
                keydir[move.key] = Location(
                    target.file_no, move.offset, move.old.size, move.old.timestamp_ms
                )
        for source in inputs:
            assert store._files[source.file_no] is source
            source.close()
            store._files[source.file_no] = None
        remove_obsolete(store.directory, list_store(store.directory), major)
        fsync_directory(store.directory)


def _unlink_quietly(path: os.PathLike[str]) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
