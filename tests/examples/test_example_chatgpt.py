"""The ChatGPT design end to end on the tiny random model."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from examples.chatgpt.conversation import Message, merge, window
from examples.chatgpt.frontend import Reply
from examples.chatgpt.session import run_session


def test_session_streams_remembers_caches_limits_and_meters() -> None:
    lines: list[str] = []
    streamed: list[str] = []
    # A refill of 1 token/s: dee's back-to-back questions spend the burst however slowly the
    # machine generates (at the default 20/s a loaded machine refilled faster than dee spent).
    report = asyncio.run(
        run_session(lines.append, streamed.append, max_tokens=16, tokens_per_s=1.0)
    )
    everything = "".join(streamed)

    asked: dict[tuple[str, str], list[tuple[str, Reply]]] = {
        (u, c): [] for u, c, _, _ in report.replies
    }
    for user, conversation, question, reply in report.replies:
        asked[(user, conversation)].append((question, reply))
    for (user, conversation), exchanges in asked.items():
        history = report.histories[(user, conversation)]
        kept = [(q, r) for q, r in exchanges if not r.refused]
        assert len(history) == 2 * len(kept)
        if user != "cy":  # cy's two devices raced: any order of the pairs is fine
            assert [m.content for m in history] == [x for q, r in kept for x in (q, r.text)]
            assert [m.role for m in history] == ["user", "assistant"] * len(kept)
        else:
            assert {m.content for m in history if m.role == "user"} == {q for q, _ in kept}

    (_, _, _, first), (_, _, _, second), (_, _, _, repeat) = report.replies[:3]
    assert not first.cached and first.completion_tokens > 0
    assert second.prompt_tokens > first.prompt_tokens  # the first exchange is in its window
    assert repeat.cached and repeat.text == first.text
    for user, _, question, reply in report.replies:
        if user != "cy":
            assert question in everything and reply.text in everything

    dee = [r for u, _, _, r in report.replies if u == "dee"]
    assert not dee[0].refused
    assert any(r.refused and (r.retry_after_ms or 0) > 0 for r in dee)

    for user in report.usage:
        replies = [r for u, _, _, r in report.replies if u == user]
        assert report.usage[user] == (
            sum(r.prompt_tokens for r in replies),
            sum(r.completion_tokens for r in replies),
        )
    generated = [r for *_, r in report.replies if not r.cached and not r.refused]
    assert report.generated == len(generated)
    assert report.cached == sum(r.cached for *_, r in report.replies)
    assert report.refused == sum(r.refused for *_, r in report.replies)
    assert report.active_users == 4


messages = st.lists(
    st.tuples(st.sampled_from(["user", "assistant"]), st.text(max_size=30)), max_size=12
)


@given(messages, st.integers(min_value=0, max_value=200))
def test_window_is_the_newest_suffix_that_fits_and_starts_with_the_user(
    turns: list[tuple[str, str]], spare: int
) -> None:
    history = [Message(f"{i:04d}", role, text, i) for i, (role, text) in enumerate(turns)]
    new = Message("new", "user", "hello?", 10_000)
    got = window(history, new, len(new.content) + spare)
    assert got[-1] == new
    assert got[0].role == "user"
    kept = got[:-1]
    assert kept == history[len(history) - len(kept) :]
    assert sum(len(m.content) for m in got) <= len(new.content) + spare


@given(messages, st.randoms())
def test_merge_of_concurrent_histories_loses_nothing(
    turns: list[tuple[str, str]], rng: random.Random
) -> None:
    history = [Message(f"{i:04d}", role, text, i) for i, (role, text) in enumerate(turns)]
    cut = len(history) // 2
    a, b = history[:cut] + history[cut::2], history[:cut] + history[cut + 1 :: 2]
    assert merge([a, b]) == history
    assert merge([b, a]) == history


def test_session_runs_against_a_base_url_through_the_router() -> None:
    # The example points at any OpenAI-compatible URL; here a router over one engine.
    from blocks.inference.async_engine import AsyncEngine
    from blocks.inference.engine import EngineConfig
    from blocks.inference.factory import load_engine
    from blocks.inference.router import Router
    from blocks.inference.server import InferenceServer

    async def main() -> tuple[Any, dict[str, Any]]:
        engine = load_engine("tiny-random", config=EngineConfig(num_blocks=128, max_model_len=512))
        server = InferenceServer(AsyncEngine(engine), model_name="tiny-random", api_keys=["k"])
        port = await server.start()
        router = Router([f"http://127.0.0.1:{port}"])
        router_port = await router.start()
        try:
            report = await run_session(
                lambda _: None,
                lambda _: None,
                max_tokens=8,
                base_url=f"http://127.0.0.1:{router_port}/v1",
                api_key="k",
            )
            return report, router.stats()
        finally:
            await router.stop()
            await server.stop()

    report, stats = asyncio.run(main())
    generated = [r for *_, r in report.replies if not r.cached and not r.refused]
    assert generated and all(r.completion_tokens > 0 for r in generated)
    assert stats["requests"] == len(generated)
    assert any(r.cached for *_, r in report.replies)
