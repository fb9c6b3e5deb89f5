"""Disk faults for process clusters: a small filesystem that fills up.

``SmallDisk(directory, size_mib)`` mounts a tmpfs of that size on ``directory`` (a node's
data directory, before the node starts), so the node meets ENOSPC after a few megabytes of
writes, as on a full production disk. Mounting needs root (CI runs as root);
``small_disk_unavailable()`` says why it cannot be used here, for a clean ``pytest.skip``.

Not yet built: EIO on read or write and a failing fsync. Those need a storage fault hook
inside ``blocks.core.log`` and the blocks' own files (or a FUSE/device-mapper filesystem,
which CI cannot assume); until then the simulator's power-loss disk covers lost writes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from blocks.core.errors import InvalidArgument

__all__ = ["SIZE_MIB_MAX", "SmallDisk", "small_disk_unavailable"]

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
