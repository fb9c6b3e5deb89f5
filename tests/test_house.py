"""The floors of the house (docs/core.md, "The floors"), checked on the source.

* ``blocks.core`` imports no block (and not the test kit);
* a block imports another block only through its public face: the package itself
  (``blocks.kv``) or its protocol (``blocks.kv.api``), never a module inside it;
* a block's ``contract.py`` and ``checker.py`` (test material it ships) may use the test
  kit, ``blocks.testing``; nothing else in a block may;
* ``blocks.testing`` and the command line's top-level modules may import anything;
* core's layers, the packages ``blocks.core.log`` and ``blocks.core.net``, are entered by the
  package alone: no module outside a layer imports one of its modules, or a name its
  ``__init__`` does not list in ``__all__``. So only ``blocks.core.log`` touches a
  ``SegmentLog``'s files: nothing else imports the log's file layout (segment names, the
  segment listing, frames, rewrites), which is what a block would need to find or write them.
  (A block that walked the directory with ``os`` alone would pass; this checks the door, not
  every window.)
* kv's Bitcask engine, ``blocks.kv.engine``, imports only core, ``blocks.kv.limits`` and
  itself, and no module of ``blocks.kv`` imports one that imports it back (docs/kv.md,
  "Where the code lives").
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "blocks"
PUBLIC_TAILS = ("", "api")  # blocks.<other> and blocks.<other>.api
FREE = {"testing"}  # the test kit reaches anything
TEST_MATERIAL = {"contract", "checker"}  # a block's modules that may use the kit
CORE = SRC / "core"


def _block_packages() -> set[str]:
    return {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}


def _is_module(name: str) -> bool:
    """Whether ``blocks.x.y`` names a module or package under ``src/``."""
    path = SRC.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


# (line, module, level, imported names): one per ``from m import a, b`` (module None and level
# 0 for ``import a, b``)
Statement = tuple[int, str | None, int, tuple[str, ...]]


@functools.cache
def _statements(source: str, filename: str) -> tuple[Statement, ...]:
    """Every import statement of a file at any depth, in ``ast.walk`` order; parsed and walked
    once per content, since several checks go through every file under src."""
    statements: list[Statement] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.ImportFrom):
            names = tuple(alias.name for alias in node.names)
            statements.append((node.lineno, node.module, node.level, names))
        elif isinstance(node, ast.Import):
            statements.append((node.lineno, None, 0, tuple(a.name for a in node.names)))
    return tuple(statements)


def _statements_of(path: Path) -> tuple[Statement, ...]:
    return _statements(path.read_text(), str(path))


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every absolute ``blocks.*`` module a file imports (at any depth), with its line.

    ``from blocks.core.log import storage`` imports the module ``blocks.core.log.storage``;
    ``from blocks.core.log import SegmentLog`` imports ``blocks.core.log``.
    """
    found: list[tuple[int, str]] = []
    for line, module, level, aliases in _statements_of(path):
        if module is None and level == 0:  # import a, b
            found += [(line, alias) for alias in aliases]
        elif module and level == 0:
            inner = [f"{module}.{alias}" for alias in aliases]
            names = [name for name in inner if _is_module(name)] or [module]
            found += [(line, name) for name in names]
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
    source.write_text(
        "from blocks.kv.client import KVClient\nimport blocks.core.errors\n"
        "from blocks.kv import client\nfrom blocks import kv\n"
    )
    assert [name for _, name in _imports(source)] == [
        "blocks.kv.client",
        "blocks.core.errors",
        "blocks.kv.client",
        "blocks.kv",
    ]


def _layers() -> dict[str, set[str]]:
    """Each layer of core (a package inside it) with the names its ``__init__`` exports."""
    layers = {}
    for init in sorted(CORE.glob("*/__init__.py")):
        exported: set[str] = set()
        for node in ast.parse(init.read_text(), str(init)).body:
            if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
            ):
                exported = set(ast.literal_eval(node.value))
        layers[f"blocks.core.{init.parent.name}"] = exported
    return layers


def _package_of(path: Path) -> str:
    """``blocks.core.log`` for ``src/blocks/core/log/segment.py``; "" for a file outside src."""
    if not path.is_relative_to(SRC):
        return ""
    return ".".join(("blocks", *path.relative_to(SRC).parts[:-1]))


def _layer_breaches(paths: list[Path]) -> list[str]:
    layers = _layers()
    breaches = []
    for path in paths:
        where = path.relative_to(SRC.parent) if path.is_relative_to(SRC) else path
        home = _package_of(path) + "."
        outside = [layer for layer in layers if not home.startswith(f"{layer}.")]
        for line, name in _imports(path):
            breaches += [
                f"{where}:{line} imports {name} (import {layer} itself)"
                for layer in outside
                if name.startswith(f"{layer}.")
            ]
        for line, module, level, aliases in _statements_of(path):
            if module is not None and level == 0 and module in outside:
                breaches += [
                    f"{where}:{line} imports {alias} from {module} (not in its __all__)"
                    for alias in aliases
                    if alias not in layers[module] and not _is_module(f"{module}.{alias}")
                ]
    return breaches


def test_core_layers_are_entered_by_their_package() -> None:
    """Blocks change a log through SegmentLog (truncate_from, restart_at, rewrite_segment)."""
    assert set(_layers()) == {"blocks.core.log", "blocks.core.net"}
    assert _layer_breaches(sorted(SRC.rglob("*.py"))) == []


def test_the_layer_checker_sees_a_breach(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text(
        "from blocks.core.log import SegmentLog, storage\n"
        "from blocks.core.log.format import encode_frame\n"
        "import blocks.core.net.framing\n"
        "from blocks.core.net import TcpTransport, FramedConnection\n"
    )
    assert _layer_breaches([source]) == [
        f"{source}:1 imports blocks.core.log.storage (import blocks.core.log itself)",
        f"{source}:2 imports blocks.core.log.format (import blocks.core.log itself)",
        f"{source}:3 imports blocks.core.net.framing (import blocks.core.net itself)",
        f"{source}:4 imports FramedConnection from blocks.core.net (not in its __all__)",
    ]


KV_ENGINE = SRC / "kv" / "engine"
KV_ENGINE_MAY_IMPORT = ("blocks.core", "blocks.kv.engine", "blocks.kv.limits")


def _engine_breaches(paths: list[Path]) -> list[str]:
    """Imports that would tie kv's Bitcask engine to the cluster or to kv's upper floor."""
    return [
        f"{path.relative_to(SRC.parent) if path.is_relative_to(SRC) else path}:{line}"
        f" imports {name} (the engine uses core, kv.limits and itself)"
        for path in paths
        for line, name in _imports(path)
        if not any(name == ok or name.startswith(f"{ok}.") for ok in KV_ENGINE_MAY_IMPORT)
    ]


def test_the_kv_engine_stands_alone() -> None:
    """docs/kv.md, "Where the code lives": ``blocks.kv.engine`` knows no cluster."""
    engine = sorted(KV_ENGINE.rglob("*.py"))
    assert len(engine) >= 7
    assert _engine_breaches(engine) == []


def test_the_engine_checker_sees_a_breach(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text(
        "from blocks.kv.limits import KEY_BYTES_MAX\nfrom blocks.kv.engine import files\n"
        "from blocks.kv.cluster.versions import VersionVector\nfrom blocks.kv import Bitcask\n"
    )
    assert _engine_breaches([source]) == [
        f"{source}:3 imports blocks.kv.cluster.versions"
        " (the engine uses core, kv.limits and itself)",
        f"{source}:4 imports blocks.kv (the engine uses core, kv.limits and itself)",
    ]


def _cycles(modules: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles among ``modules`` (each module's imports within the set)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        order[module] = low[module] = len(order)
        stack.append(module)
        for target in modules[module]:
            if target not in order:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], order[target])
        if low[module] == order[module]:
            component = stack[stack.index(module) :]
            del stack[stack.index(module) :]
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(modules):
        if module not in order:
            visit(module)
    return found


def _module_imports(root: Path) -> dict[str, set[str]]:
    """Each module under ``root`` with the modules under it that it imports (at any depth,
    ``TYPE_CHECKING`` and function-level imports too); a package's ``__init__`` is left out
    as a target, since importing any module of a package runs it."""
    names = {
        ".".join(("blocks", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(
            ".__init__"
        ): path
        for path in sorted(root.rglob("*.py"))
    }
    packages = {name for name, path in names.items() if path.name == "__init__.py"}
    return {
        name: {target for _, target in _imports(path) if target in names} - packages - {name}
        for name, path in names.items()
    }


def test_kv_modules_import_no_circle() -> None:
    """A circle (``bitcask``/``compaction``, ``driver``/``driver_handlers``, the node core and
    its anti-entropy) means the shared piece lives in the wrong module."""
    modules = _module_imports(SRC / "kv")
    assert "blocks.kv.engine.bitcask" in modules
    assert _cycles(modules) == []


def test_the_circle_finder_sees_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


BLOB = SRC / "blob"
BLOB_ABOVE_STORAGE = ("s3", "cluster", "store", "server", "client", "cli", "demo")


def _blob_storage_breaches(paths: list[Path]) -> list[str]:
    """Imports by ``blocks.blob.storage`` of what stands on it (docs/blob.md, "Layout")."""
    above = [f"blocks.blob.{name}" for name in BLOB_ABOVE_STORAGE]
    return [
        f"{path.name}:{line} imports {name}"
        for path in paths
        for line, name in _imports(path)
        if any(name == top or name.startswith(f"{top}.") for top in above)
    ]


def test_blob_storage_stands_below_s3_and_cluster() -> None:
    assert _blob_storage_breaches(sorted((BLOB / "storage").rglob("*.py"))) == []


def test_the_blob_storage_checker_sees_a_breach(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text(
        "from blocks.blob.s3.http import Response\nfrom blocks.blob.cluster import peers\n"
        "from blocks.blob.storage.meta import Manifest\nfrom blocks.blob.store import X\n"
        "from blocks.blob.api import BlobStore\n"
    )
    assert _blob_storage_breaches([source]) == [
        "x.py:1 imports blocks.blob.s3.http",
        "x.py:2 imports blocks.blob.cluster.peers",
        "x.py:4 imports blocks.blob.store",
    ]
