"""What a partition replica recovers from disk: its hard state and its log's epoch history.

Theory of operation. A replica's hard state, ``(epoch, voted_for)``, is one small msgpack file
per partition (``<topic>.<partition>.msgpack`` in the broker's state directory), replaced
atomically (``blocks.core.files.write_atomically``) whenever the core hands the driver a
``HardState``, before any message that rests on it leaves: a vote must survive power loss, or
a replica could vote twice in one epoch. The epoch history (where each leader epoch's records
begin) is not stored apart: ``epoch_history`` reads it back from the records themselves, which
carry their epoch, so it can never disagree with the log. Without a state directory (a broker
that keeps nothing) nothing is saved and nothing is found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from blocks.core.codec import pack, unpack
from blocks.core.files import make_directories, write_atomically
from blocks.pubsub.replica_messages import HardState

__all__ = ["HardStateFiles", "epoch_history"]

Key = tuple[str, int]


class HardStateFiles:
    """The hard-state files of one broker's replicas, under ``directory`` (None: none)."""

    __slots__ = ("directory",)

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        if directory is not None:
            make_directories(directory)

    def path(self, key: Key) -> Path | None:
        """Where the hard state of partition ``key`` lives; None without a directory."""
        if self.directory is None:
            return None
        return self.directory / f"{key[0]}.{key[1]}.msgpack"

    def load(self, key: Key) -> tuple[int, str | None] | None:
        """The saved ``(epoch, voted_for)`` of ``key``; None when none was ever saved."""
        path = self.path(key)
        if path is None or not path.exists():
            return None
        epoch, voted_for = unpack(path.read_bytes())
        return int(epoch), voted_for

    def save(self, key: Key, state: HardState) -> None:
        """Replace ``key``'s hard state atomically and durably (nothing without a directory)."""
        path = self.path(key)
        if path is None:
            return
        write_atomically(path, pack([state.epoch, state.voted_for]))


def epoch_history(read: Any, first_offset: int) -> list[tuple[int, int]]:
    """``(epoch, first offset)`` of every epoch in a stored log."""
    history: list[tuple[int, int]] = []
    offset = first_offset
    while batch := read(offset, 1000, 1 << 24, include_control=True):
        for record in batch:
            if not history or record.epoch != history[-1][0]:
                history.append((record.epoch, record.offset))
        offset = batch[-1].offset + 1
    return history
