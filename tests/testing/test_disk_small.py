"""SmallDisk: a tmpfs of a few MiB that fills up (skipped cleanly where mounting is not
allowed); FsyncFaults: a node process's fsyncs fail with EIO while switched on."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from blocks.core.errors import InvalidArgument
from blocks.testing import FsyncFaults, ProcessCluster, SmallDisk, small_disk_unavailable
from tests.testing.test_process_cluster import HTTP


def test_a_small_disk_fills_up(tmp_path: Path) -> None:
    reason = small_disk_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with SmallDisk(tmp_path / "mnt", 2) as disk:
        chunk = b"x" * 65536
        with pytest.raises(OSError) as full, (disk.directory / "fill").open("wb") as out:
            for _ in range(64):  # 4 MiB into 2 MiB
                out.write(chunk)
                out.flush()
        assert full.value.errno == errno.ENOSPC
    assert not disk.mounted and not (tmp_path / "mnt" / "fill").exists()


def test_sizes_are_bounded(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        SmallDisk(tmp_path, 0)


def test_fsync_faults_reach_the_node_process(tmp_path: Path) -> None:
    with ProcessCluster(HTTP, ["a"], tmp_path) as cluster:
        faults = FsyncFaults(cluster, "a")
        target = tmp_path / "file"
        target.write_bytes(b"x")
        code = (
            f"import os; fd = os.open({str(target)!r}, os.O_RDWR); os.fsync(fd); os.fdatasync(fd)"
        )
        env = {**os.environ, **cluster.base_env["a"]}

        def run() -> subprocess.CompletedProcess[str]:
            argv = [sys.executable, "-c", code]
            return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

        assert run().returncode == 0 and not faults.failing
        faults.fail()
        failed = run()
        assert failed.returncode != 0 and "Errno 5" in failed.stderr and "injected" in failed.stderr
        faults.heal()
        assert run().returncode == 0
        cluster.set_env("a", {})  # a clock heal must not remove the hook
        assert "PYTHONPATH" in cluster.base_env["a"]
