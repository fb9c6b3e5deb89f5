"""Model-based test: SegmentLog against a list of records and a list of segment boundaries.

The model predicts segment rolls independently (a frame is 24 bytes plus its payload; a
segment rolls when the next frame would pass ``segment_bytes_max`` and it is not empty), so
retention results and the files on disk are checked, not just the records.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from blocks.core.errors import NotFound
from blocks.core.log import SegmentLog
from blocks.core.log.storage import PAD_BYTE

FRAME_OVERHEAD = 24
# Fixed sizes make frames that fill a segment exactly (24, 32, 40 bytes against the sampled
# segment sizes), where an off-by-one in the roll rule would show.
payloads = st.one_of(st.sampled_from([b"", b"x" * 8, b"y" * 16]), st.binary(max_size=48))


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="blocks-log-model-")
        self.records: dict[int, bytes] = {}
        self.first = 0
        self.next = 0
        self.segments: list[list[int]] = [[0, 0]]  # [base offset, bytes]
        self.log: SegmentLog | None = None

    @initialize(
        segment_bytes_max=st.one_of(st.sampled_from([96, 120, 160, 256]), st.integers(80, 400)),
        index_interval_bytes=st.sampled_from([1, 40, 4096]),
        fsync=st.sampled_from(["always", "batch", "never"]),
    )
    def open_log(self, segment_bytes_max: int, index_interval_bytes: int, fsync: str) -> None:
        self.options = {
            "segment_bytes_max": segment_bytes_max,
            "index_interval_bytes": index_interval_bytes,
            "fsync": fsync,
            "record_bytes_max": 48,
        }
        self.log = SegmentLog(self.directory, **self.options)  # type: ignore[arg-type]

    def teardown(self) -> None:
        if self.log is not None:
            self.log.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _model_append(self, payload: bytes) -> int:
        frame = FRAME_OVERHEAD + len(payload)
        last = self.segments[-1]
        if last[1] and last[1] + frame > self.options["segment_bytes_max"]:
            self.segments.append([self.next, 0])
            last = self.segments[-1]
        last[1] += frame
        self.records[self.next] = payload
        self.next += 1
        return self.next - 1

    @rule(payload=payloads)
    def append(self, payload: bytes) -> None:
        assert self.log is not None
        assert self.log.append(payload) == self._model_append(payload)

    @rule(batch=st.lists(payloads, max_size=6))
    def append_many(self, batch: list[bytes]) -> None:
        assert self.log is not None
        expected = [self._model_append(payload) for payload in batch]
        assert self.log.append_many(batch) == expected

    @precondition(lambda self: self.next > self.first)
    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        assert self.log is not None
        offset = data.draw(st.integers(self.first, self.next - 1))
        assert self.log.read(offset) == self.records[offset]

    @rule(data=st.data())
    def read_outside(self, data: st.DataObject) -> None:
        assert self.log is not None
        below = st.integers(-3, self.first - 1) if self.first else st.integers(-3, -1)
        offset = data.draw(st.one_of(below, st.integers(self.next, self.next + 3)))
        try:
            self.log.read(offset)
        except NotFound:
            return
        raise AssertionError(f"read({offset}) outside [{self.first}, {self.next}) succeeded")

    @rule(data=st.data())
    def iterate(self, data: st.DataObject) -> None:
        assert self.log is not None
        start = data.draw(st.integers(self.first, self.next))
        expected = [(offset, self.records[offset]) for offset in range(start, self.next)]
        assert list(self.log.iter_from(start)) == expected

    @rule(data=st.data())
    def truncate_before(self, data: st.DataObject) -> None:
        assert self.log is not None
        offset = data.draw(st.integers(self.first, self.next))
        while len(self.segments) > 1 and self.segments[1][0] <= offset:
            removed = self.segments.pop(0)
            for gone in range(removed[0], self.segments[0][0]):
                del self.records[gone]
        self.first = self.segments[0][0]
        assert self.log.truncate_before(offset) == self.first

    @rule()
    def sync(self) -> None:
        assert self.log is not None
        assert self.log.sync() == self.next

    @rule()
    def reopen(self) -> None:
        assert self.log is not None
        self.log.close()
        self.log = SegmentLog(self.directory, **self.options)  # type: ignore[arg-type]
        assert self.log.recovery.clean
        assert self.log.recovery.records == self.next - self.first

    @invariant()
    def bounds_and_files_match(self) -> None:
        if self.log is None:
            return
        assert (self.log.first_offset, self.log.next_offset) == (self.first, self.next)
        expected_files = [f"{base:020d}.log" for base, _ in self.segments]
        assert sorted(n for n in os.listdir(self.directory) if n.endswith(".log")) == expected_files
        for number, (base, size) in enumerate(self.segments):
            with open(os.path.join(self.directory, f"{base:020d}.log"), "rb") as file:
                tail = file.read()[size:]
            if number == len(self.segments) - 1:  # the active segment: filler may follow
                assert tail.count(PAD_BYTE) == len(tail)
            else:  # sealed segments end at their last frame
                assert tail == b""
        if self.options["fsync"] == "always":
            assert self.log.durable_offset == self.next


LogMachine.TestCase.settings = settings(LogMachine.TestCase.settings, stateful_step_count=30)
TestLogModel = LogMachine.TestCase
