"""``blocks demo``: the main job. Starts each block that exists and shows it working.

Each block contributes ``blocks/<block>/demo.py`` with ``async def demo(say)``: it starts what
it needs on 127.0.0.1 (ports chosen by the OS), prints what happens through ``say`` and stops
everything before returning. Parts run one after another; a part that fails is reported and
the others still run, and the exit code says whether every part succeeded.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["DEMO_PARTS", "register", "run_demo"]

DEMO_PARTS: tuple[str, ...] = (
    "core",
    "kv",
    "cache",
    "queue",
    "pubsub",
    "sequencer",
    "counters",
    "ratelimit",
    "blob",
    "search",
    "inference",
)

DemoFn = Callable[[Callable[[str], None]], Awaitable[None]]


def _load(part: str) -> DemoFn | str:
    """The part's demo function, or the reason it is not available."""
    try:
        module = importlib.import_module(f"blocks.{part}.demo")
    except ModuleNotFoundError as error:
        if error.name is not None and error.name.startswith(f"blocks.{part}"):
            return "not built yet"
        return f"needs {error.name} (install the matching extra)"
    demo: DemoFn = module.demo
    return demo


async def _run_parts(parts: list[str]) -> int:
    failures = 0
    for part in parts:
        loaded = _load(part)
        if isinstance(loaded, str):
            print(f"\n== {part}: skipped ({loaded})", flush=True)
            continue
        print(f"\n== {part}", flush=True)
        started = time.monotonic()

        def say(line: str, _part: str = part) -> None:
            print(f"  {line}", flush=True)

        try:
            await loaded(say)
        except Exception:
            failures += 1
            print(f"  FAILED: {part}", flush=True)
            traceback.print_exc()
        else:
            print(f"  ok ({time.monotonic() - started:.1f}s)", flush=True)
    return failures


def run_demo(parts: list[str] | None = None) -> int:
    """Run the named demo parts (all by default); return the number that failed."""
    chosen = parts if parts else list(DEMO_PARTS)
    unknown = sorted(set(chosen) - set(DEMO_PARTS))
    if unknown:
        raise SystemExit(f"unknown demo parts: {', '.join(unknown)}")
    try:
        import uvloop

        return uvloop.run(_run_parts(chosen))
    except ImportError:  # pragma: no cover - uvloop is a required dependency
        return asyncio.run(_run_parts(chosen))


def _main(args: argparse.Namespace) -> int:
    print("blocks demo: each block starts on 127.0.0.1, shows its work, and stops.")
    failures = run_demo(args.only)
    if failures:
        print(f"\n{failures} demo part(s) failed", file=sys.stderr)
        return 1
    print("\nall demo parts finished")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="run the main job: every block, working")
    parser.add_argument(
        "--only", nargs="+", choices=DEMO_PARTS, metavar="BLOCK", help="run only these parts"
    )
    parser.set_defaults(func=_main)
