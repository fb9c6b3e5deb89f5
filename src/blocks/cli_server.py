"""The flags every ``blocks <block> serve`` takes, in one place.

Theory of operation: a block's ``cli.py`` calls ``add_server_arguments(parser, block=...,
default_port=...)`` on its ``serve`` parser, then ``server_options(args)`` in its handler. The
second call checks and normalises what the user typed (``--listen HOST:PORT``, the deprecated
``--host``/``--port`` aliases with a one-line warning, a token given inline or in a file, TLS
files that go together), sets up logging (``--log-level``, ``--access-log``), and checks that
the listen and metrics ports can be bound *before* the block loads anything slow (a model, an
index): a busy port fails in milliseconds, not after the load. ``announce`` prints the one
start-up line (or JSON object) that says where the server listens, what storage it uses and
where its metrics are; scripts and tests read it.

Every default port is listed in ``DEFAULT_PORTS`` (and the table in docs/core.md): one per
block, no two alike.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import json
import logging
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from blocks.core.errors import InvalidArgument
from blocks.core.metrics import ACCESS_LOGGER

__all__ = [
    "DEFAULT_PORTS",
    "MEMORY_STORAGE",
    "AddressInUse",
    "ServerOptions",
    "add_client_arguments",
    "add_server_arguments",
    "add_verb",
    "announce",
    "call_and_print",
    "call_server",
    "check_can_bind",
    "freeze_heap",
    "parse_host_port",
    "parse_peers",
    "run_server",
    "server_options",
]

# block -> default port of what ``--listen`` binds (docs/core.md has the same table).
DEFAULT_PORTS: dict[str, int] = {
    "kv": 7101,
    "pubsub": 7201,
    "queue": 7301,
    "counters": 7302,
    "ratelimit": 7303,
    "sequencer": 7304,
    "cache": 7305,
    "search": 7400,
    "inference": 8000,
    "blob": 9000,
}

MEMORY_STORAGE = "memory (nothing survives a restart)"
LOG_LEVELS = ("debug", "info", "warning", "error")

DataDir = Literal["none", "optional", "required"]
T = TypeVar("T")
Built = TypeVar("Built")


class AddressInUse(OSError):
    """A port the server must listen on is held by another process (or not ours to bind)."""

    def __init__(self, flag: str, address: str, reason: str, code: int) -> None:
        super().__init__(code, f"cannot listen on {address} ({flag}): {reason}")
        self.flag = flag
        self.address = address


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """What the shared server flags asked for, checked."""

    block: str
    host: str
    port: int
    data_dir: str | None
    token: str | None
    tls_cert: str | None
    tls_key: str | None
    tls_ca: str | None
    metrics_listen: tuple[str, int] | None
    access_log: bool
    as_json: bool

    @property
    def listen(self) -> str:
        return _join(self.host, self.port)

    @property
    def storage(self) -> str:
        return self.data_dir if self.data_dir is not None else MEMORY_STORAGE

    def core_tls(self) -> Any:
        """A ``blocks.core.server.TlsConfig`` for the flags, or None without ``--tls-cert``."""
        if self.tls_cert is None or self.tls_key is None:
            return None
        from blocks.core.server import TlsConfig

        return TlsConfig(Path(self.tls_cert), Path(self.tls_key), _path(self.tls_ca))

    def configure(self, server: Any) -> None:
        """Apply TLS, metrics and access log to a ``blocks.core.server.Server`` still new."""
        server.configure_endpoints(
            tls=self.core_tls(), metrics_listen=self.metrics_listen, access_log=self.access_log
        )


def _path(text: str | None) -> Path | None:
    return None if text is None else Path(text)


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_host_port(text: str, flag: str = "--listen") -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too; an empty host means 127.0.0.1) as a pair."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65_535:
        raise InvalidArgument(f"{flag} wants HOST:PORT with a port in 0..65535, got {text!r}")
    return host or "127.0.0.1", int(port)


def parse_peers(specs: list[str], *, label: str = "NAME") -> dict[str, tuple[str, int]]:
    """Repeated ``--peer LABEL=HOST:PORT`` flags as ``{name: (host, port)}``; a later flag for
    a name replaces an earlier one. ``InvalidArgument`` for a spec without a name, a host or a
    numeric port."""
    peers = {}
    for spec in specs:
        name, _, address = spec.partition("=")
        host, _, port = address.rpartition(":")
        if not name or not host or not port.isdigit():
            raise InvalidArgument(f"--peer wants {label}=HOST:PORT, got {spec!r}")
        peers[name] = (host, int(port))
    return peers


def add_client_arguments(
    parser: argparse.ArgumentParser, *, address: str, timeout_s: float | None = None
) -> None:
    """The flags of a verb that calls a running server: ``--address`` (default ``address``),
    ``--token``, ``--timeout`` in seconds per call (only with ``timeout_s``, its default) and
    ``--json``."""
    parser.add_argument("--address", default=address)
    parser.add_argument("--token", default=None)
    if timeout_s is not None:
        parser.add_argument("--timeout", type=float, default=timeout_s, help="seconds per call")
    parser.add_argument("--json", action="store_true")


def call_server(
    args: argparse.Namespace, client_type: Any, action: Callable[[Any], Awaitable[T]]
) -> T:
    """Run one verb against a running server: open ``client_type(args.address,
    token=args.token, timeout_s=args.timeout)`` (the flags of ``add_client_arguments``, with
    a ``timeout_s``) as an async context manager, await ``action(client)`` and return its
    result once the client is closed. Errors pass through unchanged."""

    async def main() -> T:
        async with client_type(args.address, token=args.token, timeout_s=args.timeout) as client:
            return await action(client)

    return asyncio.run(main())


def add_verb(
    verbs: Any, name: str, help_text: str, *, address: str, timeout_s: float | None = None
) -> argparse.ArgumentParser:
    """A verb of ``blocks <block>`` that calls a running server: its parser, with the flags of
    ``add_client_arguments(address=address, timeout_s=timeout_s)``."""
    parser: argparse.ArgumentParser = verbs.add_parser(name, help=help_text)
    add_client_arguments(parser, address=address, timeout_s=timeout_s)
    return parser


def call_and_print(
    args: argparse.Namespace,
    client_type: Any,
    action: Callable[[Any], Awaitable[T]],
    text: Callable[[T], str | None],
) -> int:
    """``call_server``, then print the result (``blocks.cli.print_result``: JSON with
    ``--json``, else ``text(result)``, or the aligned default where that is None); 0."""
    from blocks.cli import print_result

    result = call_server(args, client_type, action)
    print_result(result, as_json=args.json, text=text(result))
    return 0


def add_server_arguments(
    parser: argparse.ArgumentParser,
    *,
    block: str,
    data_dir: DataDir = "none",
    data_dir_help: str = "storage directory",
    token: bool = True,
    tls: bool = True,
    listen_help: str = "where the server listens",
) -> None:
    """Add the shared server flags; ``block`` picks the default port from ``DEFAULT_PORTS``."""
    default = f"127.0.0.1:{DEFAULT_PORTS[block]}"
    group = parser.add_argument_group("server")
    group.add_argument(
        "--listen", default=None, metavar="HOST:PORT", help=f"{listen_help} (default {default})"
    )
    group.add_argument("--host", default=None, help=argparse.SUPPRESS)
    group.add_argument("--port", type=int, default=None, help=argparse.SUPPRESS)
    if data_dir == "required":
        group.add_argument("--data-dir", required=True, help=data_dir_help)
    elif data_dir == "optional":
        group.add_argument(
            "--data-dir", default=None, help=f"{data_dir_help} (default: {MEMORY_STORAGE})"
        )
    if token:
        tokens = group.add_mutually_exclusive_group()
        tokens.add_argument("--token", default=None, help="require this bearer token")
        tokens.add_argument("--token-file", default=None, help="read the token from this file")
    if tls:
        group.add_argument("--tls-cert", default=None, metavar="PEM", help="serve TLS with it")
        group.add_argument("--tls-key", default=None, metavar="PEM", help="its private key")
        group.add_argument(
            "--tls-ca", default=None, metavar="PEM", help="require client certificates it signed"
        )
    group.add_argument(
        "--metrics-listen",
        default=None,
        metavar="HOST:PORT",
        help="serve Prometheus /metrics and /health here (default: off)",
    )
    group.add_argument("--log-level", default="warning", choices=LOG_LEVELS)
    group.add_argument(
        "--access-log", action="store_true", help="log one line per request to stderr"
    )
    group.add_argument("--json", action="store_true", help="print the start-up line as JSON")
    parser.set_defaults(server_block=block)


def _listen(args: argparse.Namespace, block: str) -> tuple[str, int]:
    if args.host is None and args.port is None:
        return parse_host_port(args.listen or f"127.0.0.1:{DEFAULT_PORTS[block]}")
    print(
        "warning: --host and --port are deprecated; use --listen HOST:PORT",
        file=sys.stderr,
        flush=True,
    )
    if args.listen is not None:
        raise InvalidArgument("give --listen HOST:PORT alone, without --host/--port")
    host = args.host or "127.0.0.1"
    port = DEFAULT_PORTS[block] if args.port is None else args.port
    if not 0 <= port <= 65_535:
        raise InvalidArgument(f"--port must be within 0..65535, got {port}")
    return host, port


def _token(args: argparse.Namespace) -> str | None:
    if getattr(args, "token_file", None) is not None:
        return Path(args.token_file).read_text().strip()
    token: str | None = getattr(args, "token", None)
    return token


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is when a record comes (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


_ACCESS_HANDLER = _StderrHandler()
_ACCESS_HANDLER.setFormatter(logging.Formatter("%(asctime)s %(message)s"))


def _setup_logging(level: str, access_log: bool) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    access = logging.getLogger(ACCESS_LOGGER)
    if access_log:
        if _ACCESS_HANDLER not in access.handlers:
            access.addHandler(_ACCESS_HANDLER)
        access.setLevel(logging.INFO)
        access.propagate = False
    else:
        access.setLevel(logging.WARNING)


def check_can_bind(host: str, port: int, flag: str) -> None:
    """Raise ``AddressInUse`` unless ``host:port`` can be bound now (port 0 always can)."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise InvalidArgument(f"{flag}: cannot resolve host {host!r}: {error.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            reason = {
                errno.EADDRINUSE: "address already in use",
                errno.EACCES: "permission denied (ports below 1024 need privileges)",
                errno.EADDRNOTAVAIL: "no such address on this machine",
            }.get(error.errno or 0, error.strerror or str(error))
            raise AddressInUse(flag, _join(host, port), reason, error.errno or 0) from None


def server_options(args: argparse.Namespace) -> ServerOptions:
    """Check the shared flags, set up logging, and check the ports can be bound."""
    block: str = args.server_block
    host, port = _listen(args, block)
    metrics = None
    if args.metrics_listen is not None:
        metrics = parse_host_port(args.metrics_listen, "--metrics-listen")
    cert, key, ca = (getattr(args, name, None) for name in ("tls_cert", "tls_key", "tls_ca"))
    if (cert is None) != (key is None):
        raise InvalidArgument("--tls-cert and --tls-key go together")
    if ca is not None and cert is None:
        raise InvalidArgument("--tls-ca needs --tls-cert and --tls-key")
    for name in (cert, key, ca):
        if name is not None and not Path(name).is_file():
            raise FileNotFoundError(errno.ENOENT, "no such TLS file", name)
    options = ServerOptions(
        block=block,
        host=host,
        port=port,
        data_dir=getattr(args, "data_dir", None),
        token=_token(args),
        tls_cert=cert,
        tls_key=key,
        tls_ca=ca,
        metrics_listen=metrics,
        access_log=args.access_log,
        as_json=args.json,
    )
    _setup_logging(args.log_level, args.access_log)
    check_can_bind(host, port, "--listen")
    if metrics is not None:
        check_can_bind(*metrics, "--metrics-listen")
    return options


def announce(
    options: ServerOptions,
    text: str,
    *,
    address: str,
    metrics_port: int | None = None,
    **fields: Any,
) -> None:
    """Print the start-up line: ``text`` plus storage and metrics, or one JSON object."""
    metrics = None
    if options.metrics_listen is not None and metrics_port is not None:
        metrics = _join(options.metrics_listen[0], metrics_port)
    if options.as_json:
        record = {
            "block": options.block,
            "address": address,
            **fields,
            "data_dir": options.data_dir,
            "storage": options.storage,
            "metrics": metrics,
        }
        print(json.dumps(record), flush=True)
        return
    where = f"metrics http://{metrics}/metrics" if metrics else "metrics off"
    print(f"{text} [storage: {options.storage}; {where}]", flush=True)


def freeze_heap() -> None:
    """Collect, then move every object alive now to the collector's permanent generation
    (``gc.freeze``), for a server that has started and not yet announced itself.

    The modules, the build and the loaded state then stay out of every later collection, which
    scans only what serving allocated since. Unfrozen, each of a server's first full
    collections scanned all of it and stopped the event loop for 20-30 ms, every call in
    flight with it (replicated queue nodes, 2 cores: a 25-30 ms send p99 against 4-7 ms)."""
    gc.collect()
    gc.freeze()


def run_server(
    options: ServerOptions,
    build: Callable[[], tuple[Any, Built]],
    announcement: Callable[[Any, Built], tuple[str, dict[str, Any]]],
) -> int:
    """Serve a block until SIGINT or SIGTERM, on uvloop; returns 0 once it has stopped.

    On the loop: ``build()`` gives ``(server, built)``, a ``blocks.core.server.Server`` not
    yet started and whatever the start-up line needs from the build (a service, a broker,
    None); the server takes the flags' TLS, metrics and access log (``options.configure``)
    and starts; ``announcement(server, built)`` gives the line's text and extra fields for
    ``announce``. Errors from any step pass through unchanged. Once started, and before it
    announces itself, the process freezes its heap (``freeze_heap``)."""
    import uvloop

    async def main() -> None:
        server, built = build()
        options.configure(server)
        await server.start()
        freeze_heap()
        text, fields = announcement(server, built)
        announce(options, text, address=server.address, metrics_port=server.metrics_port, **fields)
        await server.serve_until_signalled()

    uvloop.run(main())
    return 0
