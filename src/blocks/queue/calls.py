"""``QueueCalls``: the ``Queue`` methods with many arguments, spelled once as wire calls.

Theory of operation
-------------------
The implementations that speak the queue's wire calls (``CommandQueue``, under
``LocalQueue`` and ``ReplicatedQueue``, which stamps them with its clock and executes them as
broker commands; ``QueueClient``, which carries them on the data path or as gRPC requests)
all turn ``send`` and ``receive`` into the same list, ``["send", name, body, delay_ms, group,
dedup_id, priority]`` and ``["receive", name, max_messages, visibility_ms]`` (the data path's
form, ``blocks.queue.datapath``), and ``create_queue`` into a ``QueueConfig``, validated when
built. This class does that once, with the signatures and defaults of ``blocks.queue.api.Queue``
(whose docstrings state the contract); an implementation supplies ``_create``, ``_send`` and
``_receive``, and the short methods (``delete_queue``, ``ack``, ``nack``,
``extend_visibility``, ``close``) itself.
"""

from __future__ import annotations

from typing import Any

from blocks.core.closing import AsyncClosing
from blocks.queue.api import Message
from blocks.queue.config import QueueConfig

__all__ = ["QueueCalls"]


class QueueCalls(AsyncClosing):
    """``create_queue``, ``send`` and ``receive`` of ``blocks.queue.api.Queue`` over the
    hooks below (see the module docs)."""

    __slots__ = ()

    # -- what an implementation supplies ---------------------------------------------------

    async def _create(self, config: QueueConfig) -> None:
        """Create the queue ``config`` describes (``create_queue``'s contract)."""
        raise NotImplementedError

    async def _send(self, call: list[Any]) -> str:
        """Run a ``send`` wire call; the message id (``send``'s contract)."""
        raise NotImplementedError

    async def _receive(self, call: list[Any], wait_ms: int) -> list[Message]:
        """Run a ``receive`` wire call, long-polling up to ``wait_ms`` while it finds nothing
        (``receive``'s contract)."""
        raise NotImplementedError

    # -- the Queue interface ---------------------------------------------------------------

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
        """See ``blocks.queue.api.Queue.create_queue``."""
        config = QueueConfig(
            name=name,
            visibility_ms=visibility_ms,
            max_receives=max_receives,
            dead_letter=dead_letter,
            fifo=fifo,
            dedup_window_ms=dedup_window_ms,
        )
        await self._create(config)

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
        """See ``blocks.queue.api.Queue.send``."""
        return await self._send(["send", name, body, delay_ms, group, dedup_id, priority])

    async def receive(
        self,
        name: str,
        *,
        max_messages: int = 1,
        wait_ms: int = 0,
        visibility_ms: int | None = None,
    ) -> list[Message]:
        """See ``blocks.queue.api.Queue.receive``."""
        return await self._receive(["receive", name, max_messages, visibility_ms], wait_ms)
