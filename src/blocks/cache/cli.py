"""``blocks cache simulate | serve | get | put | delete | stats``.

``blocks cache simulate --trace FILE --policy lru,arc,wtinylfu,optimal --size 100,1000``
prints a table of hit ratios (or, with ``--json``, a list of ``{"policy", "size",
"hit_ratio"}`` objects with the ratio as a fraction) and with ``--plot out.png`` draws the
curves. Progress goes to stderr so stdout stays parseable.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from blocks.cache.simulate import OPTIMAL, POLICIES, SimulationResult, simulate
from blocks.cache.traces import FORMATS, load_trace
from blocks.cli import DEFAULT_PORTS, add_server_arguments, server_options
from blocks.cli_server import add_verb, call_and_print, parse_host_port, run_server

__all__ = ["register"]

DEFAULT_POLICIES = "lru,lfu,arc,wtinylfu,optimal"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas: {text!r}"
        ) from None
    if not values or any(value < 1 for value in values):
        raise argparse.ArgumentTypeError("sizes must be integers >= 1")
    return values


def _name_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name != OPTIMAL and name not in POLICIES]
    if not names or unknown:
        known = ", ".join([*POLICIES, OPTIMAL])
        raise argparse.ArgumentTypeError(f"unknown policy {unknown}; known: {known}")
    return names


def format_table(results: list[SimulationResult]) -> str:
    """Sizes down, policies across, hit ratios in percent."""
    policies = list(dict.fromkeys(result.policy for result in results))
    sizes = list(dict.fromkeys(result.size for result in results))
    by_cell = {(r.policy, r.size): r.hit_ratio for r in results}
    width = max(8, *(len(name) + 1 for name in policies))
    lines = ["size".rjust(8) + "".join(name.rjust(width) for name in policies)]
    for size in sizes:
        cells = "".join(f"{100 * by_cell[(name, size)]:.2f}%".rjust(width) for name in policies)
        lines.append(str(size).rjust(8) + cells)
    return "\n".join(lines)


def _simulate(args: argparse.Namespace) -> int:
    from blocks.cli import print_result

    trace = load_trace(args.trace, args.format)
    print(f"{args.trace}: {len(trace):,} requests", file=sys.stderr)

    def progress(result: SimulationResult) -> None:
        line = f"  {result.policy} @ {result.size}: {100 * result.hit_ratio:.2f}%"
        print(line, file=sys.stderr, flush=True)

    results = simulate(trace, args.policy, args.size, progress=progress)
    if args.plot:
        from blocks.cache.plot import plot_hit_ratios

        plot_hit_ratios(args.plot, results, title=str(args.trace))
    payload: list[dict[str, Any]] = [result.as_dict() for result in results]
    print_result(payload, as_json=args.json, text=format_table(results))
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("cache", help="caches: simulate traces, run and query nodes")
    commands = parser.add_subparsers(dest="cache_command", metavar="COMMAND")

    sim = commands.add_parser("simulate", help="hit ratio of eviction policies on a trace")
    sim.add_argument("--trace", required=True, help="trace file (.gz is decompressed)")
    sim.add_argument("--format", default="auto", choices=["auto", *FORMATS])
    sim.add_argument(
        "--policy", type=_name_list, default=_name_list(DEFAULT_POLICIES), help=DEFAULT_POLICIES
    )
    sim.add_argument("--size", type=_int_list, required=True, help="N[,N...] entries")
    sim.add_argument("--plot", help="write the hit-ratio curves to this PNG")
    sim.add_argument("--json", action="store_true", help="print JSON on stdout")
    sim.set_defaults(func=_simulate)

    _register_node_commands(commands)


DEFAULT_ADDRESS = f"127.0.0.1:{DEFAULT_PORTS['cache']}"


def _register_node_commands(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run a cache node")
    add_server_arguments(serve, block="cache")
    serve.add_argument("--capacity", type=int, default=100_000, help="entries (or bytes)")
    serve.add_argument("--by-bytes", action="store_true", help="capacity counts bytes")
    serve.add_argument("--policy", default="wtinylfu", choices=sorted(POLICIES))
    cluster = serve.add_argument_group("cluster (docs/cache.md, 'Cluster membership')")
    cluster.add_argument("--name", default=None, help="this node's name (default: its address)")
    cluster.add_argument(
        "--peer", action="append", default=[], metavar="HOST:PORT", help="a seed node to join"
    )
    cluster.add_argument("--advertise", default=None, metavar="HOST:PORT", help="address peers use")
    data = serve.add_argument_group("data path (docs/cache.md, 'The data path')")
    data.add_argument(
        "--data-listen",
        default=None,
        metavar="HOST:PORT",
        help="framed-TCP data path (default: the --listen host, any free port)",
    )
    data.add_argument("--no-data-path", action="store_true", help="serve data calls on gRPC only")
    data.add_argument(
        "--data-connections-max", type=int, default=1024, help="data-path connections held"
    )
    serve.set_defaults(func=_serve)

    get = _verb(commands, "get", "read a key from a node")
    get.add_argument("key")
    get.set_defaults(func=lambda a: _call(a, lambda c: _get(c, a.key)))

    put = _verb(commands, "put", "store a string value on a node")
    put.add_argument("key")
    put.add_argument("value")
    put.add_argument("--ttl", type=float, default=None, help="seconds")
    put.set_defaults(func=lambda a: _call(a, lambda c: _put(c, a.key, a.value, a.ttl)))

    delete = _verb(commands, "delete", "remove a key from a node")
    delete.add_argument("key")
    delete.set_defaults(func=lambda a: _call(a, lambda c: _delete(c, a.key)))

    stats = _verb(commands, "stats", "a node's hit ratio and counters")
    stats.set_defaults(func=lambda a: _call(a, _stats))


def _verb(commands: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    return add_verb(commands, name, help_text, address=DEFAULT_ADDRESS, timeout_s=5.0)


async def _get(client: Any, key: str) -> Any:
    from blocks.core.codec import unpack

    data = await client.get(key)
    return None if data is None else unpack(data)


async def _put(client: Any, key: str, value: str, ttl: float | None) -> bool:
    from blocks.core.codec import pack

    await client.put(key, pack(value), ttl=ttl)
    return True


async def _delete(client: Any, key: str) -> bool:
    return bool(await client.delete(key))


async def _stats(client: Any) -> dict[str, Any]:
    stats = await client.stats()
    result: dict[str, Any] = stats.as_dict()
    return result


def _call(args: argparse.Namespace, action: Any) -> int:
    from blocks.cache.client import CacheClient

    return call_and_print(args, CacheClient, action, lambda result: _text(args, result))


def _text(args: argparse.Namespace, result: Any) -> str | None:
    command = args.cache_command
    if command == "get":
        return "(miss)" if result is None else str(result)
    if command == "put":
        return f"stored {args.key}"
    if command == "delete":
        return f"deleted {args.key}" if result else f"{args.key}: not there"
    return None  # stats: aligned key  value lines


def _serve(args: argparse.Namespace) -> int:
    from blocks.cache.service import build_server

    options = server_options(args)
    data_host: str | None = None
    data_port: int | None = 0
    if args.data_listen is not None:
        data_host, data_port = parse_host_port(args.data_listen, "--data-listen")
    if args.no_data_path or options.tls_cert is not None:
        data_port = None  # the data path speaks plaintext only: a TLS node keeps data on gRPC

    def build() -> tuple[Any, Any]:
        server, service = build_server(
            capacity=args.capacity,
            policy=args.policy,
            by_bytes=args.by_bytes,
            host=options.host,
            port=options.port,
            token=options.token,
            name=args.name,
            peers=tuple(args.peer),
            advertise=args.advertise,
            data_host=data_host,
            data_port=data_port,
            data_connections_max=args.data_connections_max,
        )
        return server, service

    def announcement(server: Any, service: Any) -> tuple[str, dict[str, Any]]:
        data_address = service.data.advertised if service.data is not None else None
        text = (
            f"cache node ({args.policy}, capacity {args.capacity}) serving on {server.address}"
            f" (data path: {data_address or 'off'})"
        )
        return text, {
            "data_address": data_address,
            "policy": args.policy,
            "capacity": args.capacity,
        }

    return run_server(options, build, announcement)
