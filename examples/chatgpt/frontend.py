"""The chat front end: history, response cache, token budgets, streaming, usage.

Theory of operation. ``send`` handles one user message:

1. read the conversation from kv (siblings from two devices are merged, see
   ``conversation.merge``) and keep the read's version context;
2. build the window the model will see and its cache key; a cached answer (greedy decoding
   only) is streamed back at once and costs no model tokens;
3. otherwise charge the user's token bucket with the estimated prompt tokens plus
   ``max_tokens`` *before* generating (a refusal carries an honest ``retry_after_ms``), then
   stream the reply from the inference server, passing each piece to ``on_text`` as it comes;
4. write the history back with the read's context (a compare-and-set kv that refuses it
   because the other device wrote first gets it merged and written again), fill the cache, and meter the usage the
   server reported (prompt and completion tokens per user, requests, distinct users).

Charging the estimate up front (not the real count afterwards) means a burst of long
requests is refused before it reaches the GPU, at the price of charging for tokens a short
answer never used: the usual trade, chosen here because the model is the scarce resource.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from blocks.core.clock import Clock
from blocks.core.errors import InvalidArgument
from examples.chatgpt.conversation import (
    Message,
    cache_key,
    decode,
    encode,
    estimate_tokens,
    merge,
    window,
)
from examples.chatgpt.sse import stream_chat
from examples.chatgpt.stack import Stack
from examples.common import put_merging
from examples.ports import VersionedRead

__all__ = ["ChatFrontend", "Reply"]

CACHE_TTL_S = 600.0
CACHED_PIECE_CHARS = 8
"""A cached answer is replayed in pieces of this size, so the client code path is the same."""


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    cached: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retry_after_ms: int | None = None

    @property
    def refused(self) -> bool:
        return self.retry_after_ms is not None


def conversation_key(user: str, conversation: str) -> str:
    return f"conversation:{user}:{conversation}"


class ChatFrontend:
    """One front-end process; see the module docstring."""

    def __init__(
        self,
        stack: Stack,
        clock: Clock,
        *,
        max_tokens: int = 48,
        window_chars_max: int = 2000,
    ) -> None:
        if max_tokens < 1 or window_chars_max < 1:
            raise InvalidArgument("max_tokens and window_chars_max must be positive")
        self.stack, self.clock = stack, clock
        self.max_tokens = max_tokens
        self.window_chars_max = window_chars_max
        self._sequence = itertools.count(1)
        self.write_conflicts = 0
        """History writes a compare-and-set kv refused (then merged and written again)."""

    async def history(self, user: str, conversation: str) -> list[Message]:
        read = await self.stack.kv.get(conversation_key(user, conversation))
        return [] if read.value is None else merge(decode(s) for s in read.siblings)

    async def send(
        self, user: str, conversation: str, text: str, on_text: Callable[[str], None]
    ) -> Reply:
        key = conversation_key(user, conversation)
        read = await self.stack.kv.get(key)
        history = [] if read.value is None else merge(decode(s) for s in read.siblings)
        now = self.clock.now_ms()
        question = Message(f"{now:013d}-{user}-{next(self._sequence)}", "user", text, now)
        prompt = window(history, question, self.window_chars_max)
        reply_key = cache_key(self.stack.model, prompt, self.max_tokens)
        cached = await self.stack.cache.get(reply_key)
        if cached is not None:
            answer = cached.decode()
            for start in range(0, len(answer), CACHED_PIECE_CHARS):
                on_text(answer[start : start + CACHED_PIECE_CHARS])
            reply = Reply(answer, cached=True)
        else:
            reply = await self._generate(user, prompt, on_text)
            if reply.refused:
                await self.stack.counters.increment("requests:refused")
                return reply
            await self.stack.cache.put(reply_key, reply.text.encode(), ttl=CACHE_TTL_S)
        done = self.clock.now_ms()
        answer_message = Message(
            f"{done:013d}-{user}-{next(self._sequence)}", "assistant", reply.text, done
        )
        mine = [*history, question, answer_message]

        def remerge(current: VersionedRead) -> bytes:
            return encode(merge([mine, *(decode(s) for s in current.siblings)]))

        self.write_conflicts += await put_merging(
            self.stack.kv, key, encode(merge([mine])), read.context, remerge
        )
        await self._meter(user, reply)
        return reply

    async def _generate(
        self, user: str, prompt: list[Message], on_text: Callable[[str], None]
    ) -> Reply:
        cost = estimate_tokens(prompt) + self.max_tokens
        if cost > self.stack.token_burst:
            raise InvalidArgument(f"this conversation needs ~{cost} tokens, above any budget")
        decision = await self.stack.ratelimit.acquire(f"tokens:{user}", cost)
        if not decision.allowed:
            return Reply("", retry_after_ms=decision.retry_after_ms)
        body = {
            "model": self.stack.model,
            "messages": [m.as_openai() for m in prompt],
            "max_tokens": self.max_tokens,
            "temperature": 0,
        }
        pieces: list[str] = []
        prompt_tokens = completion_tokens = 0
        stack = self.stack
        async for chunk in stream_chat(
            stack.inference_host,
            stack.inference_port,
            body,
            api_key=stack.api_key,
            path=stack.inference_path,
        ):
            if chunk.text:
                pieces.append(chunk.text)
                on_text(chunk.text)
            if chunk.completion_tokens is not None:
                prompt_tokens = chunk.prompt_tokens or 0
                completion_tokens = chunk.completion_tokens
        return Reply("".join(pieces), False, prompt_tokens, completion_tokens)

    async def _meter(self, user: str, reply: Reply) -> None:
        counters = self.stack.counters
        await counters.increment("requests:cached" if reply.cached else "requests:generated")
        if reply.prompt_tokens:
            await counters.increment(f"tokens:prompt:{user}", reply.prompt_tokens)
        if reply.completion_tokens:
            await counters.increment(f"tokens:completion:{user}", reply.completion_tokens)
        await counters.add_distinct("users:active", [user])

    async def usage(self, user: str) -> tuple[int, int]:
        """(prompt tokens, completion tokens) metered for ``user``."""
        counters = self.stack.counters
        return (
            await counters.value(f"tokens:prompt:{user}"),
            await counters.value(f"tokens:completion:{user}"),
        )
