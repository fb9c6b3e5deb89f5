"""``logit_bias``, ``ignore_eos``, ``stop_token_ids`` and streamed logprobs through the
official client, against a real ``blocks inference serve --model tiny-random`` process.

``tiny-random`` uses the character tokenizer: token id ``i`` (1 to 95) is the printable
character ``chr(i + 31)`` and id 0 is the end token, so each test can name the tokens it
biases, bans or stops on. One shared client (``max_retries=0``, reused connections) serves
the session (``conftest.tiny_served``); greedy requests make every expectation exact.
"""

from __future__ import annotations

from typing import Any

import pytest
from tiny_server import TinyServed

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.process

PROMPT = "The quick brown fox"
MESSAGES = [{"role": "user", "content": PROMPT}]
EOS = 0


def token_of(char: str) -> int:
    return ord(char) - 31


Served = TinyServed


@pytest.fixture
def served(tiny_served: TinyServed) -> TinyServed:
    """The session's shared tiny-random server (``conftest.tiny_served``)."""
    return tiny_served


def chat(served: Served, **options: Any) -> Any:
    arguments = {"model": "tiny-random", "messages": MESSAGES, "max_tokens": 12, "temperature": 0}
    return served.client.chat.completions.create(**{**arguments, **options})


def complete(served: Served, **options: Any) -> Any:
    arguments = {"model": "tiny-random", "prompt": PROMPT, "max_tokens": 12, "temperature": 0}
    return served.client.completions.create(**{**arguments, **options})


# ---------------------------------------------------------------- logit_bias


def test_logit_bias_minus_100_bans_and_plus_100_forces(served: Served) -> None:
    for create, text_of in (
        (chat, lambda r: r.choices[0].message.content),
        (complete, lambda r: r.choices[0].text),
    ):
        plain = text_of(create(served))
        assert plain, "the greedy answer is empty; pick another prompt"
        banned = {str(token_of(c)): -100 for c in set(plain)}
        other = text_of(create(served, logit_bias=banned))
        assert other and not set(other) & set(plain), (plain, other)
        forced = text_of(create(served, logit_bias={str(token_of("Q")): 100}))
        assert forced == "Q" * 12
        # Sampling at temperature 2 still only ever picks among the +100 tokens.
        either = {str(token_of("x")): 100, str(token_of("y")): 100}
        sampled = text_of(create(served, logit_bias=either, temperature=2.0, seed=3))
        assert len(sampled) == 12 and set(sampled) <= {"x", "y"}


def test_logit_bias_is_validated_with_a_400_naming_it(served: Served) -> None:
    bad = [
        {"96": 1},  # past the vocabulary (96 tokens)
        {"1": 100.5},
        {"1": -101},
        {"one": 1},
        {str(i): 1 for i in range(301)},
        {str(i): -100 for i in range(96)},  # nothing left to pick
    ]
    for bias in bad:
        for create in (chat, complete):
            with pytest.raises(openai.BadRequestError) as caught:
                create(served, logit_bias=bias)
            assert caught.value.body["param"] == "logit_bias", (bias, caught.value.body)
    schema = {"type": "json_object"}
    with pytest.raises(openai.BadRequestError) as caught:
        chat(served, logit_bias={"5": 1}, response_format=schema)
    assert caught.value.body["param"] == "logit_bias"
    assert chat(served, logit_bias={}).choices[0].message.content  # empty: harmless


# ---------------------------------------------------------------- vLLM's extensions


def test_ignore_eos_runs_past_the_end_token(served: Served) -> None:
    eos_first = {str(EOS): 100}  # the end token is the only choice at every step
    ended = complete(served, logit_bias=eos_first, max_tokens=7)
    assert ended.choices[0].finish_reason == "stop"
    assert ended.usage.completion_tokens == 1
    ignored = complete(served, logit_bias=eos_first, max_tokens=7, extra_body={"ignore_eos": True})
    assert ignored.choices[0].finish_reason == "length"
    assert ignored.usage.completion_tokens == 7
    with pytest.raises(openai.BadRequestError) as caught:
        complete(served, extra_body={"ignore_eos": "yes"})
    assert caught.value.body["param"] == "ignore_eos"
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as caught:  # a forced call must be able to end
        chat(served, tools=[tool], tool_choice="required", extra_body={"ignore_eos": True})
    assert caught.value.body["param"] == "ignore_eos"


def test_stop_token_ids_end_the_answer_before_the_token(served: Served) -> None:
    for create, text_of in (
        (chat, lambda r: r.choices[0].message.content),
        (complete, lambda r: r.choices[0].text),
    ):
        plain = text_of(create(served))
        stop_char = plain[3]
        stopped = create(served, extra_body={"stop_token_ids": [token_of(stop_char)]})
        assert text_of(stopped) == plain[: plain.index(stop_char)]
        assert stopped.choices[0].finish_reason == "stop"
    for ids in ([96], [-1], "7", list(range(65))):
        with pytest.raises(openai.BadRequestError) as caught:
            complete(served, extra_body={"stop_token_ids": ids})
        assert caught.value.body["param"] == "stop_token_ids", ids


# ---------------------------------------------------------------- streamed logprobs


def test_streamed_completion_chunks_carry_the_logprobs_of_the_whole_answer(served: Served) -> None:
    whole = complete(served, logprobs=2).choices[0]
    chunks = list(complete(served, logprobs=2, stream=True))
    tokens: list[str] = []
    token_logprobs: list[float] = []
    top: list[dict[str, float]] = []
    for chunk in chunks:
        logprobs = chunk.choices[0].logprobs
        assert logprobs is not None, chunk
        tokens += logprobs.tokens
        token_logprobs += logprobs.token_logprobs
        top += logprobs.top_logprobs
    assert "".join(tokens) == whole.text == "".join(c.choices[0].text for c in chunks)
    assert tokens == whole.logprobs.tokens
    assert token_logprobs == pytest.approx(whole.logprobs.token_logprobs, abs=1e-4)
    assert [sorted(t) for t in top] == [sorted(t) for t in whole.logprobs.top_logprobs]
    assert all(len(t) == 2 for t in top)
    plain = list(complete(served, stream=True))
    assert all(c.choices[0].logprobs is None for c in plain)


def test_streamed_chat_chunks_carry_the_logprobs_of_the_whole_answer(served: Served) -> None:
    whole = chat(served, logprobs=True, top_logprobs=3).choices[0]
    content = []
    for chunk in chat(served, logprobs=True, top_logprobs=3, stream=True):
        if chunk.choices and chunk.choices[0].logprobs is not None:
            content += chunk.choices[0].logprobs.content
    assert [e.token for e in content] == [e.token for e in whole.logprobs.content]
    assert [e.logprob for e in content] == pytest.approx(
        [e.logprob for e in whole.logprobs.content], abs=1e-4
    )
    assert all(len(e.top_logprobs) == 3 for e in content)
