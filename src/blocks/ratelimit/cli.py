"""``blocks ratelimit serve | acquire``."""

from __future__ import annotations

import argparse
from typing import Any

from blocks.cli import DEFAULT_PORTS, add_server_arguments, print_result, server_options
from blocks.cli_server import add_client_arguments, call_server, run_server

__all__ = ["DEFAULT_ADDRESS", "register"]

DEFAULT_ADDRESS = f"127.0.0.1:{DEFAULT_PORTS['ratelimit']}"
ALGORITHMS = ("token-bucket", "gcra", "fixed-window", "sliding-log", "sliding-counter")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("ratelimit", help="per-key rate limits")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    serve = verbs.add_parser("serve", help="run a rate-limit node")
    serve.add_argument("--algorithm", choices=ALGORITHMS, default="token-bucket")
    serve.add_argument("--rate", type=float, default=10.0, help="tokens per second (buckets)")
    serve.add_argument("--burst", type=int, default=20, help="bucket size, or window limit")
    serve.add_argument("--window-ms", type=int, default=1000)
    add_server_arguments(
        serve,
        block="ratelimit",
        data_dir="optional",
        data_dir_help="log and snapshots: limits and shared windows survive restarts",
    )
    serve.set_defaults(func=_serve)

    acquire = verbs.add_parser("acquire", help="ask a node to admit one request")
    acquire.add_argument("key")
    acquire.add_argument("--cost", type=int, default=1)
    add_client_arguments(acquire, address=DEFAULT_ADDRESS, timeout_s=10.0)
    acquire.set_defaults(func=_acquire)


def _serve(args: argparse.Namespace) -> int:
    from blocks.ratelimit.durable import ContinuedClock
    from blocks.ratelimit.service import build_server, make_limiter

    options = server_options(args)

    def build() -> tuple[Any, None]:
        clock = ContinuedClock()
        limiter = make_limiter(
            args.algorithm,
            rate_per_s=args.rate,
            burst=args.burst,
            window_ms=args.window_ms,
            clock=clock,
        )
        server, _ = build_server(
            limiter,
            host=options.host,
            port=options.port,
            token=options.token,
            data_dir=args.data_dir,
            clock=clock,
        )
        return server, None

    def announcement(server: Any, _: None) -> tuple[str, dict[str, Any]]:
        text = f"ratelimit ({args.algorithm}) serving on {server.address}"
        return text, {"algorithm": args.algorithm}

    return run_server(options, build, announcement)


def _acquire(args: argparse.Namespace) -> int:
    from blocks.ratelimit.client import RateLimitClient

    decision = call_server(
        args, RateLimitClient, lambda client: client.acquire(args.key, args.cost)
    )
    result = decision.to_dict()
    verdict = (
        "allowed" if result["allowed"] else f"refused, retry after {result['retry_after_ms']} ms"
    )
    print_result(result, as_json=args.json, text=f"{verdict} (remaining {result['remaining']})")
    return 0
