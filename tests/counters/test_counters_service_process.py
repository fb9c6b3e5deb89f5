"""A counters server process driven through the CLI, and the async client in-process."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys

import pytest

from blocks.cli import main as blocks_main
from blocks.core.errors import InvalidArgument
from blocks.counters.client import CountersClient
from blocks.counters.service import build_server

BLOCKS = [sys.executable, "-m", "blocks", "counters"]


CALL_TIMEOUT = ("--timeout", "60")  # a loaded machine once took over 10 s to connect


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> object:
    """One verb through ``blocks.cli.main`` in this process: the same parsing, client and
    printing as ``blocks counters ...`` without a Python start-up per verb (about a second
    each on a loaded machine); the exit code across a real process is checked below."""
    code = blocks_main(["counters", *args, *CALL_TIMEOUT, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


@pytest.mark.process
def test_counters_server_through_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    server = subprocess.Popen(
        [*BLOCKS, "serve", "--listen", "127.0.0.1:0", "--json"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        address = json.loads(server.stdout.readline())["address"]
        assert cli(capsys, "incr", "views", "--by", "5", "--address", address) == 5
        assert cli(capsys, "incr", "views", "--by", "-2", "--address", address) == 3
        assert cli(capsys, "get", "views", "--address", address) == 3
        assert cli(capsys, "distinct-add", "visitors", "a", "b", "a", "--address", address) == 2
        cli(capsys, "frequent-add", "tags", "x", "y", "x", "x", "--address", address)
        assert cli(capsys, "top", "tags", "--n", "1", "--address", address) == [["x", 3]]
        bad = subprocess.run(
            [*BLOCKS, "get", "x" * 300, "--address", address, *CALL_TIMEOUT],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert bad.returncode == 2 and bad.stderr.startswith("error: ")  # InvalidArgument
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            assert server.wait(timeout=20) == 0
        finally:
            if server.poll() is None:
                server.kill()


def test_client_maps_errors_and_bounds() -> None:
    async def main() -> None:
        server, _ = build_server("solo")
        await server.start()
        try:
            async with CountersClient(server.address) as client:
                assert await client.increment("c", 7) == 7
                assert await client.value("missing") == 0
                with pytest.raises(InvalidArgument):
                    await client.increment("", 1)
                with pytest.raises(InvalidArgument):
                    await client.add_distinct("d", [b"x"] * 10_001)
                assert await client.add_distinct("d", [str(k) for k in range(1000)]) > 950
                assert await client.count_distinct("nothing") == 0
                assert await client.top_k("nothing") == []
        finally:
            await server.stop(grace_s=1.0)

    asyncio.run(asyncio.wait_for(main(), 30))
