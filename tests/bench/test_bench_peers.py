"""Peer readiness is a real request: the probes against fake servers, and start_process."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from benchmarks import _processes
from benchmarks.peers import PeerNotReady, nats_jetstream_ready, redis_ping, start_process

Script = Callable[[socket.socket], None]


@contextmanager
def _fake_server(script: Script) -> Iterator[int]:
    """A one-connection server on 127.0.0.1 that runs ``script`` on the accepted socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)

    def serve() -> None:
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        with connection:
            connection.settimeout(30)
            script(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(timeout=30)


def _assert_not_ready(probe: Callable[[int], None], script: Script, match: str) -> None:
    with _fake_server(script) as port, pytest.raises(PeerNotReady, match=match):
        probe(port)


def _read_until(connection: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = connection.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _redis(answer: bytes) -> Script:
    def script(connection: socket.socket) -> None:
        assert _read_until(connection, b"PING\r\n") == b"*1\r\n$4\r\nPING\r\n"
        connection.sendall(answer)

    return script


def test_redis_is_ready_when_it_answers_pong() -> None:
    with _fake_server(_redis(b"+PONG\r\n")) as port:
        redis_ping(port)
    loading = b"-LOADING Redis is loading the dataset in memory\r\n"
    _assert_not_ready(redis_ping, _redis(loading), "LOADING")


def test_an_open_port_alone_is_not_ready() -> None:
    with _fake_server(lambda connection: None) as port, pytest.raises((PeerNotReady, OSError)):
        redis_ping(port, timeout_s=5)


ACCOUNT_INFO = b'{"type":"io.nats.jetstream.api.v1.account_info_response","memory":0,"storage":0}'


def _nats(reply: bytes, ping_first: bool = False) -> Script:
    def script(connection: socket.socket) -> None:
        connection.sendall(b'INFO {"server_id":"fake","headers":true}\r\n')
        request = _read_until(connection, b"PUB $JS.API.INFO _INBOX.blocks-bench-ready 0\r\n\r\n")
        assert request.startswith(b"CONNECT {") and b'"no_responders": true' in request
        assert b"SUB _INBOX.blocks-bench-ready 1\r\n" in request
        if ping_first:
            connection.sendall(b"PING\r\n")
            assert _read_until(connection, b"PONG\r\n").endswith(b"PONG\r\n")
        connection.sendall(reply)

    return script


def test_nats_is_ready_when_jetstream_answers_account_info() -> None:
    reply = b"MSG _INBOX.blocks-bench-ready 1 %d\r\n%s\r\n" % (len(ACCOUNT_INFO), ACCOUNT_INFO)
    with _fake_server(_nats(reply, ping_first=True)) as port:
        nats_jetstream_ready(port)


def test_nats_without_jetstream_is_not_ready() -> None:
    headers = b"NATS/1.0 503\r\n\r\n"
    no_responders = b"HMSG _INBOX.blocks-bench-ready 1 %d %d\r\n%s\r\n" % (
        len(headers),
        len(headers),
        headers,
    )
    _assert_not_ready(nats_jetstream_ready, _nats(no_responders), "503")
    error = b'{"error":{"code":503,"description":"JetStream not enabled for account"}}'
    refused = b"MSG _INBOX.blocks-bench-ready 1 %d\r\n%s\r\n" % (len(error), error)
    _assert_not_ready(nats_jetstream_ready, _nats(refused), "not enabled")
    violation = b"-ERR 'Authorization Violation'\r\n"
    _assert_not_ready(nats_jetstream_ready, _nats(violation), "Authorization")


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_start_process_returns_once_the_probe_answers() -> None:
    answers = iter([ConnectionRefusedError("refused"), PeerNotReady("loading")])

    def probe(port: int) -> None:
        error = next(answers, None)
        if error is not None:
            raise error

    process = start_process(_python("import time; time.sleep(120)"), 1, probe)
    try:
        assert process.poll() is None and process in _processes.running()
    finally:
        _processes.stop_process(process)


def test_start_process_stops_a_server_that_never_answers() -> None:
    def never(port: int) -> None:
        raise PeerNotReady("still loading")

    before = _processes.running()
    with pytest.raises(PeerNotReady, match=r"not ready after 0.3 s \(PeerNotReady: still loading"):
        start_process(_python("import time; time.sleep(120)"), 1, never, timeout_s=0.3)
    assert _processes.running() == before  # the server it started was stopped


def test_start_process_reports_a_server_that_exits() -> None:
    def never(port: int) -> None:
        raise ConnectionRefusedError("refused")

    with pytest.raises(PeerNotReady, match="exited with code 3 at start"):
        start_process(_python("raise SystemExit(3)"), 1, never, timeout_s=60)


def test_stop_all_stops_every_registered_process() -> None:
    process = _processes.track_process(subprocess.Popen(_python("import time; time.sleep(120)")))
    _processes.stop_all()
    assert process.poll() is not None and _processes.running() == []
