"""The pure rules of worker-id leases kept in a kv cluster: records, siblings, takeover.

Theory of operation
-------------------
Each worker id is one kv key whose value is a ``KvLeaseRecord``: ``held`` by an owner,
``released`` by its last owner, or ``contested``. kv has no conditional put: a put with the
context of a read supersedes exactly what that read saw, and two puts from the same read both
survive as *siblings*. The lease protocol (``blocks.sequencer.kvlease``) turns that into
mutual exclusion with three rules, all decided here from data alone:

1. **Write, then read back.** A claim (or renewal) counts only when a quorum read after the
   write returns exactly that write's record (``holds``). With intersecting quorums
   (``R + W > N``, no sloppy stand-ins), of two concurrent claims the one completed later is
   seen by the other's read-back or sees the other in its own, so two claimants can never
   both see themselves alone.
2. **Siblings mean nobody.** ``resolve`` maps any set of two or more distinct siblings to one
   deterministic ``contested`` record (epoch above all of theirs, ``until_ms`` the largest of
   theirs) that holds for no owner. Every reader computes the same record, so whoever writes
   it back writes the same bytes, and a holder that meets siblings at renewal has lost.
3. **Takeover by observation, not by clocks.** A ``held`` or ``contested`` record may be
   overwritten only after the contender has seen the very same sibling set
   (``LeaseView.fingerprint``) for ``ttl + margin`` on its *own* monotonic clock
   (``Observations``). The holder counts its lease from before it sent its last confirmed
   write, so by the time anyone may take over, the holder's ``ttl - margin`` has run out
   whatever the wall clocks say; only clock *rates* need to agree within margin/ttl.
   ``released`` records and absent keys are free at once.

Every record also carries ``until_ms``, a wall-clock bound the holder promises its IDs stay
below; it only grows along a key's history, and the next holder starts its IDs after it
(``Snowflake(min_timestamp_ms=...)``), so holders of one worker id never share a millisecond.
``epoch`` grows by one at every change of holder and serves as a fencing token.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import xxhash

from blocks.core.codec import pack, unpack
from blocks.core.errors import Corruption, InvalidArgument

__all__ = [
    "RECORD_BYTES_MAX",
    "KvLeaseRecord",
    "LeaseState",
    "LeaseView",
    "Observations",
    "claim_record",
    "claimable",
    "holds",
    "released_record",
    "renewed_record",
    "resolve",
]

RECORD_BYTES_MAX = 1024
OWNER_BYTES_MAX = 256
TOKEN_BYTES = 16
SIBLINGS_MAX = 64
"""More distinct siblings than this under one lease key is not a lease table: ``Corruption``."""
_FORMAT = 1


class LeaseState(enum.Enum):
    HELD = "held"
    RELEASED = "released"
    CONTESTED = "contested"


@dataclass(frozen=True, slots=True)
class KvLeaseRecord:
    """One worker id's lease as stored; ``token`` is unique per write (empty if contested)."""

    state: LeaseState
    owner: str
    token: bytes
    epoch: int
    until_ms: int

    def __post_init__(self) -> None:
        if not isinstance(self.state, LeaseState):
            raise InvalidArgument(f"state must be a LeaseState, got {self.state!r}")
        if not isinstance(self.owner, str) or len(self.owner.encode()) > OWNER_BYTES_MAX:
            raise InvalidArgument(f"owner must be a str of at most {OWNER_BYTES_MAX} bytes")
        if (self.state is LeaseState.CONTESTED) != (not self.owner):
            raise InvalidArgument("a contested record has no owner; the others have one")
        for name in ("epoch", "until_ms"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value < 1 << 62:
                raise InvalidArgument(f"{name} must be an int in [0, 2**62)")

    def encode(self) -> bytes:
        fields = [_FORMAT, self.state.value, self.owner, self.token, self.epoch, self.until_ms]
        return pack(fields, size_max=RECORD_BYTES_MAX)

    @classmethod
    def decode(cls, data: bytes) -> KvLeaseRecord:
        """Parse a stored record; anything else is ``Corruption`` (not our key, or damaged)."""
        try:
            raw = unpack(data, size_max=RECORD_BYTES_MAX)
            if not isinstance(raw, list) or len(raw) != 6 or raw[0] != _FORMAT:
                raise InvalidArgument("not a version-1 lease record")
            _, state, owner, token, epoch, until_ms = raw
            if not isinstance(token, bytes) or len(token) > TOKEN_BYTES:
                raise InvalidArgument("token must be at most 16 bytes")
            return cls(LeaseState(state), owner, token, epoch, until_ms)
        except (InvalidArgument, ValueError, TypeError) as error:
            raise Corruption(f"lease record does not decode: {error}") from None


@dataclass(frozen=True, slots=True)
class LeaseView:
    """What one read of a lease key means.

    ``record`` is None for a key never written; when ``conflicted``, it is the deterministic
    ``contested`` resolution of the siblings, not any sibling itself. ``fingerprint`` names the
    exact set of distinct siblings read, for ``Observations``.
    """

    record: KvLeaseRecord | None
    conflicted: bool
    fingerprint: bytes


def resolve(siblings: Sequence[bytes]) -> LeaseView:
    """Map the siblings of one read to a single view; the same set always gives the same one."""
    distinct = sorted(set(siblings))
    if len(distinct) > SIBLINGS_MAX:
        raise Corruption(f"{len(distinct)} siblings under one lease key")
    digest = xxhash.xxh3_128()
    for value in distinct:
        digest.update(len(value).to_bytes(4, "big"))
        digest.update(value)
    fingerprint = digest.digest()
    records = [KvLeaseRecord.decode(value) for value in distinct]
    if not records:
        return LeaseView(None, False, fingerprint)
    if len(records) == 1:
        return LeaseView(records[0], False, fingerprint)
    contested = KvLeaseRecord(
        LeaseState.CONTESTED,
        "",
        b"",
        max(r.epoch for r in records) + 1,
        max(r.until_ms for r in records),
    )
    return LeaseView(contested, True, fingerprint)


def holds(view: LeaseView, tokens: Collection[bytes]) -> bool:
    """True when the read shows exactly one held record written with one of ``tokens``."""
    record = view.record
    return (
        record is not None
        and not view.conflicted
        and record.state is LeaseState.HELD
        and record.token in tokens
    )


def claimable(view: LeaseView, seen_for_s: float, takeover_after_s: float) -> bool:
    """May a contender overwrite what it read? Free keys at once; others after observation."""
    if view.record is None:
        return True
    if not view.conflicted and view.record.state is LeaseState.RELEASED:
        return True
    return seen_for_s >= takeover_after_s


def claim_record(
    view: LeaseView, owner: str, token: bytes, now_ms: int, ttl_ms: int
) -> KvLeaseRecord:
    """The record a contender writes over ``view``: a new epoch, ``until_ms`` never lower."""
    previous = view.record
    epoch = previous.epoch + 1 if previous is not None else 1
    until_ms = max(previous.until_ms if previous is not None else 0, now_ms + ttl_ms)
    return KvLeaseRecord(LeaseState.HELD, owner, token, epoch, until_ms)


def renewed_record(record: KvLeaseRecord, token: bytes, now_ms: int, ttl_ms: int) -> KvLeaseRecord:
    """The holder's next record: same epoch, fresh token, ``until_ms`` pushed forward."""
    until_ms = max(record.until_ms, now_ms + ttl_ms)
    return KvLeaseRecord(LeaseState.HELD, record.owner, token, record.epoch, until_ms)


def released_record(
    record: KvLeaseRecord, token: bytes, issued_below_ms: int | None
) -> KvLeaseRecord:
    """The holder's goodbye: free at once; ``until_ms`` lowered only to what it really used."""
    until_ms = record.until_ms
    if issued_below_ms is not None:
        until_ms = max(0, min(until_ms, issued_below_ms))
    return KvLeaseRecord(LeaseState.RELEASED, record.owner, token, record.epoch, until_ms)


class Observations:
    """A contender's memory of how long each worker id has looked exactly the same.

    ``observe(worker_id, fingerprint, now_s)`` returns for how long (on this contender's
    monotonic clock) the key has shown ``fingerprint`` without a change seen in between. One
    entry per worker id, so it is bounded by the table size.
    """

    __slots__ = ("_first_seen",)

    def __init__(self) -> None:
        self._first_seen: dict[int, tuple[bytes, float]] = {}

    def observe(self, worker_id: int, fingerprint: bytes, now_s: float) -> float:
        seen = self._first_seen.get(worker_id)
        if seen is None or seen[0] != fingerprint:
            self._first_seen[worker_id] = (fingerprint, now_s)
            return 0.0
        return now_s - seen[1]

    def forget(self, worker_id: int) -> None:
        self._first_seen.pop(worker_id, None)
