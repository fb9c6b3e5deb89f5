"""The committed locks agree with pyproject.toml, and this environment was installed from them.

`make test` and `make demo` install `requirements/lock.txt`; `make bench` adds
`requirements/bench-lock.txt`. pyproject.toml keeps ranges for library users. When someone
edits a range or adds a dependency without running `make lock`, these tests say which line
disagrees, so the suite's result never depends on the day a machine was installed.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
BENCH_LOCK = ROOT / "requirements" / "bench-lock.txt"
MODELS = ROOT / "requirements" / "models.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)\s*(?:#.*)?$")


def read_pins(path: Path) -> dict[str, Version]:
    """Every requirement line of a lock, which must be an exact `name==version` pin."""
    pins: dict[str, Version] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"{path.name}:{number}: not an exact pin: {line!r}"
        pins[canonicalize_name(match.group(1))] = Version(match.group(2))
    return pins


def lock_extras() -> list[str]:
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(r"^LOCK_EXTRAS := (\S+)$", makefile, re.MULTILINE)
    assert match, "Makefile no longer names LOCK_EXTRAS"
    return match.group(1).split(",")


def declared(extras: list[str]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(text) for text in project["dependencies"]]
    for extra in extras:
        requirements += [Requirement(text) for text in project["optional-dependencies"][extra]]
    return requirements


def disagreements(requirements: list[Requirement], pins: dict[str, Version]) -> list[str]:
    problems = []
    for requirement in requirements:
        pinned = pins.get(canonicalize_name(requirement.name))
        if pinned is None:
            problems.append(f"{requirement} is not in the lock")
        elif not requirement.specifier.contains(pinned, prereleases=True):
            problems.append(f"{requirement} does not admit the locked {pinned}")
    return problems


def test_lock_satisfies_every_declared_requirement() -> None:
    problems = disagreements(declared(lock_extras()), read_pins(LOCK))
    assert not problems, "run `make lock`:\n" + "\n".join(problems)


def test_bench_lock_satisfies_bench_extra_and_agrees_with_the_lock() -> None:
    bench = read_pins(BENCH_LOCK)
    problems = disagreements(declared([*lock_extras(), "bench"]), bench)
    for name, version in read_pins(LOCK).items():
        if name in bench and bench[name] != version:
            problems.append(f"{name}: lock has {version}, bench lock {bench[name]}")
    assert not problems, "run `make lock`:\n" + "\n".join(problems)


def test_model_packages_are_pinned() -> None:
    assert read_pins(MODELS), "requirements/models.txt lists no package"


def test_a_disagreeing_range_is_reported() -> None:
    pins = {"grpcio": Version("1.85.4")}
    assert disagreements([Requirement("grpcio>=1.86")], pins) == [
        "grpcio>=1.86 does not admit the locked 1.85.4"
    ]
    assert disagreements([Requirement("msgpack")], pins) == ["msgpack is not in the lock"]


@pytest.mark.parametrize("path", [LOCK, MODELS], ids=lambda path: path.name)
def test_this_environment_matches_the_lock(path: Path) -> None:
    """A stale .venv (installed before the lock changed) would test other code than CI."""
    problems = []
    for name, version in read_pins(path).items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            problems.append(f"{name} {version} is locked but not installed")
            continue
        if installed != version:
            problems.append(f"{name}: locked {version}, installed {installed}")
    assert not problems, "reinstall with `make test` after `rm .venv/.installed`:\n" + "\n".join(
        problems
    )
