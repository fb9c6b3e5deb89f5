"""The OpenAI-compatible server, driven by the official ``openai`` client."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from blocks.core.clock import SystemClock
from blocks.inference.admission import AdmissionConfig, AdmissionController
from blocks.inference.async_engine import AsyncEngine
from blocks.inference.engine import EngineConfig, LLMEngine
from blocks.inference.factory import tiny_random_model
from blocks.inference.params import SamplingParams
from blocks.inference.server import InferenceServer
from blocks.inference.tokenizer import CharTokenizer

openai = pytest.importorskip("openai")

CONFIG = EngineConfig(
    num_blocks=64, block_size=8, max_num_seqs=8, max_num_batched_tokens=64, max_model_len=256
)
MODEL = tiny_random_model(seed=1)


class ServerThread:
    """A server on 127.0.0.1:0 in its own event loop thread; always stopped by ``close``."""

    def __init__(
        self, admission: AdmissionConfig | None = None, api_keys: tuple[str, ...] = ()
    ) -> None:
        self.engine = LLMEngine(MODEL, CharTokenizer(), CONFIG)
        controller = AdmissionController(admission or AdmissionConfig(), SystemClock())
        self.server = InferenceServer(
            AsyncEngine(self.engine, controller), model_name="tiny", api_keys=api_keys
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    running = ServerThread(api_keys=("sk-good", "sk-other"))
    try:
        yield running
    finally:
        running.close()


def client(server: ServerThread, key: str = "sk-good"):  # type: ignore[no-untyped-def]
    return openai.OpenAI(base_url=server.url, api_key=key, max_retries=0, timeout=30)


def expected_text(prompt: str, max_tokens: int) -> str:
    engine = LLMEngine(MODEL, CharTokenizer(), CONFIG)
    [out] = engine.generate([prompt], SamplingParams(max_tokens=max_tokens, temperature=0.0))
    return out.text


def test_models_and_non_streamed_chat(server: ServerThread) -> None:
    c = client(server)
    assert [m.id for m in c.models.list().data] == ["tiny"]
    reply = c.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=12, temperature=0
    )
    prompt = CharTokenizer().apply_chat_template([{"role": "user", "content": "hello"}])
    assert reply.choices[0].message.content == expected_text(prompt, 12)
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage.prompt_tokens == len(prompt)
    assert reply.usage.completion_tokens <= 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streamed_chat_with_usage_matches_unstreamed(server: ServerThread) -> None:
    c = client(server)
    messages = [{"role": "user", "content": "stream me"}]
    whole = c.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0)
    chunks = list(
        c.chat.completions.create(
            model="tiny",
            messages=messages,
            max_tokens=10,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content
    reasons = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert reasons[-1] in ("stop", "length") and all(r is None for r in reasons[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_completions_streamed_and_not(server: ServerThread) -> None:
    c = client(server)
    whole = c.completions.create(model="tiny", prompt="Once upon", max_tokens=8, temperature=0)
    assert whole.choices[0].text == expected_text("Once upon", 8)
    assert whole.usage.prompt_tokens == len("Once upon")
    parts = list(
        c.completions.create(
            model="tiny", prompt="Once upon", max_tokens=8, temperature=0, stream=True
        )
    )
    assert "".join(p.choices[0].text for p in parts) == whole.choices[0].text
    seeded = [
        c.completions.create(model="tiny", prompt="abc", max_tokens=6, temperature=1.0, seed=11)
        .choices[0]
        .text
        for _ in range(2)
    ]
    assert seeded[0] == seeded[1]


def test_wrong_api_key_is_refused(server: ServerThread) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        client(server, key="sk-bad").models.list()
    assert info.value.status_code == 401
    assert info.value.body["code"] == "invalid_api_key"


def test_bad_requests_get_openai_errors(server: ServerThread) -> None:
    c = client(server)
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "x"}], temperature=7
        )
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="tiny", messages=[], max_tokens=3)
    with pytest.raises(openai.BadRequestError):
        c.completions.create(model="tiny", prompt="x" * 300, max_tokens=3)  # longer than context
    raw = http_exchange(
        server.port,
        b"POST /v1/completions HTTP/1.1\r\nAuthorization: Bearer sk-good\r\nContent-Length: 5\r\n\r\n{oops",
    )
    assert raw.startswith(b"HTTP/1.1 400")
    assert json.loads(raw.split(b"\r\n\r\n", 1)[1])["error"]["type"] == "invalid_request_error"
    assert http_exchange(server.port, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")


def http_exchange(port: int, data: bytes, read_s: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=read_s) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_rate_limit_gives_429_with_retry_after() -> None:
    running = ServerThread(AdmissionConfig(tokens_per_minute_per_key=60))
    try:
        c = client(running, key="k1")
        c.completions.create(
            model="tiny", prompt="abcdef", max_tokens=40, temperature=0
        )  # 46 of 60
        with pytest.raises(openai.RateLimitError) as info:
            c.completions.create(model="tiny", prompt="abcdef", max_tokens=40, temperature=0)
        headers = info.value.response.headers
        # The first request used all 40 tokens (the tiny model has no EOS): 14 left, 46
        # needed, 1 token per second: 32 s.
        assert int(headers["retry-after"]) == pytest.approx(32, abs=1)
        assert info.value.body["code"] == "rate_limit_exceeded"
        # Another key is unaffected.
        client(running, key="k2").completions.create(model="tiny", prompt="abc", max_tokens=3)
    finally:
        running.close()


def test_client_disconnect_cancels_generation(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tiny model would finish 240 tokens in about 0.1 s, which a loaded machine can
    # take to notice the disconnect; 5 ms a step keeps the request running for ~1 s.
    run = server.engine.runner.run

    def slow_run(chunks):  # type: ignore[no-untyped-def]
        time.sleep(0.005)
        return run(chunks)

    monkeypatch.setattr(server.engine.runner, "run", slow_run)
    body = json.dumps(
        {"model": "tiny", "prompt": "abc", "max_tokens": 240, "stream": True, "temperature": 0}
    )
    head = f"POST /v1/completions HTTP/1.1\r\nAuthorization: Bearer sk-good\r\nContent-Length: {len(body)}\r\n\r\n"
    metrics = server.engine.metrics
    before = metrics.requests.labels(outcome="cancelled")._value.get()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head.encode() + body.encode())
        received = b""
        while b"data:" not in received:  # the head and the first event may come apart
            chunk = sock.recv(4096)
            assert chunk, "server closed before streaming"
            received += chunk
        # generation has started
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (
            metrics.requests.labels(outcome="cancelled")._value.get() > before
            and not server.engine.has_work()
        ):
            break
        time.sleep(0.05)
    assert metrics.requests.labels(outcome="cancelled")._value.get() == before + 1
    assert server.engine.scheduler.blocks.num_free_blocks == CONFIG.num_blocks


def test_metrics_and_health_endpoints(server: ServerThread) -> None:
    raw = http_exchange(server.port, b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200") and b"blocks_inference_ttft_seconds" in raw
    assert http_exchange(server.port, b"GET /health HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200")
    assert http_exchange(
        server.port, b"GET /nope HTTP/1.1\r\nAuthorization: Bearer sk-good\r\n\r\n"
    ).startswith(b"HTTP/1.1 404")
