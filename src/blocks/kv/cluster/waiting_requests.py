"""The client requests a ``KVNode`` coordinates, each waiting on a future for the core's answer.

Theory of operation. A put or get the driver hands to ``KVNodeCore`` gets a fresh request id
and a future here (``new``); the core's ``Reply``/``Fail`` for that id, carried out after the
save it depends on, settles the future (``resolve``). A caller's own deadline is a timer on
the future (``wait``), not ``asyncio.timeout``: the transport runs a handler inline up to its
first suspension, outside any task. Without one, the core's deadline applies and its
``Timeout`` says how many replicas answered.

Each waiting request remembers whether it is a put and its key, and whether it was made since
the driver's last save (``take_unsaved``), so that when the disk refuses a save
(``fail_unsaved``) the puts made in that iteration fail with the storage error, and the gets
of keys put back to what the store holds fail with ``Unavailable`` (read them again). The
others go on waiting.

A request made with a ``shape`` is for a caller that is not a coroutine (a transport that
answers a handler's future, ``serve(..., inline=True)``, with no task per request): its future
gets ``shape(answer)``, and the request is forgotten when the core's answer comes (``resolve``),
which the core's deadline bounds, as no ``wait`` does it.

No I/O and no timers of its own beyond ``wait``'s; driven from the node's one loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from blocks.core.errors import BlocksError, StorageError, Unavailable
from blocks.core.errors import Timeout as TimeoutError_
from blocks.kv.cluster.messages import Fail, Reply
from blocks.kv.cluster.versions import VersionedObject

__all__ = ["WaitingRequests"]

Answer = asyncio.Future[VersionedObject | None]


class WaitingRequests:
    """The requests in flight on one node, by request id (ids start at 1 and only grow)."""

    __slots__ = ("_futures", "_keys", "_next_id", "_shapes", "_unsaved")

    def __init__(self) -> None:
        self._futures: dict[int, Answer] = {}
        # Per waiting request: (is a put, key); and the requests made since the last save.
        self._keys: dict[int, tuple[bool, bytes]] = {}
        self._unsaved: set[int] = set()
        self._shapes: dict[int, Callable[[Any], Any]] = {}  # requests answered shaped
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._futures)

    def new(
        self, is_put: bool, key: bytes, shape: Callable[[Any], Any] | None = None
    ) -> tuple[int, Answer]:
        """A fresh request id and the future its answer settles (with ``shape(answer)`` when
        ``shape`` is given: see the module docs); counted as unsaved."""
        request_id = self.new_id(is_put, key)
        if shape is not None:
            self._shapes[request_id] = shape
        return request_id, self.future_of(request_id)

    def new_id(self, is_put: bool, key: bytes) -> int:
        """A fresh request id, counted as unsaved, whose future ``future_of`` makes when it is
        needed (a read answered at once needs none)."""
        self._next_id += 1
        request_id = self._next_id
        self._keys[request_id] = (is_put, key)
        self._unsaved.add(request_id)
        return request_id

    def future_of(self, request_id: int) -> Answer:
        """The future ``request_id``'s answer settles; made before its answer can come."""
        future: Answer = asyncio.get_running_loop().create_future()
        self._futures[request_id] = future
        return future

    async def wait(
        self, request_id: int, future: Answer, timeout_s: float | None
    ) -> VersionedObject | None:
        """The answer; ``Timeout`` after ``timeout_s`` (None: the core's deadline applies).
        The request is forgotten however it ends."""
        expiry = None
        if timeout_s is not None:
            expiry = asyncio.get_running_loop().call_later(timeout_s, _expire, future, timeout_s)
        try:
            return await future
        finally:
            if expiry is not None:
                expiry.cancel()
            self.forget(request_id)

    def expire_after(self, future: asyncio.Future[Any], timeout_s: float | None) -> None:
        """``Timeout`` on ``future`` after ``timeout_s`` unless answered first (``wait``'s
        timer, for a request whose caller does not wait in a coroutine)."""
        if timeout_s is not None:
            expiry = asyncio.get_running_loop().call_later(timeout_s, _expire, future, timeout_s)
            future.add_done_callback(lambda _: expiry.cancel())

    def forget(self, request_id: int) -> None:
        """Stop tracking a request (answered, or never handed to the core)."""
        self._futures.pop(request_id, None)
        self._keys.pop(request_id, None)
        if self._shapes:
            self._shapes.pop(request_id, None)

    def answered_at_once(self, request_id: int) -> None:
        """The request was answered in the step that made it, with nothing to save."""
        self.forget(request_id)
        self._unsaved.discard(request_id)

    def take_unsaved(self) -> set[int]:
        """The requests made since the last call: the ones the coming save carries."""
        made, self._unsaved = self._unsaved, set()
        return made

    def resolve(self, effect: Reply | Fail) -> None:
        """Settle a request with the core's answer; a request already done or gone is
        ignored (a late answer, or one failed by ``fail_unsaved``)."""
        request_id = effect.request_id
        future = self._futures.get(request_id)
        if future is None:
            return
        shape = self._shapes.pop(request_id, None) if self._shapes else None
        if shape is not None:
            self.forget(request_id)  # no ``wait`` forgets it: the core's answer is the end
        if future.done():
            return
        if isinstance(effect, Reply):
            future.set_result(effect.result if shape is None else shape(effect.result))
        else:
            future.set_exception(effect.error)

    def fail_unsaved(self, error: StorageError, made: set[int], failed_keys: set[bytes]) -> None:
        """The save carrying ``made`` failed and ``failed_keys`` went back to what the store
        holds: fail those puts with ``error`` and the gets of those keys with ``Unavailable``."""
        read_error = Unavailable(f"a write to this key failed ({error}); read it again")
        for request_id, (is_put, key) in list(self._keys.items()):
            future = self._futures.get(request_id)
            if future is None or future.done():
                continue
            if is_put and request_id in made:
                future.set_exception(error)
            elif not is_put and key in failed_keys:
                future.set_exception(read_error)

    def fail_all(self, error: BlocksError) -> None:
        """The node halted: every waiting request fails with ``error``; none is kept."""
        for future in self._futures.values():
            if not future.done():
                future.set_exception(error)
        self._futures.clear()
        self._keys.clear()
        self._unsaved.clear()
        self._shapes.clear()


def _expire(future: Answer, timeout_s: float) -> None:
    if not future.done():
        future.set_exception(TimeoutError_(f"no quorum within {timeout_s} s"))
