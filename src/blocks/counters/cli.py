"""``blocks counters serve | incr | get | distinct-add | distinct | frequent-add | top``."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from blocks.cli import DEFAULT_PORTS, add_server_arguments, print_result, server_options
from blocks.cli_server import add_client_arguments, call_server, parse_peers, run_server

__all__ = ["DEFAULT_ADDRESS", "register"]

DEFAULT_ADDRESS = f"127.0.0.1:{DEFAULT_PORTS['counters']}"
T = TypeVar("T")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("counters", help="counters, distinct counts, heavy hitters")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    serve = verbs.add_parser("serve", help="run a counters node")
    serve.add_argument("--name", default="counters-0", help="replica name (unique per node)")
    add_server_arguments(
        serve,
        block="counters",
        data_dir="optional",
        data_dir_help="log and snapshots: counts and sketches survive restarts",
    )
    serve.add_argument("--gossip-port", type=int, default=None, help="gossip with peers here")
    serve.add_argument(
        "--peer", action="append", default=[], metavar="NAME=HOST:PORT", help="gossip peer"
    )
    serve.set_defaults(func=_serve)

    incr = _verb(verbs, "incr", "add to a counter (negative to subtract)")
    incr.add_argument("name")
    incr.add_argument("--by", type=int, default=1)
    incr.set_defaults(func=lambda a: _call(a, lambda c: c.increment(a.name, a.by)))

    get = _verb(verbs, "get", "read a counter")
    get.add_argument("name")
    get.set_defaults(func=lambda a: _call(a, lambda c: c.value(a.name)))

    dadd = _verb(verbs, "distinct-add", "add items to a distinct count (HyperLogLog)")
    dadd.add_argument("name")
    dadd.add_argument("items", nargs="+")
    dadd.set_defaults(func=lambda a: _call(a, lambda c: c.add_distinct(a.name, a.items)))

    distinct = _verb(verbs, "distinct", "estimated number of distinct items")
    distinct.add_argument("name")
    distinct.set_defaults(func=lambda a: _call(a, lambda c: c.count_distinct(a.name)))

    fadd = _verb(verbs, "frequent-add", "add items to a heavy-hitters tracker")
    fadd.add_argument("name")
    fadd.add_argument("items", nargs="+")
    fadd.set_defaults(func=lambda a: _call(a, lambda c: c.add_frequent(a.name, a.items)))

    top = _verb(verbs, "top", "the most frequent items with estimated counts")
    top.add_argument("name")
    top.add_argument("--n", type=int, default=10)
    top.set_defaults(func=lambda a: _call(a, lambda c: _top(c, a.name, a.n)))


async def _top(client: Any, name: str, n: int) -> list[list[Any]]:
    entries = await client.top_k(name, n)
    return [[item.decode(errors="replace"), count] for item, count in entries]


def _verb(verbs: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = verbs.add_parser(name, help=help_text)
    add_client_arguments(parser, address=DEFAULT_ADDRESS, timeout_s=10.0)
    return parser


def _call(args: argparse.Namespace, action: Callable[[Any], Awaitable[T]]) -> int:
    from blocks.counters.client import CountersClient

    result = call_server(args, CountersClient, action)
    if isinstance(result, list):
        text = "\n".join(f"{item}\t{count}" for item, count in result)
    else:
        text = str(result)
    print_result(result, as_json=args.json, text=text)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from blocks.counters.service import build_server

    peers = parse_peers(args.peer)
    options = server_options(args)
    gossip = None if args.gossip_port is None else (options.host, args.gossip_port)

    def build() -> tuple[Any, Any]:
        return build_server(
            args.name,
            host=options.host,
            port=options.port,
            token=options.token,
            gossip_listen=gossip,
            peers=peers,
            data_dir=args.data_dir,
        )

    def announcement(server: Any, service: Any) -> tuple[str, dict[str, Any]]:
        transport = service.gossip_transport
        gossip_address = transport.address if transport is not None else None
        text = f"counters node {args.name} serving on {server.address}"
        return text, {"name": args.name, "gossip": gossip_address}

    return run_server(options, build, announcement)
