"""LinkProxy: forwards both ways, delays, drops one direction, cuts, heals, bounded."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from blocks.core.errors import InvalidArgument
from blocks.testing import Direction, LinkProxy

DEADLINE_S = 10.0


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _dial(proxy: LinkProxy) -> socket.socket:
    sock = socket.create_connection((proxy.host, proxy.port), timeout=DEADLINE_S)
    return sock


def _exchange(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def test_forwards_both_ways_and_delays(echo: str) -> None:
    with LinkProxy(echo) as proxy, _dial(proxy) as sock:
        assert _exchange(sock, b"hello") == b"hello"
        proxy.delay(0.3, Direction.UP)
        started = time.monotonic()
        assert _exchange(sock, b"slow") == b"slow"
        assert time.monotonic() - started >= 0.3  # a lower bound: held at least that long
        proxy.heal()
        assert _exchange(sock, b"again") == b"again"
        assert proxy.accepted == 1


def test_drop_one_way_loses_bytes_and_heal_resets_the_connection(echo: str) -> None:
    with LinkProxy(echo) as proxy:
        sock = _dial(proxy)
        proxy.drop(Direction.DOWN)  # requests arrive, replies vanish
        sock.sendall(b"lost reply")
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(100)
        deadline = time.monotonic() + DEADLINE_S
        while proxy.bytes_dropped < len(b"lost reply") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proxy.bytes_dropped == len(b"lost reply")
        proxy.heal()
        sock.settimeout(DEADLINE_S)
        assert sock.recv(100) == b""  # the stream had a hole: closed, not resumed
        sock.close()
        with _dial(proxy) as fresh:
            assert _exchange(fresh, b"healed") == b"healed"


def test_cut_closes_and_refuses_until_healed(echo: str) -> None:
    with LinkProxy(echo) as proxy:
        sock = _dial(proxy)
        assert _exchange(sock, b"x") == b"x"
        proxy.cut()
        sock.settimeout(DEADLINE_S)
        assert sock.recv(10) == b""
        sock.close()
        with _dial(proxy) as refused:
            refused.settimeout(DEADLINE_S)
            assert refused.recv(10) == b""
        assert proxy.refused >= 1
        proxy.heal()
        with _dial(proxy) as fresh:
            assert _exchange(fresh, b"back") == b"back"


def test_bad_arguments() -> None:
    with pytest.raises(InvalidArgument):
        LinkProxy("no-port")
    with LinkProxy("127.0.0.1:9") as proxy, pytest.raises(InvalidArgument):
        proxy.delay(-1)
