"""A command that names a block imports that block's commands only."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from blocks import cli
try:
    cli.main(["kv", "--help"])
except SystemExit:
    pass
print(sorted(m for m in sys.modules if m.startswith("blocks.") and m.endswith(".cli") and m.count(".") == 2))
"""


def test_naming_a_block_imports_only_its_commands() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "['blocks.kv.cli']"


def test_the_whole_parser_still_lists_every_block() -> None:
    from blocks import cli

    help_text = cli.build_parser().format_help()
    for name in ("kv", "cache", "queue", "pubsub", "blob", "bench", "demo"):
        assert name in help_text
