"""OpenAI request fields through the official client: served, or refused with a 400 naming them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
import torch

from blocks.inference.async_engine import AsyncEngine
from blocks.inference.engine import EngineConfig, LLMEngine
from blocks.inference.factory import tiny_random_model
from blocks.inference.params import SamplingParams
from blocks.inference.sampling import apply_penalties
from blocks.inference.server import InferenceServer
from blocks.inference.tokenizer import CharTokenizer

openai = pytest.importorskip("openai")

CONFIG = EngineConfig(
    num_blocks=64, block_size=8, max_num_seqs=8, max_num_batched_tokens=64, max_model_len=256
)
MODEL = tiny_random_model(seed=1)
MESSAGES = [{"role": "user", "content": "hello"}]


class Served:
    def __init__(self) -> None:
        self.engine = LLMEngine(MODEL, CharTokenizer(), CONFIG)
        self.server = InferenceServer(AsyncEngine(self.engine), model_name="tiny")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        port = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        self.client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0, timeout=30
        )

    def close(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    running = Served()
    try:
        yield running
    finally:
        running.close()


def error_of(info: pytest.ExceptionInfo[Exception]) -> dict[str, object]:
    body = info.value.body  # type: ignore[attr-defined]
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}, body
    return body


def test_unknown_model_is_404_model_not_found(served: Served) -> None:
    # Reproduces: model="gpt-4" was answered by whatever model the server had loaded.
    with pytest.raises(openai.NotFoundError) as info:
        served.client.chat.completions.create(model="gpt-4", messages=MESSAGES, max_tokens=2)
    body = error_of(info)
    assert body["code"] == "model_not_found" and body["param"] == "model"
    assert body["type"] == "invalid_request_error" and "gpt-4" in str(body["message"])
    with pytest.raises(openai.NotFoundError):
        served.client.completions.create(model="gpt-4", prompt="x", max_tokens=2)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("functions", [{"name": "f", "parameters": {}}]),
        ("function_call", "auto"),
        ("modalities", ["text", "audio"]),
        ("prediction", {"type": "content", "content": "x"}),
    ],
)
def test_unsupported_chat_fields_are_400_naming_the_field(
    served: Served, field: str, value: object
) -> None:
    # Reproduces: a request with tools got 200 and plain text, though the docs said 400.
    # (tools and response_format are served now: tests/inference/test_tools_process.py.)
    with pytest.raises(openai.BadRequestError) as info:
        served.client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=2, extra_body={field: value}
        )
    body = error_of(info)
    assert body["param"] == field and body["code"] == "unsupported_parameter"


@pytest.mark.parametrize(("field", "value"), [("echo", True), ("suffix", "!"), ("best_of", 3)])
def test_unsupported_completion_fields_are_400(served: Served, field: str, value: object) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        served.client.completions.create(
            model="tiny", prompt="ab", max_tokens=2, extra_body={field: value}
        )
    assert error_of(info)["param"] == field


def test_harmless_values_of_those_fields_are_accepted(served: Served) -> None:
    reply = served.client.chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        max_tokens=2,
        response_format={"type": "text"},
        tool_choice="none",
        logit_bias={},
        user="someone",
        extra_body={"modalities": ["text"]},
    )
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_out_of_range_values_name_their_field(served: Served) -> None:
    for field, value in [
        ("n", 99),
        ("presence_penalty", 3),
        ("frequency_penalty", -2.5),
        ("top_logprobs", 21),
        ("seed", -1),
    ]:
        with pytest.raises(openai.BadRequestError) as info:
            served.client.chat.completions.create(
                model="tiny",
                messages=MESSAGES,
                max_tokens=2,
                logprobs=True,
                extra_body={field: value},
            )
        assert error_of(info)["param"] == field, field


def test_n_choices_whole_and_streamed(served: Served) -> None:
    c = served.client
    options = {"model": "tiny", "max_tokens": 5, "temperature": 1.0, "seed": 7, "n": 3}
    whole = c.chat.completions.create(messages=MESSAGES, **options)
    assert [choice.index for choice in whole.choices] == [0, 1, 2]
    assert 3 <= whole.usage.completion_tokens <= 15  # summed over the choices
    again = c.chat.completions.create(messages=MESSAGES, **options)
    assert [ch.message.content for ch in again.choices] == [
        ch.message.content for ch in whole.choices
    ]
    texts = ["", "", ""]
    finished = set()
    chunks = list(
        c.chat.completions.create(
            messages=MESSAGES, stream=True, stream_options={"include_usage": True}, **options
        )
    )
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason is not None:
                finished.add(choice.index)
    assert finished == {0, 1, 2}
    assert texts == [ch.message.content for ch in whole.choices]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    completions = c.completions.create(prompt="abc", **options)
    assert [choice.index for choice in completions.choices] == [0, 1, 2]


def test_stop_seed_and_penalties_are_honoured(served: Served) -> None:
    c = served.client
    plain = c.completions.create(model="tiny", prompt="abc", max_tokens=12, temperature=0)
    text = plain.choices[0].text
    stop = text[3:5]
    stopped = c.completions.create(
        model="tiny", prompt="abc", max_tokens=12, temperature=0, stop=[stop]
    )
    assert stopped.choices[0].text == text[: text.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"
    penalized = c.completions.create(
        model="tiny",
        prompt="abc",
        max_tokens=12,
        temperature=0,
        presence_penalty=2.0,
        frequency_penalty=2.0,
    )
    assert penalized.usage.completion_tokens >= 1


def test_penalties_follow_openais_formula() -> None:
    logits = torch.tensor([1.0, 2.0, 3.0, 4.0])
    params = SamplingParams(presence_penalty=0.5, frequency_penalty=0.25)
    out = apply_penalties(logits, [3, 3, 1], params)
    # token 3 seen twice: 4 - 2 * 0.25 - 0.5; token 1 once: 2 - 0.25 - 0.5
    assert out.tolist() == [1.0, 1.25, 3.0, 3.0]
    assert logits.tolist() == [1.0, 2.0, 3.0, 4.0]  # the input is not changed
    assert apply_penalties(logits, [3], SamplingParams()) is logits


def test_greedy_with_a_presence_penalty_avoids_repeats() -> None:
    engine = LLMEngine(MODEL, CharTokenizer(), CONFIG)
    [free] = engine.generate(["abc"], SamplingParams(max_tokens=24, temperature=0))
    [penalized] = engine.generate(
        ["abc"], SamplingParams(max_tokens=24, temperature=0, presence_penalty=100.0)
    )
    assert len(set(free.token_ids)) < len(free.token_ids)  # the random model repeats itself
    assert len(set(penalized.token_ids)) == len(penalized.token_ids)
