"""``blocks bench <block>``: run a benchmark module from the repository's ``benchmarks/``.

Benchmarks live beside the package, not inside it (they pull in peers such as Redis or
transformers that the library never needs), so this command finds the ``benchmarks`` folder
in the current directory or next to an editable checkout of ``src/blocks``. A benchmark module
defines ``main(args) -> int`` and, optionally, ``add_arguments(parser)`` for its own flags.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["register"]

_NOT_BENCHMARKS = {"harness"}


def _benchmarks_root() -> Path | None:
    checkout = Path(__file__).resolve().parents[2]
    for root in (Path.cwd(), checkout):
        if (root / "benchmarks" / "harness.py").is_file():
            return root
    return None


def _load(name: str) -> ModuleType:
    root = _benchmarks_root()
    if root is None:
        raise SystemExit(
            "blocks bench: no benchmarks/ folder found; run it from a checkout of the repository"
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(f"benchmarks.{name}")


def available() -> list[str]:
    root = _benchmarks_root()
    if root is None:
        return []
    return sorted(
        info.name
        for info in pkgutil.iter_modules([str(root / "benchmarks")])
        if info.name not in _NOT_BENCHMARKS and not info.name.startswith("_")
    )


def _run(args: argparse.Namespace) -> int:
    if args.name is None or args.name not in available():
        print(f"available benchmarks: {', '.join(available()) or 'none'}", file=sys.stderr)
        return 0 if args.name is None else 2
    module = _load(args.name)
    if hasattr(module, "add_arguments"):
        parser = argparse.ArgumentParser(prog=f"blocks bench {args.name}")
        parser.add_argument("--out", default="results", help="results directory")
        module.add_arguments(parser)
        bench_args = parser.parse_args(args.rest)
    else:
        bench_args = argparse.Namespace(out="results", rest=args.rest)
    code: int = module.main(bench_args)
    return code


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="run a benchmark side by side with its peers",
        description="Run benchmarks/<name>.py; flags after the name go to the benchmark.",
    )
    parser.add_argument("name", nargs="?", help="benchmark name (omit to list them)")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own flags")
    parser.set_defaults(func=_run)
