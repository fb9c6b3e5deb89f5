"""``blocks bench <block>``: run a benchmark module from the repository's ``benchmarks/``.

Benchmarks live beside the package, not inside it (they pull in peers such as Redis or
transformers that the library never needs), so this command finds the ``benchmarks`` folder
in the current directory or next to an editable checkout of ``src/blocks``. A benchmark module
defines ``main(args) -> int`` and, optionally, ``add_arguments(parser)`` for its own flags;
modules without a top-level ``main`` (shared helpers, peers' launchers) are not listed. The
list is read from the sources without importing them (a benchmark may need heavy peers).

With ``--json`` the benchmark's own printing goes to stderr and stdout gets one JSON object:
the benchmark, its exit code and every JSON report it wrote under ``--out`` during the run.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from blocks.cli import print_result
from blocks.core.errors import FailedPrecondition, InvalidArgument

__all__ = ["available", "register"]

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
        raise FailedPrecondition(
            "no benchmarks/ folder found (run blocks bench from a checkout of the repository)"
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(f"benchmarks.{name}")


def _has_main(path: Path) -> bool:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return False
    return any(
        isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "main"
        for node in tree.body
    )


def available() -> list[str]:
    """The runnable benchmarks: ``benchmarks/*.py`` with a top-level ``main``."""
    root = _benchmarks_root()
    if root is None:
        return []
    return sorted(
        path.stem
        for path in (root / "benchmarks").glob("*.py")
        if path.stem not in _NOT_BENCHMARKS and not path.stem.startswith("_") and _has_main(path)
    )


def _reports(out: Path, since: float) -> dict[str, Any]:
    """Every JSON file under ``out`` written since ``since`` (a run's reports), parsed."""
    found: dict[str, Any] = {}
    if not out.is_dir():
        return found
    for path in sorted(out.rglob("*.json")):
        try:
            if path.stat().st_mtime >= since:
                found[str(path.relative_to(out))] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return found


def _run(args: argparse.Namespace) -> int:
    rest = list(args.rest)
    as_json = args.json or "--json" in rest
    rest = [item for item in rest if item != "--json"]
    names = available()
    if args.name is None:
        text = "available benchmarks: " + (", ".join(names) or "none")
        print_result(names, as_json=as_json, text=text)
        return 0
    if args.name not in names:
        raise InvalidArgument(
            f"no benchmark named {args.name!r}; pick one of {', '.join(names) or 'none'}"
        )
    module = _load(args.name)
    parser = argparse.ArgumentParser(prog=f"blocks bench {args.name}")
    parser.add_argument("--out", default="results", help="results directory")
    if hasattr(module, "add_arguments"):
        module.add_arguments(parser)
    bench_args = parser.parse_args(rest)
    started = time.time() - 1.0  # file times may be coarser than time.time()
    if not as_json:
        code: int = module.main(bench_args)
        return code
    with contextlib.redirect_stdout(sys.stderr):
        code = module.main(bench_args)
    result = {
        "benchmark": args.name,
        "exit_code": code,
        "reports": _reports(Path(bench_args.out), started),
    }
    print_result(result, as_json=True)
    return code


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="run a benchmark side by side with its peers",
        description="Run benchmarks/<name>.py; flags after the name go to the benchmark.",
    )
    parser.add_argument("--json", action="store_true", help="print the list or results as JSON")
    parser.add_argument("name", nargs="?", help="benchmark name (omit to list them)")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own flags")
    parser.set_defaults(func=_run)
