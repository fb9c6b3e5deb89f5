"""Sequencer servers leasing worker ids from a kv cluster of three processes
(``serve --lease-from kv://...``), two worker ids for three servers: a paused holder's id is
taken over only after ``ttl + margin``, the paused holder refuses to issue once it wakes, and
no ID is ever handed out twice (``check_unique_ids``)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from blocks.core.errors import BlocksError
from blocks.sequencer.client import SequencerClient
from blocks.sequencer.snowflake import decode
from blocks.testing import ProcessCluster
from blocks.testing.checkers import Operation, check_unique_ids
from blocks.testing.servers import kv_spec, sequencer_spec

pytestmark = pytest.mark.process

LEASE_TTL_MS = 3_000
LEASE_MARGIN_MS = 1_000
BATCH = 50


class Recorder:
    """Every ID handed out, as one ``next`` operation keyed by the server that issued it."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []
        self.refusals: dict[str, int] = {}

    async def take(self, cluster: ProcessCluster, name: str, calls: int = 3) -> list[int]:
        taken: list[int] = []
        async with SequencerClient(cluster.address(name), token=cluster.token) as client:
            for _ in range(calls):
                invoke_ns = time.monotonic_ns()
                try:
                    ids = await client.next_ids(BATCH)
                except BlocksError:
                    self.refusals[name] = self.refusals.get(name, 0) + 1
                    continue
                complete_ns = time.monotonic_ns()
                for value in ids:
                    index = len(self.operations)
                    self.operations.append(
                        Operation(index, 0, "next", name, None, value, "ok", invoke_ns, complete_ns)
                    )
                taken.extend(ids)
        return taken


def _worker(ids: list[int]) -> int:
    workers = {decode(value).worker_id for value in ids}
    assert len(workers) == 1, workers
    return workers.pop()


def test_paused_holder_stops_before_its_worker_id_is_taken(tmp_path: Path) -> None:
    with ProcessCluster(kv_spec(), ["k1", "k2", "k3"], tmp_path / "kv") as kv:
        kv.start_all()
        token_file = tmp_path / "kv-token"
        token_file.write_text(kv.token)
        spec = sequencer_spec(
            lease_ttl_ms=LEASE_TTL_MS,
            extra_argv=(
                "--lease-from", "kv://" + ",".join(kv.addresses()),
                "--lease-token-file", str(token_file),
                "--lease-margin-ms", str(LEASE_MARGIN_MS),
                "--lease-workers", "2",
            ),
        )  # fmt: skip
        with ProcessCluster(spec, ["a", "b", "c"], tmp_path / "seq") as seq:
            seq.start("a")
            seq.start("b")
            recorder = Recorder()
            worker_a = _worker(asyncio.run(recorder.take(seq, "a")))
            worker_b = _worker(asyncio.run(recorder.take(seq, "b")))
            assert worker_a != worker_b  # two data dirs, two machines' worth: never one id

            seq.pause("a")
            paused_at_s = time.monotonic()
            seq.start("c")  # only two ids: c must wait for a's to be taken over
            waited_s = time.monotonic() - paused_at_s
            assert waited_s >= (LEASE_TTL_MS + LEASE_MARGIN_MS) / 1000
            assert _worker(asyncio.run(recorder.take(seq, "c"))) == worker_a

            seq.resume("a")
            assert asyncio.run(recorder.take(seq, "a")) == []  # refused: lease ran out
            assert recorder.refusals["a"] == 3
            asyncio.run(recorder.take(seq, "b"))
            asyncio.run(recorder.take(seq, "c"))

    check = check_unique_ids(recorder.operations)
    assert check.valid, check.describe()
    # a, b and c each issued before; b's and c's later calls may be refused if a loaded
    # machine delayed a renewal past the lease (safe, not an error here).
    assert check.ids >= BATCH * 3 * 3
