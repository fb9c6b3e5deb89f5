"""``blocks sequencer serve | next | tickets | decode``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import uvloop

from blocks.cli import print_result
from blocks.core.errors import BlocksError
from blocks.sequencer.snowflake import DEFAULT_EPOCH_MS, Layout, decode

__all__ = ["register"]

DEFAULT_ADDRESS = "127.0.0.1:7301"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("sequencer", help="unique, ordered IDs (Snowflake, tickets)")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    serve = verbs.add_parser("serve", help="run a sequencer node")
    serve.add_argument("--data-dir", required=True, help="lease table and ticket state")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=7301)
    serve.add_argument("--token", default=None, help="require this bearer token")
    serve.add_argument("--lease-ttl-ms", type=int, default=10_000)
    serve.add_argument("--json", action="store_true", help="print the address as JSON")
    serve.set_defaults(func=_serve)

    nxt = verbs.add_parser("next", help="fetch IDs from a sequencer node")
    _client_arguments(nxt)
    nxt.add_argument("--count", type=int, default=1)
    nxt.set_defaults(func=_next)

    tickets = verbs.add_parser("tickets", help="allocate a durable block of ticket numbers")
    _client_arguments(tickets)
    tickets.add_argument("--count", type=int, default=1000)
    tickets.set_defaults(func=_tickets)

    dec = verbs.add_parser("decode", help="split a Snowflake ID into its fields (offline)")
    dec.add_argument("id", type=int)
    dec.add_argument("--epoch-ms", type=int, default=DEFAULT_EPOCH_MS)
    dec.add_argument("--layout", default="41,10,12", help="timestamp,worker,sequence bits")
    dec.add_argument("--json", action="store_true")
    dec.set_defaults(func=_decode)


def _client_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=DEFAULT_ADDRESS)
    parser.add_argument("--token", default=None)
    parser.add_argument("--json", action="store_true")


def _fail(error: BlocksError) -> int:
    print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
    return 1


def _serve(args: argparse.Namespace) -> int:
    from blocks.sequencer.service import build_server

    async def main() -> None:
        server, service = build_server(
            args.data_dir,
            host=args.host,
            port=args.port,
            token=args.token,
            lease_ttl_ms=args.lease_ttl_ms,
        )
        await server.start()
        worker_id = service.worker_id
        print_result(
            {"address": server.address, "worker_id": worker_id},
            as_json=args.json,
            text=f"sequencer serving on {server.address} as worker {worker_id}",
        )
        sys.stdout.flush()
        await server.serve_until_signalled()

    try:
        uvloop.run(main())
    except BlocksError as error:
        return _fail(error)
    return 0


def _next(args: argparse.Namespace) -> int:
    from blocks.sequencer.client import SequencerClient

    async def main() -> list[int]:
        async with SequencerClient(args.address, token=args.token) as client:
            return await client.next_ids(args.count)

    try:
        ids = asyncio.run(main())
    except BlocksError as error:
        return _fail(error)
    print_result(ids, as_json=args.json, text="\n".join(map(str, ids)))
    return 0


def _tickets(args: argparse.Namespace) -> int:
    from blocks.sequencer.client import SequencerClient

    async def main() -> range:
        async with SequencerClient(args.address, token=args.token) as client:
            return await client.allocate_tickets(args.count)

    try:
        block = asyncio.run(main())
    except BlocksError as error:
        return _fail(error)
    result = {"start": block.start, "stop": block.stop}
    print_result(result, as_json=args.json, text=f"tickets [{block.start}, {block.stop})")
    return 0


def _decode(args: argparse.Namespace) -> int:
    try:
        bits = [int(part) for part in args.layout.split(",")]
        if len(bits) != 3:
            raise ValueError
        fields = decode(args.id, layout=Layout(*bits), epoch_ms=args.epoch_ms)
    except ValueError as error:
        print(f"error: bad --layout or ID: {error}", file=sys.stderr)
        return 2
    result = {"unix_ms": fields.unix_ms, "worker_id": fields.worker_id, "sequence": fields.sequence}
    text = f"unix_ms={fields.unix_ms} worker_id={fields.worker_id} sequence={fields.sequence}"
    print_result(result, as_json=args.json, text=text)
    return 0
