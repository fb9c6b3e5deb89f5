"""``blocks kv serve | put | get | delete | status``: run a node, talk to a cluster.

Values on the command line are UTF-8 text; results print values as text (undecodable bytes
replaced) and contexts as base64, which ``--context`` takes back to resolve siblings.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvloop

from blocks.cli import DEFAULT_PORTS, add_server_arguments, announce, print_result, server_options
from blocks.cli_server import freeze_heap
from blocks.core.errors import InvalidArgument

if TYPE_CHECKING:
    from blocks.kv.service import TlsFiles

__all__ = ["register"]

DEFAULT_CLUSTER = f"127.0.0.1:{DEFAULT_PORTS['kv']}"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("kv", help="replicated key-value store (Dynamo on Bitcask)")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    serve = verbs.add_parser("serve", help="run a kv node")
    serve.add_argument("--node-id", required=True)
    add_server_arguments(
        serve, block="kv", data_dir="required", listen_help="the data path clients and peers use"
    )
    serve.add_argument("--peer", action="append", default=[], metavar="ID=HOST:PORT")
    serve.add_argument("--grpc-listen", default=None, metavar="HOST:PORT", help="default: port 0")
    serve.add_argument(
        "--advertise",
        default=None,
        metavar="HOST:PORT",
        help="data-path address gossiped to peers and clients (default: --listen)",
    )
    serve.add_argument("--replicas", type=int, default=3)
    serve.add_argument("--read-quorum", type=int, default=2)
    serve.add_argument("--write-quorum", type=int, default=2)
    serve.add_argument("--lww", action="store_true", help="last-write-wins instead of siblings")
    serve.add_argument("--sync", choices=["always", "batch", "never"], default="batch")
    serve.add_argument("--tls-server-name", default=None, help="name peers' certificates carry")
    serve.set_defaults(func=_serve)

    put = _verb(verbs, "put", "write a value")
    put.add_argument("key")
    put.add_argument("value")
    put.add_argument("--context", default=None, help="base64 context from a get")
    put.add_argument("--w", type=int, default=None)
    put.set_defaults(func=lambda a: _call(a, lambda c: _put(c, a)))

    get = _verb(verbs, "get", "read a value (all siblings and the context)")
    get.add_argument("key")
    get.add_argument("--r", type=int, default=None)
    get.set_defaults(func=lambda a: _call(a, lambda c: _get(c, a)))

    delete = _verb(verbs, "delete", "delete a key")
    delete.add_argument("key")
    delete.add_argument("--context", default=None)
    delete.add_argument("--w", type=int, default=None)
    delete.set_defaults(func=lambda a: _call(a, lambda c: _delete(c, a)))

    status = _verb(verbs, "status", "members, health, keys per node, hints pending")
    status.set_defaults(func=lambda a: _call(a, lambda c: c.status()))


def _verb(verbs: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = verbs.add_parser(name, help=help_text)
    parser.add_argument("--cluster", default=DEFAULT_CLUSTER, metavar="HOST:PORT[,HOST:PORT]")
    parser.add_argument("--token-file", default=None)
    parser.add_argument("--tls-ca", default=None, metavar="PEM", help="speak TLS, trusting it")
    parser.add_argument(
        "--tls-server-name", default=None, help="name the nodes' certificates carry"
    )
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    return parser


def _token(path: str | None) -> str | None:
    return None if path is None else Path(path).read_text().strip()


def _context(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise InvalidArgument("--context must be the base64 a get printed") from None


def _show(versioned: Any) -> dict[str, Any]:
    value = versioned.value
    return {
        "found": value is not None,
        "value": None if value is None else value.decode(errors="replace"),
        "siblings": [s.decode(errors="replace") for s in versioned.siblings],
        "context": base64.b64encode(versioned.context).decode(),
    }


async def _put(client: Any, args: argparse.Namespace) -> dict[str, Any]:
    written = await client.put(args.key, args.value.encode(), _context(args.context), w=args.w)
    return _show(written)


async def _get(client: Any, args: argparse.Namespace) -> dict[str, Any]:
    return _show(await client.get(args.key, r=args.r))


async def _delete(client: Any, args: argparse.Namespace) -> dict[str, Any]:
    await client.delete(args.key, _context(args.context), w=args.w)
    return {"deleted": args.key}


def _call(args: argparse.Namespace, action: Callable[[Any], Awaitable[Any]]) -> int:
    from blocks.kv.client import connect

    async def main() -> Any:
        client = await connect(
            args.cluster,
            token=_token(args.token_file),
            timeout_s=args.timeout,
            tls_ca=None if args.tls_ca is None else Path(args.tls_ca),
            tls_server_name=args.tls_server_name,
        )
        try:
            return await action(client)
        finally:
            await client.close()

    result = asyncio.run(main())
    print_result(result, as_json=args.json, text=_text(result))
    return 0


def _text(result: Any) -> str:
    if isinstance(result, dict) and "siblings" in result:
        if not result["found"]:
            return "(not found)"
        lines = list(result["siblings"]) or [str(result["value"])]
        return "\n".join(lines) + f"\ncontext: {result['context']}"
    if isinstance(result, list):  # status
        return "\n".join(
            f"{r.get('node')}: {r.get('keys', '?')} keys, {r.get('hints_pending', '?')} hints, "
            f"members {r.get('members', r.get('error'))}"
            for r in result
        )
    if isinstance(result, dict) and "deleted" in result:
        return f"deleted {result['deleted']}"
    return str(result)


def _peers(specs: list[str]) -> dict[str, str]:
    peers = {}
    for spec in specs:
        name, _, address = spec.partition("=")
        if not name or ":" not in address:
            raise InvalidArgument(f"--peer wants ID=HOST:PORT, got {spec!r}")
        peers[name] = address
    return peers


def _tls_files(args: argparse.Namespace) -> TlsFiles | None:
    from blocks.kv.service import TlsFiles

    given = [args.tls_cert, args.tls_key, args.tls_ca]
    if not any(given):
        if args.tls_server_name is not None:
            raise InvalidArgument("--tls-server-name needs --tls-cert, --tls-key and --tls-ca")
        return None
    if not all(given):
        raise InvalidArgument("TLS needs all of --tls-cert, --tls-key and --tls-ca")
    return TlsFiles(
        Path(args.tls_cert), Path(args.tls_key), Path(args.tls_ca), args.tls_server_name
    )


def _serve(args: argparse.Namespace) -> int:
    from blocks.kv.cluster.driver import NodeConfig
    from blocks.kv.cluster.node import QuorumConfig
    from blocks.kv.service import build_node

    options = server_options(args)
    tls = _tls_files(args)  # kv's TLS also covers the data path and dials to peers

    async def main() -> None:
        quorum = QuorumConfig(
            replicas=args.replicas,
            read_quorum=args.read_quorum,
            write_quorum=args.write_quorum,
            lww=args.lww,
        )
        process = build_node(
            args.node_id,
            listen=options.listen,
            data_dir=args.data_dir,
            peers=_peers(args.peer),
            grpc_listen=args.grpc_listen,
            token=options.token,
            config=NodeConfig(quorum=quorum),
            sync=args.sync,
            tls=tls,
            advertise=args.advertise,
        )
        server = process.server
        server.configure_endpoints(
            metrics_listen=options.metrics_listen, access_log=options.access_log
        )
        await server.start()
        freeze_heap()
        announce(
            options,
            f"kv node {args.node_id}: data path {options.listen}, gRPC {server.address}",
            address=options.listen,
            metrics_port=server.metrics_port,
            node=args.node_id,
            listen=options.listen,
            grpc=server.address,
        )
        await server.serve_until_signalled()

    uvloop.run(main())
    return 0
