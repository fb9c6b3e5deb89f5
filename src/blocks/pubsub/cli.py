"""``blocks pubsub serve | create-topic | produce | consume``."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from blocks.cli import DEFAULT_PORTS, read_lines
from blocks.cli_cluster import add_cluster_serve, serve_node
from blocks.cli_server import add_verb, call_and_print

__all__ = ["DEFAULT_ADDRESS", "register"]

DEFAULT_ADDRESS = f"127.0.0.1:{DEFAULT_PORTS['pubsub']}"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("pubsub", help="partitioned pub-sub log")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    serve = add_cluster_serve(
        verbs,
        block="pubsub",
        help_text="run a pub-sub broker",
        member="broker",
        peer_help="another broker's id and replication address (repeat; turns on replication)",
    )
    serve.set_defaults(func=_serve)

    create = _verb(verbs, "create-topic", "create a topic")
    create.add_argument("topic")
    create.add_argument("--partitions", type=int, default=1)
    create.add_argument("--retention-ms", type=int, default=None)
    create.set_defaults(func=lambda a: _call(a, lambda c: _create(c, a)))

    produce = _verb(verbs, "produce", "append records; prints [partition, offset] of each")
    produce.add_argument("topic")
    produce.add_argument("values", nargs="+", help="record values; '-' reads one a line from stdin")
    produce.add_argument("--key", default=None)
    produce.set_defaults(func=lambda a: _call(a, lambda c: _produce(c, a)))

    consume = _verb(verbs, "consume", "read records as a group member and commit them")
    consume.add_argument("topic")
    consume.add_argument("--group", default="cli")
    consume.add_argument("--max", type=int, default=10, help="stop after this many records")
    consume.add_argument("--idle-ms", type=int, default=1000, help="stop after this long idle")
    consume.set_defaults(func=lambda a: _call(a, lambda c: _consume(c, a)))


def _verb(verbs: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    return add_verb(verbs, name, help_text, address=DEFAULT_ADDRESS, timeout_s=10.0)


async def _create(client: Any, args: argparse.Namespace) -> str:
    await client.create_topic(
        args.topic, partitions=args.partitions, retention_ms=args.retention_ms
    )
    return str(args.topic)


async def _produce(client: Any, args: argparse.Namespace) -> list[list[int]]:
    key = None if args.key is None else args.key.encode()
    results = []
    for value in read_lines(args.values):
        partition, offset = await client.produce(args.topic, value.encode(), key=key)
        results.append([partition, offset])
    return results


async def _consume(client: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    consumer = client.consumer(args.topic, args.group, wait_ms=min(args.idle_ms, 500))
    records: list[dict[str, Any]] = []
    try:
        while len(records) < args.max:
            try:
                record = await asyncio.wait_for(anext(consumer), args.idle_ms / 1000.0)
            except TimeoutError:
                break
            records.append(
                {
                    "partition": record.partition,
                    "offset": record.offset,
                    "key": None if record.key is None else record.key.decode(errors="replace"),
                    "value": record.value.decode(errors="replace"),
                    "timestamp_ms": record.timestamp_ms,
                }
            )
        await consumer.commit()
    finally:
        await consumer.close()
    return records


def _call(args: argparse.Namespace, action: Callable[[Any], Awaitable[Any]]) -> int:
    from blocks.pubsub.client import PubSubClient

    return call_and_print(args, PubSubClient, action, _text)


def _text(result: Any) -> str:
    """Consumed records one a line, produced ``partition:offset`` pairs, else the result."""
    if isinstance(result, list) and result and isinstance(result[0], dict):
        return "\n".join(f"{r['partition']}:{r['offset']}\t{r['value']}" for r in result)
    if isinstance(result, list):
        return "\n".join(f"{p}:{o}" for p, o in result)
    return str(result)


def _serve(args: argparse.Namespace) -> int:
    from blocks.pubsub.service import build_cluster_server, build_server

    return serve_node(
        args,
        member="broker",
        what="pubsub broker",
        build_server=build_server,
        build_cluster_server=build_cluster_server,
    )
