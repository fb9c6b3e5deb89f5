"""``blocks blob``: serve the S3 API, talk to a server, scrub a data directory.

Commands: ``serve`` (a node, S3 on ``--listen``), ``mb``/``ls``/``put``/``get``/``rm`` (a
small signed client against ``--endpoint``) and ``scrub`` (verify and repair a stopped node's
data directory). Every printing command takes ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blocks.blob.s3.allocator import tune_for_large_buffers
from blocks.cli import (
    DEFAULT_PORTS,
    ServerOptions,
    add_server_arguments,
    announce,
    print_result,
    server_options,
)
from blocks.core.errors import InvalidArgument

if TYPE_CHECKING:
    from blocks.blob.cluster.peer_protocol import PeerChannel, ShardHost

__all__ = ["DEFAULT_ENDPOINT", "register"]

DEFAULT_ENDPOINT = f"http://127.0.0.1:{DEFAULT_PORTS['blob']}"


def _access_keys(args: argparse.Namespace) -> tuple[dict[str, str], frozenset[str] | None]:
    """Credentials and admin keys from ``--access-key``/``--secret-key`` (an admin) and
    ``--access-key-file`` (``s3.access.parse_access_keys``); admins ``None`` without a file
    (the one key may do anything, as before owners were kept)."""
    from blocks.blob.s3.access import parse_access_keys

    credentials = {args.access_key: args.secret_key} if args.access_key else {}
    if args.access_key_file is None:
        return credentials, None
    admins = set(credentials)
    for key in parse_access_keys(Path(args.access_key_file).read_text(encoding="utf-8")):
        if key.access_key in credentials:
            raise InvalidArgument(f"access key {key.access_key!r} given twice")
        credentials[key.access_key] = key.secret
        if key.admin:
            admins.add(key.access_key)
    return credentials, frozenset(admins)


def _ssl_context(options: ServerOptions) -> Any:
    if options.tls_cert is None:
        return None
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(options.tls_cert, options.tls_key)
    if options.tls_ca is not None:
        context.load_verify_locations(options.tls_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _metrics(server: Any, options: ServerOptions) -> Any:
    """``/metrics`` and ``/health`` for ``--metrics-listen``: refused connections so far."""
    from prometheus_client import CollectorRegistry, Gauge

    from blocks.core.metrics import MetricsHttp

    registry = CollectorRegistry()
    refused = Gauge(
        "blocks_blob_connections_refused",
        "S3 connections refused at the connection limit since start.",
        registry=registry,
    )
    refused.set_function(lambda: server.refused_connections)
    return MetricsHttp(registry)


async def _serve_async(args: argparse.Namespace, options: ServerOptions) -> None:
    from blocks.blob.cluster.node import open_node
    from blocks.blob.s3.handler import S3Config
    from blocks.blob.server import BlobServer
    from blocks.blob.store import LocalBlobStore

    host, port = options.host, options.port
    store: LocalBlobStore
    replicator = None
    peer_link: _TcpPeers | None = None
    # A cluster (a node with peers) replicates its metadata unless told not to.
    if args.peer if args.replicate_metadata is None else args.replicate_metadata:
        from blocks.blob.cluster.node import open_replica

        self_address, peers, connect = f"{host}:{port}", args.peer or (), None
        if args.peer_listen:
            peer_link = _TcpPeers(args.peer_listen, peers, args.cluster_token or "")
            self_address, peers, connect = peer_link.name, peer_link.peers, peer_link.connect
        store, local, replicator = open_replica(
            args.data_dir,
            self_address=self_address,
            peers=peers,
            cluster_token=args.cluster_token or "",
            codec=args.codec,
            chunk_bytes=args.chunk_kib * 1024,
            fsync=not args.no_fsync,
            sync_interval_s=args.meta_sync_s,
            gc_grace_s=args.gc_grace_s,
            connect=connect,
        )
        if peer_link is not None:
            await peer_link.start(local)
        await asyncio.to_thread(replicator.sync_once)  # a wiped node catches up first
    else:
        if args.peer_listen:
            raise InvalidArgument("--peer-listen needs replicated metadata")
        store, local = open_node(
            args.data_dir,
            peers=args.peer or (),
            cluster_token=args.cluster_token,
            codec=args.codec,
            chunk_bytes=args.chunk_kib * 1024,
            fsync=not args.no_fsync,
        )
    credentials, admins = _access_keys(args)
    ssl_context = _ssl_context(options)
    config = S3Config(credentials=credentials, cluster_token=args.cluster_token, admins=admins)
    server = BlobServer(
        store, host=host, port=port, config=config, ssl_context=ssl_context, local_shards=local
    )
    await server.start()
    if replicator is not None:
        replicator.start()
    metrics = None
    if options.metrics_listen is not None:
        metrics = _metrics(server, options)
        metrics.start(options.metrics_listen[1], options.metrics_listen[0])
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stopping.set)
    auth = "SigV4 required" if credentials else "no authentication"
    announce(
        options,
        f"blob: serving S3 on {server.endpoint} ({auth}, {store.codec.spec()})",
        address=f"{server.host}:{server.port}",
        metrics_port=None if metrics is None else metrics.port,
        endpoint=server.endpoint,
    )
    try:
        await stopping.wait()
    finally:
        if metrics is not None:
            metrics.stop()
        await server.stop()
        if peer_link is not None:
            await peer_link.close()
        if replicator is not None:
            await asyncio.to_thread(replicator.close)
        store.close()
        if not options.as_json:
            print("blob: stopped", flush=True)


class _TcpPeers:
    """A node's peer traffic on a ``TcpTransport`` (``--peer-listen``) instead of its S3
    port: the transport, its name and the peers' names, and the pool that answers them."""

    def __init__(self, listen: str, peers: Sequence[str], token: str) -> None:
        from blocks.blob.cluster.peer_transport import tcp_peer_transport
        from blocks.blob.s3.workers import SHARD_THREADS

        self.transport, self.peers = tcp_peer_transport(listen, peers, token)
        self.name = self.transport.name
        self._pool = ThreadPoolExecutor(SHARD_THREADS, thread_name_prefix="blob-peer")

    def connect(self, name: str) -> PeerChannel:
        from blocks.blob.cluster.peer_transport import TransportPeerChannel

        return TransportPeerChannel(self.transport, name, asyncio.get_running_loop())

    async def start(self, host: ShardHost) -> None:
        from blocks.blob.cluster.peer_transport import serve_peers

        await self.transport.start()
        serve_peers(self.transport, host, self._pool)

    async def close(self) -> None:
        await self.transport.close()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _serve(args: argparse.Namespace) -> int:
    if bool(args.access_key) != bool(args.secret_key):
        raise InvalidArgument("--access-key and --secret-key go together")
    options = server_options(args)
    tune_for_large_buffers()
    import uvloop

    uvloop.run(_serve_async(args, options))
    return 0


def _client(args: argparse.Namespace) -> Any:
    from blocks.blob.client import S3Client

    return S3Client(args.endpoint, args.access_key or "", args.secret_key or "")


def _mb(args: argparse.Namespace) -> int:
    _client(args).create_bucket(args.bucket)
    print_result({"bucket": args.bucket}, as_json=args.json, text=f"created {args.bucket}")
    return 0


def _ls(args: argparse.Namespace) -> int:
    client = _client(args)
    if not args.bucket:
        buckets = client.list_buckets()
        print_result(buckets, as_json=args.json, text="\n".join(buckets))
        return 0
    keys = client.list_keys(args.bucket, args.prefix)
    rows = [{"key": key, "size": size} for key, size in keys]
    text = "\n".join(f"{size:>12}  {key}" for key, size in keys)
    print_result(rows, as_json=args.json, text=text)
    return 0


def _put(args: argparse.Namespace) -> int:
    data = Path(args.file).read_bytes()
    etag = _client(args).put_object(args.bucket, args.key, data)
    result = {"bucket": args.bucket, "key": args.key, "size": len(data), "etag": etag}
    print_result(result, as_json=args.json, text=f"put {args.key}: {len(data)} bytes, {etag}")
    return 0


def _get(args: argparse.Namespace) -> int:
    data = _client(args).get_object(args.bucket, args.key, args.range)
    if args.file == "-":
        sys.stdout.buffer.write(data)
        return 0
    Path(args.file).write_bytes(data)
    result = {"bucket": args.bucket, "key": args.key, "size": len(data)}
    print_result(result, as_json=args.json, text=f"wrote {len(data)} bytes to {args.file}")
    return 0


def _rm(args: argparse.Namespace) -> int:
    _client(args).delete_object(args.bucket, args.key)
    print_result({"deleted": args.key}, as_json=args.json, text=f"deleted {args.key}")
    return 0


def _scrub(args: argparse.Namespace) -> int:
    from blocks.blob.cluster.node import open_node

    store, _ = open_node(
        args.data_dir, peers=args.peer or (), cluster_token=args.cluster_token, codec=args.codec
    )
    with store:
        report = store.scrub()
    result = {
        "chunks_checked": report.chunks_checked,
        "shards_repaired": report.shards_repaired,
        "chunks_lost": report.chunks_lost,
        "chunks_collected": report.chunks_collected,
    }
    text = ", ".join(f"{name}={value}" for name, value in result.items())
    print_result(result, as_json=args.json, text=text)
    return 1 if report.chunks_lost else 0


def _add_client_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", default=DEFAULT_ENDPOINT)
    parser.add_argument("--access-key", default="")
    parser.add_argument("--secret-key", default="")
    parser.add_argument("--json", action="store_true", help="print JSON")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("blob", help="erasure-coded blob store with an S3 API")
    commands = parser.add_subparsers(dest="blob_command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run a node serving the S3 API")
    add_server_arguments(
        serve,
        block="blob",
        data_dir="required",
        data_dir_help="metadata and shard directory",
        token=False,
        listen_help="where the S3 API listens",
    )
    serve.add_argument("--access-key", default="", help="SigV4 access key id")
    serve.add_argument("--secret-key", default="", help="SigV4 secret")
    serve.add_argument(
        "--access-key-file",
        default=None,
        help="lines 'ACCESS_KEY SECRET [admin]': several keys, each owning its buckets",
    )
    serve.add_argument(
        "--peer",
        action="append",
        help="http://host:port of a peer (tcp://host:port, its --peer-listen, with --peer-listen)",
    )
    serve.add_argument(
        "--peer-listen",
        default=None,
        help="host:port for the nodes' traffic as framed msgpack over TCP (core.Transport) "
        "instead of HTTP on the S3 port; every node of the cluster needs it",
    )
    serve.add_argument("--cluster-token", default=None, help="shared token between peers")
    serve.add_argument("--codec", default="rs:4+2", help="rs:K+M or replicate:N")
    serve.add_argument("--chunk-kib", type=int, default=4096, help="chunk size in KiB")
    serve.add_argument("--no-fsync", action="store_true", help="do not fsync (faster, unsafe)")
    serve.add_argument(
        "--replicate-metadata",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep every object's metadata on every peer (majority writes; docs/blob.md); "
        "on by default with --peer; --no-replicate-metadata only for a data directory "
        "written with per-node metadata",
    )
    serve.add_argument("--meta-sync-s", type=float, default=30.0, help="metadata sync period")
    serve.add_argument(
        "--gc-grace-s", type=float, default=3600.0, help="age before a chunk may be collected"
    )
    serve.set_defaults(func=_serve)

    for name, func, help_text in (
        ("mb", _mb, "create a bucket"),
        ("ls", _ls, "list buckets, or keys in a bucket"),
        ("put", _put, "upload a file"),
        ("get", _get, "download an object"),
        ("rm", _rm, "delete an object"),
    ):
        command = commands.add_parser(name, help=help_text)
        _add_client_arguments(command)
        command.set_defaults(func=func)
        if name == "ls":
            command.add_argument("bucket", nargs="?", default="")
            command.add_argument("--prefix", default="")
        else:
            command.add_argument("bucket")
        if name in ("put", "get", "rm"):
            command.add_argument("key")
        if name in ("put", "get"):
            command.add_argument("file", help="local file ('-' for stdout with get)")
        if name == "get":
            command.add_argument("--range", default=None, help="e.g. bytes=0-99")

    scrub = commands.add_parser("scrub", help="verify and repair a stopped node's data")
    scrub.add_argument("--data-dir", required=True)
    scrub.add_argument("--codec", default="rs:4+2")
    scrub.add_argument("--peer", action="append", help="the node's peers, as when serving")
    scrub.add_argument("--cluster-token", default=None)
    scrub.add_argument("--json", action="store_true", help="print JSON")
    scrub.set_defaults(func=_scrub)
