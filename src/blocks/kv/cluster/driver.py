"""``KVNode``: the asyncio driver that runs a ``KVNodeCore`` and a ``Membership`` over a Transport.

Theory of operation. The driver owns no business logic. It feeds the cores from three
sources and carries out what they return:

* **Inbound messages** (``Transport.serve``): a list whose first element is an int is a peer
  message (``peer_wire.decode_peer_message``): gossip goes to ``Membership``, the rest to
  ``KVNodeCore.handle``. A list starting with a str is a client request, answered by
  ``driver_handlers``: ``put``/``get`` become ``coordinate_put``/``coordinate_get`` here, with
  a fresh request id and a future that the core's ``Reply``/``Fail`` (a reply in the
  ``KVReady`` each core step returns) resolves. A put that
  reaches a node outside the key's replicas is forwarded once to the first one.
* **Time**: every ``tick_s`` the core expires requests and hands off hints; every
  ``gossip_interval_s`` membership gossips; every ``anti_entropy_interval_s`` the node runs a
  Merkle exchange with one random healthy peer.
* **Ring changes** seen in gossip rebuild the ``HashRing`` and call ``KVNodeCore.rebalance``
  with the old ring, so ranges move to their new owners by hand-off.

Before a put, the node's dot-counter lease is extended when the put's dot would pass it
(``dot_lease``: the store fsyncs a new mark, whatever its sync policy; a refusal fails the
put like a refused save). Each step's ``KVReady`` (``blocks.core.ready``: messages and
replies) is held until the keys the core touched are saved to the ``ObjectStore``; all the
steps of one loop iteration share one save (one fsync), then their messages and replies go out
(the ``Ready`` rule: persist, then send and answer). One exception, when the store's save
waits for an fsync: a coordinated put's replica requests leave before its own save
(``_send_replica_writes``), so the replicas' round trip overlaps the local fsync; its answer
still waits for that save.
When the disk refuses that save (``StorageError``; ``StorageFull`` when it is full), nothing
of the iteration that depends on it leaves: its keys go back to what the store holds, the
puts coordinated in it fail with that error at once, gets of those keys fail with
``Unavailable``, its peer messages are dropped (counted as ``storage_dropped_sends``; the
protocol tolerates loss), and the other replies go out. Reads of saved keys go on, and the
next iteration tries to save again, so writes resume when the disk takes them.
Sends go through a bounded queue per peer (``outbox_max``; overflow is dropped and counted, as
the protocol tolerates loss). Clients' own failures (bad input) raise ``InvalidArgument``
back over the transport; a malformed peer message is counted and dropped.

Around this module: ``driver_config`` (``NodeConfig``), ``driver_handlers`` (client verbs,
forwarding, reports), ``driver_io`` (per-peer outboxes, the save step) and ``waiting_requests``
(the futures of the requests in flight, and which of them a failed save fails).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import (
    BlocksError,
    FailedPrecondition,
    InvalidArgument,
    PeerError,
    StorageError,
    Unavailable,
)
from blocks.core.hashing import HashRing
from blocks.core.net import TcpTransport
from blocks.core.ready import NOTHING
from blocks.core.transport import Transport
from blocks.kv.cluster.client_wire import PutRequest, PutResult, parse_address, parse_put
from blocks.kv.cluster.dot_lease import CounterLease
from blocks.kv.cluster.driver_config import NodeConfig
from blocks.kv.cluster.driver_handlers import (
    answer_client_request,
    forward_put,
    members_report,
    status_report,
)
from blocks.kv.cluster.driver_io import HeldReady, Outbox, StorageHealth, send_replica_writes
from blocks.kv.cluster.membership import Membership
from blocks.kv.cluster.messages import Fail, KVReady
from blocks.kv.cluster.node import KVNodeCore
from blocks.kv.cluster.peer_wire import (
    BATCH_TAG,
    Gossip,
    decode_peer_batch,
    decode_peer_message,
    encode_peer_message,
)
from blocks.kv.cluster.persist import MemoryObjectStore, ObjectStore
from blocks.kv.cluster.quorum import Placements
from blocks.kv.cluster.versions import VersionedObject, VersionVector, object_to_wire
from blocks.kv.cluster.waiting_requests import Answer, WaitingRequests

__all__ = ["KVNode", "NodeConfig"]


class KVNode:
    """One cluster node: ``await start()``, serve, ``await stop()`` (or ``crash()``)."""

    def __init__(
        self,
        node_id: str,
        transport: Transport,
        *,
        config: NodeConfig | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        seeds: Mapping[str, str] | None = None,
        address: str = "",
        store: ObjectStore | None = None,
    ) -> None:
        self.node_id = node_id
        self.transport = transport
        self.config = config or NodeConfig()
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.address = address
        self.store = store if store is not None else MemoryObjectStore()
        self.counters: Counter[str] = Counter()
        self._seeds = dict(seeds or {})
        self._peer_addresses = {n: a for n, a in self._seeds.items() if a}
        # Peers given with an address are always dialed there (see ``_learn_addresses``).
        self._pinned = frozenset(self._peer_addresses)
        self._generation = 0
        self.running = False
        self._tasks: list[asyncio.Task[None]] = []
        self._outboxes: dict[str, Outbox] = {}
        self._requests = WaitingRequests()
        self.storage = StorageHealth(node_id, self.counters)
        # What the steps since the last flush gave, held until their keys are saved.
        self._held = HeldReady(self._push, self.counters, self._requests, self.storage)
        self._flush_scheduled = False
        self._flush_deferred = False  # replica requests went early after the flush was queued
        self._placements = Placements()
        self.core = self._new_core()
        self.membership = self._new_membership()
        self._ring = HashRing(self.membership.ring_members(), vnodes=self.config.vnodes)

    # -- lifecycle -------------------------------------------------------------------------

    def _new_core(self) -> KVNodeCore:
        return KVNodeCore(self.node_id, self.config.quorum, self._placement, self.clock)

    def _new_membership(self) -> Membership:
        self._generation = max(self._generation + 1, self.clock.now_ms())
        return Membership(
            self.node_id,
            clock=self.clock,
            rng=self.rng,
            address=self.address,
            generation=self._generation,
            seeds=self._seeds,
            config=self.config.membership,
        )

    async def start(self) -> None:
        """Load the store, serve the transport, start ticking and greet every seed."""
        if self.running:
            return
        self.core = self._new_core()
        for key, obj, owners in self.store.load():
            self.core.restore(key, obj, owners)
        mark = self.store.counter_mark()
        self.core.counter_lease = CounterLease.resumed(mark, self.clock.now_ms())
        self.running = True
        self.transport.serve(self._handle, inline=True)  # _handle sets no task-bound deadline
        self._tasks.append(asyncio.get_running_loop().create_task(self._tick_loop()))
        table = self.membership.table()
        for peer in self.membership.ring_members():
            if peer != self.node_id:
                self._push(peer, encode_peer_message(Gossip(table, True)))

    def crash(self) -> None:
        """Stop at once, as a killed process would: volatile state is lost, the store stays."""
        self._halt(Unavailable(f"node {self.node_id!r} crashed"))
        self._seeds = {n: a for n, a in self.membership.addresses().items() if n != self.node_id}
        self.membership = self._new_membership()
        self._ring = HashRing(self.membership.ring_members(), vnodes=self.config.vnodes)
        self.core.placement_epoch += 1

    async def stop(self) -> None:
        """Stop serving, flush what is held, close the store."""
        if self.running:
            self._flush_now()
        self._halt(Unavailable(f"node {self.node_id!r} stopped"))
        self.store.close()

    def _halt(self, error: BlocksError) -> None:
        self.running = False
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        for outbox in self._outboxes.values():
            outbox.close()
        self._outboxes.clear()
        self._held.clear()
        self._requests.fail_all(error)

    async def leave(self, timeout_s: float = 10.0) -> bool:
        """Leave the ring: hand every key to its new owners; True if all were handed off."""
        self.membership.leave()
        self._on_ring_change()
        table = self.membership.table()
        for peer in self.membership.ring_members():
            self._push(peer, encode_peer_message(Gossip(table, False)))
        deadline = self.clock.monotonic() + timeout_s
        while self.core.hints and self.clock.monotonic() < deadline:
            await asyncio.sleep(self.config.tick_s)
        return not self.core.hints

    # -- client operations -----------------------------------------------------------------

    async def put(
        self,
        key: bytes,
        value: bytes | None,
        context: VersionVector | None = None,
        *,
        write_quorum: int | None = None,
        timeout_s: float | None = None,
        hops: int = 0,
    ) -> PutResult:
        """Coordinate (or forward) a write; ``context`` None supersedes the local copy."""
        started = self._start_put(key, value, context, write_quorum)
        if isinstance(started, FailedPrecondition):
            return await self._forward(started, key, value, context, write_quorum, timeout_s, hops)
        request_id, future = started
        obj = await self._requests.wait(request_id, future, timeout_s)
        assert obj is not None, "a put always replies with the object it wrote"
        return PutResult(obj, self.node_id)

    def _start_put(
        self,
        key: bytes,
        value: bytes | None,
        context: VersionVector | None,
        write_quorum: int | None,
        shape: Callable[[VersionedObject | None], Any] | None = None,
    ) -> tuple[int, Answer] | FailedPrecondition:
        """Hand a write to the core: its request id and answer future (``shape``:
        ``WaitingRequests.new``), or the refusal that names the node to forward it to (this
        node holds no replica of the key)."""
        self._check_running()
        if context is None:
            stored = self.core.objects.get(key)
            base = VersionVector() if stored is None else stored.context
        else:
            base = context
        self._maybe_reserve_counters(key, base)
        request_id, future = self._requests.new(True, key, shape)
        healthy = self.membership.healthy()
        ready = self.core.coordinate_put(request_id, key, value, base, healthy, write_quorum)
        refusal = _refusal(ready)
        if isinstance(refusal, FailedPrecondition) and "owner" in refusal.details:
            self._requests.forget(request_id)
            return refusal
        if ready.messages and self.storage.error is None and self._pipelined():
            ready = self._send_replica_writes(ready)
        self._run(ready)
        return request_id, future

    def _pipelined(self) -> bool:
        """Whether a put's replica requests go ahead of its save (``_send_replica_writes``):
        only when the store's save waits for the disk (``saves_wait_for_disk``; a store that
        does not say waits for nothing). Sent ahead, each request is a frame of its own
        instead of part of the turn's batch to that peer, which costs more CPU per put than
        a save that waits for no fsync (``sync=never``) takes (docs/kv.md)."""
        return bool(getattr(self.store, "saves_wait_for_disk", False))

    def _send_replica_writes(self, ready: KVReady) -> KVReady:
        """Coordinator pipelining (``driver_io.send_replica_writes``): the step's replica
        requests leave now; a flush queued before them waits one turn, so its fsync never
        runs ahead of them (on TCP a request reaches the socket at the end of the callbacks
        queued before it)."""
        if self._flush_scheduled:
            self._flush_deferred = True
        return send_replica_writes(ready, self._push, self.counters)

    async def _forward(
        self,
        refusal: FailedPrecondition,
        key: bytes,
        value: bytes | None,
        context: VersionVector | None,
        write_quorum: int | None,
        timeout_s: float | None,
        hops: int,
    ) -> PutResult:
        owner = refusal.details["owner"]
        if hops >= 1 or owner is None:
            raise Unavailable(f"no replica of this key is reachable from {self.node_id!r}")
        return await forward_put(self, owner, key, value, context, write_quorum, timeout_s)

    async def get(
        self, key: bytes, *, read_quorum: int | None = None, timeout_s: float | None = None
    ) -> VersionedObject | None:
        """Read ``key`` from a quorum of its replicas (any node may coordinate a get)."""
        self._check_running()
        request_id = self._requests.new_id(False, key)
        ready = self.core.coordinate_get(request_id, key, self.membership.healthy(), read_quorum)
        if (
            not ready.messages
            and len(ready.replies) == 1
            and self._held.empty
            and not self.core.dirty
        ):
            # Answered from this node's copy alone (R1 here), with nothing unsaved it could
            # depend on: the answer needs no flush, so it leaves now, without a loop turn.
            (reply,) = ready.replies
            if reply.request_id == request_id:
                self._requests.answered_at_once(request_id)
                if isinstance(reply, Fail):
                    raise reply.error
                return reply.result
        future = self._requests.future_of(request_id)
        self._run(ready)
        return await self._requests.wait(request_id, future, timeout_s)

    def _maybe_reserve_counters(self, key: bytes, context: VersionVector) -> None:
        """Make the counter mark durable before the put's dot may pass it (``dot_lease``):
        one small fsynced write per ``COUNTERS_PER_RESERVATION`` counters, here in the loop."""
        mark = self.core.counter_mark_needed(key, context)
        if mark is None:
            return
        try:
            self.store.reserve_counters(mark)
        except StorageError as error:
            self.storage.failed(error)
            raise
        assert self.core.counter_lease is not None
        self.core.counter_lease.reserved_to(mark)

    def _check_running(self) -> None:
        if not self.running:
            raise Unavailable(f"node {self.node_id!r} is not running")

    # -- inbound ---------------------------------------------------------------------------

    def _handle(self, source: str, message: Any) -> Awaitable[Any]:
        if type(message) is list and message and message[0] == "put" and self.running:
            return self._answer_put(message)  # a future: the transport answers it, no task
        return self._handle_any(source, message)

    def _answer_put(self, raw: list[Any]) -> Awaitable[Any]:
        """A client's put: its reply ``[object, coordinator]`` as a future settled at the
        flush that saves it, or a coroutine when the put goes to another node."""
        put = parse_put(raw, self.config.quorum.replicas, self.config.value_bytes_max)
        started = self._start_put(
            put.key, put.value, put.context, put.write_quorum, shape=self._put_reply
        )
        if isinstance(started, FailedPrecondition):
            return self._forwarded_reply(started, put)
        future = started[1]
        self._requests.expire_after(future, put.timeout_s)
        return future

    def _put_reply(self, obj: VersionedObject | None) -> list[Any]:
        assert obj is not None, "a put always replies with the object it wrote"
        return [object_to_wire(obj), self.node_id]

    async def _forwarded_reply(self, refusal: FailedPrecondition, put: PutRequest) -> Any:
        result = await self._forward(
            refusal, put.key, put.value, put.context, put.write_quorum, put.timeout_s, put.hops
        )
        return [object_to_wire(result.obj), result.coordinator]

    async def _handle_any(self, source: str, message: Any) -> Any:
        if not self.running:
            raise Unavailable(f"node {self.node_id!r} is not running")
        if isinstance(message, list) and message and type(message[0]) is int:
            if message[0] == BATCH_TAG:
                self._handle_batch(source, message)
                return None
            try:
                decoded = decode_peer_message(message)
            except PeerError:
                self.counters["malformed_peer_messages"] += 1
                raise
            if isinstance(decoded, Gossip):
                self._on_gossip(source, decoded)
            else:
                self._run(self.core.handle(source, decoded))
            return None
        if isinstance(message, list) and message and isinstance(message[0], str):
            return await answer_client_request(self, message)
        raise InvalidArgument("a request must be [verb, ...]")

    def _handle_batch(self, source: str, message: list[Any]) -> None:
        """The data-path messages a peer batched for this node (``peer_wire.encode_batch``), in
        order; their effects are carried out together (one flush)."""
        try:
            decoded = decode_peer_batch(message)
        except PeerError:
            self.counters["malformed_peer_messages"] += 1
            raise
        handle, run = self.core.handle, self._run
        for one in decoded:
            run(handle(source, one))

    def _on_gossip(self, source: str, gossip: Gossip) -> None:
        ready = self.membership.handle_gossip(
            source, gossip.records, reply_wanted=gossip.reply_wanted
        )
        self._learn_addresses()
        for peer, table in ready.messages:
            self._push(peer, encode_peer_message(Gossip(table, False)))
        (ring_changed,) = ready.replies
        if ring_changed:
            self._on_ring_change()

    def _learn_addresses(self) -> None:
        """Tell a TCP transport where members listen, as gossip reveals them (each member
        gossips the address it advertises). A peer this node was given an address for at
        start (``seeds``, the ``--peer`` flags) keeps that address: it says how *this* node
        reaches the peer, which may differ per node (a proxy on one link, another network)."""
        if not isinstance(self.transport, TcpTransport):
            return
        for node, address in self.membership.addresses().items():
            if node in self._pinned:
                continue
            if address and node != self.node_id and self._peer_addresses.get(node) != address:
                self._peer_addresses[node] = address
                self.transport.add_peer(node, parse_address(address))

    def _on_ring_change(self) -> None:
        old = self._ring
        self._ring = HashRing(self.membership.ring_members(), vnodes=self.config.vnodes)
        self.core.placement_epoch += 1  # placements changed: anti-entropy recomputes home sets
        replicas = self.config.quorum.replicas
        if len(old):
            moved = self.core.rebalance(lambda k: old.preference_list(k, min(replicas, len(old))))
            self.counters["keys_rebalanced"] += moved
        self._run(NOTHING)

    # -- time ------------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        now = self.clock.monotonic()
        next_gossip, next_sync = now, now + self.config.anti_entropy_interval_s
        while True:
            await asyncio.sleep(self.config.tick_s)
            now = self.clock.monotonic()
            if now >= next_gossip:
                next_gossip = now + self.config.gossip_interval_s
                for peer, table in self.membership.tick().messages:
                    self._push(peer, encode_peer_message(Gossip(table, True)))
            healthy = self.membership.healthy()
            self._run(self.core.tick(healthy))
            if now >= next_sync:
                next_sync = now + self.config.anti_entropy_interval_s
                peers = sorted(healthy - {self.node_id})
                if peers:
                    self._run(self.core.start_anti_entropy(self.rng.choice(peers)))

    # -- effects ---------------------------------------------------------------------------

    def _run(self, ready: KVReady) -> None:
        """Carry out a step's ``Ready`` once the keys it depends on are saved (see the
        module docs): held until this loop turn's flush. Replies alone (a put's acks, a read's
        copies) with nothing unsaved and nothing held before them are answered at once: all
        they can depend on is already saved, so the flush would add only a loop turn."""
        if ready.replies and not ready.messages and not self.core.dirty and self._held.empty:
            resolve = self._requests.resolve
            for reply in ready.replies:
                resolve(reply)
            return
        held = self._held.hold(ready)
        if not self._flush_scheduled and (held or self.core.dirty):
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Save the dirty keys, then send what the steps since the last save gave and
        resolve their replies (``driver_io.HeldReady``)."""
        if self._flush_deferred:  # requests pushed after it was queued go first
            self._flush_deferred = False
            asyncio.get_running_loop().call_soon(self._flush)
            return
        self._flush_now()

    def _flush_now(self) -> None:
        """``_flush`` without the wait for early replica requests (``stop``'s last flush)."""
        self._flush_scheduled = False
        if self.running:
            self._held.flush(self.core, self.store)

    def _push(self, peer: str, message: list[Any]) -> None:
        outbox = self._outboxes.get(peer)
        if outbox is None:
            outbox = Outbox(self.transport, peer, self.config.outbox_max, self.counters)
            self._outboxes[peer] = outbox
        outbox.push(message)

    # -- observation -----------------------------------------------------------------------

    def _placement(self, key: bytes) -> list[str]:
        ring = self._ring
        return self._placements.of(
            ring, key, min(len(ring), self.config.quorum.replicas + self.config.spares)
        )

    def members(self) -> dict[str, Any]:
        """The members reply a client builds its ring from (``driver_handlers``)."""
        return members_report(self)

    def status(self) -> dict[str, Any]:
        """This node's status report (``driver_handlers``)."""
        return status_report(self)

    @property
    def requests_in_flight(self) -> int:
        return len(self._requests)


def _refusal(ready: KVReady) -> BlocksError | None:
    if not ready.messages and len(ready.replies) == 1 and isinstance(ready.replies[0], Fail):
        return ready.replies[0].error
    return None
