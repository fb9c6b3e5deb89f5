"""The ``blocks`` command line: one entry point for every block.

``blocks <block> serve ...`` runs a node, ``blocks <block> <verb> ...`` talks to one,
``blocks bench <block>`` measures, ``blocks demo`` runs the main job.

Each block contributes its own sub-command from ``blocks/<block>/cli.py``, which defines
``register(subparsers)``: it adds a parser named after the block whose leaf commands set
``func`` to a callable taking the parsed ``argparse.Namespace`` and returning an exit code.
Block modules are imported only when present, so a missing optional dependency (torch,
faiss) removes that block's commands instead of breaking the whole tool; and when the
command line names a block, only that block's module is imported (a ``blocks kv get``
does not pay for importing search and inference).

Errors: a command raises; ``main`` prints one line ``error: <what went wrong>: <what to do>``
on stderr and returns the documented exit code (``blocks.cli_errors``); ``--debug`` prints
the traceback as well. Every ``serve`` takes the same flags (``blocks.cli_server``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from blocks import __version__
from blocks.cli_errors import EXIT_CODES, ExitCode, describe
from blocks.cli_server import (
    DEFAULT_PORTS,
    ServerOptions,
    add_server_arguments,
    announce,
    server_options,
)

__all__ = [
    "DEFAULT_PORTS",
    "ExitCode",
    "ServerOptions",
    "add_server_arguments",
    "announce",
    "build_parser",
    "main",
    "print_result",
    "read_lines",
    "server_options",
]

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


def _aligned(result: Any) -> str:
    """Human text for a result with no text of its own: never a Python repr."""
    if result is None:
        return "ok"
    if isinstance(result, bool):
        return "yes" if result else "no"
    if isinstance(result, dict):
        width = max((len(str(key)) for key in result), default=0)
        return "\n".join(
            f"{str(key).ljust(width)}  {_scalar(value)}" for key, value in result.items()
        )
    if isinstance(result, (list, tuple)):
        return "\n".join(_scalar(item) for item in result)
    return str(result)


def _scalar(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key}={_scalar(item)}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return " ".join(_scalar(item) for item in value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_result(result: Any, *, as_json: bool, text: str | None = None) -> None:
    """Print a command's result: JSON on stdout with ``--json``, else ``text``.

    Without ``text`` a dict prints as aligned ``key  value`` lines, a list one item a line,
    ``None`` as ``ok``: never a Python repr.
    """
    if as_json:
        json.dump(result, sys.stdout, default=str)
        sys.stdout.write("\n")
    else:
        print(text if text is not None else _aligned(result))
    sys.stdout.flush()


def read_lines(values: Sequence[str]) -> list[str]:
    """``values``, with a lone ``-`` replaced by stdin's lines (one record a line, like kcat)."""
    if list(values) != ["-"]:
        return list(values)
    return [line.rstrip("\r\n") for line in sys.stdin if line.rstrip("\r\n")]


def _epilog() -> str:
    codes = "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES)
    return (
        "Errors print one line, 'error: <what went wrong>: <what to do>', on stderr\n"
        f"(--debug adds the traceback). Exit codes:\n{codes}"
    )


def _command_name(module_name: str) -> str:
    """The sub-command a module registers: ``blocks.kv.cli`` -> ``kv``, ``blocks.demo`` -> ``demo``."""
    parts = module_name.split(".")
    return parts[1].removesuffix("_cli")


def _named_command(argv: Sequence[str]) -> str | None:
    """The block named by ``argv`` (its first word that is not an option), if it is one."""
    names = {_command_name(m) for m in BLOCK_CLI_MODULES}
    for word in argv:
        if not word.startswith("-"):
            return word if word in names else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``only``, just that block's commands (the others not imported)."""
    parser = argparse.ArgumentParser(
        prog="blocks",
        description="Distributed-systems building blocks.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"blocks {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in BLOCK_CLI_MODULES:
        if only is not None and _command_name(module_name) != only:
            continue
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
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=_named_command(words))
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        code: int = func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception as error:
        if args.debug:
            traceback.print_exc()
        line, code = describe(error, args)
        print(line, file=sys.stderr, flush=True)
        return code
    return code
