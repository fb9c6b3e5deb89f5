"""``blocks.core.data_path``: what the ``DataPath`` RPC answers and how a client takes it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest

from blocks.core.data_path import ask_data_path, data_path_address, data_request
from blocks.core.errors import NotFound, PeerError, Timeout, Unavailable
from blocks.core.net import TcpTransport


class _Transport:
    """Records ``add_peer`` and answers ``request`` with a value or an error."""

    def __init__(self, answer: Any = None) -> None:
        self.peers: dict[str, tuple[str, int]] = {}
        self.answer = answer

    def add_peer(self, name: str, address: tuple[str, int]) -> None:
        self.peers[name] = address

    async def request(self, name: str, message: Any, timeout_s: float) -> Any:
        if isinstance(self.answer, Exception):
            raise self.answer
        return [name, message, timeout_s]


def _ask(reply: Any) -> Any:
    async def ask() -> Any:
        if isinstance(reply, Exception):
            raise reply
        return reply

    return ask


def test_no_data_path_answers_port_zero() -> None:
    assert data_path_address(None) == (0, "")
    not_listening = TcpTransport("data", ("127.0.0.1", 0))
    assert data_path_address(not_listening) == (0, "")


def test_a_data_path_is_registered_at_the_servers_host() -> None:
    transport = _Transport()
    reply = SimpleNamespace(port=7399, name="queue-abc")
    name = asyncio.run(ask_data_path(_ask(reply), cast(TcpTransport, transport), "[::1]:7301"))
    assert name == "queue-abc"
    assert transport.peers == {"queue-abc": ("::1", 7399)}


@pytest.mark.parametrize(
    "reply",
    [SimpleNamespace(port=0, name=""), SimpleNamespace(port=7399, name=""), NotFound("old")],
)
def test_no_data_path_is_the_empty_name(reply: Any) -> None:
    transport = _Transport()
    assert asyncio.run(ask_data_path(_ask(reply), cast(TcpTransport, transport), "h:1")) == ""
    assert transport.peers == {}


@pytest.mark.parametrize("error", [Unavailable("down"), Timeout("slow")])
def test_an_unanswered_question_raises(error: Exception) -> None:
    with pytest.raises(type(error)):
        asyncio.run(ask_data_path(_ask(error), cast(TcpTransport, _Transport()), "h:1"))


def test_a_refused_greeting_is_unavailable() -> None:
    transport = cast(TcpTransport, _Transport(PeerError("new name")))
    with pytest.raises(Unavailable, match="broker's data path changed"):
        asyncio.run(data_request(transport, "n", {}, 1.0, what="broker"))
    answered = cast(TcpTransport, _Transport())
    assert asyncio.run(data_request(answered, "n", {"op": 1}, 2.0)) == ["n", {"op": 1}, 2.0]
    other = cast(TcpTransport, _Transport(Timeout("slow")))
    with pytest.raises(Timeout):
        asyncio.run(data_request(other, "n", {}, 1.0))
