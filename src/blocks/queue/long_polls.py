"""The receives of a replicated queue node that found nothing and wait for news.

Theory of operation. A receive that found nothing sleeps (``LongPolls.wait``) until something
may have made a message visible, then runs again as a new record: the node wakes every
sleeper (``wake_all``) when it applies a record that may do so (a send, nack, ack or create),
installs a leader's snapshot, or closes. The sleeper's own limit (the caller's ``wait_ms``,
cut to when the applied state's next timer falls due) ends the sleep too. Waking is a hint,
never a promise: a woken receive may find nothing again and sleep once more. Bound:
``WAITERS_MAX`` sleepers per node; past it, ``Overloaded`` at once.

One asyncio loop; no I/O.
"""

from __future__ import annotations

import asyncio

from blocks.core.errors import Overloaded

__all__ = ["WAITERS_MAX", "LongPolls"]

WAITERS_MAX = 10_000


class LongPolls:
    """The sleeping receives of one node, each a future ``wake_all`` settles."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    def check_room(self) -> None:
        """``Overloaded`` when ``WAITERS_MAX`` receives already sleep."""
        if len(self._waiters) >= WAITERS_MAX:
            raise Overloaded("too many long polls waiting", retry_after_ms=100)

    async def wait(self, timeout_s: float) -> None:
        """Sleep until ``wake_all`` or ``timeout_s``, whichever comes first."""
        self.check_room()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            pass
        finally:
            if future in self._waiters:
                self._waiters.remove(future)

    def wake_all(self) -> None:
        """Wake every receive sleeping now."""
        waiters, self._waiters = self._waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)
