"""``MemoryNetwork``: an in-process network of named nodes with seeded faults.

Theory of operation: this module is the asyncio layer; the decisions live in the pure core
``blocks.core.network_faults.NetworkFaults``. Every message (request, reply, one-way) becomes
an ``Envelope`` holding its msgpack bytes. On send the core decides the envelope's fate with
its own ``random.Random(seed)``: dropped (loss, a cut link), or due after a delay drawn from the
link's range, possibly with a duplicate and possibly held back so later messages overtake it.
This layer keeps one loop timer armed for the earliest due envelope; when it fires, it asks the
core to check each due envelope again (link not cut, both ends alive) and then resolves the
waiting request or runs the node's handler in a new task.

Run under ``blocks.testing.simloop.VirtualTimeLoop`` the whole thing is deterministic: the same
seed and the same program give the same fault decisions, the same delivery order and the same
``trace()``. Under a real loop the decisions for a given order of sends are still seeded, but
the order of sends depends on real timing.

Faults:

* ``LinkConfig`` per directed link (``set_link``), or for all (``set_default_link``): delay
  range, loss, duplication and reordering probabilities.
* ``partition(groups)``: symmetric; nodes in different groups cannot talk, nodes named in no
  group form one more group together. ``block(src, dst)`` cuts one direction. ``heal()`` ends
  both. Messages sent over a cut link are dropped; so are messages in flight when it is cut.
* ``crash(name)``: the node stops: its running handlers are cancelled, its waiting requests fail
  with ``Unavailable``, messages in flight to or from it are dropped, its handler is not called,
  new requests to it fail at once with ``Unavailable`` (like a refused connection; one already
  in flight times out), and anything it sends is dropped. ``restart(name)`` brings it back with
  the same handler; call ``serve`` again to give it a fresh one.

Bounds: ``in_flight_max`` envelopes and ``handler_tasks_max`` running handlers per node (beyond
them requests are answered ``Overloaded`` and other messages dropped, both counted), and the
last ``trace_max`` trace events are kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from blocks.core.codec import pack, unpack
from blocks.core.errors import (
    Cancelled,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Overloaded,
    Timeout,
    Unavailable,
)
from blocks.core.network_faults import (
    Envelope,
    Kind,
    LinkConfig,
    NetworkFaults,
    NetworkStats,
    TraceEvent,
)
from blocks.core.transport import (
    DEFAULT_TIMEOUT_S,
    FRAME_BYTES_MAX,
    Handler,
    check_timeout,
    error_from_wire,
    error_to_wire,
)

__all__ = ["LinkConfig", "MemoryNetwork", "MemoryTransport", "NetworkStats", "TraceEvent"]


@dataclass(slots=True)
class _Node:
    name: str
    transport: MemoryTransport
    handler: Handler | None = None
    up: bool = True
    incarnation: int = 0  # bumped on every crash: envelopes from an older life are dropped
    tasks: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    waiting: dict[int, asyncio.Future[Envelope]] = field(default_factory=dict)


class MemoryTransport:
    """One node's ``Transport`` on a ``MemoryNetwork``; get it with ``network.transport(name)``."""

    __slots__ = ("_closed", "_name", "_network")

    def __init__(self, network: MemoryNetwork, name: str) -> None:
        self._network = network
        self._name = name
        self._closed = False

    @property
    def name(self) -> str:
        return self._name

    def serve(self, handler: Handler, *, inline: bool = False) -> None:
        self._check_open()  # ``inline`` changes nothing here: every message gets a task
        self._network._node(self._name).handler = handler

    async def request(self, dest: str, message: Any, timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
        self._check_open()
        return await self._network._request(self._name, dest, message, check_timeout(timeout_s))

    async def send(self, dest: str, message: Any) -> None:
        self._check_open()
        self._network._send_oneway(self._name, dest, message)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._network._remove(self._name)

    def _check_open(self) -> None:
        if self._closed:
            raise FailedPrecondition(f"transport {self._name!r} is closed")

    def __repr__(self) -> str:
        return f"MemoryTransport({self._name!r}, closed={self._closed})"


class MemoryNetwork:
    """In-process network of named nodes with seeded, deterministic faults (see module docs)."""

    def __init__(
        self,
        seed: int = 0,
        *,
        default_link: LinkConfig | None = None,
        message_bytes_max: int = FRAME_BYTES_MAX,
        in_flight_max: int = 1_000_000,
        handler_tasks_max: int = 10_000,
        trace_max: int = 100_000,
    ) -> None:
        for label, value in (
            ("message_bytes_max", message_bytes_max),
            ("handler_tasks_max", handler_tasks_max),
        ):
            if value <= 0:
                raise InvalidArgument(f"{label} must be > 0, got {value}")
        self.seed = seed
        self._faults = NetworkFaults(
            seed, default_link=default_link, in_flight_max=in_flight_max, trace_max=trace_max
        )
        self._message_bytes_max = message_bytes_max
        self._handler_tasks_max = handler_tasks_max
        self._nodes: dict[str, _Node] = {}
        self._retired: dict[str, int] = {}  # incarnation of each closed node's next life
        self._message_ids = 0
        self._task_ids = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0

    # --- nodes ---------------------------------------------------------------------------

    def transport(self, name: str) -> MemoryTransport:
        """Return node ``name``'s transport, creating the node if it does not exist."""
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"node name must be a non-empty str, got {name!r}")
        node = self._nodes.get(name)
        if node is None:
            # A name closed earlier comes back in a new life, so its old envelopes stay dead.
            node = _Node(name, MemoryTransport(self, name), incarnation=self._retired.get(name, 0))
            self._nodes[name] = node
        return node.transport

    def nodes(self) -> list[str]:
        return list(self._nodes)

    def is_up(self, name: str) -> bool:
        return self._node(name).up

    def crash(self, name: str) -> None:
        """Stop node ``name`` (see module docs); crashing a crashed node does nothing."""
        node = self._node(name)
        if node.up:
            node.up = False
            node.incarnation += 1
            self._faults.record("crash", 0, "-", name, name, self._now())
            self._stop_activity(node, Unavailable(f"node {name!r} crashed"))

    def restart(self, name: str) -> None:
        """Bring a crashed node back up, with the handler it had."""
        node = self._node(name)
        if not node.up:
            node.up = True
            self._faults.record("restart", 0, "-", name, name, self._now())

    # --- faults --------------------------------------------------------------------------

    def set_default_link(self, config: LinkConfig) -> None:
        """Use ``config`` for every link without its own setting."""
        self._faults.set_default_link(config)

    def set_link(self, src: str, dst: str, config: LinkConfig, *, both_ways: bool = True) -> None:
        """Set the link from ``src`` to ``dst`` (and back, unless ``both_ways`` is false)."""
        self._faults.set_link(src, dst, config, both_ways=both_ways)

    def link(self, src: str, dst: str) -> LinkConfig:
        return self._faults.link(src, dst)

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Split the nodes into ``groups`` (replacing any previous partition)."""
        self._faults.partition(groups, self._now())

    def block(self, src: str, dst: str) -> None:
        """Cut the direction ``src`` -> ``dst`` only."""
        self._faults.block(src, dst, self._now())

    def unblock(self, src: str, dst: str) -> None:
        self._faults.unblock(src, dst, self._now())

    def heal(self) -> None:
        """End the partition and every one-way block."""
        self._faults.heal(self._now())

    def is_cut(self, src: str, dst: str) -> bool:
        return self._faults.is_cut(src, dst)

    # --- observation ---------------------------------------------------------------------

    def stats(self) -> NetworkStats:
        return self._faults.stats()

    def trace(self) -> list[TraceEvent]:
        """The most recent events (at most ``trace_max``), oldest first."""
        return self._faults.trace()

    @property
    def in_flight(self) -> int:
        return self._faults.in_flight

    # --- sending ---------------------------------------------------------------------------

    async def _request(self, src: str, dest: str, message: Any, timeout_s: float) -> Any:
        node = self._node(src)
        if not node.up:
            raise Unavailable(f"node {src!r} is crashed")
        target = self._nodes.get(dest)
        if target is None:
            raise Unavailable(f"unknown node {dest!r}")
        if not target.up and not self.is_cut(src, dest):
            raise Unavailable(f"node {dest!r} is down")
        payload = pack(message, size_max=self._message_bytes_max)
        envelope = self._envelope(Kind.REQUEST, node, dest, payload)
        future: asyncio.Future[Envelope] = self._get_loop().create_future()
        node.waiting[envelope.request_id] = future
        try:
            self._submit(envelope)
            reply = await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise Timeout(f"no reply from {dest!r} within {timeout_s} s") from None
        finally:
            node.waiting.pop(envelope.request_id, None)
        if reply.kind is Kind.FAILURE:
            raise error_from_wire(unpack(reply.payload, size_max=self._message_bytes_max))
        return unpack(reply.payload, size_max=self._message_bytes_max)

    def _send_oneway(self, src: str, dest: str, message: Any) -> None:
        payload = pack(message, size_max=self._message_bytes_max)
        self._submit(self._envelope(Kind.ONEWAY, self._node(src), dest, payload))

    def _envelope(
        self, kind: Kind, node: _Node, dest: str, payload: bytes, request_id: int = 0
    ) -> Envelope:
        self._message_ids += 1
        if kind is Kind.REQUEST:
            request_id = self._message_ids
        return Envelope(
            self._message_ids, kind, node.name, dest, node.incarnation, request_id, payload
        )

    def _is_alive(self, name: str, incarnation: int) -> bool:
        node = self._nodes.get(name)
        return node is not None and node.up and node.incarnation == incarnation

    def _submit(self, envelope: Envelope) -> None:
        now = self._get_loop().time()
        sender_up = self._is_alive(envelope.src, envelope.src_incarnation)
        if self._faults.submit(envelope, now, sender_up=sender_up):
            self._schedule_timer()

    def _schedule_timer(self) -> None:
        earliest = self._faults.next_due_s()
        if earliest is None:
            return
        if self._timer is not None:
            if self._timer_when <= earliest:
                return
            self._timer.cancel()
        loop = self._get_loop()
        self._timer_when = max(earliest, loop.time())
        self._timer = loop.call_at(self._timer_when, self._on_timer)

    def _on_timer(self) -> None:
        due_until = max(self._timer_when, self._get_loop().time())
        self._timer = None
        while (envelope := self._faults.pop_due(due_until)) is not None:
            self._deliver(envelope)
        self._schedule_timer()

    # --- delivering ------------------------------------------------------------------------

    def _deliver(self, envelope: Envelope) -> None:
        now = self._now()
        target = self._nodes.get(envelope.dst)
        if not self._faults.admit(
            envelope,
            now,
            sender_alive=self._is_alive(envelope.src, envelope.src_incarnation),
            receiver_up=target is not None and target.up,
        ):
            return
        assert target is not None
        if envelope.kind in (Kind.REPLY, Kind.FAILURE):
            future = target.waiting.get(envelope.request_id)
            if future is None or future.done():
                self._faults.count("dropped_late", "drop", envelope, now, "nobody waiting")
            else:
                self._faults.count("delivered", "deliver", envelope, now)
                future.set_result(envelope)
        elif target.handler is None or len(target.tasks) >= self._handler_tasks_max:
            reason = "no handler" if target.handler is None else "handler_tasks_max"
            self._faults.count("refused", "drop", envelope, now, reason)
            if envelope.kind is Kind.REQUEST:
                error = (Unavailable if target.handler is None else Overloaded)(
                    f"node {target.name!r} refused the request: {reason}"
                )
                self._reply(target, envelope, Kind.FAILURE, error_to_wire(error))
        else:
            self._faults.count("delivered", "deliver", envelope, now)
            self._task_ids += 1
            coroutine = self._run_handler(target, target.handler, envelope, self._task_ids)
            target.tasks[self._task_ids] = self._get_loop().create_task(coroutine)

    async def _run_handler(
        self, node: _Node, handler: Handler, envelope: Envelope, task_id: int
    ) -> None:
        try:
            message = unpack(envelope.payload, size_max=self._message_bytes_max)
            try:
                result = await handler(envelope.src, message)
                kind, body = Kind.REPLY, result
                if envelope.kind is Kind.REQUEST:
                    pack(result, size_max=self._message_bytes_max)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._faults.count_only("handler_errors")
                kind, body = Kind.FAILURE, error_to_wire(error)
            if envelope.kind is Kind.REQUEST:
                self._reply(node, envelope, kind, body)
        finally:
            node.tasks.pop(task_id, None)

    def _reply(self, node: _Node, request: Envelope, kind: Kind, body: Any) -> None:
        payload = pack(body, size_max=self._message_bytes_max)
        self._submit(self._envelope(kind, node, request.src, payload, request.request_id))

    # --- internals -------------------------------------------------------------------------

    def _node(self, name: str) -> _Node:
        node = self._nodes.get(name)
        if node is None:
            raise NotFound(f"unknown node {name!r}")
        return node

    def _remove(self, name: str) -> None:
        node = self._nodes.pop(name, None)
        if node is not None:
            node.incarnation += 1
            self._retired[name] = node.incarnation
            self._stop_activity(node, Cancelled(f"transport {name!r} closed"))

    def _stop_activity(self, node: _Node, error: Exception) -> None:
        for task in list(node.tasks.values()):
            task.cancel()
        node.tasks.clear()
        for future in list(node.waiting.values()):
            if not future.done():
                future.set_exception(error)
        node.waiting.clear()

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise FailedPrecondition("a MemoryNetwork is used from one event loop only")
        return loop

    def _now(self) -> float:
        """The loop's clock for the trace; 0.0 before the network first ran on a loop."""
        return self._loop.time() if self._loop is not None else 0.0
