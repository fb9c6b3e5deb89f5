"""Every block has the parts the anatomy table in docs/core.md promises."""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
from pathlib import Path

import pytest

from blocks.bench_cli import available
from blocks.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
CORE_DOC = ROOT / "docs" / "core.md"
COLUMNS = ["block", "api.py", "contract.py", "cli", "`__all__`", "connect", "docs", "benchmark"]


def _anatomy() -> list[dict[str, str]]:
    lines = CORE_DOC.read_text().splitlines()
    header = "| " + " | ".join(COLUMNS) + " |"
    start = lines.index(header)
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows.append(dict(zip(COLUMNS, cells, strict=True)))
    return rows


ROWS = _anatomy()
BLOCKS_DIR = ROOT / "src" / "blocks"


def test_the_table_names_every_block_package() -> None:
    packages = {
        path.parent.name
        for path in BLOCKS_DIR.glob("*/api.py")
        if path.parent.name not in ("core", "testing")
    }
    assert packages == {row["block"] for row in ROWS}


@pytest.mark.parametrize("row", ROWS, ids=[row["block"] for row in ROWS])
def test_block_has_what_the_table_promises(row: dict[str, str]) -> None:
    block = row["block"]
    package = BLOCKS_DIR / block
    for part in ("api.py", "contract.py"):
        if row[part] == "yes":
            assert (package / part).is_file(), f"{block}: no {part}"
    if row["cli"] == "yes":
        commands = next(
            action.choices
            for action in build_parser()._actions
            if isinstance(action, argparse._SubParsersAction)
        )
        assert block in commands, f"{block}: blocks/{block}/cli.py registers no command"
    module = importlib.import_module(f"blocks.{block}")
    if row["`__all__`"] == "yes":
        names = getattr(module, "__all__", None)
        assert names, f"blocks.{block} has no __all__"
        missing = [name for name in names if not hasattr(module, name)]
        assert not missing, f"blocks.{block}.__all__ names what it lacks: {missing}"
    if row["connect"] == "yes":
        connect = getattr(module, "connect", None)
        assert callable(connect) and "connect" in module.__all__, f"blocks.{block}.connect"
        assert inspect.signature(connect).parameters, f"blocks.{block}.connect takes no address"
    assert (ROOT / row["docs"]).is_file(), f"{block}: no {row['docs']}"
    assert (ROOT / row["benchmark"]).is_file(), f"{block}: no {row['benchmark']}"
    assert Path(row["benchmark"]).stem in available(), f"blocks bench does not list {block}"


def test_bench_lists_only_runnable_benchmarks() -> None:
    names = available()
    assert "peers" not in names and "null_s3" not in names and "harness" not in names
    for name in names:
        source = (ROOT / "benchmarks" / f"{name}.py").read_text()
        assert re.search(r"^def main\(", source, re.MULTILINE), name
