"""Replicating PN-Counters by gossip: the pure replica and its asyncio driver.

Theory of operation
-------------------
Each ``GossipReplica`` holds one ``PNCounter`` per counter name and applies its own increments
locally, at once: an increment is acknowledged when it returns. Every ``tick`` the replica
picks ``fanout`` peers at random (injected ``random.Random``) and *pushes* its whole state. A
peer that receives a push merges it and answers with a *reply* holding only the counters where
it knows something the pusher did not (push-pull anti-entropy), which the pusher merges.

Because merge is a join (commutative, associative, idempotent), lost, duplicated, delayed and
reordered messages are all harmless: a lost push is simply repeated on a later tick, a
duplicate merges to the same state, an old state merges to nothing new. While the network is
partitioned each side converges on its own; after the partition heals, one successful
exchange per pair (transitively) suffices, so every replica's value becomes exactly the sum of
all acknowledged increments. With random peer choice the number of rounds to spread an update
grows as ``log(nodes)``.

The replica is pure: ``tick()`` and ``handle_message()`` return a ``blocks.core.ready.Ready``
whose ``messages`` are ``(peer, message)`` pairs to send one-way (gossip persists nothing and
answers no caller, so its other fields stay empty) and do no I/O. ``GossipNode`` is the driver
that feeds it from a ``blocks.core.transport.Transport``.

What it does not survive: losing a replica's state. A replica that restarts empty under the
same name would issue entries below what its peers already hold, and its new increments would
be hidden; a replica without durable state must rejoin under a fresh name. The counters
server keeps it (``blocks.counters.durable``: every increment logged before it is
acknowledged, ``snapshot``/``restore`` for compaction), so it restarts under its own name.

``GossipNode`` drives anything shaped like a replica (``GossipState``): the counters server
runs ``blocks.counters.node.CountersNode``, which adds the replicated sketches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any, Generic, Protocol, TypeVar

from blocks.core.errors import BlocksError, InvalidArgument, Overloaded, PeerError
from blocks.core.ready import NOTHING, Ready
from blocks.core.transport import Transport
from blocks.counters.api import COUNTERS_MAX
from blocks.counters.crdt import PNCounter
from blocks.counters.local import check_amount, check_name

__all__ = ["FANOUT_MAX", "GossipNode", "GossipReady", "GossipReplica", "GossipState"]

FANOUT_MAX = 16
PUSH = "push"
REPLY = "reply"
_log = logging.getLogger(__name__)

GossipReady = Ready[dict[str, Any], None, None]
"""What a gossip step gives its driver: ``messages`` only, ``(peer, message)`` sent one-way."""


class GossipReplica:
    """One replica of a set of named PN-Counters; implements ``api.Counters``."""

    __slots__ = ("_counters", "_fanout", "_name", "_peers", "_rng")

    def __init__(self, name: str, peers: list[str], *, rng: random.Random, fanout: int = 2) -> None:
        if not isinstance(name, str) or not name or name in peers:
            raise InvalidArgument("a replica needs a non-empty name that is not among its peers")
        if not 0 < fanout <= FANOUT_MAX:
            raise InvalidArgument(f"fanout must be in [1, {FANOUT_MAX}]")
        self._name = name
        self._peers = sorted(set(peers))
        self._rng = rng
        self._fanout = fanout
        self._counters: dict[str, PNCounter] = {}

    @property
    def name(self) -> str:
        return self._name

    def increment(self, name: str, amount: int = 1) -> int:
        check_name(name)
        check_amount(amount)
        current = self._counters.get(name)
        if current is None and len(self._counters) >= COUNTERS_MAX:
            raise Overloaded(f"at most {COUNTERS_MAX} counters")
        updated = (current or PNCounter()).increment(self._name, amount)
        self._counters[name] = updated
        return updated.value

    def value(self, name: str) -> int:
        check_name(name)
        counter = self._counters.get(name)
        return counter.value if counter else 0

    def state(self) -> dict[str, PNCounter]:
        return dict(self._counters)

    def snapshot(self) -> dict[str, Any]:
        """Every counter in wire form (this replica's own entries included), for storage."""
        return self._encode(self._counters)

    def restore(self, counters: Any) -> None:
        """Merge a ``snapshot()`` back in; ``PeerError`` if it does not decode."""
        self.handle_message(self._name, {"kind": REPLY, "counters": counters})

    def tick(self) -> GossipReady:
        """Push the full state to ``fanout`` random peers."""
        if not self._peers:
            return NOTHING
        targets = self._rng.sample(self._peers, min(self._fanout, len(self._peers)))
        message = {"kind": PUSH, "counters": self._encode(self._counters)}
        return Ready([(peer, message) for peer in targets])

    def handle_message(self, source: str, message: Any) -> GossipReady:
        """Merge a peer's state; answer a push with what the peer is missing."""
        kind, received = self._decode(message)
        for name, counter in received.items():
            current = self._counters.get(name)
            if current is None and len(self._counters) >= COUNTERS_MAX:
                raise PeerError(f"peer {source} pushed more than {COUNTERS_MAX} counters")
            self._counters[name] = counter if current is None else current.merge(counter)
        if kind != PUSH:
            return NOTHING
        missing = {
            name: counter
            for name, counter in self._counters.items()
            if name not in received or not counter <= received[name]
        }
        if not missing:
            return NOTHING
        return Ready([(source, {"kind": REPLY, "counters": self._encode(missing)})])

    @staticmethod
    def _encode(counters: dict[str, PNCounter]) -> dict[str, Any]:
        return {name: counter.to_wire() for name, counter in counters.items()}

    @staticmethod
    def _decode(message: Any) -> tuple[str, dict[str, PNCounter]]:
        if not isinstance(message, dict) or message.get("kind") not in (PUSH, REPLY):
            raise PeerError("gossip message must be a map with kind push or reply")
        counters = message.get("counters")
        if not isinstance(counters, dict) or len(counters) > COUNTERS_MAX:
            raise PeerError("gossip message carries a bad counters map")
        decoded: dict[str, PNCounter] = {}
        for name, wire in counters.items():
            try:
                check_name(name)
            except InvalidArgument:
                raise PeerError(f"bad counter name from peer: {name!r}") from None
            decoded[name] = PNCounter.from_wire(wire)
        return message["kind"], decoded


class GossipState(Protocol):
    """What ``GossipNode`` drives: a pure replica that pushes on ``tick`` and merges pushes."""

    def tick(self) -> GossipReady: ...

    def handle_message(self, source: str, message: Any) -> GossipReady: ...


StateT = TypeVar("StateT", bound=GossipState)


class GossipNode(Generic[StateT]):
    """Runs a ``GossipState`` (a ``GossipReplica``) over a ``Transport``: a tick every
    ``interval_s``."""

    def __init__(self, replica: StateT, transport: Transport, *, interval_s: float = 0.05):
        if interval_s <= 0:
            raise InvalidArgument("interval_s must be > 0")
        self.replica = replica
        self._transport = transport
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self.rejected_messages = 0
        transport.serve(self._handle)

    async def _handle(self, source: str, message: Any) -> None:
        try:
            ready = self.replica.handle_message(source, message)
        except PeerError as error:
            self.rejected_messages += 1
            _log.warning("dropping gossip from %s: %s", source, error)
            return
        await self._carry_out(ready)

    async def _carry_out(self, ready: GossipReady) -> None:
        """Send the step's messages (gossip has no records, replies or timers)."""
        assert not (ready.records or ready.replies or ready.timers), "gossip only sends"
        for peer, message in ready.messages:
            with contextlib.suppress(BlocksError):
                await self._transport.send(peer, message)

    async def _run(self) -> None:
        while True:
            await self._carry_out(self.replica.tick())
            await asyncio.sleep(self._interval_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
