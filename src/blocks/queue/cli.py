"""``blocks queue serve | create | send | receive | ack | nack``."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from blocks.cli import DEFAULT_PORTS, read_lines
from blocks.cli_cluster import add_cluster_serve, serve_node
from blocks.cli_server import add_verb, call_and_print
from blocks.core.errors import InvalidArgument

__all__ = ["DEFAULT_ADDRESS", "register"]

DEFAULT_ADDRESS = f"127.0.0.1:{DEFAULT_PORTS['queue']}"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("queue", help="durable work queues")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    serve = add_cluster_serve(
        verbs,
        block="queue",
        help_text="run a queue server",
        member="node",
        peer_help="another node of the replicated queue and its --cluster-listen (repeat)",
    )
    serve.add_argument(
        "--snapshot-every",
        type=int,
        default=50_000,
        metavar="N",
        help="a cluster node snapshots its state every N applied records and cuts its log"
        " below the previous snapshot (default 50000)",
    )
    serve.add_argument(
        "--segment-bytes",
        type=int,
        default=16 << 20,
        metavar="BYTES",
        help="a cluster node's log segment size; the log is cut below a snapshot by whole"
        " segments (default 16 MiB)",
    )
    serve.add_argument(
        "--sync-interval-ms",
        type=int,
        default=None,
        metavar="MS",
        help="with --fsync never on a cluster node: fsync the log every MS milliseconds; a"
        " call is then answered once written (not fsynced) on a majority (docs/queue.md)",
    )
    serve.set_defaults(func=_serve)

    create = _verb(verbs, "create", "create a queue")
    create.add_argument("name")
    create.add_argument("--visibility-ms", type=int, default=30_000)
    create.add_argument("--max-receives", type=int, default=0)
    create.add_argument("--dead-letter", default=None)
    create.add_argument("--fifo", action="store_true")
    create.set_defaults(func=lambda a: _call(a, lambda q: _create(q, a)))

    send = _verb(verbs, "send", "send messages; prints the id of each")
    send.add_argument("name")
    send.add_argument("body", nargs="+", help="message bodies; '-' reads one a line from stdin")
    send.add_argument("--delay-ms", type=int, default=0)
    send.add_argument("--group", default=None)
    send.add_argument("--dedup-id", default=None)
    send.add_argument("--priority", type=int, default=0)
    send.set_defaults(func=lambda a: _call(a, lambda q: _send(q, a)))

    receive = _verb(verbs, "receive", "receive messages (and ack them with --ack)")
    receive.add_argument("name")
    receive.add_argument("--max", type=int, default=1)
    receive.add_argument("--wait-ms", type=int, default=0)
    receive.add_argument("--visibility-ms", type=int, default=None)
    receive.add_argument("--ack", action="store_true", help="ack each message received")
    receive.set_defaults(func=lambda a: _call(a, lambda q: _receive(q, a)))

    for verb in ("ack", "nack"):
        settle = _verb(verbs, verb, f"{verb} a received message by its receipt")
        settle.add_argument("name")
        settle.add_argument("receipt")
        settle.set_defaults(
            func=lambda a: _call(a, lambda q: getattr(q, a.verb)(a.name, a.receipt))
        )


def _verb(verbs: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    return add_verb(verbs, name, help_text, address=DEFAULT_ADDRESS, timeout_s=10.0)


async def _create(queue: Any, args: argparse.Namespace) -> str:
    await queue.create_queue(
        args.name,
        visibility_ms=args.visibility_ms,
        max_receives=args.max_receives,
        dead_letter=args.dead_letter,
        fifo=args.fifo,
    )
    return str(args.name)


async def _send(queue: Any, args: argparse.Namespace) -> str | list[str]:
    """One literal body gives its id (as before); several, or ``-``, a list of ids."""
    ids: list[str] = []
    for body in read_lines(args.body):
        message_id: str = await queue.send(
            args.name,
            body.encode(),
            delay_ms=args.delay_ms,
            group=args.group,
            dedup_id=args.dedup_id,
            priority=args.priority,
        )
        ids.append(message_id)
    single = len(args.body) == 1 and args.body != ["-"]
    return ids[0] if single else ids


async def _receive(queue: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    messages = await queue.receive(
        args.name, max_messages=args.max, wait_ms=args.wait_ms, visibility_ms=args.visibility_ms
    )
    if args.ack:
        for message in messages:
            await queue.ack(args.name, message.receipt)
    return [
        {
            "id": m.id,
            "receipt": m.receipt,
            "body": m.body.decode(errors="replace"),
            "receive_count": m.receive_count,
        }
        for m in messages
    ]


def _call(args: argparse.Namespace, action: Callable[[Any], Awaitable[Any]]) -> int:
    from blocks.queue.client import QueueClient

    return call_and_print(args, QueueClient, action, _text)


def _text(result: Any) -> str:
    """Sent ids one a line, received messages ``id receipt body``, else the result."""
    if isinstance(result, list) and result and isinstance(result[0], str):
        return "\n".join(result)  # send: one id a line
    if isinstance(result, list):
        return "\n".join(f"{m['id']}\t{m['receipt']}\t{m['body']}" for m in result)
    return "ok" if result is None else str(result)


def _serve(args: argparse.Namespace) -> int:
    """A single-node server without ``--peer``, else a replicated queue node."""
    from blocks.queue.service import build_cluster_server, build_server

    if args.sync_interval_ms is not None and (not args.peer or args.fsync != "never"):
        raise InvalidArgument("--sync-interval-ms goes with --fsync never on a cluster node")
    return serve_node(
        args,
        member="node",
        what="queue server",
        build_server=build_server,
        build_cluster_server=build_cluster_server,
        snapshot_every=args.snapshot_every,
        segment_bytes_max=args.segment_bytes,
        sync_interval_ms=args.sync_interval_ms,
    )
