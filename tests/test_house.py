"""The floors of the house (docs/core.md, "The floors"), checked on the source.

* ``blocks.core`` imports no block (and not the test kit);
* a block imports another block only through its public face: the package itself
  (``blocks.kv``) or its protocol (``blocks.kv.api``), never a module inside it;
* a block's ``contract.py`` and ``checker.py`` (test material it ships) may use the test
  kit, ``blocks.testing``; nothing else in a block may;
* ``blocks.testing`` and the command line's top-level modules may import anything;
* only ``blocks.core`` touches a ``SegmentLog``'s files: no other module imports the log's
  file layout (segment names, the segment listing, frames, rewrites), which is what a block
  would need to find or write them. (A block that walked the directory with ``os`` alone would
  pass; this checks the door, not every window.)
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "blocks"
PUBLIC_TAILS = ("", "api")  # blocks.<other> and blocks.<other>.api
FREE = {"testing"}  # the test kit reaches anything
TEST_MATERIAL = {"contract", "checker"}  # a block's modules that may use the kit
LOG_FILE_LAYOUT = {  # the modules that know where and how a SegmentLog keeps its files
    f"blocks.core.{name}"
    for name in (
        "log_format",
        "log_reads",
        "log_recovery",
        "log_rewrite",
        "log_segment",
        "log_storage",
    )
}


def _block_packages() -> set[str]:
    return {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every absolute ``blocks.*`` module a file imports (at any depth), with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "blocks":  # from blocks import kv
                names = [f"blocks.{alias.name}" for alias in node.names]
            found += [(node.lineno, name) for name in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found if name.startswith("blocks.")]


def _breaches() -> list[str]:
    packages = _block_packages()
    breaches = []
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).parts
        if len(parts) == 1 or parts[0] in FREE:
            continue  # the top-level cli/demo modules and the kit
        home = parts[0]
        for line, name in _imports(path):
            target = name.split(".")
            other = target[1]
            if other == home or other not in packages:
                continue
            where = f"{path.relative_to(SRC.parent)}:{line} imports {name}"
            if home == "core":
                breaches.append(f"{where} (core imports no block)")
            elif other == "core":
                continue
            elif other in FREE:
                if path.stem in TEST_MATERIAL:
                    continue
                breaches.append(f"{where} (only tests use the kit)")
            elif ".".join(target[2:]) not in PUBLIC_TAILS:
                breaches.append(f"{where} (use blocks.{other} or blocks.{other}.api)")
    return breaches


def test_the_floors_hold() -> None:
    assert _breaches() == []


def test_the_checker_sees_a_breach(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text("from blocks.kv.client import KVClient\nimport blocks.core.errors\n")
    assert [name for _, name in _imports(source)] == ["blocks.kv.client", "blocks.core.errors"]


def _log_file_users() -> list[str]:
    users = []
    for path in sorted(SRC.rglob("*.py")):
        if path.relative_to(SRC).parts[0] == "core":
            continue
        for line, name in _imports(path):
            if name in LOG_FILE_LAYOUT:
                users.append(f"{path.relative_to(SRC.parent)}:{line} imports {name}")
    return users


def test_only_core_touches_a_segment_logs_files() -> None:
    """Blocks change a log through SegmentLog (truncate_from, restart_at, rewrite_segment)."""
    assert _log_file_users() == []
