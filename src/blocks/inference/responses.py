"""Writing one request's answer from its engine streams: whole JSON or server-sent events.

Theory of operation: a request with ``n`` choices runs as ``n`` engine sequences, one stream
each (they share the prompt, so after the first the prefix cache serves it). The server
waits for every stream's first delta before answering, so a refusal (admission, a prompt too
long) is still a plain error status; then:

* ``write_whole`` drains the streams one after another (the engine runs them together
  meanwhile) and writes one ``chat.completion`` or ``text_completion`` with ``n`` choices;
* ``write_events`` merges the streams as their deltas arrive, each chunk tagged with its
  choice's ``index``, then the usage chunk when asked, then ``[DONE]``.

A forced tool call (``parsed.tool_call``) is answered in OpenAI's tool-call shape: whole,
by ``tools.tool_call_message``; streamed, through one ``tools.ToolCallStream`` per choice.

Usage counts the prompt once and sums the choices' generated tokens. Closing the streams
(cancelling generation) is the caller's job, after these return or are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from blocks.core.errors import Overloaded
from blocks.inference import openai_api as oa
from blocks.inference import tools
from blocks.inference.engine import join_deltas
from blocks.inference.http import EventStream
from blocks.inference.params import TokenDelta

__all__ = ["Answer", "write_events", "write_whole"]

Stream = AsyncIterator[TokenDelta]


@dataclass(frozen=True, slots=True)
class Answer:
    """What every chunk or response of one request shares."""

    rid: str
    chat: bool
    model: str
    parsed: oa.ParsedRequest
    decode: Callable[[list[int]], str]
    created: int  # unix seconds


async def write_whole(
    answer: Answer, firsts: Sequence[TokenDelta], streams: Sequence[Stream]
) -> dict[str, Any]:
    """The whole response body; raises ``Overloaded`` if a stream is expired meanwhile."""
    dones = []
    for first, stream in zip(firsts, streams, strict=True):
        deltas = [first]
        if first.finish_reason is None:
            deltas += [delta async for delta in stream]
        dones.append(join_deltas(answer.rid, first.prompt_tokens, deltas))
    build = oa.chat_response if answer.chat else oa.completion_response
    want_logprobs = answer.parsed.top_logprobs is not None
    body = build(answer.rid, answer.created, answer.model, dones, want_logprobs, answer.decode)
    if answer.parsed.tool_call:
        for index, (choice, done) in enumerate(zip(body["choices"], dones, strict=True)):
            reason = done.finish_reason.value
            message, reason = tools.tool_call_message(done.text, reason, _call_id(answer, index))
            choice["message"], choice["finish_reason"] = message, reason
    return body


def _call_id(answer: Answer, index: int) -> str:
    return f"call_{answer.rid}_{index}"


async def write_events(
    answer: Answer,
    firsts: Sequence[TokenDelta],
    streams: Sequence[Stream],
    events: EventStream,
) -> None:
    """The whole event stream, from the response head to ``[DONE]``."""
    rid, created, model = answer.rid, answer.created, answer.model
    await events.start()
    if answer.chat:
        for index in range(len(streams)):
            role = {"role": "assistant", "content": ""}
            await events.send(oa.chat_chunk(rid, created, model, role, None, index=index))
    generated = [first.completion_tokens for first in firsts]
    calls = [tools.ToolCallStream(_call_id(answer, i)) for i in range(len(streams))]
    try:
        async with contextlib.aclosing(_merged(firsts, streams)) as merged:
            async for index, delta in merged:
                generated[index] = delta.completion_tokens
                if answer.parsed.tool_call:
                    reason = None if delta.finish_reason is None else delta.finish_reason.value
                    body, reason = calls[index].push(delta.text, reason)
                    await events.send(oa.chat_chunk(rid, created, model, body, reason, None, index))
                else:
                    await events.send(_chunk(answer, index, delta))
    except Overloaded as error:
        await events.send(oa.error_body(str(error), "rate_limit_exceeded"))
    if answer.parsed.include_usage:
        kind = "chat.completion.chunk" if answer.chat else "text_completion"
        prompt_tokens = firsts[0].prompt_tokens
        await events.send(oa.usage_chunk(rid, created, model, kind, prompt_tokens, sum(generated)))
    await events.send("[DONE]")
    await events.end()


def _chunk(answer: Answer, index: int, delta: TokenDelta) -> dict[str, Any]:
    reason = None if delta.finish_reason is None else delta.finish_reason.value
    rid, created, model = answer.rid, answer.created, answer.model
    want_logprobs = answer.parsed.top_logprobs is not None
    if not answer.chat:
        entries = delta.logprobs if want_logprobs else None
        return oa.completion_chunk(
            rid, created, model, delta.text, reason, index, entries, answer.decode
        )
    logprobs = None
    if want_logprobs and delta.logprobs:
        logprobs = oa.chat_logprobs(delta.logprobs, answer.decode)
    content = {"content": delta.text} if delta.text or reason is None else {}
    return oa.chat_chunk(rid, created, model, content, reason, logprobs, index)


async def _merged(
    firsts: Sequence[TokenDelta], streams: Sequence[Stream]
) -> AsyncGenerator[tuple[int, TokenDelta], None]:
    """(choice index, delta) in arrival order, each stream's first delta first."""
    for index, first in enumerate(firsts):
        yield index, first
    if len(streams) == 1:  # the common case needs no tasks
        if firsts[0].finish_reason is None:
            async for delta in streams[0]:
                yield 0, delta
        return
    queue: asyncio.Queue[tuple[int, TokenDelta | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, stream: Stream) -> None:
        try:
            async for delta in stream:
                await queue.put((index, delta))
        except Exception as error:  # handed to the consumer, which raises it
            await queue.put((index, error))
        await queue.put((index, None))

    open_streams = [i for i, first in enumerate(firsts) if first.finish_reason is None]
    pumps = [asyncio.create_task(pump(i, streams[i])) for i in open_streams]
    try:
        remaining = len(pumps)
        while remaining:
            index, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
