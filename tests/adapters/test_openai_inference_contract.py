"""The inference engine contract against ``OpenAIBatchEngine`` on a ``blocks inference serve``
process (the seeded ``tiny-random`` model: nothing downloaded), then the differences between
the OpenAI API and the block's own, each as a test.

The OpenAI API returns text, not token ids, so the adapter's deltas carry none. The served
model's tokenizer is ``CharTokenizer`` (one token per printable character), so here the text
gives the ids exactly: ``CharIds`` re-encodes each delta's text before the contract sees it.
That is this test's knowledge of the model, not the adapter's. ``solo`` is the same server
asked for the one prompt alone, so the contract checks that streams run side by side through
the adapter come back whole, in order and to the right request (batch invariance), that no
delta follows an end, that aborts hold and that everything finishes.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import pytest
from hypothesis import settings

from blocks.core.errors import InvalidArgument, Overloaded, Unauthenticated, Unavailable
from blocks.inference.contract import EngineContract
from blocks.inference.params import FinishReason, SamplingParams, TokenDelta
from blocks.inference.tokenizer import CharTokenizer

openai = pytest.importorskip("openai")
from blocks.inference.adapters.openai import OpenAIGenerator, inference_error  # noqa: E402
from blocks.inference.adapters.openai_batch import OpenAIBatchEngine  # noqa: E402

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed"),
]
KEY = "sk-adapter"
START_TIMEOUT_S = 120.0
GREEDY = SamplingParams(max_tokens=6, temperature=0.0)


class ServeProcess:
    """``blocks inference serve --model tiny-random`` on a port it picks; ``close`` kills."""

    def __init__(self) -> None:
        command = [
            sys.executable, "-m", "blocks", "inference", "serve", "--model", "tiny-random",
            "--listen", "127.0.0.1:0", "--api-key", KEY, "--num-blocks", "128",
            "--max-model-len", "512", "--threads", "1", "--json",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # printed once it listens
        if not line:
            self.close()
            raise AssertionError("blocks inference serve printed nothing")
        self.url = f"http://{json.loads(line)['listen']}/v1"

    def close(self) -> None:
        # SIGKILL, not SIGTERM: nothing here checks a graceful stop, which spent seconds.
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    process = ServeProcess()
    try:
        yield process
    finally:
        process.close()


def _complete(url: str, prompt: str | Sequence[int], params: SamplingParams, **kw: Any) -> Any:
    async def go() -> Any:
        generator = OpenAIGenerator(url, api_key=KEY, **kw)
        try:
            deltas = [d async for d in generator.stream(prompt, params)]
        finally:
            await generator.close()
        return deltas

    return asyncio.run(go())


class CharIds:
    """The adapter with each delta's token ids read back from its text (exact for
    ``CharTokenizer``, the served model's tokenizer)."""

    def __init__(self, engine: OpenAIBatchEngine) -> None:
        self.engine = engine
        self.chars = CharTokenizer()

    def add_request(
        self, request_id: str, prompt: str | Sequence[int], params: SamplingParams
    ) -> int:
        return self.engine.add_request(request_id, prompt, params)

    def abort(self, request_id: str) -> bool:
        return self.engine.abort(request_id)

    def step(self) -> list[TokenDelta]:
        return [
            TokenDelta(d.request_id, tuple(self.chars.encode(d.text)), d.text,
                       finish_reason=d.finish_reason)
            for d in self.engine.step()
        ]  # fmt: skip

    def has_work(self) -> bool:
        return self.engine.has_work()

    def close(self) -> None:
        self.engine.close()


class OpenAIContract(EngineContract):
    url: ClassVar[str] = ""

    def make_subject(self) -> Any:
        return CharIds(OpenAIBatchEngine(self.url, api_key=KEY))

    @staticmethod
    def solo(prompt: Sequence[int], max_tokens: int) -> list[int]:
        return _solo(OpenAIContract.url, tuple(prompt), max_tokens)


@functools.lru_cache(maxsize=1024)
def _solo(url: str, prompt: tuple[int, ...], max_tokens: int) -> list[int]:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    text = "".join(d.text for d in _complete(url, prompt, params))
    return CharTokenizer().encode(text)


@pytest.fixture
def _on_server(server: ServeProcess) -> None:
    OpenAIContract.url = server.url


TestOpenAIContract = pytest.mark.usefixtures("_on_server")(OpenAIContract.TestCase)
TestOpenAIContract.settings = settings(
    settings.default, max_examples=5, stateful_step_count=15, deadline=None
)


# -- differences from the block's own API (docs/adapters.md) ----------------------------------


def test_deltas_carry_text_and_usage_but_no_token_ids(server: ServeProcess) -> None:
    deltas = _complete(server.url, [5, 6, 7], GREEDY)
    assert all(d.token_ids == () for d in deltas)
    final = deltas[-1]
    assert final.finish_reason is FinishReason.LENGTH
    assert (final.prompt_tokens, final.completion_tokens) == (3, 6)
    assert len("".join(d.text for d in deltas)) == 6  # one character per token here

    async def whole() -> Any:
        generator = OpenAIGenerator(server.url, api_key=KEY)
        try:
            return await generator.complete([5, 6, 7], GREEDY)
        finally:
            await generator.close()

    completion = asyncio.run(whole())
    assert completion.text == "".join(d.text for d in deltas)
    assert completion.completion_tokens == 0  # no ids: the count is the final delta's


def test_a_text_prompt_has_no_length_until_the_end(server: ServeProcess) -> None:
    engine = OpenAIBatchEngine(server.url, api_key=KEY)
    try:
        assert engine.add_request("text", "hello", GREEDY) == 0
        assert engine.add_request("ids", [1, 2, 3], GREEDY) == 3
        ends: dict[str, TokenDelta] = {}
        while engine.has_work():
            ends.update({d.request_id: d for d in engine.step() if d.finish_reason})
        assert ends["text"].prompt_tokens == 5 and ends["ids"].prompt_tokens == 3
    finally:
        engine.close()


def test_stop_strings_and_seeds_are_the_apis_own(server: ServeProcess) -> None:
    text = "".join(d.text for d in _complete(server.url, "abc", GREEDY))
    stop = text[2:4]
    cut = _complete(server.url, "abc", SamplingParams(max_tokens=6, temperature=0, stop=(stop,)))
    assert "".join(d.text for d in cut) == text[: text.index(stop)]
    assert cut[-1].finish_reason is FinishReason.STOP
    seeded = SamplingParams(max_tokens=8, temperature=1.0, seed=7)
    once, again = (_complete(server.url, "abc", seeded) for _ in range(2))
    assert [d.text for d in once] == [d.text for d in again]


def test_errors_are_the_blocks_own(server: ServeProcess) -> None:
    with pytest.raises(InvalidArgument):  # 400: a token id outside the vocabulary
        _complete(server.url, [500], GREEDY)
    with pytest.raises(Unauthenticated):  # 401
        asyncio.run(_with_key(server.url, "wrong"))
    with pytest.raises(InvalidArgument):
        _complete(server.url, "x", SamplingParams(max_tokens=2, top_k=3), extensions=False)
    with pytest.raises(Unavailable):
        _complete("http://127.0.0.1:9/v1", "x", GREEDY)  # nobody listens on port 9
    engine = OpenAIBatchEngine(server.url, api_key=KEY)
    try:
        with pytest.raises(InvalidArgument):  # from add_request itself, nothing queued
            engine.add_request("bad", [], GREEDY)
        assert not engine.has_work()
    finally:
        engine.close()


async def _with_key(url: str, key: str) -> None:
    generator = OpenAIGenerator(url, api_key=key)
    try:
        async for _ in generator.stream("x", GREEDY):
            pass
    finally:
        await generator.close()


def test_a_429_is_overloaded_with_the_servers_retry_after() -> None:
    import httpx2 as httpx  # the openai client's HTTP library

    request = httpx.Request("POST", "http://127.0.0.1/v1/completions")
    for headers, want_ms in (({"retry-after-ms": "250"}, 250), ({"retry-after": "2"}, 2000)):
        response = httpx.Response(429, headers=headers, request=request)
        error = openai.RateLimitError("slow down", response=response, body=None)
        mapped = inference_error(error)
        assert isinstance(mapped, Overloaded) and mapped.retry_after_ms == want_ms


def test_an_aborted_stream_ends_on_the_server_side(server: ServeProcess) -> None:
    engine = OpenAIBatchEngine(server.url, api_key=KEY)
    try:
        engine.add_request("long", [1, 2], SamplingParams(max_tokens=400, temperature=0.0))
        assert engine.abort("long") and not engine.abort("long")
        assert not engine.has_work() and engine.step() == []
        engine.add_request("after", [1, 2], GREEDY)  # the server still answers
        while engine.has_work():
            assert all(d.request_id == "after" for d in engine.step())
    finally:
        engine.close()


def test_a_live_request_id_is_a_conflict_and_a_closed_engine_refuses(server: ServeProcess) -> None:
    from blocks.core.errors import Conflict, FailedPrecondition

    engine = OpenAIBatchEngine(server.url, api_key=KEY)
    engine.add_request("same", [1, 2], GREEDY)
    with pytest.raises(Conflict):
        engine.add_request("same", [3, 4], GREEDY)
    texts: list[str] = []
    while engine.has_work():
        texts += [d.text for d in engine.step()]
    assert "".join(texts) == "".join(d.text for d in _complete(server.url, [1, 2], GREEDY))
    engine.add_request("same", [1, 2], GREEDY)  # free again once its end was handed out
    engine.close()
    engine.close()
    with pytest.raises(FailedPrecondition):
        engine.add_request("later", [1, 2], GREEDY)
