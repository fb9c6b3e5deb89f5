"""``LongPolls``: calls that found nothing and sleep until news of their key, bounded.

Theory of operation. A long-polling read (a queue's receive, a partition's fetch) that found
nothing sleeps (``wait``) on a key (a queue's name, a ``(topic, partition)``) until the
driver wakes that key (``wake``: something was written there) or every key (``wake_all``:
a state change that may concern anyone, a close), or until the sleeper's own timeout. Waking
is a hint, never a promise: the woken call reads again and may sleep once more. Bound:
``waiters_max`` sleepers in all; past it, ``Overloaded`` at once, before sleeping.

One asyncio loop; no I/O, no clock (the timeout is the loop's).
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Generic, TypeVar

from blocks.core.errors import Overloaded

__all__ = ["WAITERS_MAX", "LongPolls"]

WAITERS_MAX = 10_000  # default bound on sleepers per driver

K = TypeVar("K", bound=Hashable)


class LongPolls(Generic[K]):
    """The sleeping calls of one driver, each a future under its key."""

    __slots__ = ("_count", "_waiters", "_waiters_max")

    def __init__(self, waiters_max: int = WAITERS_MAX) -> None:
        assert waiters_max >= 1
        self._waiters: dict[K, list[asyncio.Future[None]]] = {}
        self._waiters_max = waiters_max
        self._count = 0  # sleepers in all: the sum of the lists' lengths

    def __len__(self) -> int:
        return self._count

    def check_room(self) -> None:
        """``Overloaded`` when ``waiters_max`` calls already sleep."""
        if self._count >= self._waiters_max:
            raise Overloaded("too many long polls waiting", retry_after_ms=100)

    async def wait(self, key: K, timeout_s: float) -> None:
        """Sleep until ``key`` (or every key) is woken, or ``timeout_s`` passed; raises
        ``Overloaded`` (see ``check_room``) without sleeping."""
        self.check_room()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(future)
        self._count += 1
        try:
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            pass
        finally:
            waiting = self._waiters.get(key)
            if waiting is not None and future in waiting:
                waiting.remove(future)
                self._count -= 1
                if not waiting:
                    del self._waiters[key]

    def wake(self, key: K) -> None:
        """Wake every call sleeping on ``key`` now."""
        waiting = self._waiters.pop(key, [])
        self._count -= len(waiting)
        for future in waiting:
            if not future.done():
                future.set_result(None)

    def wake_all(self) -> None:
        """Wake every call sleeping now, whatever its key."""
        for key in list(self._waiters):
            self.wake(key)
