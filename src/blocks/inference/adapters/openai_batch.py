"""``OpenAIBatchEngine``: the step-driven ``BatchEngine`` API over an OpenAI-compatible server.

Theory of operation
-------------------
The server batches; this object only gives its streams the ``BatchEngine`` shape, so code
and tests written against ``add_request``/``step``/``abort`` (the engine contract among them)
run against a remote server. It owns an event loop on one background thread, where each
request is an ``OpenAIGenerator.stream``:

* ``add_request`` starts the stream and waits for its first delta (our server answers its
  status with the first token), so bad input raises ``InvalidArgument`` and a refusal
  ``Overloaded`` from ``add_request`` itself, as the protocol says; the rest of the stream
  is pumped into one inbox.
* ``step`` waits (at most ``STEP_WAIT_S``) until some delta is there, then returns what has
  arrived, merged to at most one delta per request. A request is live until ``step`` has
  handed out its final delta, whatever the server has done meanwhile.
* ``abort`` cancels the stream's task (closing the HTTP response cancels the request on
  the server) and drops what it had buffered: no delta of it comes out afterwards.

Deltas carry text and no token ids (the OpenAI API has none; see ``openai``). For a text
prompt ``add_request`` returns 0: the prompt's length in tokens comes with the final delta.
Bounds: ``LIVE_REQUESTS_MAX`` live requests (``Overloaded`` past it), ``CALL_TIMEOUT_S`` for
``add_request``'s wait.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from blocks.core.errors import Conflict, FailedPrecondition, Overloaded
from blocks.inference.adapters.openai import OpenAIGenerator
from blocks.inference.params import SamplingParams, TokenDelta

__all__ = ["CALL_TIMEOUT_S", "LIVE_REQUESTS_MAX", "STEP_WAIT_S", "OpenAIBatchEngine"]

LIVE_REQUESTS_MAX = 256
STEP_WAIT_S = 30.0
CALL_TIMEOUT_S = 120.0

_Item = tuple[str, TokenDelta | BaseException]
T = TypeVar("T")


class OpenAIBatchEngine:
    """A ``BatchEngine`` whose batches run on the OpenAI-compatible server at ``base_url``
    (``http://host:port/v1``). Call it from one thread at a time."""

    def __init__(self, base_url: str, *, api_key: str = "", model: str = "") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._generator = OpenAIGenerator(base_url, api_key=api_key, model=model)
        self._inbox: queue.Queue[_Item] = queue.Queue()
        self._tasks: dict[str, Future[None]] = {}
        self._live: set[str] = set()
        self._closed = False

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = CALL_TIMEOUT_S) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout_s)

    def add_request(
        self, request_id: str, prompt: str | Sequence[int], params: SamplingParams
    ) -> int:
        if self._closed:
            raise FailedPrecondition("the engine is closed")
        if request_id in self._live:
            raise Conflict(f"request {request_id!r} is live")
        if len(self._live) >= LIVE_REQUESTS_MAX:
            raise Overloaded(f"{LIVE_REQUESTS_MAX} requests are live", retry_after_ms=100)
        stream = self._generator.stream(prompt, params)
        first = self._run(_first(stream))
        self._live.add(request_id)
        self._inbox.put((request_id, first))
        if first.finish_reason is None:
            pump = self._pump(request_id, stream)
            self._tasks[request_id] = asyncio.run_coroutine_threadsafe(pump, self._loop)
        else:
            assert isinstance(stream, AsyncGenerator)
            self._run(stream.aclose())
        return 0 if isinstance(prompt, str) else len(prompt)

    async def _pump(self, request_id: str, stream: AsyncIterator[TokenDelta]) -> None:
        try:
            async for delta in stream:
                self._inbox.put((request_id, delta))
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # handed to the caller by step()
            self._inbox.put((request_id, error))

    def abort(self, request_id: str) -> bool:
        if request_id not in self._live:
            return False
        self._live.discard(request_id)
        task = self._tasks.pop(request_id, None)
        if task is not None:
            task.cancel()
        return True

    def step(self) -> list[TokenDelta]:
        """What arrived since the last step, one merged delta per live request; waits up to
        ``STEP_WAIT_S`` for the first when nothing has. A stream's failure is raised here."""
        if not self._live:
            return []
        items: list[_Item] = []
        try:
            items.append(self._inbox.get(timeout=STEP_WAIT_S))
            while True:
                items.append(self._inbox.get_nowait())
        except queue.Empty:
            pass
        merged: dict[str, TokenDelta] = {}
        for request_id, item in items:
            if request_id not in self._live:
                continue  # aborted: nothing of it comes out any more
            if isinstance(item, BaseException):
                self.abort(request_id)
                raise item
            merged[request_id] = _merge(merged.get(request_id), item)
        for request_id, delta in merged.items():
            if delta.finish_reason is not None:
                self._live.discard(request_id)
                self._tasks.pop(request_id, None)
        return [
            TokenDelta(request_id, d.token_ids, d.text, d.logprobs, d.finish_reason,
                       d.prompt_tokens, d.completion_tokens)
            for request_id, d in merged.items()
        ]  # fmt: skip

    def has_work(self) -> bool:
        return bool(self._live)

    def close(self) -> None:
        """Cancel every stream, close the client and stop the loop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for request_id in list(self._live):
            self.abort(request_id)
        try:
            self._run(self._generator.close(), timeout_s=STEP_WAIT_S)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(STEP_WAIT_S)
            if not self._thread.is_alive():
                self._loop.close()


async def _first(stream: AsyncIterator[TokenDelta]) -> TokenDelta:
    return await anext(stream)


def _merge(earlier: TokenDelta | None, later: TokenDelta) -> TokenDelta:
    if earlier is None:
        return later
    return TokenDelta(
        later.request_id,
        earlier.token_ids + later.token_ids,
        earlier.text + later.text,
        earlier.logprobs + later.logprobs,
        later.finish_reason,
        later.prompt_tokens,
        later.completion_tokens,
    )
