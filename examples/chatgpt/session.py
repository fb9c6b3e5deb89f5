"""A scripted ChatGPT conversation: streamed replies, history, cache, budgets, usage.

``run_session`` starts the stack with ``model`` (``tiny-random`` in tests: random weights and
a character tokenizer, so its replies are gibberish but real model output; ``smollm2`` for the
real thing), then plays: a user asks two questions in one conversation (the second sees the
first in its window); a second user asks the first user's opening question and gets the
cached answer without touching the model; a third user writes from two devices at once and
both exchanges end up in the history; a fourth user sends long messages back to back until
the token budget refuses one. It returns a ``ChatReport`` for tests to check.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from blocks.core.clock import Clock, SystemClock
from examples.backends import Backend, Placement, parse_backend
from examples.chatgpt.conversation import Message
from examples.chatgpt.frontend import ChatFrontend, Reply
from examples.chatgpt.stack import start_stack
from examples.common import Say, Services

__all__ = ["ChatReport", "run_session"]

TOKENS_PER_S = 20.0
TOKEN_BURST = 400
WINDOW_CHARS_MAX = 1000
"""Small enough that a full window plus ``max_tokens`` always fits ``TOKEN_BURST``."""
TINY_WINDOW_CHARS_MAX = 300
"""``tiny-random`` has a 512-token context and a character tokenizer: a character is a token."""
TOPICS = (
    "the printing press",
    "the steam engine",
    "the telegraph",
    "the telephone",
    "radio",
    "the transistor",
    "the internet",
    "the smartphone",
)
LONG_QUESTIONS = tuple(
    f"Please summarise, in detail, the history of {topic}: who invented it, how it changed "
    "the spread of knowledge, and what it meant for science, trade and everyday life."
    for topic in TOPICS
)


@dataclass(slots=True)
class ChatReport:
    replies: list[tuple[str, str, str, Reply]] = field(default_factory=list)
    """(user, conversation, question, reply) in the order sent."""
    histories: dict[tuple[str, str], list[Message]] = field(default_factory=dict)
    usage: dict[str, tuple[int, int]] = field(default_factory=dict)
    generated: int = 0
    cached: int = 0
    refused: int = 0
    active_users: int = 0
    write_conflicts: int = 0
    """History writes a compare-and-set kv refused (then merged and written again)."""
    seconds: float = 0.0
    placement: Placement = field(default_factory=lambda: Placement(Backend.CLUSTER))

    def summary(self) -> dict[str, object]:
        return {
            "replies": [
                {
                    "user": u,
                    "question": q,
                    "answer": r.text,
                    "cached": r.cached,
                    "refused": r.refused,
                }
                for u, _, q, r in self.replies
            ],
            "history_lengths": {f"{u}/{c}": len(h) for (u, c), h in self.histories.items()},
            "usage": self.usage,
            "requests": {
                "generated": self.generated,
                "cached": self.cached,
                "refused": self.refused,
            },
            "active_users": self.active_users,
            "write_conflicts": self.write_conflicts,
            "seconds": round(self.seconds, 2),
            **self.placement.summary(),
        }


async def run_session(
    say: Say,
    stream: Callable[[str], None],
    *,
    model: str = "tiny-random",
    device: str | None = None,
    max_tokens: int = 32,
    clock: Clock | None = None,
    base_url: str | None = None,
    api_key: str = "",
    tokens_per_s: float = TOKENS_PER_S,
    backend: Backend | str = Backend.CLUSTER,
) -> ChatReport:
    """Run the script once; ``stream`` receives reply text as it is generated.

    ``tokens_per_s``: each user's token budget refill rate (the burst is ``TOKEN_BURST``). On
    a slow machine a reply can take long enough to refill what it spent, and dee's back-to-back
    questions are then never refused: a test that checks the refusal passes a low rate.

    ``base_url``: an OpenAI-compatible server (``http://HOST:PORT/v1``: ``blocks inference
    serve`` or ``route``, vLLM, llama.cpp's server) serving ``model``, instead of an engine
    started here."""
    started = time.monotonic()
    report = ChatReport(placement=Placement(parse_backend(backend)))
    with tempfile.TemporaryDirectory(prefix="examples-chatgpt-") as directory:
        async with Services() as services:
            say(f"loading {model} and starting the stack..." if base_url is None else "starting...")
            stack = await start_stack(
                services,
                Path(directory),
                backend=report.placement.backend,
                model=model,
                tokens_per_s=tokens_per_s,
                token_burst=TOKEN_BURST,
                device=device,
                base_url=base_url,
                api_key=api_key,
            )
            window_chars = TINY_WINDOW_CHARS_MAX if model == "tiny-random" else WINDOW_CHARS_MAX
            report.placement = stack.placement
            for line in stack.placement.lines():
                say(line)
            chat = ChatFrontend(
                stack, clock or SystemClock(), max_tokens=max_tokens, window_chars_max=window_chars
            )

            async def ask(user: str, conversation: str, question: str) -> Reply:
                """Send one message, streaming the reply as it arrives."""
                stream(f"{user}> {question}\nbot> ")
                reply = await chat.send(user, conversation, question, stream)
                note = " (from the response cache)" if reply.cached else ""
                if reply.refused:
                    note = f"[refused: token budget spent, retry after {reply.retry_after_ms} ms]"
                stream(f"{note}\n")
                report.replies.append((user, conversation, question, reply))
                return reply

            await ask("ana", "geo", "What is the capital of France?")
            await ask("ana", "geo", "And what is the capital of Italy?")
            await ask("bo", "quiz", "What is the capital of France?")
            say("cy writes from a phone and a laptop at the same moment:")
            devices = ("Name a primary color.", "Name a warm color.")
            replies = await asyncio.gather(
                *(chat.send("cy", "colors", question, lambda _: None) for question in devices)
            )
            for question, reply in zip(devices, replies, strict=True):
                report.replies.append(("cy", "colors", question, reply))
            both = await chat.history("cy", "colors")
            say(f"  cy's history holds {len(both)} messages: nothing either device said was lost")
            report.histories[("cy", "colors")] = both
            for question in LONG_QUESTIONS:  # back to back, until the token budget says no
                if (await ask("dee", "essay", question)).refused:
                    break
            for user, conversation in {(u, c) for u, c, _, _ in report.replies}:
                report.histories[(user, conversation)] = await chat.history(user, conversation)
            for user in sorted({u for u, _, _, _ in report.replies}):
                report.usage[user] = await chat.usage(user)
            report.generated = await stack.counters.value("requests:generated")
            report.cached = await stack.counters.value("requests:cached")
            report.refused = await stack.counters.value("requests:refused")
            report.active_users = await stack.counters.count_distinct("users:active")
            report.write_conflicts = chat.write_conflicts
            say(
                f"usage: {report.generated} generated, {report.cached} from cache, "
                f"{report.refused} refused; ~{report.active_users} active users; tokens per user "
                f"(prompt, completion) {report.usage}"
            )
            if stack.engine is not None:
                snapshot = stack.engine.metrics.snapshot()
                say(
                    f"engine: {snapshot['generation_tokens']:.0f} tokens generated, prefix-cache hit "
                    f"rate {snapshot['prefix_cache_hit_rate']:.0%}"
                )
    report.seconds = time.monotonic() - started
    say(f"everything stopped; session took {report.seconds:.1f}s")
    return report
