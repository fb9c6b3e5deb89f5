"""Scatter-gather with hedged requests, as a pure state machine; and the hedge delay policy.

Theory of operation. One search over ``n`` shards, each with one or more replicas, is a
``ScatterGather``. It does no I/O: the driver (``blocks.search.coordinator``) feeds it the
time and what happened, and carries out the ``Send`` and ``Cancel`` commands it returns.

* ``start(now_ms)`` sends to one replica per shard: the first of that shard's ``order``
  (the driver rotates it so load spreads).
* ``handle_answer`` closes the shard: the first answer wins and every other call still out
  for that shard is cancelled.
* ``handle_failure`` (a retryable error from one replica: refused, reset, timed out) sends at
  once to the shard's next untried replica, if no other call of that shard is still out; a
  shard whose replicas have all failed is *missing*.
* ``handle_tick`` sends the *hedge*: a shard still waiting ``hedge_delay_ms`` after its first
  send gets one more call, to its next untried replica (at most one hedge per shard, so a
  search costs at most ``n`` extra calls). At the deadline every open call is cancelled and
  the shards still open are missing.

``done`` once every shard answered or is missing, or the deadline passed. ``missing()`` is
what a partial answer must name. ``next_wakeup_ms()`` is when ``handle_tick`` next has work.

``HedgeDelay`` picks the delay: a fixed value, or (the default) the 95th percentile of the
last ``LATENCY_SAMPLES_MAX`` winning calls' own latencies, within ``[floor_ms, ceiling_ms]``,
``initial_ms`` until ``LATENCY_SAMPLES_MIN`` samples exist. The 95th percentile means about
one search in twenty sends a hedge, so hedging adds about 5% load while cutting the tail that
one slow replica causes. A sample is the winning call's own latency (from its own send), not
the whole search's, so hedged searches do not push the delay up and up.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass

from blocks.core.errors import InvalidArgument

__all__ = [
    "LATENCY_SAMPLES_MAX",
    "LATENCY_SAMPLES_MIN",
    "Cancel",
    "HedgeDelay",
    "ScatterGather",
    "Send",
    "replica_order",
]

LATENCY_SAMPLES_MAX = 256
LATENCY_SAMPLES_MIN = 16


@dataclass(frozen=True, slots=True)
class Send:
    """Send the search to ``replica`` of ``shard``; ``hedge`` when it backs up a slow call."""

    shard: int
    replica: int
    hedge: bool = False


@dataclass(frozen=True, slots=True)
class Cancel:
    """Cancel the call still out to ``replica`` of ``shard``."""

    shard: int
    replica: int


class _Shard:
    __slots__ = ("answered_by", "failed", "first_sent_ms", "hedged", "order", "outstanding")

    def __init__(self, order: Sequence[int]) -> None:
        self.order = list(order)  # replicas in the order they are tried
        self.outstanding: dict[int, int] = {}  # replica -> sent at (ms)
        self.failed: set[int] = set()
        self.answered_by: int | None = None
        self.first_sent_ms: int | None = None
        self.hedged = False

    def untried(self) -> int | None:
        for replica in self.order:
            if replica not in self.outstanding and replica not in self.failed:
                return replica
        return None

    @property
    def open(self) -> bool:
        return self.answered_by is None and (bool(self.outstanding) or self.untried() is not None)


class ScatterGather:
    """One search's calls to shards and replicas; see the module docstring.

    ``orders[s]`` lists the replicas of shard ``s`` to try, first choice first (replicas known
    to be down may simply be left out). ``deadline_ms`` and every ``now_ms`` are on one clock.
    ``hedge_delay_ms`` ``None`` turns hedging off.
    """

    def __init__(
        self,
        orders: Sequence[Sequence[int]],
        *,
        deadline_ms: int,
        hedge_delay_ms: int | None,
    ) -> None:
        if not orders:
            raise InvalidArgument("a search needs at least one shard")
        if hedge_delay_ms is not None and hedge_delay_ms < 0:
            raise InvalidArgument("hedge_delay_ms must be >= 0")
        self._shards = [_Shard(order) for order in orders]
        self._deadline_ms = deadline_ms
        self._hedge_delay_ms = hedge_delay_ms
        self.timed_out = False
        self.hedges_sent = 0

    @property
    def done(self) -> bool:
        return self.timed_out or not any(shard.open for shard in self._shards)

    def answered(self) -> list[int]:
        return [n for n, shard in enumerate(self._shards) if shard.answered_by is not None]

    def missing(self) -> list[int]:
        """Shards without an answer (all of them failed, or the deadline passed)."""
        return [n for n, shard in enumerate(self._shards) if shard.answered_by is None]

    def start(self, now_ms: int) -> list[Send]:
        sends = []
        for number, shard in enumerate(self._shards):
            replica = shard.untried()
            if replica is not None:
                sends.append(self._send(number, replica, now_ms, hedge=False))
        return sends

    def _send(self, number: int, replica: int, now_ms: int, *, hedge: bool) -> Send:
        shard = self._shards[number]
        shard.outstanding[replica] = now_ms
        if shard.first_sent_ms is None:
            shard.first_sent_ms = now_ms
        if hedge:
            shard.hedged = True
            self.hedges_sent += 1
        return Send(number, replica, hedge)

    def handle_answer(self, number: int, replica: int, now_ms: int) -> tuple[list[Cancel], int]:
        """The shard's first answer wins: returns the calls to cancel and the winner's own
        latency in ms. A late answer (shard closed, or after the deadline) is ignored."""
        shard = self._shards[number]
        sent_ms = shard.outstanding.pop(replica, None)
        if sent_ms is None or shard.answered_by is not None or self.timed_out:
            return [], -1
        shard.answered_by = replica
        cancels = [Cancel(number, other) for other in shard.outstanding]
        shard.outstanding.clear()
        return cancels, max(0, now_ms - sent_ms)

    def handle_failure(self, number: int, replica: int, now_ms: int) -> list[Send]:
        """A retryable failure of one call: fail over to the next replica if none is out."""
        shard = self._shards[number]
        if shard.outstanding.pop(replica, None) is None or shard.answered_by is not None:
            return []
        shard.failed.add(replica)
        if shard.outstanding or self.timed_out:
            return []
        nxt = shard.untried()
        return [] if nxt is None else [self._send(number, nxt, now_ms, hedge=False)]

    def handle_tick(self, now_ms: int) -> tuple[list[Send], list[Cancel]]:
        """Hedges that are due; at the deadline, cancels for every call still out."""
        if self.timed_out:
            return [], []
        if now_ms >= self._deadline_ms:
            self.timed_out = True
            cancels = []
            for number, shard in enumerate(self._shards):
                cancels += [Cancel(number, replica) for replica in shard.outstanding]
                shard.outstanding.clear()
            return [], cancels
        sends = []
        for number, shard in enumerate(self._shards):
            due = self._hedge_due_ms(shard)
            if due is not None and now_ms >= due:
                nxt = shard.untried()
                assert nxt is not None  # _hedge_due_ms checked it
                sends.append(self._send(number, nxt, now_ms, hedge=True))
        return sends, []

    def _hedge_due_ms(self, shard: _Shard) -> int | None:
        if (
            self._hedge_delay_ms is None
            or shard.hedged
            or shard.answered_by is not None
            or not shard.outstanding
            or shard.first_sent_ms is None
            or shard.untried() is None
        ):
            return None
        return shard.first_sent_ms + self._hedge_delay_ms

    def next_wakeup_ms(self) -> int:
        """The earliest time ``handle_tick`` has something to do (the deadline at the latest)."""
        wake = self._deadline_ms
        for shard in self._shards:
            due = self._hedge_due_ms(shard)
            if due is not None:
                wake = min(wake, due)
        return wake


def replica_order(count: int, start: int, suspects: set[int]) -> list[int]:
    """Replicas ``0..count-1`` from ``start`` round, ``suspects`` moved to the end."""
    assert 0 <= start < count
    rotated = [(start + step) % count for step in range(count)]
    return [r for r in rotated if r not in suspects] + [r for r in rotated if r in suspects]


class HedgeDelay:
    """The hedge delay: ``fixed_ms``, or adaptive from observed latency (module docstring)."""

    def __init__(
        self,
        fixed_ms: int | None = None,
        *,
        quantile: float = 0.95,
        initial_ms: int = 50,
        floor_ms: int = 2,
        ceiling_ms: int = 1_000,
    ) -> None:
        if fixed_ms is not None and fixed_ms < 0:
            raise InvalidArgument("a fixed hedge delay must be >= 0 ms")
        if not 0.0 < quantile < 1.0 or not 0 <= floor_ms <= ceiling_ms:
            raise InvalidArgument("need 0 < quantile < 1 and 0 <= floor_ms <= ceiling_ms")
        self.fixed_ms = fixed_ms
        self.quantile = quantile
        self.initial_ms = initial_ms
        self.floor_ms = floor_ms
        self.ceiling_ms = ceiling_ms
        self._samples: collections.deque[int] = collections.deque(maxlen=LATENCY_SAMPLES_MAX)

    def observe(self, latency_ms: int) -> None:
        """Record one winning call's own latency."""
        if latency_ms >= 0:
            self._samples.append(latency_ms)

    def delay_ms(self) -> int:
        if self.fixed_ms is not None:
            return self.fixed_ms
        if len(self._samples) < LATENCY_SAMPLES_MIN:
            return self.initial_ms
        ordered = sorted(self._samples)
        value = ordered[min(len(ordered) - 1, int(self.quantile * len(ordered)))]
        return max(self.floor_ms, min(self.ceiling_ms, value))

    def describe(self) -> str:
        if self.fixed_ms is not None:
            return f"fixed {self.fixed_ms} ms"
        return f"p{round(self.quantile * 100)} of recent calls, now {self.delay_ms()} ms"
