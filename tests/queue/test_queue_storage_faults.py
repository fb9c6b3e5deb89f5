"""A durable ``LocalQueue`` whose disk refuses a write or an fsync keeps serving.

The broker runs a command before its record is logged, so a refused append leaves it ahead
of its log. It used to refuse all work from then on, reads included, until reopened; now it
rebuilds the broker from the log at once (reopening the log after a failed fsync) and only
the refused call fails. The faults are injected by patching ``os.pwrite`` (the log's write)
and ``os.fdatasync``/``os.fsync`` (its fsync), which the log looks up at each call.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from blocks.core.errors import StorageError, StorageFull
from blocks.queue.local import LocalQueue

SMALL_RECORD_BYTES_MAX = 1024  # a receive's or an ack's record; a big send's is larger


class FailingDisk:
    """Makes ``os.pwrite`` of more than ``write_bytes_max`` bytes fail with ENOSPC, and the
    next ``fsyncs_to_fail`` fsyncs fail with EIO."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.write_bytes_max: int | None = None
        self.fsyncs_to_fail = 0
        real_pwrite = os.pwrite
        real_fdatasync = getattr(os, "fdatasync", os.fsync)
        real_fsync = os.fsync

        def pwrite(descriptor: int, data: bytes, offset: int) -> int:
            if self.write_bytes_max is not None and len(data) > self.write_bytes_max:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_pwrite(descriptor, data, offset)

        def failing(real: Callable[[int], None]) -> Callable[[int], None]:
            def sync(descriptor: int) -> None:
                if self.fsyncs_to_fail > 0:
                    self.fsyncs_to_fail -= 1
                    raise OSError(errno.EIO, os.strerror(errno.EIO))
                real(descriptor)

            return sync

        monkeypatch.setattr(os, "pwrite", pwrite)
        monkeypatch.setattr(os, "fsync", failing(real_fsync))
        if hasattr(os, "fdatasync"):
            monkeypatch.setattr(os, "fdatasync", failing(real_fdatasync))


def test_a_full_disk_refuses_only_the_writes_it_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FailingDisk(monkeypatch)

    async def main() -> None:
        queue = LocalQueue(tmp_path, fsync="always")
        await queue.create_queue("jobs")
        ids = [await queue.send("jobs", b"%d" % i * 100) for i in range(3)]
        disk.write_bytes_max = SMALL_RECORD_BYTES_MAX
        with pytest.raises(StorageFull):
            await queue.send("jobs", b"x" * 4096)
        assert queue.rebuilds == 1
        assert await queue.stats("jobs") == {"delayed": 0, "ready": 3, "inflight": 0}
        (first,) = await queue.receive("jobs")  # small records still fit: reads go on
        await queue.ack("jobs", first.receipt)
        with pytest.raises(StorageFull):
            await queue.send("jobs", b"y" * 4096)
        disk.write_bytes_max = None  # space returns
        late = await queue.send("jobs", b"z" * 4096)
        await queue.close()

        reopened = LocalQueue(tmp_path)
        messages = await reopened.receive("jobs", max_messages=10)
        assert first.id == ids[0]
        assert sorted(m.id for m in messages) == sorted([*ids[1:], late])
        await reopened.close()

    asyncio.run(main())


def test_a_refused_receive_leaves_its_messages_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FailingDisk(monkeypatch)

    async def main() -> None:
        async with LocalQueue(tmp_path, fsync="always") as queue:
            await queue.create_queue("jobs")
            sent = await queue.send("jobs", b"payload")
            disk.write_bytes_max = 0
            with pytest.raises(StorageFull):
                await queue.receive("jobs")
            assert await queue.stats("jobs") == {"delayed": 0, "ready": 1, "inflight": 0}
            disk.write_bytes_max = None
            (message,) = await queue.receive("jobs")
            assert (message.id, message.receive_count) == (sent, 1)

    asyncio.run(main())


def test_a_failed_fsync_reopens_the_log_and_the_queue_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FailingDisk(monkeypatch)

    async def main() -> None:
        queue = LocalQueue(tmp_path, fsync="batch")
        await queue.create_queue("jobs")
        kept = await queue.send("jobs", b"before")
        disk.fsyncs_to_fail = 1
        results = await asyncio.gather(
            *(queue.send("jobs", b"during-%d" % i) for i in range(5)), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        assert failed and all(type(r) is StorageError for r in failed), results
        assert queue.rebuilds == 1  # one rebuild for every caller of the failed fsync
        after = await queue.send("jobs", b"after")
        acknowledged = {kept, after, *(r for r in results if isinstance(r, str))}
        await queue.close()

        reopened = LocalQueue(tmp_path)
        messages = await reopened.receive("jobs", max_messages=10)
        assert acknowledged <= {m.id for m in messages}  # a failed send may or may not be there
        await reopened.close()

    asyncio.run(main())
