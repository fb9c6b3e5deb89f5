"""``blocks sequencer serve | next | tickets | decode``."""

from __future__ import annotations

import argparse
from typing import Any

from blocks.cli import DEFAULT_PORTS, add_server_arguments, print_result, server_options
from blocks.cli_server import add_client_arguments, call_server, run_server
from blocks.core.errors import InvalidArgument
from blocks.sequencer.snowflake import DEFAULT_EPOCH_MS, Layout, decode

__all__ = ["DEFAULT_ADDRESS", "register"]

DEFAULT_ADDRESS = f"127.0.0.1:{DEFAULT_PORTS['sequencer']}"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("sequencer", help="unique, ordered IDs (Snowflake, tickets)")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    serve = verbs.add_parser("serve", help="run a sequencer node")
    add_server_arguments(
        serve, block="sequencer", data_dir="required", data_dir_help="lease table and tickets"
    )
    serve.add_argument("--lease-ttl-ms", type=int, default=10_000)
    serve.add_argument(
        "--lease-margin-ms",
        type=int,
        default=None,
        help="clock-skew margin: the holder stops this early, a new holder waits this much "
        "longer than the TTL (default TTL/5)",
    )
    serve.add_argument(
        "--lease-from",
        default=None,
        metavar="URL",
        help="lease the worker id from kv://HOST:PORT[,HOST:PORT...] (across machines) or "
        "file:///DIR (servers of one machine; default: DATA_DIR/leases)",
    )
    serve.add_argument("--lease-token-file", default=None, help="the kv cluster's token")
    serve.add_argument("--lease-workers", type=int, default=1024, help="worker ids in kv")
    serve.set_defaults(func=_serve)

    nxt = verbs.add_parser("next", help="fetch IDs from a sequencer node")
    add_client_arguments(nxt, address=DEFAULT_ADDRESS, timeout_s=10.0)
    nxt.add_argument("--count", type=int, default=1)
    nxt.set_defaults(func=_next)

    tickets = verbs.add_parser("tickets", help="allocate a durable block of ticket numbers")
    add_client_arguments(tickets, address=DEFAULT_ADDRESS, timeout_s=10.0)
    tickets.add_argument("--count", type=int, default=1000)
    tickets.set_defaults(func=_tickets)

    dec = verbs.add_parser("decode", help="split a Snowflake ID into its fields (offline)")
    dec.add_argument("id", type=int)
    dec.add_argument("--epoch-ms", type=int, default=DEFAULT_EPOCH_MS)
    dec.add_argument("--layout", default="41,10,12", help="timestamp,worker,sequence bits")
    dec.add_argument("--json", action="store_true")
    dec.set_defaults(func=_decode)


def _serve(args: argparse.Namespace) -> int:
    from blocks.sequencer.lease_sources import parse_lease_from
    from blocks.sequencer.service import build_server

    options = server_options(args)
    lease_from = parse_lease_from(args.lease_from) if args.lease_from else None
    lease_token = None
    if args.lease_token_file is not None:
        with open(args.lease_token_file, encoding="utf-8") as handle:
            lease_token = handle.read().strip()

    def build() -> tuple[Any, Any]:
        return build_server(
            args.data_dir,
            host=options.host,
            port=options.port,
            token=options.token,
            lease_ttl_ms=args.lease_ttl_ms,
            lease_margin_ms=args.lease_margin_ms,
            lease_from=lease_from,
            lease_token=lease_token,
            lease_workers=args.lease_workers,
        )

    def announcement(server: Any, service: Any) -> tuple[str, dict[str, Any]]:
        worker_id = service.worker_id
        text = f"sequencer serving on {server.address} as worker {worker_id}"
        return text, {"worker_id": worker_id}

    return run_server(options, build, announcement)


def _next(args: argparse.Namespace) -> int:
    from blocks.sequencer.client import SequencerClient

    ids = call_server(args, SequencerClient, lambda client: client.next_ids(args.count))
    print_result(ids, as_json=args.json, text="\n".join(map(str, ids)))
    return 0


def _tickets(args: argparse.Namespace) -> int:
    from blocks.sequencer.client import SequencerClient

    block = call_server(args, SequencerClient, lambda client: client.allocate_tickets(args.count))
    result = {"start": block.start, "stop": block.stop}
    print_result(result, as_json=args.json, text=f"tickets [{block.start}, {block.stop})")
    return 0


def _decode(args: argparse.Namespace) -> int:
    try:
        bits = [int(part) for part in args.layout.split(",")]
        if len(bits) != 3:
            raise ValueError("three numbers")
        fields = decode(args.id, layout=Layout(*bits), epoch_ms=args.epoch_ms)
    except ValueError as error:
        raise InvalidArgument(f"bad --layout or ID ({error})") from None
    result = {"unix_ms": fields.unix_ms, "worker_id": fields.worker_id, "sequence": fields.sequence}
    text = f"unix_ms={fields.unix_ms} worker_id={fields.worker_id} sequence={fields.sequence}"
    print_result(result, as_json=args.json, text=text)
    return 0
