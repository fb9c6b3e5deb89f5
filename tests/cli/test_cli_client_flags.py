"""The flags every client verb takes, and ``--peer NAME=HOST:PORT``, parsed in one place."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from blocks.cli import build_parser
from blocks.cli_server import add_client_arguments, call_server, parse_peers
from blocks.core.errors import InvalidArgument


def test_parse_peers_maps_names_to_addresses() -> None:
    peers = parse_peers(["a=10.0.0.1:7000", "b=host.example:7001", "a=10.0.0.9:7002"])
    assert peers == {"a": ("10.0.0.9", 7002), "b": ("host.example", 7001)}
    assert parse_peers([]) == {}


@pytest.mark.parametrize("spec", ["=h:1", "a", "a=h", "a=:1", "a=h:x", "a=h:", "h:1"])
def test_parse_peers_refuses_a_spec_without_name_host_or_port(spec: str) -> None:
    with pytest.raises(InvalidArgument, match=r"--peer wants ID=HOST:PORT"):
        parse_peers([spec], label="ID")


def test_client_arguments_with_and_without_a_timeout() -> None:
    with_timeout = argparse.ArgumentParser()
    add_client_arguments(with_timeout, address="127.0.0.1:1", timeout_s=2.5)
    args = with_timeout.parse_args([])
    assert (args.address, args.token, args.timeout, args.json) == ("127.0.0.1:1", None, 2.5, False)
    args = with_timeout.parse_args(["--address", "h:2", "--token", "t", "--timeout", "1", "--json"])
    assert (args.address, args.token, args.timeout, args.json) == ("h:2", "t", 1.0, True)

    without = argparse.ArgumentParser()
    add_client_arguments(without, address="127.0.0.1:1")
    assert not hasattr(without.parse_args([]), "timeout")
    with pytest.raises(SystemExit):
        without.parse_args(["--timeout", "1"])


class _Client:
    opened: list[tuple[str, str | None, float]] = []
    closed = 0

    def __init__(self, address: str, *, token: str | None, timeout_s: float) -> None:
        self.opened.append((address, token, timeout_s))

    async def __aenter__(self) -> _Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        type(self).closed += 1

    async def answer(self, value: int) -> int:
        return value + 1


def test_call_server_opens_the_client_from_the_flags_and_closes_it() -> None:
    parser = argparse.ArgumentParser()
    add_client_arguments(parser, address="127.0.0.1:1", timeout_s=2.5)
    args = parser.parse_args(["--token", "t"])
    result: Any = call_server(args, _Client, lambda client: client.answer(41))
    assert result == 42
    assert _Client.opened == [("127.0.0.1:1", "t", 2.5)] and _Client.closed == 1

    async def fail(client: _Client) -> None:
        raise InvalidArgument("refused")

    with pytest.raises(InvalidArgument, match="refused"):
        call_server(args, _Client, fail)
    assert _Client.closed == 2


@pytest.mark.parametrize(
    ("argv", "timeout"),
    [
        (["pubsub", "produce", "t", "v"], 10.0),
        (["queue", "send", "q", "b"], 10.0),
        (["counters", "get", "c"], 10.0),
        (["cache", "get", "k"], 5.0),
        (["sequencer", "next"], 10.0),
        (["ratelimit", "acquire", "k"], 10.0),
    ],
)
def test_each_blocks_client_verbs_keep_their_flags(argv: list[str], timeout: float | None) -> None:
    args = build_parser(argv[0]).parse_args([*argv, "--token", "t", "--json"])
    assert args.token == "t" and args.json is True
    assert args.address.startswith("127.0.0.1:")
    assert getattr(args, "timeout", None) == timeout
