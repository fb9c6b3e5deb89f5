"""``ReadyTimers``: the driver's side of ``Ready.timers`` (``blocks.core.ready``) on asyncio.

Theory of operation
-------------------
A core asks to be called back at ``due_ms`` on its own clock by putting ``(name, due_ms)`` in
a step's ``Ready``; a later request of the same name for the same key replaces the earlier.
``arm`` records the request and keeps at most one event-loop timer per ``(key, name)``:

* a request *earlier* than the one armed re-arms the loop timer there;
* a request *later* than the one armed only records the new time (one dict store: cores move
  deadlines on every heartbeat, and cancelling and re-adding a loop timer each time would put
  a heap operation on every message); when the armed timer fires before the recorded time it
  re-arms itself for the rest and calls nothing.

So ``fire(key, name)`` runs once the core's clock has reached the latest requested time, and
only then; the event loop sleeps until the earliest armed timer or the next I/O, and a core
that asks for nothing is never woken. The loop's time and the core's clock may differ (a
simulated or manual clock): the remaining wait is read from the core's clock at each arming.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from blocks.core.clock import Clock

__all__ = ["ReadyTimers"]

KeyT = TypeVar("KeyT", bound=Hashable)
# Fire a little after the requested millisecond, so the core's clock, read in whole
# milliseconds, has reached it (not one re-arm for a truncated millisecond).
SLACK_S = 0.0002


class ReadyTimers(Generic[KeyT]):
    """Timers requested by cores, keyed by ``(key, name)``; see the module docs.

    ``fire`` is called on the event loop, synchronously, and must not raise."""

    def __init__(self, clock: Clock, fire: Callable[[KeyT, str], None]) -> None:
        self._clock = clock
        self._fire = fire
        self._due_ms: dict[tuple[KeyT, str], int] = {}  # the latest requested time
        self._armed: dict[tuple[KeyT, str], tuple[int, asyncio.TimerHandle]] = {}
        self.wakeups = 0  # loop timers that ran (fired or re-armed), for tests and stats

    def arm(self, key: KeyT, name: str, due_ms: int) -> None:
        """Call ``fire(key, name)`` once the core's clock reaches ``due_ms`` (replacing the
        earlier request of that name for that key)."""
        slot = (key, name)
        self._due_ms[slot] = due_ms
        armed = self._armed.get(slot)
        if armed is not None:
            if armed[0] <= due_ms:
                return  # the armed timer fires first and re-arms for the rest
            armed[1].cancel()
        self._schedule(slot, due_ms)

    def close(self) -> None:
        """Cancel every timer; ``fire`` is not called again."""
        for _, handle in self._armed.values():
            handle.cancel()
        self._armed.clear()
        self._due_ms.clear()

    def __len__(self) -> int:
        return len(self._due_ms)

    def _schedule(self, slot: tuple[KeyT, str], due_ms: int) -> None:
        delay_s = max(0.0, due_ms / 1000.0 - self._clock.monotonic()) + SLACK_S
        handle = asyncio.get_running_loop().call_later(delay_s, self._on_loop_timer, slot)
        self._armed[slot] = (due_ms, handle)

    def _on_loop_timer(self, slot: tuple[KeyT, str]) -> None:
        self.wakeups += 1
        del self._armed[slot]
        due_ms = self._due_ms.get(slot)
        if due_ms is None:
            return
        if int(self._clock.monotonic() * 1000) < due_ms:
            self._schedule(slot, due_ms)  # requested later since it was armed
            return
        del self._due_ms[slot]
        self._fire(*slot)
