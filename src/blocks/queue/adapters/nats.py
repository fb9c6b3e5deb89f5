"""``NatsQueue``: the ``blocks.queue`` API on NATS JetStream work-queue streams.

Theory of operation
-------------------
A queue ``Q`` is a stream ``<namespace>q-Q`` with work-queue retention (a message is removed
when acked) and the one subject ``<namespace>q.Q``, read through one durable pull consumer
whose ``ack_wait`` is the queue's visibility timeout: a message not acked in time is
delivered again by the server. The queue's settings are kept in the stream's description, so
``create_queue`` again compares them.

* ``send`` publishes with an ack; the message id is the stream sequence. A ``dedup_id`` is
  the ``Nats-Msg-Id`` and the stream's duplicate window is ``dedup_window_ms``: a duplicate
  answers the first message's sequence, so the first id.
* ``receive`` fetches from the consumer through a pull subscription of its own (concurrent
  receives do not wait on each other's fetches; at most ``PULLS_PER_QUEUE_MAX`` per queue,
  ``nats_pulls``); the receipt is ``<sequence>.<delivery count>``. A
  message delivered more than ``max_receives`` times is copied to the dead-letter stream
  (with a ``Nats-Msg-Id`` so a retried copy is stored once) and acked here, at that receive:
  JetStream itself only stops delivering it.
* ``ack``/``nack``/``extend_visibility`` act on the delivery the receipt names, kept in this
  adapter (at most ``IN_FLIGHT_MAX``): a receipt from another adapter instance, or from
  before this one was reopened, is ``NotFound``; an older delivery's receipt is ``Conflict``.

What JetStream does not give raises ``InvalidArgument`` rather than being faked: priorities
other than 0, FIFO queues and groups, ``delay_ms`` on send, a per-call ``visibility_ms``
other than the queue's. Errors are the block's: ``Unavailable`` while disconnected,
``Timeout``, ``NotFound``; nats exceptions never escape (docs/adapters.md).
"""

from __future__ import annotations

import re

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext

from blocks.core.clock import Clock
from blocks.core.errors import (
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Overloaded,
    Timeout,
)
from blocks.core.natscall import NatsAdapter, check_nats_name, nats_call
from blocks.queue.adapters import nats_pulls
from blocks.queue.api import Message

__all__ = ["IN_FLIGHT_MAX", "NatsQueue"]

IN_FLIGHT_MAX = 10_000
RECEIVE_MAX_MESSAGES = 256
WAIT_MS_MAX = 60_000
NO_WAIT_S = 0.05  # a pull needs a round trip even when nothing waits
SENT_HEADER = "Blocks-Sent-Ms"
_SETTINGS = re.compile(r"^blocks queue (\d+) (\d+) (\S*) (\d+)$")
_RECEIPT = re.compile(r"^(\d+)\.(\d+)$")


class NatsQueue(NatsAdapter):
    """``blocks.queue.api.Queue`` on JetStream; build it with ``await NatsQueue.open()``."""

    def __init__(
        self,
        client: Client,
        *,
        namespace: str = "",
        clock: Clock | None = None,
        owns_client: bool = True,
    ) -> None:
        super().__init__(client, namespace=namespace, clock=clock, owns_client=owns_client)
        self._settings: dict[str, tuple[int, int, str, int]] = {}
        self._pulls: dict[str, nats_pulls.PullPool] = {}  # per queue: concurrent receives, one each
        self._in_flight: dict[tuple[str, int], tuple[int, Msg]] = {}  # (queue, seq) -> delivery
        self.dead_lettered = 0
        """Messages this adapter moved to a dead-letter queue (or dropped, without one)."""

    def _stream(self, name: str) -> str:
        return f"{self._namespace}q-{name}"

    def _subject(self, name: str) -> str:
        return f"{self._namespace}q.{name}"

    # -- queues -----------------------------------------------------------------------------

    async def create_queue(
        self,
        name: str,
        *,
        visibility_ms: int = 30_000,
        max_receives: int = 0,
        dead_letter: str | None = None,
        fifo: bool = False,
        dedup_window_ms: int = 300_000,
    ) -> None:
        """Create the stream and its consumer; the same call again is a no-op."""
        check_nats_name(name, "a queue name")
        for value, what in ((visibility_ms, "visibility_ms"), (dedup_window_ms, "dedup")):
            if type(value) is not int or value <= 0:
                raise InvalidArgument(f"{what} must be a positive integer")
        if type(max_receives) is not int or max_receives < 0:
            raise InvalidArgument("max_receives must be a non-negative integer")
        if fifo:
            raise InvalidArgument("JetStream work queues keep no FIFO groups (fifo=False only)")
        if dead_letter is not None:
            await self._settings_of(check_nats_name(dead_letter, "dead_letter"))
        wanted = (visibility_ms, max_receives, dead_letter or "", dedup_window_ms)
        try:
            existing = await self._settings_of(name)
        except NotFound:
            existing = None
        if existing is not None:
            if existing != wanted:
                raise AlreadyExists(f"queue {name!r} exists with other settings")
            return
        config = StreamConfig(
            name=self._stream(name),
            subjects=[self._subject(name)],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=dedup_window_ms / 1000.0,
            description="blocks queue {} {} {} {}".format(*wanted),
        )
        try:
            await nats_call(self._nc, self._js.add_stream(config), "create a queue")
        except FailedPrecondition as error:
            raise AlreadyExists(f"queue {name!r}: {error}") from error
        consumer = ConsumerConfig(
            durable_name="workers",
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=visibility_ms / 1000.0,
            max_ack_pending=-1,
        )
        await nats_call(
            self._nc, self._js.add_consumer(self._stream(name), consumer), "create a queue"
        )
        self._settings[name] = wanted

    async def _settings_of(self, name: str) -> tuple[int, int, str, int]:
        check_nats_name(name, "a queue name")
        cached = self._settings.get(name)
        if cached is not None:
            return cached
        try:
            info = await nats_call(self._nc, self._js.stream_info(self._stream(name)), "a queue")
        except NotFound as error:
            raise NotFound(f"no queue {name!r}") from error
        match = _SETTINGS.match(info.config.description or "")
        if match is None:
            raise NotFound(f"stream of {name!r} was not made by blocks")
        found = (int(match[1]), int(match[2]), match[3], int(match[4]))
        self._settings[name] = found
        return found

    async def delete_queue(self, name: str) -> None:
        await self._settings_of(name)
        for other in list(self._settings):
            if other != name and self._settings[other][2] == name:
                raise FailedPrecondition(f"{name!r} is the dead-letter queue of {other!r}")
        await nats_call(self._nc, self._js.delete_stream(self._stream(name)), "delete a queue")
        self._settings.pop(name, None)
        pulls = self._pulls.pop(name, None)
        if pulls is not None:
            await pulls.close(unsubscribe=True)

    # -- messages ---------------------------------------------------------------------------

    async def send(
        self,
        name: str,
        body: bytes,
        *,
        delay_ms: int = 0,
        group: str | None = None,
        dedup_id: str | None = None,
        priority: int = 0,
    ) -> str:
        """Publish with an ack; the id is the stream sequence (the first one for a dedup)."""
        await self._settings_of(name)
        if not isinstance(body, bytes):
            raise InvalidArgument("a body is bytes")
        if type(priority) is not int or not 0 <= priority <= 255:
            raise InvalidArgument("priority must be within 0..255")
        if priority != 0 or group is not None or delay_ms != 0:
            raise InvalidArgument("JetStream work queues take no priority, group or delay")
        headers = {SENT_HEADER: str(self._clock.now_ms())}
        if dedup_id is not None:
            headers["Nats-Msg-Id"] = check_nats_name(dedup_id, "dedup_id")
        ack = await nats_call(
            self._nc, self._js.publish(self._subject(name), body, headers=headers), "send"
        )
        return str(ack.seq)

    async def receive(
        self,
        name: str,
        *,
        max_messages: int = 1,
        wait_ms: int = 0,
        visibility_ms: int | None = None,
    ) -> list[Message]:
        """Pull up to ``max_messages``; dead-letter those delivered too often."""
        settings = await self._settings_of(name)
        if type(max_messages) is not int or not 1 <= max_messages <= RECEIVE_MAX_MESSAGES:
            raise InvalidArgument(f"max_messages must be within 1..{RECEIVE_MAX_MESSAGES}")
        if type(wait_ms) is not int or not 0 <= wait_ms <= WAIT_MS_MAX:
            raise InvalidArgument(f"wait_ms must be within 0..{WAIT_MS_MAX}")
        if visibility_ms is not None and visibility_ms != settings[0]:
            raise InvalidArgument("JetStream's ack wait is the queue's visibility_ms only")
        if len(self._in_flight) + max_messages > IN_FLIGHT_MAX:
            raise Overloaded(f"at most {IN_FLIGHT_MAX} deliveries in flight per adapter")
        try:
            async with self._pool(name).borrow() as subscription:
                pulled = await nats_call(
                    self._nc,
                    subscription.fetch(max_messages, timeout=max(wait_ms / 1000.0, NO_WAIT_S)),
                    "receive",
                )
        except Timeout:  # the pull's wait ran out: nothing was visible
            return []
        messages = []
        for msg in pulled:
            count = int(msg.metadata.num_delivered)
            sequence = int(msg.metadata.sequence.stream)
            if settings[1] and count > settings[1]:
                await self._dead_letter(name, settings[2], sequence, msg)
                continue
            self._in_flight[(name, sequence)] = (count, msg)
            sent = int((msg.headers or {}).get(SENT_HEADER, "0"))
            messages.append(
                Message(str(sequence), f"{sequence}.{count}", msg.data, count, None, 0, sent)
            )
        return messages

    def _pool(self, name: str) -> nats_pulls.PullPool:
        pulls = self._pulls.get(name)
        if pulls is None:

            async def subscribe() -> JetStreamContext.PullSubscription:
                return await nats_call(
                    self._nc,
                    self._js.pull_subscribe(
                        self._subject(name), durable="workers", stream=self._stream(name)
                    ),
                    "receive",
                )

            pulls = nats_pulls.PullPool(subscribe, nats_pulls.PULLS_PER_QUEUE_MAX)
            self._pulls[name] = pulls
        return pulls

    async def _dead_letter(self, name: str, dead_letter: str, sequence: int, msg: Msg) -> None:
        if dead_letter:
            headers = {
                SENT_HEADER: str(self._clock.now_ms()),
                "Nats-Msg-Id": f"dead-{name}-{sequence}",
            }
            await nats_call(
                self._nc,
                self._js.publish(self._subject(dead_letter), msg.data, headers=headers),
                "dead-letter",
            )
        await nats_call(self._nc, msg.ack_sync(), "dead-letter")
        self._in_flight.pop((name, sequence), None)
        self.dead_lettered += 1

    def _delivery(self, name: str, receipt: object) -> tuple[int, Msg]:
        if not isinstance(receipt, str) or not (match := _RECEIPT.match(receipt)):
            raise InvalidArgument("a receipt is '<sequence>.<delivery>'")
        sequence, count = int(match[1]), int(match[2])
        held = self._in_flight.get((name, sequence))
        if held is None:
            raise NotFound(f"no delivery {receipt!r} in flight through this adapter")
        if held[0] != count:
            raise Conflict(f"receipt {receipt!r} is stale: delivered again since")
        return sequence, held[1]

    async def ack(self, name: str, receipt: str) -> None:
        await self._settings_of(name)
        sequence, msg = self._delivery(name, receipt)
        await nats_call(self._nc, msg.ack_sync(), "ack")
        del self._in_flight[(name, sequence)]

    async def nack(self, name: str, receipt: str, *, delay_ms: int = 0) -> None:
        await self._settings_of(name)
        if type(delay_ms) is not int or delay_ms < 0:
            raise InvalidArgument("delay_ms must be a non-negative integer")
        sequence, msg = self._delivery(name, receipt)
        await nats_call(self._nc, msg.nak(delay=delay_ms / 1000.0 or None), "nack")
        del self._in_flight[(name, sequence)]

    async def extend_visibility(self, name: str, receipt: str, visibility_ms: int) -> None:
        """Restart the ack wait: JetStream's in-progress gives the queue's full wait only."""
        settings = await self._settings_of(name)
        if visibility_ms != settings[0]:
            raise InvalidArgument("JetStream extends by the queue's visibility_ms only")
        _, msg = self._delivery(name, receipt)
        await nats_call(self._nc, msg.in_progress(), "extend visibility")

    async def close(self) -> None:
        for pulls in self._pulls.values():
            await pulls.close(unsubscribe=not self._nc.is_closed)
        self._pulls.clear()
        await self._close_connection()
