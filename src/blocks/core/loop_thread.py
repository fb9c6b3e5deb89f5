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

``BlockingWrapper`` is the shape those wrappers share: the async client is built on its own
``LoopThread``, and ``close`` closes the client there and then stops the thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Generic, Protocol, TypeVar

from blocks.core.errors import FailedPrecondition, Timeout

__all__ = ["STOP_JOIN_S", "BlockingWrapper", "LoopThread"]

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


class _Closable(Protocol):
    async def close(self) -> None: ...


Client = TypeVar("Client", bound=_Closable)


class BlockingWrapper(Generic[Client]):
    """A blocking client around an async one that lives on its own ``LoopThread``.

    ``factory()`` is awaited on the thread's loop to build the client (its errors pass
    through and the thread is stopped); subclasses run each call with
    ``self._runner.call(self._client.method(...))``. ``close`` closes the client on the
    loop, then stops the thread even if closing failed."""

    thread_name = "blocks-sync"  # the loop thread's name, for subclasses to set

    def __init__(self, factory: Callable[[], Coroutine[Any, Any, Client]]) -> None:
        self._runner = LoopThread(self.thread_name)
        try:
            self._client: Client = self._runner.call(factory())
        except BaseException:
            self._runner.stop()
            raise

    def close(self) -> None:
        try:
            self._runner.call(self._client.close())
        finally:
            self._runner.stop()
