"""The inference block's interfaces: a step-driven batch engine and an async text generator.

``BatchEngine`` is what ``LLMEngine`` implements and what ``contract.EngineContract`` checks:
a synchronous object driven by ``step()``. ``TextGenerator`` is what ``AsyncEngine``
implements and what the HTTP server uses: per-request async iterators of text deltas with
admission control in front.

Contract shared by both:

* Greedy output (``temperature == 0``) of a request is the same whatever else is batched with
  it and whenever it arrived, and equal to the request run alone (batch invariance), up to
  floating-point near-ties of the top two logits.
* With a ``seed``, sampled output depends only on the request.
* Every accepted request ends exactly once: a final delta with ``finish_reason`` set
  (``stop``, ``length`` or ``cancelled``), after which the request id is free again.
* Stop strings are never part of the returned text; text deltas are whole characters and
  join to the full output.
* Bad input raises ``InvalidArgument`` and queues nothing; a full queue or spent budget
  raises ``Overloaded`` with ``retry_after_ms`` before anything is queued.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

from blocks.inference.params import Completion, SamplingParams, TokenDelta

__all__ = ["BatchEngine", "TextGenerator"]


@runtime_checkable
class BatchEngine(Protocol):
    def add_request(
        self, request_id: str, prompt: str | Sequence[int], params: SamplingParams
    ) -> int:
        """Queue a request (text or token ids); return its prompt length in tokens.

        Raises ``InvalidArgument`` for an empty or out-of-vocabulary prompt, ``Conflict``
        when ``request_id`` is live, ``Overloaded`` when the queue is full.
        """
        ...

    def abort(self, request_id: str) -> bool:
        """Cancel a live request, releasing its KV blocks; False if it is not live.

        An aborted request produces no further deltas.
        """
        ...

    def step(self) -> list[TokenDelta]:
        """Run one batch; at most one delta per request, in no promised order.

        A delta holds one new token, or several when speculative drafts were accepted.
        """
        ...

    def has_work(self) -> bool:
        """Whether any request is waiting or running."""
        ...


@runtime_checkable
class TextGenerator(Protocol):
    def stream(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams,
        *,
        api_key: str = "",
        priority: int = 0,
    ) -> AsyncIterator[TokenDelta]:
        """Generate, yielding deltas as tokens appear; the last one has ``finish_reason``.

        Raises ``Overloaded`` (with an honest ``retry_after_ms``) on the first iteration when
        admission control refuses, or later if the request expires in the queue. Closing the
        iterator early (or cancelling the task reading it) cancels the request.
        """
        ...

    async def complete(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams,
        *,
        api_key: str = "",
        priority: int = 0,
    ) -> Completion:
        """Generate to the end and return everything at once."""
        ...
