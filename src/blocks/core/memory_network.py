"""``MemoryNetwork``: an in-process network of named nodes with seeded faults.

Theory of operation: every message (request, reply, one-way) becomes an envelope holding its
msgpack bytes. On send, the network decides the envelope's fate with its own
``random.Random(seed)``: dropped (loss, a cut link), or delivered after a delay drawn from the
link's range, possibly with a duplicate and possibly held back so later messages overtake it.
Envelopes wait in one heap ordered by (delivery time, sequence number), and a single loop timer
fires for the earliest. Without reordering a link is FIFO: a message is never scheduled before
an earlier one on the same link. On delivery the network checks again that the link is not cut
and both ends are alive, then resolves the waiting request or runs the handler in a new task.

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
import collections
import enum
import heapq
import random
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
from blocks.core.transport import (
    DEFAULT_TIMEOUT_S,
    FRAME_BYTES_MAX,
    Handler,
    check_timeout,
    error_from_wire,
    error_to_wire,
)

__all__ = ["LinkConfig", "MemoryNetwork", "MemoryTransport", "NetworkStats", "TraceEvent"]


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

    def serve(self, handler: Handler) -> None:
        self._check_open()
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
            ("in_flight_max", in_flight_max),
            ("handler_tasks_max", handler_tasks_max),
            ("trace_max", trace_max),
        ):
            if value <= 0:
                raise InvalidArgument(f"{label} must be > 0, got {value}")
        self.seed = seed
        self._random = random.Random(f"network:{seed}")
        self._default_link = default_link or LinkConfig()
        self._links: dict[tuple[str, str], LinkConfig] = {}
        self._message_bytes_max = message_bytes_max
        self._in_flight_max = in_flight_max
        self._handler_tasks_max = handler_tasks_max
        self._nodes: dict[str, _Node] = {}
        self._retired: dict[str, int] = {}  # incarnation of each closed node's next life
        self._groups: dict[str, int] | None = None
        self._blocked: set[tuple[str, str]] = set()
        self._heap: list[tuple[float, int, Envelope]] = []
        self._fifo_tail: dict[tuple[str, str], float] = {}
        self._sequence = 0
        self._message_ids = 0
        self._task_ids = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self._counts: collections.Counter[str] = collections.Counter()
        self._trace: collections.deque[TraceEvent] = collections.deque(maxlen=trace_max)

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
            self._record("crash", 0, "-", name, name)
            self._stop_activity(node, Unavailable(f"node {name!r} crashed"))

    def restart(self, name: str) -> None:
        """Bring a crashed node back up, with the handler it had."""
        node = self._node(name)
        if not node.up:
            node.up = True
            self._record("restart", 0, "-", name, name)

    # --- faults --------------------------------------------------------------------------

    def set_default_link(self, config: LinkConfig) -> None:
        """Use ``config`` for every link without its own setting."""
        self._default_link = config

    def set_link(self, src: str, dst: str, config: LinkConfig, *, both_ways: bool = True) -> None:
        """Set the link from ``src`` to ``dst`` (and back, unless ``both_ways`` is false)."""
        self._links[(src, dst)] = config
        if both_ways:
            self._links[(dst, src)] = config

    def link(self, src: str, dst: str) -> LinkConfig:
        return self._links.get((src, dst), self._default_link)

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Split the nodes into ``groups`` (replacing any previous partition)."""
        membership: dict[str, int] = {}
        for index, group in enumerate(groups):
            for name in group:
                if name in membership:
                    raise InvalidArgument(f"node {name!r} is in more than one group")
                membership[name] = index
        self._groups = membership
        self._record("partition", 0, "-", "-", "-")

    def block(self, src: str, dst: str) -> None:
        """Cut the direction ``src`` -> ``dst`` only."""
        self._blocked.add((src, dst))
        self._record("block", 0, "-", src, dst)

    def unblock(self, src: str, dst: str) -> None:
        self._blocked.discard((src, dst))
        self._record("unblock", 0, "-", src, dst)

    def heal(self) -> None:
        """End the partition and every one-way block."""
        self._groups = None
        self._blocked.clear()
        self._record("heal", 0, "-", "-", "-")

    def is_cut(self, src: str, dst: str) -> bool:
        if (src, dst) in self._blocked:
            return True
        if self._groups is None:
            return False
        return self._groups.get(src, -1) != self._groups.get(dst, -1)

    # --- observation ---------------------------------------------------------------------

    def stats(self) -> NetworkStats:
        return NetworkStats(**{name: self._counts[name] for name in NetworkStats.__slots__})

    def trace(self) -> list[TraceEvent]:
        """The most recent events (at most ``trace_max``), oldest first."""
        return list(self._trace)

    @property
    def in_flight(self) -> int:
        return len(self._heap)

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

    def _submit(self, envelope: Envelope) -> None:
        self._count_and_record("sent", "send", envelope)
        source = self._nodes.get(envelope.src)
        if source is None or not source.up or source.incarnation != envelope.src_incarnation:
            self._count_and_record("dropped_crash", "drop", envelope, "sender down")
            return
        if self.is_cut(envelope.src, envelope.dst):
            self._count_and_record("dropped_partition", "drop", envelope, "link cut")
            return
        if len(self._heap) >= self._in_flight_max:
            self._count_and_record("dropped_overload", "drop", envelope, "in_flight_max")
            return
        config = self.link(envelope.src, envelope.dst)
        draw = self._random
        if config.loss and draw.random() < config.loss:
            self._count_and_record("dropped_loss", "drop", envelope, "loss")
            return
        now = self._get_loop().time()
        link = (envelope.src, envelope.dst)
        at = now + config.sample_delay_s(draw)
        if config.reorder and draw.random() < config.reorder:
            at += draw.uniform(0.0, config.reorder_delay_ms) / 1000.0
            self._count_and_record("reordered", "reorder", envelope)
        else:
            at = max(at, self._fifo_tail.get(link, 0.0))
            self._fifo_tail[link] = at
        self._push(at, envelope)
        if config.duplicate and draw.random() < config.duplicate:
            self._count_and_record("duplicated", "duplicate", envelope)
            self._push(now + config.sample_delay_s(draw), envelope)

    def _push(self, at: float, envelope: Envelope) -> None:
        self._sequence += 1
        heapq.heappush(self._heap, (at, self._sequence, envelope))
        self._schedule_timer()

    def _schedule_timer(self) -> None:
        if not self._heap:
            return
        earliest = self._heap[0][0]
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
        while self._heap and self._heap[0][0] <= due_until:
            _, _, envelope = heapq.heappop(self._heap)
            self._deliver(envelope)
        self._schedule_timer()

    # --- delivering ------------------------------------------------------------------------

    def _deliver(self, envelope: Envelope) -> None:
        source = self._nodes.get(envelope.src)
        target = self._nodes.get(envelope.dst)
        if source is None or source.incarnation != envelope.src_incarnation or not source.up:
            self._count_and_record("dropped_crash", "drop", envelope, "sender crashed")
        elif target is None or not target.up:
            self._count_and_record("dropped_crash", "drop", envelope, "receiver down")
        elif self.is_cut(envelope.src, envelope.dst):
            self._count_and_record("dropped_partition", "drop", envelope, "link cut in flight")
        elif envelope.kind in (Kind.REPLY, Kind.FAILURE):
            future = target.waiting.get(envelope.request_id)
            if future is None or future.done():
                self._count_and_record("dropped_late", "drop", envelope, "nobody waiting")
            else:
                self._count_and_record("delivered", "deliver", envelope)
                future.set_result(envelope)
        elif target.handler is None or len(target.tasks) >= self._handler_tasks_max:
            reason = "no handler" if target.handler is None else "handler_tasks_max"
            self._count_and_record("refused", "drop", envelope, reason)
            if envelope.kind is Kind.REQUEST:
                error = (Unavailable if target.handler is None else Overloaded)(
                    f"node {target.name!r} refused the request: {reason}"
                )
                self._reply(target, envelope, Kind.FAILURE, error_to_wire(error))
        else:
            self._count_and_record("delivered", "deliver", envelope)
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
                self._counts["handler_errors"] += 1
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

    def _count_and_record(
        self, counter: str, action: str, envelope: Envelope, reason: str = ""
    ) -> None:
        self._counts[counter] += 1
        self._record(
            action, envelope.message_id, envelope.kind.value, envelope.src, envelope.dst, reason
        )

    def _record(
        self, action: str, message_id: int, kind: str, src: str, dst: str, reason: str = ""
    ) -> None:
        now = self._loop.time() if self._loop is not None else 0.0
        self._trace.append(TraceEvent(now, action, message_id, kind, src, dst, reason))
