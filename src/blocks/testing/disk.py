"""Disk faults for process clusters: a small filesystem that fills up, and failing fsyncs.

``SmallDisk(directory, size_mib)`` mounts a tmpfs of that size on ``directory`` (a node's
data directory, before the node starts), so the node meets ENOSPC after a few megabytes of
writes, as on a full production disk. Mounting needs root (CI runs as root);
``small_disk_unavailable()`` says why it cannot be used here, for a clean ``pytest.skip``.

``FsyncFaults(cluster, name)`` makes ``os.fsync`` and ``os.fdatasync`` in that node's
process raise ``OSError(EIO)`` while a trigger file exists, switched at run time by
``fail()`` and ``heal()``. It needs no change to the server: a ``sitecustomize`` module,
which Python imports at start-up from ``PYTHONPATH``, wraps the two functions; code that
calls them as ``os.fsync`` (all of blocks does) sees the fault. Install it before the node
starts. A failed fsync leaves the page cache in an unknown state (the kernel may have
dropped the dirty pages), so a node is expected to refuse further writes until restarted.

Not yet built: EIO on reads and writes themselves (file objects do not go through ``os``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from blocks.core.errors import InvalidArgument
from blocks.testing.process import ProcessCluster

__all__ = ["SIZE_MIB_MAX", "FsyncFaults", "SmallDisk", "small_disk_unavailable"]

SIZE_MIB_MAX = 1024
MOUNT_TIMEOUT_S = 30.0


def _mount(directory: Path, size_mib: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        timeout=MOUNT_TIMEOUT_S,
        check=False,
    )


def small_disk_unavailable() -> str | None:
    """None if a tmpfs can be mounted here, else the reason (for ``pytest.skip``)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "a small disk needs root to mount a tmpfs"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "mount/umount not found"
    probe = Path(tempfile.mkdtemp(prefix="blocks-disk-probe-"))
    try:
        result = _mount(probe, 1)
        if result.returncode != 0:
            return f"mount -t tmpfs not permitted: {result.stderr.strip()}"
        subprocess.run(["umount", str(probe)], check=False, timeout=MOUNT_TIMEOUT_S)
        return None
    finally:
        probe.rmdir()


class SmallDisk:
    """A ``size_mib`` tmpfs on ``directory`` (created if missing) until ``unmount()``.

    ``OSError`` if the mount fails; use ``small_disk_unavailable()`` first to skip cleanly.
    """

    def __init__(self, directory: Path, size_mib: int) -> None:
        if not 1 <= size_mib <= SIZE_MIB_MAX:
            raise InvalidArgument(f"size_mib must be 1..{SIZE_MIB_MAX}, got {size_mib}")
        self.directory = directory
        self.size_mib = size_mib
        directory.mkdir(parents=True, exist_ok=True)
        result = _mount(directory, size_mib)
        if result.returncode != 0:
            raise OSError(f"mount tmpfs on {directory}: {result.stderr.strip()}")
        self.mounted = True

    def unmount(self) -> None:
        """Unmount (lazily, so a process still holding files cannot block it); idempotent."""
        if self.mounted:
            subprocess.run(
                ["umount", "-l", str(self.directory)], check=False, timeout=MOUNT_TIMEOUT_S
            )
            self.mounted = False

    def __enter__(self) -> SmallDisk:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.unmount()


FSYNC_TRIGGER_ENV = "BLOCKS_TESTING_FSYNC_EIO_FILE"
_HOOK = f"""# Written by blocks.testing.disk.FsyncFaults: fsync fails with EIO while a file exists.
import errno as _errno
import os as _os

_trigger = _os.environ.get({FSYNC_TRIGGER_ENV!r}, "")


def _failing(original):
    def call(fd):
        if _trigger and _os.path.exists(_trigger):
            raise OSError(_errno.EIO, "fsync failed (injected by blocks.testing)")
        return original(fd)

    return call


if _trigger:
    _os.fsync = _failing(_os.fsync)
    _os.fdatasync = _failing(_os.fdatasync)
"""


class FsyncFaults:
    """Failing fsyncs for node ``name`` of ``cluster``, from its next start on."""

    def __init__(self, cluster: ProcessCluster, name: str) -> None:
        home = cluster.root / name / "fault-hook"
        home.mkdir(parents=True, exist_ok=True)
        (home / "sitecustomize.py").write_text(_HOOK, encoding="utf-8")
        self.trigger = home / "fsync-eio"
        self.trigger.unlink(missing_ok=True)
        inherited = os.environ.get("PYTHONPATH", "")
        path = str(home) + (os.pathsep + inherited if inherited else "")
        cluster.add_base_env(name, {"PYTHONPATH": path, FSYNC_TRIGGER_ENV: str(self.trigger)})

    @property
    def failing(self) -> bool:
        return self.trigger.exists()

    def fail(self) -> None:
        """Every fsync and fdatasync of the node raises EIO from now on."""
        self.trigger.touch()

    def heal(self) -> None:
        self.trigger.unlink(missing_ok=True)
