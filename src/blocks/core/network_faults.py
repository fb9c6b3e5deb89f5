"""The pure fault core of ``MemoryNetwork``: envelopes, links, cuts, and each envelope's fate.

Theory of operation: every message the in-memory network carries is an ``Envelope`` of msgpack
bytes. ``NetworkFaults`` decides what happens to it and keeps it until it is due; it has no
event loop, no sockets and no clock of its own. Time comes in as ``now_s`` on every call, and
randomness from one ``random.Random`` seeded from the network's seed, so the same sequence of
calls always gives the same decisions, the same delivery order and the same trace.

``submit(envelope, now_s, sender_up=...)`` decides an envelope's fate at send time, drawing from
the seeded generator in a fixed order (loss, delay, reorder, then duplicate and its delay):

* dropped: the sender is down, the link is cut, ``in_flight_max`` envelopes are already
  waiting, or the link's loss probability hits;
* otherwise scheduled at ``now_s`` plus a delay from the link's range. Without reordering a
  directed link is FIFO (an envelope is never due before an earlier one on the same link); an
  envelope picked for reordering is held back a further random amount and skips that order.
  A duplicate gets its own delay and may arrive before or after the original.

Scheduled envelopes wait in one heap ordered by (due time, sequence number); ``pop_due``
returns them one at a time, so an envelope pushed while delivering (a refusal) can still be
due in the same pass. ``admit(envelope, now_s, sender_alive=..., receiver_up=...)`` checks
again at delivery time: a cut made while the envelope was in flight drops it too.

Every decision is counted (``NetworkStats``) and recorded (``TraceEvent``, the last
``trace_max`` kept). The counters balance: ``delivered + dropped_* + refused + in_flight ==
sent + duplicated``; the caller keeps that true by counting ``delivered``, ``dropped_late``
and ``refused`` through ``count`` for the envelopes ``admit`` lets through.
"""

from __future__ import annotations

import collections
import enum
import heapq
import random
from collections.abc import Iterable
from dataclasses import dataclass

from blocks.core.errors import InvalidArgument

__all__ = [
    "Envelope",
    "Kind",
    "LinkConfig",
    "NetworkFaults",
    "NetworkStats",
    "TraceEvent",
]


class Kind(enum.Enum):
    """What an envelope carries."""

    REQUEST = "request"
    ONEWAY = "oneway"
    REPLY = "reply"
    FAILURE = "failure"  # a reply carrying an encoded error


@dataclass(frozen=True, slots=True)
class Envelope:
    message_id: int  # unique per network; a duplicate keeps its original's id
    kind: Kind
    src: str
    dst: str
    src_incarnation: int
    request_id: int  # the request's message id, for requests and their replies; else 0
    payload: bytes


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """Faults on one directed link; probabilities are per message, in [0, 1].

    ``delay_ms`` is a (low, high) range sampled uniformly. A message picked for reordering
    (probability ``reorder``) is held back a further uniform ``[0, reorder_delay_ms]`` and
    skips the link's FIFO order, so later messages may overtake it. A duplicate gets its own
    delay and may arrive before or after the original.
    """

    delay_ms: tuple[float, float] = (0.0, 0.0)
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay_ms: float = 10.0

    def __post_init__(self) -> None:
        low, high = self.delay_ms
        if not 0.0 <= low <= high:
            raise InvalidArgument(f"delay_ms must satisfy 0 <= low <= high, got {self.delay_ms}")
        for label in ("loss", "duplicate", "reorder"):
            if not 0.0 <= getattr(self, label) <= 1.0:
                raise InvalidArgument(f"{label} must be in [0, 1], got {getattr(self, label)}")
        if self.reorder_delay_ms < 0:
            raise InvalidArgument(f"reorder_delay_ms must be >= 0, got {self.reorder_delay_ms}")

    def sample_delay_s(self, draw: random.Random) -> float:
        low, high = self.delay_ms
        return (low if low == high else draw.uniform(low, high)) / 1000.0


@dataclass(frozen=True, slots=True)
class NetworkStats:
    """Counters since the network was built. ``sent`` counts every envelope handed to the
    network (requests, one-way messages and replies), so
    ``delivered + dropped_* + refused + in_flight == sent + duplicated``."""

    sent: int = 0
    delivered: int = 0
    duplicated: int = 0
    reordered: int = 0
    dropped_loss: int = 0
    dropped_partition: int = 0
    dropped_crash: int = 0
    dropped_late: int = 0  # a reply that found nobody waiting (timed out, or a duplicate)
    dropped_overload: int = 0  # in_flight_max reached
    refused: int = 0  # no handler, or handler_tasks_max reached
    handler_errors: int = 0  # handlers that raised


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One step in the network's life; ``time_s`` is the loop's clock."""

    time_s: float
    action: (
        str  # send, deliver, drop, duplicate, reorder; crash, restart, partition, block, heal...
    )
    message_id: int
    kind: str
    src: str
    dst: str
    reason: str = ""


class NetworkFaults:
    """Links, cuts, the seeded fate of each envelope and the delivery heap (see module docs)."""

    def __init__(
        self,
        seed: int,
        *,
        default_link: LinkConfig | None = None,
        in_flight_max: int = 1_000_000,
        trace_max: int = 100_000,
    ) -> None:
        for label, value in (("in_flight_max", in_flight_max), ("trace_max", trace_max)):
            if value <= 0:
                raise InvalidArgument(f"{label} must be > 0, got {value}")
        self._random = random.Random(f"network:{seed}")
        self._default_link = default_link or LinkConfig()
        self._links: dict[tuple[str, str], LinkConfig] = {}
        self._in_flight_max = in_flight_max
        self._groups: dict[str, int] | None = None  # node -> group; None: no partition
        self._blocked: set[tuple[str, str]] = set()
        self._heap: list[tuple[float, int, Envelope]] = []
        self._fifo_tail: dict[tuple[str, str], float] = {}  # latest due time per FIFO link
        self._sequence = 0
        self._counts: collections.Counter[str] = collections.Counter()
        self._trace: collections.deque[TraceEvent] = collections.deque(maxlen=trace_max)

    # --- links and cuts ------------------------------------------------------------------

    def set_default_link(self, config: LinkConfig) -> None:
        self._default_link = config

    def set_link(self, src: str, dst: str, config: LinkConfig, *, both_ways: bool = True) -> None:
        self._links[(src, dst)] = config
        if both_ways:
            self._links[(dst, src)] = config

    def link(self, src: str, dst: str) -> LinkConfig:
        return self._links.get((src, dst), self._default_link)

    def partition(self, groups: Iterable[Iterable[str]], now_s: float) -> None:
        """Split the nodes into ``groups`` (replacing any previous partition)."""
        membership: dict[str, int] = {}
        for index, group in enumerate(groups):
            for name in group:
                if name in membership:
                    raise InvalidArgument(f"node {name!r} is in more than one group")
                membership[name] = index
        self._groups = membership
        self.record("partition", 0, "-", "-", "-", now_s)

    def block(self, src: str, dst: str, now_s: float) -> None:
        self._blocked.add((src, dst))
        self.record("block", 0, "-", src, dst, now_s)

    def unblock(self, src: str, dst: str, now_s: float) -> None:
        self._blocked.discard((src, dst))
        self.record("unblock", 0, "-", src, dst, now_s)

    def heal(self, now_s: float) -> None:
        self._groups = None
        self._blocked.clear()
        self.record("heal", 0, "-", "-", "-", now_s)

    def is_cut(self, src: str, dst: str) -> bool:
        if (src, dst) in self._blocked:
            return True
        if self._groups is None:
            return False
        return self._groups.get(src, -1) != self._groups.get(dst, -1)

    # --- fates ---------------------------------------------------------------------------

    def submit(self, envelope: Envelope, now_s: float, *, sender_up: bool) -> bool:
        """Count ``envelope`` as sent and decide its fate; True if it was scheduled.

        ``sender_up`` is false when the sending node is gone, down, or in a later life than
        the one that built the envelope.
        """
        self.count("sent", "send", envelope, now_s)
        if not sender_up:
            self.count("dropped_crash", "drop", envelope, now_s, "sender down")
            return False
        if self.is_cut(envelope.src, envelope.dst):
            self.count("dropped_partition", "drop", envelope, now_s, "link cut")
            return False
        if len(self._heap) >= self._in_flight_max:
            self.count("dropped_overload", "drop", envelope, now_s, "in_flight_max")
            return False
        config = self.link(envelope.src, envelope.dst)
        draw = self._random
        if config.loss and draw.random() < config.loss:
            self.count("dropped_loss", "drop", envelope, now_s, "loss")
            return False
        link = (envelope.src, envelope.dst)
        at = now_s + config.sample_delay_s(draw)
        if config.reorder and draw.random() < config.reorder:
            at += draw.uniform(0.0, config.reorder_delay_ms) / 1000.0
            self.count("reordered", "reorder", envelope, now_s)
        else:
            at = max(at, self._fifo_tail.get(link, 0.0))
            self._fifo_tail[link] = at
        self._push(at, envelope)
        if config.duplicate and draw.random() < config.duplicate:
            self.count("duplicated", "duplicate", envelope, now_s)
            self._push(now_s + config.sample_delay_s(draw), envelope)
        return True

    def admit(
        self, envelope: Envelope, now_s: float, *, sender_alive: bool, receiver_up: bool
    ) -> bool:
        """Check a due envelope again at delivery; False (and counted) if it must be dropped.

        ``sender_alive`` is false when the sender is gone, down, or in a later life.
        """
        if not sender_alive:
            self.count("dropped_crash", "drop", envelope, now_s, "sender crashed")
        elif not receiver_up:
            self.count("dropped_crash", "drop", envelope, now_s, "receiver down")
        elif self.is_cut(envelope.src, envelope.dst):
            self.count("dropped_partition", "drop", envelope, now_s, "link cut in flight")
        else:
            return True
        return False

    # --- the heap --------------------------------------------------------------------------

    def _push(self, at: float, envelope: Envelope) -> None:
        self._sequence += 1
        heapq.heappush(self._heap, (at, self._sequence, envelope))

    def next_due_s(self) -> float | None:
        """When the earliest waiting envelope is due, or None when none waits."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, until_s: float) -> Envelope | None:
        """Remove and return the earliest envelope due at or before ``until_s``, if any."""
        if self._heap and self._heap[0][0] <= until_s:
            return heapq.heappop(self._heap)[2]
        return None

    @property
    def in_flight(self) -> int:
        return len(self._heap)

    # --- observation -----------------------------------------------------------------------

    def count(
        self, counter: str, action: str, envelope: Envelope, now_s: float, reason: str = ""
    ) -> None:
        """Add one to ``counter`` and record ``action`` on ``envelope`` in the trace."""
        self._counts[counter] += 1
        self._trace.append(
            TraceEvent(
                now_s,
                action,
                envelope.message_id,
                envelope.kind.value,
                envelope.src,
                envelope.dst,
                reason,
            )
        )

    def count_only(self, counter: str) -> None:
        self._counts[counter] += 1

    def record(
        self, action: str, message_id: int, kind: str, src: str, dst: str, now_s: float
    ) -> None:
        self._trace.append(TraceEvent(now_s, action, message_id, kind, src, dst))

    def stats(self) -> NetworkStats:
        return NetworkStats(**{name: self._counts[name] for name in NetworkStats.__slots__})

    def trace(self) -> list[TraceEvent]:
        """The most recent events (at most ``trace_max``), oldest first."""
        return list(self._trace)
