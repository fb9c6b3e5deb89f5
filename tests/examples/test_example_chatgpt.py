"""The ChatGPT design end to end on the tiny random model."""

from __future__ import annotations

import asyncio
import random

from hypothesis import given
from hypothesis import strategies as st

from examples.chatgpt.conversation import Message, merge, window
from examples.chatgpt.frontend import Reply
from examples.chatgpt.session import run_session


def test_session_streams_remembers_caches_limits_and_meters() -> None:
    lines: list[str] = []
    streamed: list[str] = []
    report = asyncio.run(run_session(lines.append, streamed.append, max_tokens=16))
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
