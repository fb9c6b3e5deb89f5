"""Per-writer entries in one value of an eventually consistent store, merged from siblings.

Theory of operation. kv has no atomic add, and two read-modify-writes of one key from the
same read become siblings. A block that keeps a shared tally there (counters' kv shards,
ratelimit's kv windows) therefore stores, per *writer* (one process, named uniquely), that
writer's own entry: a fixed number of ints, the first a sequence number that only that writer
raises. A value is the msgpack map ``{writer: [seq, ...]}``. Merging keeps, per writer, the
entry with the highest sequence: it is commutative, associative and idempotent, so any order
of siblings and any repeated read give the same map, and no writer's latest entry is lost
however writes interleave. This module holds the encoding, the decoding and the merge; what the
other ints mean is the block's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

from blocks.core.codec import pack, unpack
from blocks.core.errors import Corruption, InvalidArgument

__all__ = ["encode_entries", "keep_latest", "merge_siblings"]

Entry = TypeVar("Entry", bound=tuple[int, ...])


def keep_latest(into: dict[str, Entry], other: Mapping[str, Entry]) -> dict[str, Entry]:
    """Per writer, keep the entry with the higher sequence (its first int); on a tie the one
    already in ``into``. Changes ``into`` in place and returns it."""
    for writer, entry in other.items():
        known = into.get(writer)
        if known is None or entry[0] > known[0]:
            into[writer] = entry
    return into


def merge_siblings(
    siblings: Iterable[bytes], *, width: int, writers_max: int, value_bytes_max: int, what: str
) -> dict[str, tuple[int, ...]]:
    """Decode every sibling and keep, per writer, its highest-sequence entry (``keep_latest``).

    Each entry comes back as a tuple of exactly ``width`` ints. Raises ``Corruption`` naming
    ``what`` when a sibling is not msgpack of at most ``value_bytes_max`` bytes, not a map of
    at most ``writers_max`` ``str`` writers, or holds an entry that is not a list of
    ``width`` ints: stored data is never guessed at.
    """
    merged: dict[str, tuple[int, ...]] = {}
    for data in siblings:
        try:
            raw = unpack(data, size_max=value_bytes_max)
            if not isinstance(raw, dict) or len(raw) > writers_max:
                raise InvalidArgument(f"value must be a map of at most {writers_max} writers")
            for writer, entry in raw.items():
                if (
                    not isinstance(writer, str)
                    or not isinstance(entry, list)
                    or len(entry) != width
                    or not all(type(x) is int for x in entry)
                ):
                    raise InvalidArgument(f"entries must be writer: [{width} ints]")
                known = merged.get(writer)
                if known is None or entry[0] > known[0]:
                    merged[writer] = tuple(entry)
        except InvalidArgument as error:
            raise Corruption(f"{what} does not decode: {error}") from None
    return merged


def encode_entries(entries: Mapping[str, tuple[int, ...]], value_bytes_max: int) -> bytes:
    """The value as stored: ``{writer: [ints]}`` in writer order (so equal maps encode to
    equal bytes). ``InvalidArgument`` when it would be longer than ``value_bytes_max``."""
    stored = {writer: list(entry) for writer, entry in sorted(entries.items())}
    return pack(stored, size_max=value_bytes_max)
