"""``CommandQueue``: the ``Queue`` interface as broker commands, for the queues that run them.

Theory of operation
-------------------
``LocalQueue`` executes commands on its own ``QueueBroker`` and logs them; ``ReplicatedQueue``
writes them to a replicated log and applies them once committed. Both present the same
``Queue`` interface, and the way a call becomes a command is the same: validated settings,
the command verb, the queue's name, the driver's clock stamp ``now_ms``, the arguments in the
order ``QueueBroker.execute`` reads them: the wire call that ``blocks.queue.calls`` builds,
stamped with ``now_ms``. That stamping, the long-polling receive loop (run, then sleep until
news or ``wait_ms``) and the wire-call form of a result live here once; a driver supplies
only how a command runs (``_run``), how a receive sleeps (``_wait``), and the applied broker
it reads.

``wire_result`` gives the answer of a wire call (the data path's batched form) as the
``Queue`` method of the same name answers it; ``check_batch`` bounds a batch of them.
"""

from __future__ import annotations

from typing import Any

from blocks.core.clock import Clock
from blocks.core.errors import InvalidArgument
from blocks.queue.api import Message
from blocks.queue.broker import QueueBroker
from blocks.queue.calls import QueueCalls
from blocks.queue.config import QueueConfig, check_ms, check_name

__all__ = ["CALLS_PER_BATCH_MAX", "WAIT_MS_MAX", "CommandQueue", "check_batch", "wire_result"]

WAIT_MS_MAX = 60_000  # the longest long poll of one receive
CALLS_PER_BATCH_MAX = 1000  # wire calls in one ``run_many``


def check_batch(calls: Any) -> list[Any]:
    """``calls`` if it is a batch of wire calls ``run_many`` takes (a list of 1 to
    ``CALLS_PER_BATCH_MAX``); ``InvalidArgument`` otherwise."""
    if not isinstance(calls, list) or not 1 <= len(calls) <= CALLS_PER_BATCH_MAX:
        raise InvalidArgument(f"a batch holds 1..{CALLS_PER_BATCH_MAX} calls")
    return calls


def wire_result(verb: str, result: Any) -> Any:
    """The answer of a successful wire call: a send's message id, None for an extension
    (its deadline is internal), the broker's result otherwise."""
    if verb == "send":
        return str(result[0])
    if verb == "extend":
        return None
    return result


class CommandQueue(QueueCalls):
    """The ``Queue`` methods over abstract command execution (see the module docs).

    Subclasses set ``_clock`` and define ``_run``, ``_wait`` and ``_applied_broker``; they may
    override ``_receive_visibility`` and ``_nack_touches``."""

    __slots__ = ()
    _clock: Clock

    # -- what a driver supplies ------------------------------------------------------------

    async def _run(self, command: list[Any], *, touched: tuple[str, ...] = ()) -> Any:
        """Execute ``command``; its result, or raise its error. ``touched`` names the queues
        whose waiting receives should try again once it changed something."""
        raise NotImplementedError

    async def _wait(self, name: str, remaining_s: float) -> None:
        """Sleep until a command may have made a message of ``name`` visible, the broker's
        next timer falls due, or ``remaining_s`` passed."""
        raise NotImplementedError

    def _applied_broker(self) -> QueueBroker:
        """The broker as applied here (read only)."""
        raise NotImplementedError

    def _receive_visibility(self, name: str, visibility_ms: int | None) -> int | None:
        """A receive's visibility; None may be left to the broker (its queue's default)."""
        return visibility_ms

    def _nack_touches(self, name: str) -> tuple[str, ...]:
        """The queues a nack of ``name`` may wake (its dead-letter queue too)."""
        return (name,) if isinstance(name, str) else ()

    def _now(self) -> int:
        return self._clock.now_ms()

    # -- the Queue interface (create_queue, send, receive: ``QueueCalls``) -------------------

    async def _create(self, config: QueueConfig) -> None:
        await self._run(["create", self._now(), config.to_dict()])

    async def delete_queue(self, name: str) -> None:
        await self._run(["delete", self._now(), check_name(name)], touched=(name,))

    async def _send(self, call: list[Any]) -> str:
        command = [call[0], self._now(), *call[1:]]
        return str(wire_result("send", await self._run(command, touched=(call[1],))))

    async def _receive(self, call: list[Any], wait_ms: int) -> list[Message]:
        _, name, max_messages, visibility_ms = call
        visibility_ms = self._receive_visibility(check_name(name), visibility_ms)
        wait_ms = check_ms(wait_ms, "wait_ms", WAIT_MS_MAX)
        deadline_s = self._clock.monotonic() + wait_ms / 1000.0
        while True:
            command = ["receive", self._now(), name, max_messages, visibility_ms]
            messages: list[Message] = await self._run(command)
            remaining_s = deadline_s - self._clock.monotonic()
            if messages or remaining_s <= 0:
                return messages
            await self._wait(name, self._until_next_event(remaining_s))

    def _until_next_event(self, remaining_s: float) -> float:
        """``remaining_s``, cut to when the broker's next timer (a delay or a visibility
        deadline) falls due, but at least a millisecond."""
        next_event_ms = self._applied_broker().next_event_ms()
        if next_event_ms is None:
            return remaining_s
        return min(remaining_s, max(0.001, (next_event_ms - self._now()) / 1000.0))

    async def ack(self, name: str, receipt: str) -> None:
        await self._run(["ack", self._now(), name, receipt], touched=(name,))

    async def nack(self, name: str, receipt: str, *, delay_ms: int = 0) -> None:
        touched = self._nack_touches(name)
        await self._run(["nack", self._now(), name, receipt, delay_ms], touched=touched)

    async def extend_visibility(self, name: str, receipt: str, visibility_ms: int) -> None:
        await self._run(["extend", self._now(), name, receipt, visibility_ms])

    async def stats(self, name: str) -> dict[str, int]:
        """Messages per state (``delayed``, ``ready``, ``inflight``) in one queue, as applied
        here (a replica may lag its leader)."""
        return self._applied_broker().queue(check_name(name)).counts()
