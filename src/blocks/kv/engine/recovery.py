"""Opening a Bitcask directory: finish or discard merges, then rebuild the keydir.

Theory of operation, in order:

1. **Settle merges.** The newest ``<B>.merged`` marker is the last merge that committed. Every
   file that merge read (merge outputs of older merges and data files older than ``B``) is
   obsolete and deleted, as are outputs of merges that never committed (a crash mid-merge)
   and older markers. After this step the directory is exactly "outputs of ``B``, then data
   files ``>= B``", whatever the crash point was.
2. **Rebuild the keydir** by replaying files oldest first: a merge output through its hint
   file when the hint checks out (a few bytes per key), by scanning otherwise; data files by
   scanning. A put sets the key's location; a tombstone removes it.
3. **Drop a preallocated tail.** Under ``sync`` always/batch the active file is zero-filled
   ahead of its records (``bitcask.py``) and cut back when sealed; a crash leaves the zeros.
   A scan stops at them (zeros fail the checksum), and when every byte from there on is zero
   the file is cut there, in any file: no record is behind them.
4. **Drop a torn tail.** The newest data file is the one that was active when the process
   stopped; if its scan stops early, the rest is a write the crash cut short (or never
   acknowledged under ``sync=never``/``batch``) and the file is truncated there. In an older
   file a bad record is damage, not a crash: the file is left as it is, indexing stops at the
   bad record, and the file is named in ``RecoveryReport.damaged_files``.

A checksum guards every record, so damage can hide records (an older value may show again)
but can never make a wrong value appear.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from blocks.kv.engine.files import MERGE_OUTPUT, FileId, StoreListing, fsync_directory, list_store
from blocks.kv.engine.format import ScanStatus, decode_hints, scan_records

__all__ = ["Location", "RecoveredStore", "RecoveryReport", "recover", "remove_obsolete"]


class Location(NamedTuple):
    """Where a key's live record is: index into the store's file table, offset and size."""

    file_no: int
    offset: int
    size: int
    timestamp_ms: int


@dataclass(slots=True)
class RecoveryReport:
    """What opening found: bytes dropped from a torn tail or a preallocated zero tail, files
    with damage, hints used."""

    torn_bytes_dropped: int = 0
    preallocated_bytes_dropped: int = 0
    damaged_files: list[str] = field(default_factory=list)
    hints_used: int = 0
    hints_ignored: int = 0


@dataclass(slots=True)
class RecoveredStore:
    files: list[tuple[FileId, int]]  # (id, size in bytes), oldest first; index = file_no
    keydir: dict[bytes, Location]
    report: RecoveryReport
    next_major: int  # id for the next data file


def remove_obsolete(directory: Path, listing: StoreListing, committed: int | None) -> bool:
    """Delete what the merge committed as ``committed`` made obsolete; True if anything went."""
    doomed: list[str] = list(listing.temporaries)
    for file_id in listing.merge_outputs:
        if committed is None or file_id.major != committed:
            doomed.append(file_id.data_name())
    for file_id in listing.hints:
        if committed is None or file_id.major != committed:
            doomed.append(file_id.hint_name())
    if committed is not None:
        doomed += [f.data_name() for f in listing.regular if f.major < committed]
        doomed += [f"{m:012d}.merged" for m in listing.markers if m != committed]
    for name in doomed:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(directory / name)
    return bool(doomed)


def recover(directory: Path, *, key_len_max: int, value_len_max: int) -> RecoveredStore:
    """Settle merges and rebuild the keydir of the store in ``directory`` (see above)."""
    listing = list_store(directory)
    committed = listing.markers[-1] if listing.markers else None
    if remove_obsolete(directory, listing, committed):
        fsync_directory(directory)
        listing = list_store(directory)
    files: list[FileId] = sorted([*listing.merge_outputs, *listing.regular])
    result = RecoveredStore(files=[], keydir={}, report=RecoveryReport(), next_major=1)
    newest_regular = listing.regular[-1] if listing.regular else None
    for file_no, file_id in enumerate(files):
        size = _load_file(
            directory,
            file_id,
            file_no,
            listing,
            result,
            truncate_tail=file_id == newest_regular,
            limits=(key_len_max, value_len_max),
        )
        result.files.append((file_id, size))
    majors = [f.major for f in files] + ([committed] if committed is not None else [])
    result.next_major = max(majors, default=0) + 1
    return result


def _load_file(
    directory: Path,
    file_id: FileId,
    file_no: int,
    listing: StoreListing,
    result: RecoveredStore,
    *,
    truncate_tail: bool,
    limits: tuple[int, int],
) -> int:
    """Replay one file into ``result.keydir``; return the file's (possibly truncated) size."""
    key_len_max, value_len_max = limits
    path = directory / file_id.data_name()
    data = path.read_bytes()
    if file_id.kind == MERGE_OUTPUT and file_id in listing.hints:
        hint_bytes = (directory / file_id.hint_name()).read_bytes()
        hints = decode_hints(hint_bytes, key_len_max=key_len_max)
        if hints is not None and all(h.offset + h.record_size <= len(data) for h in hints):
            result.report.hints_used += 1
            for hint in hints:
                location = Location(file_no, hint.offset, hint.record_size, hint.timestamp_ms)
                result.keydir[hint.key] = location
            return len(data)
        result.report.hints_ignored += 1
    records, valid_end, status = scan_records(
        data, key_len_max=key_len_max, value_len_max=value_len_max
    )
    keydir = result.keydir
    for record in records:
        if record.tombstone:
            keydir.pop(record.key, None)
        else:
            keydir[record.key] = Location(file_no, record.offset, record.size, record.timestamp_ms)
    if status is ScanStatus.END:
        return len(data)
    if data.count(0, valid_end) == len(data) - valid_end:
        # Zeros the store wrote ahead of its records (sync always/batch) and had not cut
        # yet: not a record, so nothing is lost by cutting them, in any file.
        _truncate(path, valid_end)
        result.report.preallocated_bytes_dropped += len(data) - valid_end
        return valid_end
    if truncate_tail:
        _truncate(path, valid_end)
        result.report.torn_bytes_dropped += len(data) - valid_end
        return valid_end
    result.report.damaged_files.append(file_id.data_name())
    return len(data)


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(size)
        os.fsync(handle.fileno())
