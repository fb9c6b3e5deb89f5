"""The README's table of commands matches the command line, both ways."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from blocks.cli import DEFAULT_PORTS, build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _table() -> dict[str, tuple[str, list[str]]]:
    """command -> (serve cell, verbs named in backticks) from the README's command table."""
    rows: dict[str, tuple[str, list[str]]] = {}
    for line in README.read_text().splitlines():
        match = re.match(r"\| `blocks ([a-z-]+)` \|([^|]*)\|([^|]*)\|$", line)
        if match:
            command, serve, verbs = match.groups()
            rows[command] = (serve.strip(), re.findall(r"`([a-z][a-z-]*)`", verbs))
    return rows


def test_every_listed_command_and_verb_exists() -> None:
    commands = _subcommands(build_parser())
    table = _table()
    assert table, "no command table found in README.md"
    for command, (serve, verbs) in table.items():
        assert command in commands, f"README lists `blocks {command}`, the CLI has no such command"
        actual = _subcommands(commands[command])
        listed = set(verbs) | ({"serve"} if serve else set())
        assert listed <= set(actual), (command, sorted(listed - set(actual)))
        if serve:
            assert serve == f"`serve` ({DEFAULT_PORTS[command]})", (command, serve)


def test_every_command_and_verb_is_listed() -> None:
    commands = _subcommands(build_parser())
    table = _table()
    assert set(commands) <= set(table), sorted(set(commands) - set(table))
    for command, (serve, verbs) in table.items():
        actual = set(_subcommands(commands[command]))
        listed = set(verbs) | ({"serve"} if serve else set())
        assert actual <= listed, (command, sorted(actual - listed))
