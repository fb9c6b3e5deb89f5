"""``LoopThread``: an asyncio event loop on a daemon thread, for the blocking wrappers.

Theory of operation. Each block's blocking client (``SyncClient`` in kv, ``SyncQueue``,
``SyncPubSub``) wraps an async client that must live on one event loop. ``LoopThread``
starts that loop on a daemon thread; ``call(coroutine, timeout_s)`` hands the coroutine to
it (``run_coroutine_threadsafe``) and blocks the calling thread until the result comes back.

Contracts:
- ``call`` returns the coroutine's result or raises its exception unchanged.
- With ``timeout_s``, a call that has not finished in time is cancelled on the loop and
  raises ``Timeout`` (a ``BlocksError`` that is also a ``TimeoutError``).
- After ``stop``, ``call`` raises ``FailedPrecondition`` and never runs the coroutine.
- ``stop`` is idempotent; it waits up to ``STOP_JOIN_S`` for the thread and closes the loop
  only once the thread has ended (closing a running loop would raise).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from blocks.core.errors import FailedPrecondition, Timeout

__all__ = ["STOP_JOIN_S", "LoopThread"]

T = TypeVar("T")
STOP_JOIN_S = 10.0


class LoopThread:
    """An event loop on a daemon thread; ``call`` runs a coroutine there and waits."""

    def __init__(self, name: str = "blocks-sync") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coroutine`` on the loop and wait for it (at most ``timeout_s``)."""
        if not self._thread.is_alive():
            coroutine.close()
            raise FailedPrecondition("the wrapper is closed")
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout_s)
        except TimeoutError:
            if future.done():  # the coroutine itself raised a TimeoutError: pass it on
                raise
            future.cancel()
            raise Timeout(f"the call did not finish within {timeout_s} s") from None

    def stop(self) -> None:
        """Stop the loop and its thread; a no-op when stopped."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(STOP_JOIN_S)
        if not self._thread.is_alive() and not self.loop.is_closed():
            self.loop.close()
