"""Single-node stores under power loss, each at the fsync policy that promises durability:
what was acknowledged before the cut is there after it, byte for byte, and nothing more
than the unacknowledged tail is lost.

* kv ``Bitcask`` (``sync="always"``): every acknowledged put and delete;
* queue ``LocalQueue`` (``fsync="always"``, snapshots taken often): every sent message not yet
  acked is delivered again, and no acked message comes back;
* blob ``LocalBlobStore`` (``fsync=True``): every acknowledged object, byte-identical;
* sequencer ``TicketServer``: no ID is handed out twice across the cut.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from blocks.blob.store import LocalBlobStore
from blocks.kv import Bitcask
from blocks.queue.local import LocalQueue
from blocks.sequencer.tickets import TicketServer
from blocks.testing.checkers import Delivery, QueueSend, check_queue_history
from blocks.testing.powerloss import PowerLossDisk

SEEDS = range(3)


def _disk(root: Path, seed: int) -> PowerLossDisk:
    disk = PowerLossDisk(random.Random(seed), torn_tail_probability=0.7)
    disk.track(root)
    return disk


@pytest.mark.parametrize("seed", SEEDS)
def test_bitcask_sync_always_keeps_every_acknowledged_write(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    disk = _disk(tmp_path, seed)
    model: dict[bytes, bytes] = {}
    with disk.installed():
        for _ in range(3):
            store = Bitcask.open(tmp_path, sync="always", file_bytes_max=600)
            assert {k: store.get(k) for k in model} == model
            assert len(store) == len(model)
            for _ in range(rng.randrange(5, 40)):
                key = b"k%d" % rng.randrange(12)
                if rng.random() < 0.2:
                    store.delete(key)
                    model.pop(key, None)
                else:
                    value = rng.randbytes(rng.randrange(0, 60))
                    store.put(key, value)
                    model[key] = value
            with disk.power_cut(tmp_path):
                store.close()
        reopened = Bitcask.open(tmp_path, sync="always")
        assert {k: reopened.get(k) for k in model} == model and len(reopened) == len(model)
        reopened.close()


async def _queue_rounds(root: Path, disk: PowerLossDisk, rng: random.Random) -> None:
    sends: list[QueueSend] = []
    deliveries: list[Delivery] = []
    acked: set[bytes] = set()
    outstanding: set[bytes] = set()
    clock_ns = 0
    for round_number in range(3):
        queue = LocalQueue(root, fsync="always", snapshot_every=5)
        if round_number == 0:
            await queue.create_queue("q", visibility_ms=1)
        for number in range(rng.randrange(3, 15)):
            body = b"r%d-m%d" % (round_number, number)
            await queue.send("q", body)
            sends.append(QueueSend(body, True))
            outstanding.add(body)
        for message in await queue.receive("q", max_messages=rng.randrange(1, 6)):
            clock_ns += 1
            deliveries.append(Delivery("c", message.body, clock_ns, clock_ns))
            if rng.random() < 0.7:
                await queue.ack("q", message.receipt)
                acked.add(message.body)
                outstanding.discard(message.body)
        with disk.power_cut(root):
            await queue.close()
    queue = LocalQueue(root, fsync="always")
    await asyncio.sleep(0.01)  # past the 1 ms visibility timeout of unacked deliveries
    drained: list[bytes] = []
    while batch := await queue.receive("q", max_messages=10, visibility_ms=60_000):
        drained.extend(m.body for m in batch)
    await queue.close()
    assert set(drained) == outstanding, (sorted(set(drained) ^ outstanding), "acked:", acked)
    for body in drained:
        clock_ns += 10**9
        deliveries.append(Delivery("drain", body, clock_ns, clock_ns))
    result = check_queue_history(sends, deliveries, visibility_timeout_ns=1)
    assert result.valid, result.describe()


@pytest.mark.parametrize("seed", SEEDS)
def test_queue_fsync_always_keeps_every_unacked_message_and_no_acked_one(
    seed: int, tmp_path: Path
) -> None:
    disk = _disk(tmp_path, seed)
    with disk.installed():
        asyncio.run(_queue_rounds(tmp_path, disk, random.Random(seed)))


@pytest.mark.parametrize("seed", SEEDS)
def test_blob_fsync_keeps_every_acknowledged_object(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    disk = _disk(tmp_path, seed)
    model: dict[str, bytes] = {}
    with disk.installed():
        for round_number in range(3):
            store = LocalBlobStore(tmp_path, fsync=True, chunk_bytes=256)
            for key, body in model.items():
                assert store.get_object("bkt", key)[1] == body, key
            if round_number == 0:
                store.create_bucket("bkt")
            for _ in range(rng.randrange(1, 6)):
                key = f"o{rng.randrange(8)}"
                body = rng.randbytes(rng.randrange(0, 1500))
                store.put_object("bkt", key, body)
                model[key] = body
            with disk.power_cut(tmp_path):
                store.close()


@pytest.mark.parametrize("seed", SEEDS)
def test_ticket_server_never_hands_out_an_id_twice_across_power_loss(
    seed: int, tmp_path: Path
) -> None:
    rng = random.Random(seed)
    disk = _disk(tmp_path, seed)
    issued: list[int] = []
    with disk.installed():
        for _ in range(4):
            server = TicketServer(str(tmp_path), reserve_ahead=7, fsync=True)
            for _ in range(rng.randrange(1, 6)):
                issued.extend(server.allocate(rng.randrange(1, 10)))
            with disk.power_cut(tmp_path):
                pass
    assert len(issued) == len(set(issued)), "an ID was handed out twice"
    assert issued == sorted(issued)


def test_without_fsync_the_ticket_check_fails(tmp_path: Path) -> None:
    """The same check with ``fsync=False``: the disk must make it fail (a duplicate ID)."""
    disk = _disk(tmp_path, 0)
    issued: list[int] = []
    with disk.installed():
        for _ in range(3):
            server = TicketServer(str(tmp_path), reserve_ahead=7, fsync=False)
            issued.extend(server.allocate(9))
            with disk.power_cut(tmp_path):
                pass
    assert len(issued) > len(set(issued))
