"""Pub-sub histories: per-partition order, nothing lost, no duplicates past the idempotent
producer.

Theory of operation: record what your clients saw (acknowledged sends, polls, commits) as
events, read every partition once more at the end (``final``), and call ``check_history``.
It returns a ``CheckResult`` listing each violation of:

* **lost writes**: an acknowledged send whose ``(partition, offset)`` is missing from the
  final read, or holds another value;
* **duplicates**: one value (one producer sequence) stored at two offsets;
* **non-monotonic polls**: a poll whose offsets do not strictly increase;
* **skips**: two consecutive polls by one consumer on one partition with a record of the
  final read strictly between them (the consumer jumped over it without a seek);
* **commits moving backwards**: a group's committed offset for a partition decreasing;
* **producer order**: two acknowledged sends of one idempotent producer to one partition
  stored in the opposite order of their sequence numbers (only for sends that name their
  ``producer`` and ``sequence``).

Values must be unique per send (make them ``producer:sequence``) so duplicates are visible.
The checker is pure and works on any system's histories, ours or not.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["CheckResult", "Commit", "Poll", "Send", "check_history"]

# Moved here from ``blocks.pubsub.checker``, which re-exports it so old imports keep working.


@dataclass(frozen=True, slots=True)
class Send:
    """An acknowledged send: ``value`` is stored at ``offset`` of ``partition``. An idempotent
    producer's sends may name it and their ``sequence`` to have their order checked."""

    partition: int
    offset: int
    value: bytes
    producer: str | None = None
    sequence: int | None = None


@dataclass(frozen=True, slots=True)
class Poll:
    """Records one consumer received in one poll, in order. ``seek`` marks a poll that
    follows an explicit seek (or a new assignment), which may jump."""

    consumer: str
    partition: int
    offsets: tuple[int, ...]
    seek: bool = False


@dataclass(frozen=True, slots=True)
class Commit:
    group: str
    partition: int
    offset: int


@dataclass(slots=True)
class CheckResult:
    lost: list[Send] = field(default_factory=list)
    duplicates: list[tuple[bytes, list[tuple[int, int]]]] = field(default_factory=list)
    non_monotonic: list[Poll] = field(default_factory=list)
    skips: list[tuple[Poll, int]] = field(default_factory=list)  # (poll, skipped offset)
    commits_backwards: list[tuple[Commit, int]] = field(default_factory=list)
    out_of_order: list[tuple[Send, Send]] = field(default_factory=list)  # (earlier seq, later)

    @property
    def valid(self) -> bool:
        return not (
            self.lost
            or self.duplicates
            or self.non_monotonic
            or self.skips
            or self.commits_backwards
            or self.out_of_order
        )


def check_history(
    sends: Iterable[Send],
    polls: Sequence[Poll],
    commits: Iterable[Commit],
    final: Mapping[int, Sequence[tuple[int, bytes]]],
) -> CheckResult:
    """Check a history against the final read ``{partition: [(offset, value), ...]}``."""
    result = CheckResult()
    sends = list(sends)
    stored = {(p, offset): value for p, rows in final.items() for offset, value in rows}
    for send in sends:
        if stored.get((send.partition, send.offset)) != send.value:
            result.lost.append(send)
    places: dict[bytes, list[tuple[int, int]]] = {}
    for (partition, offset), value in stored.items():
        places.setdefault(value, []).append((partition, offset))
    result.duplicates = [(v, sorted(p)) for v, p in places.items() if len(p) > 1]
    offsets_by_partition = {p: sorted(o for o, _ in rows) for p, rows in final.items()}
    last_seen: dict[tuple[str, int], int] = {}
    for poll in polls:
        if any(b <= a for a, b in zip(poll.offsets, poll.offsets[1:], strict=False)):
            result.non_monotonic.append(poll)
        if not poll.offsets:
            continue
        key = (poll.consumer, poll.partition)
        previous = last_seen.get(key)
        if previous is not None and not poll.seek:
            known = offsets_by_partition.get(poll.partition, [])
            for earlier, later in zip((previous, *poll.offsets), poll.offsets, strict=False):
                index = bisect.bisect_right(known, earlier)
                if index < len(known) and known[index] < later:
                    result.skips.append((poll, known[index]))
                    break
        last_seen[key] = poll.offsets[-1]
    high: dict[tuple[str, int], int] = {}
    for commit in commits:
        key2 = (commit.group, commit.partition)
        if commit.offset < high.get(key2, -1):
            result.commits_backwards.append((commit, high[key2]))
        high[key2] = max(high.get(key2, -1), commit.offset)
    result.out_of_order = _producer_order(sends)
    return result


def _producer_order(sends: Iterable[Send]) -> list[tuple[Send, Send]]:
    streams: dict[tuple[str, int], list[Send]] = {}
    for send in sends:
        if send.producer is not None and send.sequence is not None:
            streams.setdefault((send.producer, send.partition), []).append(send)
    found = []
    for stream in streams.values():
        stream.sort(key=lambda send: (send.sequence, send.offset))
        for earlier, later in itertools.pairwise(stream):
            if later.offset <= earlier.offset and later.sequence != earlier.sequence:
                found.append((earlier, later))
    return found
