"""Four processes lease worker ids from one directory and generate 200k IDs each."""

from __future__ import annotations

import subprocess
import sys
from array import array
from pathlib import Path

import pytest

from blocks.sequencer.snowflake import decode

WORKER_SCRIPT = """
import sys
from array import array
from blocks.sequencer.lease import LockFileLeases
from blocks.sequencer.snowflake import Snowflake

directory, owner, out_path, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
leases = LockFileLeases(directory, workers=4, ttl_ms=30_000)
lease = leases.acquire(owner)
generator = Snowflake(lease.worker_id, lease=lease, min_timestamp_ms=lease.previous_expires_at_ms)
ids = []
while len(ids) < count:
    ids.extend(generator.next_ids(min(10_000, count - len(ids))))
    ids.append(generator.next_id())
with open(out_path, "wb") as handle:
    array("q", ids[:count]).tofile(handle)
leases.release(lease)
"""

IDS_PER_PROCESS = 200_000


@pytest.mark.process
def test_four_leased_processes_never_collide(tmp_path: Path) -> None:
    lease_dir = tmp_path / "leases"
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER_SCRIPT,
                str(lease_dir),
                f"p{k}",
                str(tmp_path / f"ids{k}"),
                str(IDS_PER_PROCESS),
            ]
        )
        for k in range(4)
    ]
    try:
        for process in processes:
            assert process.wait(timeout=60) == 0
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    all_ids: list[int] = []
    workers = set()
    for k in range(4):
        ids = array("q")
        ids.frombytes((tmp_path / f"ids{k}").read_bytes())
        assert len(ids) == IDS_PER_PROCESS
        assert list(ids) == sorted(ids)
        workers.add(decode(ids[0]).worker_id)
        all_ids.extend(ids)
    assert len(set(all_ids)) == 4 * IDS_PER_PROCESS
    assert workers <= {0, 1, 2, 3}  # a released id may be leased again, later in time
