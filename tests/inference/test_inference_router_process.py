"""``blocks inference route`` as a real process, driven by the official ``openai`` client.

``serve --replicas 2 --model tiny-random`` (two engine processes behind the router) serves
the module; a fake
backend (a thread speaking just enough HTTP) makes a stream break off or hold still on cue.
Every client has ``max_retries=0`` and reuses its connection; every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import pytest

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.process

KEY = "sk-router"
DEADLINE_S = 60.0


class Proc:
    """A ``blocks`` command that prints one JSON start-up line; ``close`` always kills it."""

    def __init__(self, *args: str) -> None:
        command = [sys.executable, "-m", "blocks", "inference", *args, "--json"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
        )

    def ready(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"exited with {self.proc.wait(timeout=30)}"
        self.announced: dict[str, Any] = json.loads(line)
        self.listen = str(self.announced["listen"])
        return self.listen

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def router(*backends: str, extra: tuple[str, ...] = ()) -> Proc:
    flags = [x for url in backends for x in ("--backend", url)]
    return Proc("route", "--listen", "127.0.0.1:0", *flags, *extra)


def client(listen: str, timeout_s: float = 30.0) -> Any:
    return openai.OpenAI(
        base_url=f"http://{listen}/v1", api_key=KEY, max_retries=0, timeout=timeout_s
    )


def stats(listen: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{listen}/router/stats", timeout=10) as response:
        body: dict[str, Any] = json.load(response)
    return body


def poll(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Cluster:
    """``serve --replicas 2``: two tiny-random engine processes behind the router."""

    def __init__(self) -> None:
        self.router = Proc(
            "serve", "--replicas", "2", "--model", "tiny-random", "--listen", "127.0.0.1:0",
            "--api-key", KEY, "--num-blocks", "128", "--max-model-len", "512",
            "--threads", "1", "--prefix-chars", "64",
        )  # fmt: skip
        try:
            self.listen = self.router.ready()
        except BaseException:
            self.router.close()
            raise
        self.urls: list[str] = self.router.announced["backends"]
        self.pids: list[int] = self.router.announced["replica_pids"]

    def close(self) -> None:
        """SIGTERM: the router drains and stops its replicas; kill whatever is left."""
        self.router.proc.send_signal(signal.SIGTERM)
        try:
            assert self.router.proc.wait(timeout=DEADLINE_S) == 0
        finally:
            self.router.close()
            for pid in self.pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    running = Cluster()
    try:
        yield running
    finally:
        running.close()


SYSTEMS = [f"System prompt {i}: you are assistant number {i}, terse and exact." for i in range(16)]


def ask(c: Any, system: str, question: str, **options: Any) -> Any:
    return c.chat.completions.with_raw_response.create(
        model="tiny-random",
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        **{"max_tokens": 3, "temperature": 0, **options},
    )


def test_requests_spread_and_a_shared_prefix_sticks_to_one_replica(cluster: Cluster) -> None:
    c = client(cluster.listen)  # one connection, reused for every request
    owner: dict[str, set[str]] = {s: set() for s in SYSTEMS}
    for round_ in range(3):  # whole, streamed, whole
        for system in SYSTEMS:
            raw = ask(c, system, f"question {round_}", stream=round_ == 1)
            owner[system].add(raw.headers["x-blocks-replica"])
            if round_ == 1:
                events = list(raw.parse())
                assert events and not any(getattr(e, "error", None) for e in events)
            else:
                assert raw.parse().usage.completion_tokens <= 3
    assert all(len(replicas) == 1 for replicas in owner.values()), owner
    assert {next(iter(r)) for r in owner.values()} == set(cluster.urls)
    models = [m.id for m in c.models.list().data]
    assert models == ["tiny-random"]  # the union of two replicas serving the same model
    assert stats(cluster.listen)["reasons"]["affinity"] >= 3 * len(SYSTEMS)
    with urllib.request.urlopen(f"http://{cluster.listen}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'blocks_inference_router_choices_total{reason="affinity"}' in text
    assert text.count("blocks_inference_router_replica_up{") == 2


def test_embeddings_go_through_the_router_and_the_same_input_sticks(cluster: Cluster) -> None:
    c = client(cluster.listen)
    texts = ["embed me through the router", "and me"]
    raw = c.embeddings.with_raw_response.create(model="tiny-random", input=texts)
    replica = raw.headers["x-blocks-replica"]
    assert replica in cluster.urls
    answer = raw.parse()
    assert [d.index for d in answer.data] == [0, 1] and answer.usage.prompt_tokens > 0
    for item in answer.data:
        assert abs(sum(v * v for v in item.embedding) - 1.0) < 1e-4  # unit vectors
    # Asked of the replica itself: the same vectors (the router relays, it does not compute).
    direct = openai.OpenAI(base_url=f"{replica}/v1", api_key=KEY, max_retries=0, timeout=30)
    alone = direct.embeddings.create(model="tiny-random", input=texts)
    assert [d.embedding for d in alone.data] == [d.embedding for d in answer.data]
    again = {
        c.embeddings.with_raw_response.create(model="tiny-random", input=texts).headers[
            "x-blocks-replica"
        ]
        for _ in range(3)
    }
    assert again == {replica}  # the input is the affinity key
    with pytest.raises(openai.BadRequestError):  # the replica's own 400, relayed
        c.embeddings.create(model="tiny-random", input=[])


def test_the_openai_adapter_sends_logit_bias_and_reads_streamed_logprobs(
    cluster: Cluster,
) -> None:
    import asyncio

    from blocks.inference.adapters.openai import OpenAIGenerator
    from blocks.inference.params import SamplingParams
    from blocks.inference.tokenizer import CharTokenizer

    async def complete(params: SamplingParams) -> Any:
        generator = OpenAIGenerator(
            f"http://{cluster.listen}/v1", api_key=KEY, model="tiny-random", timeout_s=30
        )
        try:
            return await generator.complete("logit bias and logprobs", params)
        finally:
            await generator.close()

    plain = asyncio.run(complete(SamplingParams(max_tokens=6, temperature=0.0)))
    (forced,) = CharTokenizer().encode("q")
    assert plain.text != "q" * 6  # the bias, not the model, makes the next answer
    biased = SamplingParams(max_tokens=6, temperature=0.0, logit_bias=((forced, 100.0),))
    assert asyncio.run(complete(biased)).text == "q" * 6
    banned = SamplingParams(max_tokens=6, temperature=0.0, logit_bias=((forced, -100.0),))
    assert "q" not in asyncio.run(complete(banned)).text

    streamed = asyncio.run(complete(SamplingParams(max_tokens=6, temperature=0.0, logprobs=2)))
    assert streamed.text == plain.text
    assert "".join(e.text for e in streamed.logprobs) == streamed.text
    assert all(e.token_id == -1 and e.top == () for e in streamed.logprobs)  # by text only
    # The same numbers as a whole (not streamed) answer from the official client.
    whole = client(cluster.listen).completions.create(
        model="tiny-random", prompt="logit bias and logprobs", max_tokens=6, temperature=0,
        logprobs=2,
    )  # fmt: skip
    wire = whole.choices[0].logprobs
    assert [e.logprob for e in streamed.logprobs] == pytest.approx(wire.token_logprobs)
    assert [dict(e.top_text) for e in streamed.logprobs] == [
        pytest.approx(top) for top in wire.top_logprobs
    ]
    assert all(len(e.top_text) == 2 for e in streamed.logprobs)


# ---------------------------------------------------------------- a backend that misbehaves


EMBEDDINGS = {
    "object": "list",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.6, -0.8]}],
    "model": "fake",
    "usage": {"prompt_tokens": 2, "total_tokens": 2},
}


class FakeBackend:
    """Answers /health and /v1/models; a completion whose prompt is ``cut`` gets one event
    and then the connection closes; ``hold`` gets one event, waits for ``release``, ends.
    With ``reset``, every completion request is met by closing the connection unanswered."""

    def __init__(self, reset: bool = False) -> None:
        self.reset = reset
        self.resets = 0
        self.release = threading.Event()
        self.holding = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(DEADLINE_S)
        with conn, conn.makefile("rb") as reader:
            while True:
                line = reader.readline()
                if not line:
                    return
                path = line.split()[1].decode()
                length = 0
                while (header := reader.readline()) not in (b"\r\n", b""):
                    if header.lower().startswith(b"content-length:"):
                        length = int(header.split(b":")[1])
                body = json.loads(reader.read(length)) if length else {}
                if path == "/v1/embeddings":
                    data = json.dumps(EMBEDDINGS).encode()
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data)
                    )
                    continue
                if path != "/v1/completions":
                    data = json.dumps({"object": "list", "data": [{"id": "fake"}]}).encode()
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data)
                    )
                    continue
                if self.reset:
                    self.resets += 1
                    return
                event = json.dumps(
                    {
                        "id": "x",
                        "object": "text_completion",
                        "created": 0,
                        "model": "fake",
                        "choices": [{"index": 0, "text": "a", "finish_reason": None}],
                    }
                )
                chunk = f"data: {event}\n\n".encode()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(chunk), chunk)
                )
                if body.get("prompt") == "cut":
                    return
                self.holding.set()
                self.release.wait(DEADLINE_S)
                done = b"data: [DONE]\n\n"
                conn.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))  # fmt: skip

    def close(self) -> None:
        self.release.set()
        self.sock.close()


@pytest.fixture
def fake() -> Iterator[FakeBackend]:
    backend = FakeBackend()
    try:
        yield backend
    finally:
        backend.close()


def test_a_request_whose_replica_resets_before_answering_is_retried_elsewhere(
    fake: FakeBackend,
) -> None:
    broken = FakeBackend(reset=True)  # answers health checks, drops every completion
    proc = router(fake.url, broken.url)
    try:
        c = client(proc.ready())
        fake.release.set()
        for i in range(24):  # distinct prompts: about half hash to the broken replica
            raw = c.completions.with_raw_response.create(
                model="fake", prompt=f"prompt {i}", max_tokens=1, stream=True
            )
            assert raw.headers["x-blocks-replica"] == fake.url
            assert [e.choices[0].text for e in raw.parse()] == ["a"]
        # Each drop was retried on the good replica (a drop on a pooled connection is first
        # retried once on a fresh one to the same replica: the pooled one may just be stale).
        assert 1 <= stats(proc.listen)["retries"] <= broken.resets
    finally:
        proc.close()
        broken.close()


def test_embeddings_reach_an_openai_compatible_upstream(fake: FakeBackend) -> None:
    proc = router(fake.url)
    try:
        raw = client(proc.ready()).embeddings.with_raw_response.create(model="fake", input="hi")
        assert raw.headers["x-blocks-replica"] == fake.url
        answer = raw.parse()
        assert [d.embedding for d in answer.data] == [[0.6, -0.8]]
        assert answer.usage.prompt_tokens == 2
    finally:
        proc.close()


def test_a_stream_cut_mid_way_ends_with_an_error_event(fake: FakeBackend) -> None:
    proc = router(fake.url)
    try:
        c = client(proc.ready())
        stream = c.completions.create(model="fake", prompt="cut", max_tokens=5, stream=True)
        texts = []
        with pytest.raises(openai.APIError, match="failed mid-way"):
            for event in stream:
                texts.append(event.choices[0].text)
        assert texts == ["a"]
        # The connection is fine afterwards: the next stream on it is whole.
        fake.release.set()
        assert [e.choices[0].text for e in c.completions.create(
            model="fake", prompt="ok", max_tokens=5, stream=True)] == ["a"]  # fmt: skip
        assert stats(proc.listen)["cut_streams"] == 1
    finally:
        proc.close()


def test_sigterm_drains_in_flight_streams_and_refuses_new_ones(fake: FakeBackend) -> None:
    proc = router(fake.url)
    try:
        c = client(proc.ready())
        stream = c.completions.create(model="fake", prompt="hold", max_tokens=5, stream=True)
        events = iter(stream)
        assert next(events).choices[0].text == "a"
        assert fake.holding.wait(DEADLINE_S)
        proc.proc.send_signal(signal.SIGTERM)

        def refused() -> bool:
            try:
                urllib.request.urlopen(f"http://{proc.listen}/health", timeout=5).close()
            except (urllib.error.URLError, ConnectionError):
                return True
            return False

        poll(refused, "the router to stop accepting")
        assert proc.proc.poll() is None  # still finishing the stream in flight
        fake.release.set()
        assert list(events) == []  # the stream ended cleanly ([DONE])
        assert proc.proc.wait(timeout=DEADLINE_S) == 0
    finally:
        proc.close()


# ---------------------------------------------------------------- a replica dies under load


def test_kill_9_a_replica_under_load_every_request_completes_or_fails_cleanly(
    cluster: Cluster,
) -> None:
    # Requests long enough to still be running when the kill lands: with 32 tokens a fast
    # engine had finished every request on the victim between the poll and the kill (once in
    # five runs), and the death was never seen.
    def one(i: int) -> str:
        c = client(cluster.listen, timeout_s=DEADLINE_S)
        try:
            for _ in range(2):
                if i % 2:
                    for _event in c.completions.create(
                        model="tiny-random", prompt=f"{i} stream", max_tokens=128, stream=True
                    ):
                        pass
                else:
                    c.completions.create(model="tiny-random", prompt=f"{i} whole", max_tokens=128)
        except openai.APIError as error:  # a clean error: an HTTP status or an error event
            assert not isinstance(error, openai.APITimeoutError), error
            return "error"
        return "ok"

    victim = cluster.urls[0]
    with ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(one, i) for i in range(12)]
        poll(lambda: stats(cluster.listen)["replicas"][victim]["in_flight"] > 0,
             "requests on the victim")  # fmt: skip
        on_victim = stats(cluster.listen)["replicas"][victim]["in_flight"]
        os.kill(cluster.pids[0], signal.SIGKILL)
        done, not_done = wait(futures, timeout=3 * DEADLINE_S)
    assert not not_done, "a request hung"
    outcomes = [f.result() for f in done]
    after = stats(cluster.listen)
    # Only a stream already under way on the victim may fail; the rest went elsewhere.
    assert outcomes.count("error") <= on_victim + 1  # +1: one sent between stats and kill
    assert after["unavailable"] == 0
    assert after["retries"] + outcomes.count("error") >= 1  # the death was seen, not missed
    # Back in: the supervisor restarts the replica on its port, a health check passes, and
    # it takes its prefixes again.
    poll(lambda: stats(cluster.listen)["replicas"][victim]["health"] == "up", "the replica back")
    c = client(cluster.listen)
    owners: set[str] = set()
    deadline = time.monotonic() + DEADLINE_S
    while owners != set(cluster.urls) and time.monotonic() < deadline:
        owners |= {ask(c, s, "again").headers["x-blocks-replica"] for s in SYSTEMS}
    assert owners == set(cluster.urls)
