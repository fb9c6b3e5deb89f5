"""The HTTP server's bounds: each breach gets an OpenAI-shaped error and a counter."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.inference.async_engine import AsyncEngine
from blocks.inference.connection import ServerLimits
from blocks.inference.engine import EngineConfig, LLMEngine
from blocks.inference.factory import tiny_random_model
from blocks.inference.http import MAX_BODY_BYTES, MAX_HEAD_BYTES, MAX_JSON_DEPTH, json_depth
from blocks.inference.server import InferenceServer
from blocks.inference.tokenizer import CharTokenizer

CONFIG = EngineConfig(
    num_blocks=32, block_size=8, max_num_seqs=4, max_num_batched_tokens=64, max_model_len=128
)
DEADLINE_S = 30.0


class LimitedServer:
    """An in-process server with ``limits`` on its own loop thread; ``close`` stops it."""

    def __init__(self, limits: ServerLimits) -> None:
        self.engine = LLMEngine(tiny_random_model(seed=1), CharTokenizer(), CONFIG)
        self.server = InferenceServer(AsyncEngine(self.engine), model_name="tiny", limits=limits)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def rejections(self, reason: str) -> float:
        value: float = self.engine.metrics.http_rejections.labels(reason=reason)._value.get()
        return value

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=DEADLINE_S)

    def close(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@pytest.fixture
def server() -> Iterator[LimitedServer]:
    # A long idle timeout: a loaded machine must not close these connections mid-test.
    running = LimitedServer(ServerLimits(max_connections=3, idle_timeout_s=60.0))
    try:
        yield running
    finally:
        running.close()


def post(body: bytes, path: str = "/v1/completions") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def read_response(sock: socket.socket) -> tuple[int, dict[str, object]]:
    """One Content-Length response: its status and JSON body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(h.split(":")[1]) for h in lines if h.lower().startswith("content-length"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk
        rest += chunk
    return int(lines[0].split()[1]), json.loads(rest[:length])


def assert_openai_error(body: dict[str, object], code: str) -> None:
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and isinstance(error["message"], str)


def test_deep_json_is_a_400_and_the_connection_lives_on(server: LimitedServer) -> None:
    # Reproduces issue 14 item 5: a body nested 1,000 deep raised RecursionError in the
    # connection callback and the client got no response at all.
    deep = b'{"prompt": "x", "extra": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    with server.connect() as sock:
        sock.sendall(post(deep))
        status, body = read_response(sock)
        assert status == 400
        assert_openai_error(body, "json_too_deep")
        # The framing was intact, so the same connection answers the next request.
        sock.sendall(post(json.dumps({"prompt": "ab", "max_tokens": 2}).encode()))
        status, body = read_response(sock)
        assert status == 200 and body["object"] == "text_completion"
    assert server.rejections("json_too_deep") == 1


def test_oversized_body_and_head_are_refused(server: LimitedServer) -> None:
    with server.connect() as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (1 << 30))
        status, body = read_response(sock)
        assert status == 413 and MAX_BODY_BYTES < 1 << 30
        assert_openai_error(body, "body_too_large")
        assert sock.recv(1) == b""  # closed: the body that follows cannot be skipped safely
    with server.connect() as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n")
        status, body = read_response(sock)
        assert status == 431
        assert_openai_error(body, "head_too_large")
    assert server.rejections("body_too_large") == 1
    assert server.rejections("head_too_large") == 1


def test_connections_over_the_cap_get_503(server: LimitedServer) -> None:
    held = [server.connect() for _ in range(3)]
    try:
        for sock in held:  # each is being served once it answers
            sock.sendall(b"GET /health HTTP/1.1\r\n\r\n")
            assert read_response(sock)[0] == 200
        with server.connect() as extra:
            status, body = read_response(extra)
        assert status == 503
        assert_openai_error(body, "too_many_connections")
        assert server.rejections("too_many_connections") == 1
    finally:
        for sock in held:
            sock.close()


def test_an_idle_or_dribbling_connection_is_closed() -> None:
    server = LimitedServer(ServerLimits(idle_timeout_s=0.5))
    try:
        with server.connect() as sock:
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Le")  # and nothing more
            assert sock.recv(1) == b""  # closed after idle_timeout_s
        deadline = time.monotonic() + DEADLINE_S
        while server.rejections("idle_timeout") < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.rejections("idle_timeout") == 1
    finally:
        server.close()


def test_json_depth_counts_only_structure() -> None:
    assert json_depth(b"") == 0
    assert json_depth(b'{"a": [1, {"b": []}]}') == 4
    assert json_depth(b'{"a": "[[[[{{{{"}') == 1
    assert json_depth(b'["\\"[[[", [[]]]') == 3
    assert json_depth(b"[" * (MAX_JSON_DEPTH + 1)) == MAX_JSON_DEPTH + 1


@given(
    st.recursive(
        st.none() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=6),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
        max_leaves=10,
    )
)
def test_json_depth_matches_the_decoded_structure(value: object) -> None:
    def depth(v: object) -> int:
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        return 0

    assert json_depth(json.dumps(value).encode()) == depth(value)


def test_an_unexpected_failure_is_a_500_in_openai_shape(
    server: LimitedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(messages: object) -> str:
        raise RuntimeError("template exploded")

    monkeypatch.setattr(server.engine.tokenizer, "apply_chat_template", broken)
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    with server.connect() as sock:
        sock.sendall(post(body.encode(), "/v1/chat/completions"))
        status, answer = read_response(sock)
    assert status == 500
    assert_openai_error(answer, "internal_error")
    assert server.rejections("internal_error") == 1
