"""``blocks demo``: the main job. Starts each block that exists and shows it working.

Each block contributes ``blocks/<block>/demo.py`` with ``async def demo(say)``: it starts what
it needs on 127.0.0.1 (ports chosen by the OS), prints what happens through ``say`` and stops
everything before returning. Parts run one after another; a part that fails is reported and
the others still run, and the exit code says whether every part succeeded. With ``--json``
the narration goes to stderr and stdout gets one JSON object: each part's status, seconds and
lines, and the number that failed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

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


async def _run_parts(parts: list[str], out: TextIO, report: list[dict[str, Any]]) -> int:
    failures = 0
    for part in parts:
        loaded = _load(part)
        if isinstance(loaded, str):
            print(f"\n== {part}: skipped ({loaded})", file=out, flush=True)
            report.append({"part": part, "status": "skipped", "reason": loaded, "lines": []})
            continue
        print(f"\n== {part}", file=out, flush=True)
        started = time.monotonic()
        lines: list[str] = []

        def say(line: str, _lines: list[str] = lines) -> None:
            _lines.append(line)
            print(f"  {line}", file=out, flush=True)

        entry: dict[str, Any] = {"part": part, "lines": lines}
        try:
            await loaded(say)
        except Exception as error:
            failures += 1
            print(f"  FAILED: {part}", file=out, flush=True)
            traceback.print_exc(file=out)
            entry.update(status="failed", error=f"{type(error).__name__}: {error}")
        else:
            print(f"  ok ({time.monotonic() - started:.1f}s)", file=out, flush=True)
            entry.update(status="ok")
        entry["seconds"] = round(time.monotonic() - started, 3)
        report.append(entry)
    return failures


def run_demo(
    parts: list[str] | None = None,
    *,
    out: TextIO | None = None,
    report: list[dict[str, Any]] | None = None,
) -> int:
    """Run the named demo parts (all by default); return the number that failed.

    Narration goes to ``out`` (stdout by default); ``report`` (when given) receives one
    entry per part: ``part``, ``status`` (ok, failed, skipped), ``seconds``, ``lines``.
    """
    chosen = parts if parts else list(DEMO_PARTS)
    unknown = sorted(set(chosen) - set(DEMO_PARTS))
    if unknown:
        raise SystemExit(f"unknown demo parts: {', '.join(unknown)}")
    stream = out if out is not None else sys.stdout
    entries = report if report is not None else []
    try:
        import uvloop

        return uvloop.run(_run_parts(chosen, stream, entries))
    except ImportError:  # pragma: no cover - uvloop is a required dependency
        return asyncio.run(_run_parts(chosen, stream, entries))


def _main(args: argparse.Namespace) -> int:
    from blocks.cli import print_result

    out = sys.stderr if args.json else sys.stdout
    print("blocks demo: each block starts on 127.0.0.1, shows its work, and stops.", file=out)
    report: list[dict[str, Any]] = []
    failures = run_demo(args.only, out=out, report=report)
    if args.json:
        print_result({"parts": report, "failed": failures}, as_json=True)
    elif failures:
        print(f"\n{failures} demo part(s) failed", file=sys.stderr)
    else:
        print("\nall demo parts finished")
    return 1 if failures else 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="run the main job: every block, working")
    parser.add_argument(
        "--only", nargs="+", choices=DEMO_PARTS, metavar="BLOCK", help="run only these parts"
    )
    parser.add_argument(
        "--json", action="store_true", help="narrate on stderr; print a JSON report on stdout"
    )
    parser.set_defaults(func=_main)
