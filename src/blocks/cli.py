"""The ``blocks`` command line: one entry point for every block.

``blocks <block> serve ...`` runs a node, ``blocks <block> <verb> ...`` talks to one,
``blocks bench <block>`` measures, ``blocks demo`` runs the main job.

Each block contributes its own sub-command from ``blocks/<block>/cli.py``, which defines
``register(subparsers)``: it adds a parser named after the block whose leaf commands set
``func`` to a callable taking the parsed ``argparse.Namespace`` and returning an exit code.
Block modules are imported only when present, so a missing optional dependency (torch,
faiss) removes that block's commands instead of breaking the whole tool.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from typing import Any

from blocks import __version__

__all__ = ["main", "print_result"]

BLOCK_CLI_MODULES: tuple[str, ...] = (
    "blocks.kv.cli",
    "blocks.cache.cli",
    "blocks.queue.cli",
    "blocks.pubsub.cli",
    "blocks.sequencer.cli",
    "blocks.counters.cli",
    "blocks.ratelimit.cli",
    "blocks.blob.cli",
    "blocks.search.cli",
    "blocks.inference.cli",
    "blocks.bench_cli",
    "blocks.demo",
)


def print_result(result: Any, *, as_json: bool, text: str | None = None) -> None:
    """Print a command's result: JSON on stdout with ``--json``, else ``text`` (or repr)."""
    if as_json:
        json.dump(result, sys.stdout, default=str)
        sys.stdout.write("\n")
    else:
        print(text if text is not None else result)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blocks", description="Distributed-systems building blocks."
    )
    parser.add_argument("--version", action="version", version=f"blocks {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in BLOCK_CLI_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            # Only a missing block module or an optional dependency is skipped; a bug inside
            # a present module must still surface.
            if error.name is not None and (
                module_name.startswith(error.name) or not error.name.startswith("blocks")
            ):
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        code: int = func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code
