"""A rate-limit server process: the CLI, the async client, and a remote window store."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from blocks.cli import main as blocks_main
from blocks.core.clock import ManualClock
from blocks.core.errors import InvalidArgument
from blocks.ratelimit.client import RemoteWindowStore
from blocks.ratelimit.distributed import DistributedLimiter
from blocks.ratelimit.service import make_limiter

BLOCKS = [sys.executable, "-m", "blocks", "ratelimit"]
# Fixed windows are aligned on the server's monotonic clock (time since boot): with a window of
# 60 s, a boundary fell between the CLI calls whenever they were slow (load 10: 44 s for this
# test) and the fourth call was admitted. No machine is up for 31 years, so no boundary falls.
WINDOW_MS_NEVER_ENDS = 10**12


@pytest.mark.process
def test_ratelimit_server_cli_and_remote_store(capsys: pytest.CaptureFixture[str]) -> None:
    server = subprocess.Popen(
        [
            *BLOCKS,
            "serve",
            "--algorithm",
            "fixed-window",
            "--burst",
            "3",
            "--window-ms",
            str(WINDOW_MS_NEVER_ENDS),
            "--listen",
            "127.0.0.1:0",
            "--json",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        address = json.loads(server.stdout.readline())["address"]
        verb = ["acquire", "user:1", "--address", address, "--timeout", "60", "--json"]
        # The first call through a real ``blocks`` process (entry point and exit code), the
        # other three through ``blocks.cli.main`` in this process: the same parsing, client
        # and printing without a Python start-up each (about a second on a loaded machine).
        done = subprocess.run([*BLOCKS, *verb], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        decisions = [json.loads(done.stdout)]
        for _ in range(3):
            code = blocks_main(["ratelimit", *verb])
            out, err = capsys.readouterr()
            assert code == 0, err
            decisions.append(json.loads(out))
        assert [d["allowed"] for d in decisions] == [True, True, True, False]
        assert decisions[-1]["retry_after_ms"] > 0
        # Two limiters in this process share one limit through the server's store.
        stores = [RemoteWindowStore(address) for _ in range(2)]
        clock = ManualClock()  # the window is the limiters' choice: one that does not roll over
        limiters = [
            DistributedLimiter(store, limit=10, window_ms=60_000, clock=clock) for store in stores
        ]
        admitted = sum(limiters[k % 2].acquire("shared").allowed for k in range(30))
        assert admitted == 10
        for store in stores:
            store.close()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            assert server.wait(timeout=20) == 0
        finally:
            if server.poll() is None:
                server.kill()


def test_make_limiter_refuses_unknown_algorithm() -> None:
    with pytest.raises(InvalidArgument):
        make_limiter("leaky", rate_per_s=1, burst=1, window_ms=1)
