"""The asyncio driver: admission control in front, the engine stepping in a worker thread.

Theory of operation: ``AsyncEngine`` owns one ``LLMEngine`` and one ``AdmissionController``
and is their only caller. ``stream()`` validates and tokenizes a request, asks admission
control (which may refuse at once with ``Overloaded``) and then waits on a per-request queue.
One driver task loops:

1. expire requests that queued too long (their streams raise ``Overloaded``);
2. apply cancellations (a stream closed early, a client that went away);
3. move requests from admission control into the engine while the engine's own waiting
   queue is shorter than ``max_num_seqs``, so fairness and priority are decided here, where
   the whole backlog is visible;
4. run ``engine.step()`` in a worker thread (the event loop keeps serving HTTP meanwhile) and
   hand each delta to its stream's queue. While nothing waits for the driver (no request
   queued in admission control, no cancellation, not stopping) the worker thread steps
   again at once and hands each step's deltas to the event loop itself
   (``call_soon_threadsafe``): one hop to the thread and back per step would put two thread
   wake-ups on every token's path, which batch-1 decode feels most.

The engine is only touched by the driver, between steps, so nothing in it needs a lock.
Budgets reserved at admission are refunded to what each request really used when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from blocks.core.errors import BlocksError, InvalidArgument, Overloaded, Unavailable
from blocks.inference.admission import AdmissionConfig, AdmissionController
from blocks.inference.engine import LLMEngine, join_deltas
from blocks.inference.metrics import EngineMetrics
from blocks.inference.params import Completion, SamplingParams, TokenDelta
from blocks.inference.tokenizer import TokenizerLike

__all__ = ["AsyncEngine"]

log = logging.getLogger(__name__)
IDLE_POLL_S = 0.05  # how often an idle driver checks for queue-time expiry


@dataclass(slots=True)
class _Stream:
    request_id: str
    api_key: str
    prompt_ids: list[int]
    params: SamplingParams
    reserved: int
    queue: asyncio.Queue[TokenDelta | BaseException] = field(default_factory=asyncio.Queue)
    in_engine: bool = False
    completion_tokens: int = 0
    done: bool = False


class AsyncEngine:
    """Streams of text deltas over a shared batched engine; see the module docstring."""

    def __init__(self, engine: LLMEngine, admission: AdmissionController | None = None) -> None:
        self.engine = engine
        self.admission = admission or AdmissionController(AdmissionConfig(), engine.clock)
        self._streams: dict[str, _Stream] = {}
        self._aborts: list[str] = []
        self._ids = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False  # read by the worker thread between steps (``_steps``)

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._drive(), name="inference-driver")

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._stopping = True
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for stream in list(self._streams.values()):
            self._fail(stream, Unavailable("engine stopped"))

    async def __aenter__(self) -> AsyncEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ what it serves

    @property
    def tokenizer(self) -> TokenizerLike:
        """The served model's tokenizer (chat templates, decoding)."""
        return self.engine.tokenizer

    @property
    def vocab_size(self) -> int:
        """Number of token ids the served model knows."""
        return self.engine.model.config.vocab_size

    @property
    def metrics(self) -> EngineMetrics:
        """The engine's metrics, shared with the server that counts its HTTP rejections."""
        return self.engine.metrics

    # ------------------------------------------------------------------ requests

    def _prepare(self, prompt: str | Sequence[int], params: SamplingParams) -> list[int]:
        ids = self.engine.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        limit = self.engine.config.max_model_len
        if not ids:
            raise InvalidArgument("prompt is empty")
        if len(ids) >= limit:
            raise InvalidArgument(f"prompt of {len(ids)} tokens does not fit the {limit} context")
        return ids

    async def stream(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams,
        *,
        api_key: str = "",
        priority: int = 0,
    ) -> AsyncGenerator[TokenDelta, None]:
        """Deltas of one request; closing the iterator early cancels the request."""
        if self._task is None:
            raise Unavailable("engine is not running")
        ids = self._prepare(prompt, params)
        request_id = f"req-{next(self._ids)}"
        reserved = len(ids) + params.max_tokens
        try:
            self.admission.submit(request_id, api_key, reserved, priority)
        except Overloaded:
            self.engine.metrics.count_request("overloaded")
            raise
        state = _Stream(request_id, api_key, ids, params, reserved)
        self._streams[request_id] = state
        self._wake.set()
        try:
            while True:
                item = await state.queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            if not state.done:
                self._cancel(state)

    async def complete(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams,
        *,
        api_key: str = "",
        priority: int = 0,
    ) -> Completion:
        deltas = [d async for d in self.stream(prompt, params, api_key=api_key, priority=priority)]
        return join_deltas(deltas[0].request_id, deltas[0].prompt_tokens, deltas)

    def _cancel(self, state: _Stream) -> None:
        state.done = True
        self._streams.pop(state.request_id, None)
        if self.admission.remove(state.request_id) is not None:
            self.admission.release(state.api_key, state.reserved, 0)
            self.engine.metrics.count_request("cancelled")
        elif state.in_engine:
            self._aborts.append(state.request_id)
            self._wake.set()

    def _fail(self, state: _Stream, error: BaseException) -> None:
        state.done = True
        self._streams.pop(state.request_id, None)
        used = len(state.prompt_ids) + state.completion_tokens
        self.admission.release(state.api_key, state.reserved, used)
        state.queue.put_nowait(error)

    # ------------------------------------------------------------------ driver

    def _between_steps(self) -> None:
        for ticket in self.admission.expire():
            state = self._streams.get(ticket.request_id)
            self.engine.metrics.count_request("rejected")
            if state is not None:
                retry_ms = self.admission.config.max_queue_time_ms // 2
                self._fail(state, Overloaded("queued too long", retry_after_ms=retry_ms))
        aborts, self._aborts = self._aborts, []
        for request_id in aborts:
            self.engine.abort(request_id)
        while self.engine.num_waiting < self.engine.config.max_num_seqs:
            next_ticket = self.admission.pop_next()
            if next_ticket is None:
                break
            state = self._streams.get(next_ticket.request_id)
            if state is None:
                continue
            try:
                self.engine.add_request(next_ticket.request_id, state.prompt_ids, state.params)
            except BlocksError as error:
                self._fail(state, error)
                continue
            state.in_engine = True

    def _deliver(self, deltas: list[TokenDelta]) -> None:
        for delta in deltas:
            state = self._streams.get(delta.request_id)
            if state is None:
                continue
            state.completion_tokens = delta.completion_tokens
            state.queue.put_nowait(delta)
            if delta.finish_reason is not None:
                state.done = True
                del self._streams[delta.request_id]
                used = len(state.prompt_ids) + state.completion_tokens
                self.admission.release(state.api_key, state.reserved, used)

    def _steps(self, loop: asyncio.AbstractEventLoop) -> list[TokenDelta]:
        """In the worker thread: engine steps back to back until the driver is wanted (see
        the module docstring); the last step's deltas are returned, every earlier step's are
        delivered on ``loop`` in order, before the return is seen there. Only this thread
        touches the engine meanwhile; what it reads of the driver's state (a list's and a
        dict's length, a flag) is at worst one step stale."""
        while True:
            deltas = self.engine.step()
            if (
                self._stopping
                or self._aborts
                or self.admission.queued
                or not self.engine.has_work()
            ):
                return deltas
            loop.call_soon_threadsafe(self._deliver, deltas)

    async def _drive(self) -> None:
        while True:
            self._between_steps()
            if not self.engine.has_work():
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_POLL_S)
                continue
            try:
                deltas = await asyncio.to_thread(self._steps, asyncio.get_running_loop())
            except Exception as error:  # a model failure fails its requests, not the server
                log.exception("engine step failed")
                for state in [s for s in self._streams.values() if s.in_engine]:
                    self.engine.abort(state.request_id)
                    self._fail(state, Unavailable(f"engine step failed: {type(error).__name__}"))
                continue
            self._deliver(deltas)
