"""Three ``blocks queue serve --peer ...`` processes replicate one queue; the leader is killed
with SIGKILL under a send/receive/ack load. Every acknowledged send is delivered afterwards, no
acked message comes back, no message comes back before its visibility timeout
(``blocks.testing.checkers.check_queue_history``), deduplicated retries stay single across the
failover, a new leader serves, and the killed node, started again, applies the whole log."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from blocks.core.errors import (
    BlocksError,
    Conflict,
    NotFound,
    Overloaded,
    Timeout,
    Unavailable,
)
from blocks.queue.client import QueueClient, connect
from blocks.testing import ProcessCluster
from blocks.testing.checkers import (
    Deletion,
    Delivery,
    QueueSend,
    Release,
    check_queue_history,
)
from blocks.testing.servers import queue_cluster_spec

pytestmark = pytest.mark.process

NODES = ["q1", "q2", "q3"]
VISIBILITY_MS = 4_000
DEADLINE_S = 60.0  # generous: the machine may be loaded; nothing waits for it without need
RETRYABLE = (Unavailable, Timeout, Overloaded)


class Load:
    """Senders and consumers through one client that knows every node; records the history."""

    def __init__(self, client: QueueClient) -> None:
        self.client = client
        self.sends: list[QueueSend] = []
        self.deliveries: list[Delivery] = []
        self.deletions: list[Deletion] = []
        self.releases: list[Release] = []
        self.ids: dict[bytes, set[str]] = {}  # body -> queue ids it got (retries included)
        self.acknowledged: set[bytes] = set()
        self.deleted: set[bytes] = set()
        self.stop_sending = asyncio.Event()
        self.errors: list[str] = []

    async def send_until_stopped(self, worker: int) -> None:
        index = 0
        while not self.stop_sending.is_set():
            body = f"w{worker}-{index}".encode()
            index += 1
            acknowledged = await self._send(body)
            self.sends.append(QueueSend(body, acknowledged))
            if acknowledged:
                self.acknowledged.add(body)

    async def _send(self, body: bytes) -> bool:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            try:  # the dedup id makes a retried send single, across a failover too
                message_id = await self.client.send("jobs", body, dedup_id=body.decode())
                self.ids.setdefault(body, set()).add(message_id)
                return True
            except RETRYABLE:
                await asyncio.sleep(0.05)
        return False

    async def consume(self, name: str, until: asyncio.Event) -> None:
        while not until.is_set():
            invoke_ns = time.monotonic_ns()
            try:
                found = await self.client.receive("jobs", max_messages=10, wait_ms=200)
            except RETRYABLE:
                await asyncio.sleep(0.05)
                continue
            complete_ns = time.monotonic_ns()
            for message in found:
                self.deliveries.append(Delivery(name, message.body, invoke_ns, complete_ns))
            for message in found:
                await self._ack(message.body, message.receipt)

    async def _ack(self, body: bytes, receipt: str) -> None:
        """Ack until the answer is certain: a retried ack that finds the message gone
        (``NotFound``) was applied before; ``Conflict`` means it was received again."""
        retried = False
        deadline = time.monotonic() + DEADLINE_S
        while True:
            ack_ns = time.monotonic_ns()
            try:
                await self.client.ack("jobs", receipt)
            except RETRYABLE:
                if time.monotonic() > deadline:
                    self.releases.append(Release(body, ack_ns))  # deleted or not: unknown
                    return
                retried = True
                await asyncio.sleep(0.05)
                continue
            except NotFound:
                if not retried:
                    self.errors.append(f"ack of {body!r}: NotFound on the first try")
            except Conflict:
                self.releases.append(Release(body, ack_ns))
                return
            self.deletions.append(Deletion(body, time.monotonic_ns()))
            self.deleted.add(body)
            return


async def _describe_all(cluster: ProcessCluster, names: list[str]) -> dict[str, dict[str, Any]]:
    views: dict[str, dict[str, Any]] = {}
    for name in names:
        try:
            client = await connect(cluster.address(name), token=cluster.token, timeout_s=3.0)
        except BlocksError:
            continue
        try:
            views[name] = await client.describe()
        except BlocksError:
            pass
        finally:
            await client.close()
    return views


async def _leader(cluster: ProcessCluster, names: list[str]) -> str:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        views = await _describe_all(cluster, names)
        leaders = [name for name, view in views.items() if view.get("role") == "leader"]
        if len(leaders) == 1:
            return leaders[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no single leader among {names}")


async def _until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def _applied(cluster: ProcessCluster, name: str, offset: int) -> bool:
    view = (await _describe_all(cluster, [name])).get(name, {})
    return int(view.get("applied", 0)) >= offset


async def _until_async(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


def test_kill_the_leader_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    with ProcessCluster(queue_cluster_spec(), NODES, tmp_path) as cluster:
        cluster.start_all()

        async def run() -> None:
            leader = await _leader(cluster, NODES)
            client = await connect(cluster.addresses(), token=cluster.token, timeout_s=5.0)
            try:
                deadline = time.monotonic() + DEADLINE_S
                while True:
                    try:
                        await client.create_queue("jobs", visibility_ms=VISIBILITY_MS)
                        break
                    except RETRYABLE:
                        assert time.monotonic() < deadline, "create_queue never succeeded"
                load = Load(client)
                drained = asyncio.Event()
                senders = [asyncio.ensure_future(load.send_until_stopped(w)) for w in range(3)]
                consumers = [
                    asyncio.ensure_future(load.consume(f"c{c}", drained)) for c in range(2)
                ]
                await _until(lambda: len(load.deleted) >= 100, "no progress before the kill")
                cluster.kill(leader)
                before = len(load.acknowledged)
                survivors = [n for n in NODES if n != leader]
                new_leader = await _leader(cluster, survivors)
                await _until(
                    lambda: len(load.acknowledged) >= before + 100, "no sends after the kill"
                )
                load.stop_sending.set()
                await asyncio.gather(*senders)
                try:
                    await _until(lambda: load.acknowledged <= load.deleted, "not drained")
                except AssertionError:
                    missing = sorted(load.acknowledged - load.deleted)
                    views = await _describe_all(cluster, survivors)
                    raise AssertionError(
                        f"{len(missing)} acknowledged sends never deleted, e.g. {missing[:5]}"
                        f" ({len(load.acknowledged)} acknowledged); nodes: {views}"
                    ) from None
                drained.set()
                await asyncio.gather(*consumers)
                await asyncio.to_thread(cluster.start, leader)  # back, it replays the log
                hw = (await _describe_all(cluster, [new_leader]))[new_leader]["hw"]
                await _until_async(
                    lambda: _applied(cluster, leader, hw), "the restarted node did not catch up"
                )
            finally:
                await client.close()
            check = check_queue_history(
                load.sends,
                load.deliveries,
                visibility_timeout_ns=VISIBILITY_MS * 1_000_000,
                deletions=load.deletions,
                releases=load.releases,
            )
            assert check.valid, check.describe()
            assert not load.errors, load.errors[:5]
            assert new_leader != leader
            duplicated = {body: ids for body, ids in load.ids.items() if len(ids) > 1}
            assert not duplicated, f"a deduplicated retry was stored twice: {duplicated}"

        with cluster.failure_notes("replicated queue, leader killed"):
            asyncio.run(run())


def test_a_wiped_follower_rejoins_by_snapshot_and_survives_the_leaders_kill(
    tmp_path: Path,
) -> None:
    """Snapshots every 20 records: a follower killed with SIGKILL and wiped misses enough
    records that the leader's log no longer holds them; started again, it installs the
    leader's snapshot and catches up; then the leader is killed, and every acknowledged,
    undeleted message is still received from the two left."""
    spec = queue_cluster_spec(snapshot_every=20, segment_bytes=1_024)
    with ProcessCluster(spec, NODES, tmp_path) as cluster:
        cluster.start_all()

        async def run() -> None:
            leader = await _leader(cluster, NODES)
            client = await connect(cluster.addresses(), token=cluster.token, timeout_s=5.0)
            load = Load(client)
            try:
                deadline = time.monotonic() + DEADLINE_S
                while True:
                    try:
                        await client.create_queue("jobs", visibility_ms=VISIBILITY_MS)
                        break
                    except RETRYABLE:
                        assert time.monotonic() < deadline, "create_queue never succeeded"
                for index in range(20):
                    assert await load._send(b"a%d" % index)
                follower = next(n for n in NODES if n != leader)
                cluster.kill(follower)
                cluster.wipe(follower)
                for index in range(150):
                    body = b"b%d" % index
                    assert await load._send(body), "a send failed with one node down"
                    load.acknowledged.add(body)
                for message in await client.receive("jobs", max_messages=10):
                    await load._ack(message.body, message.receipt)
                view = (await _describe_all(cluster, [leader]))[leader]
                assert view["log_start"] > 0, f"the leader's log was not cut: {view}"
                await asyncio.to_thread(cluster.start, follower)
                hw = (await _describe_all(cluster, [leader]))[leader]["hw"]
                await _until_async(
                    lambda: _applied(cluster, follower, hw), "the wiped node did not catch up"
                )
                await _until_async(
                    lambda: _in_isr(cluster, leader, follower), "the wiped node never rejoined"
                )
                view = (await _describe_all(cluster, [follower]))[follower]
                assert view["snapshots_installed"] >= 1, view
                cluster.kill(leader)
                await _leader(cluster, [n for n in NODES if n != leader])
                received: set[bytes] = set()
                deadline = time.monotonic() + DEADLINE_S
                expected = {b"a%d" % i for i in range(20)} | load.acknowledged
                while not expected - load.deleted <= received:
                    assert time.monotonic() < deadline, "acknowledged messages were lost"
                    try:
                        found = await client.receive("jobs", max_messages=10, wait_ms=200)
                    except RETRYABLE:
                        await asyncio.sleep(0.05)
                        continue
                    received.update(message.body for message in found)
            finally:
                await client.close()

        with cluster.failure_notes("replicated queue, wiped follower then leader killed"):
            asyncio.run(run())


async def _in_isr(cluster: ProcessCluster, leader: str, follower: str) -> bool:
    view = (await _describe_all(cluster, [leader])).get(leader, {})
    return follower in view.get("isr", [])
