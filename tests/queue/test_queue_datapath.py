"""The queue's data path: batched calls behave exactly like the same calls one at a time,
survive a restart, refuse malformed input, and concurrent client calls share frames."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.core.clock import ManualClock
from blocks.core.errors import BlocksError, InvalidArgument
from blocks.queue.client import connect
from blocks.queue.datapath import CallBatcher, QueueDataPathHandler
from blocks.queue.local import LocalQueue
from blocks.queue.service import build_server

NAMES = st.sampled_from(["jobs", "fifo", "missing"])
RECEIPTS = st.sampled_from(["1.1", "2.1", "3.1", "1.2", "bogus"])
CALLS = st.one_of(
    st.tuples(st.just("send"), NAMES, st.binary(max_size=3), st.sampled_from([0, 50])).map(
        lambda c: [*c, None, None, 1]
    ),
    st.tuples(st.just("receive"), NAMES, st.integers(1, 3), st.sampled_from([None, 10])).map(list),
    st.tuples(st.just("ack"), NAMES, RECEIPTS).map(list),
    st.tuples(st.just("nack"), NAMES, RECEIPTS, st.sampled_from([0, 5])).map(list),
    st.tuples(st.just("extend"), NAMES, RECEIPTS, st.integers(0, 100)).map(list),
    st.just(["send", "jobs"]),  # malformed
)


async def _queue(directory: Path | None, clock: ManualClock) -> LocalQueue:
    queue = LocalQueue(directory, clock=clock)
    await queue.create_queue("jobs", visibility_ms=20, max_receives=2)
    await queue.create_queue("fifo", fifo=True)
    return queue


async def _one_call(queue: LocalQueue, call: list[Any]) -> Any:
    """The call through the queue's public methods (the model of a batched call)."""
    verb, name, *rest = call
    if verb == "send" and len(rest) == 5:
        body, delay_ms, group, dedup_id, priority = rest
        return await queue.send(
            name, body, delay_ms=delay_ms, group=group, dedup_id=dedup_id, priority=priority
        )
    if verb == "receive":
        return await queue.receive(name, max_messages=rest[0], visibility_ms=rest[1])
    if verb == "ack":
        return await queue.ack(name, rest[0])
    if verb == "nack":
        return await queue.nack(name, rest[0], delay_ms=rest[1])
    if verb == "extend":
        return await queue.extend_visibility(name, rest[0], rest[1])
    raise InvalidArgument("malformed")


def _outcome(value: Any) -> Any:
    if isinstance(value, list):
        return [(m.id, m.receipt, m.body, m.receive_count) for m in value]
    return value


@settings(max_examples=25)
@given(st.lists(st.lists(CALLS, min_size=1, max_size=6), max_size=8))
def test_a_batch_is_the_same_calls_one_at_a_time(batches: list[list[list[Any]]]) -> None:
    async def main() -> None:
        clock = ManualClock()
        batched, single = await _queue(None, clock), await _queue(None, clock)
        for batch in batches:
            outcomes = await batched.run_many(batch)
            for call, (ok, value) in zip(batch, outcomes, strict=True):
                try:
                    expected = await _one_call(single, call)
                except BlocksError as error:
                    assert not ok and type(value) is type(error), (call, value)
                    continue
                assert ok and _outcome(value) == _outcome(expected), call
            clock.advance(0.015)
        assert batched.broker.snapshot() == single.broker.snapshot()

    asyncio.run(main())


def test_batched_changes_survive_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        clock = ManualClock()
        queue = await _queue(tmp_path, clock)
        sends = [["send", "jobs", f"{i}".encode(), 0, None, None, 0] for i in range(5)]
        ids = [value for _, value in await queue.run_many(sends)]
        outcomes = await queue.run_many([["receive", "jobs", 2, None], ["ack", "jobs", "x"]])
        assert outcomes[0][0] and not outcomes[1][0]
        before = queue.broker.snapshot()
        await queue.close()
        reopened = LocalQueue(tmp_path, clock=clock)
        assert reopened.broker.snapshot() == before
        assert len(ids) == 5
        await reopened.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    "message",
    [
        None,
        {"op": "nope"},
        {"op": "calls", "c": []},
        {"op": "calls", "c": "send"},
        {"op": "receive", "name": "jobs", "n": "1", "w": 0},
        {"op": "receive", "name": "jobs", "n": 1, "w": 0, "v": "x"},
    ],
)
def test_data_path_refuses_malformed_requests(message: Any) -> None:
    async def main() -> None:
        queue = await _queue(None, ManualClock())
        before = queue.broker.snapshot()
        with pytest.raises(InvalidArgument):
            await QueueDataPathHandler(queue)("client", message)
        assert queue.broker.snapshot() == before

    asyncio.run(main())


def test_concurrent_client_calls_share_frames(tmp_path: Path) -> None:
    async def main() -> None:
        server, _ = build_server(tmp_path / "data")
        await server.start()
        try:
            async with await connect(server.address) as q:
                await q.create_queue("jobs")
                frames: list[int] = []
                send = q._batcher._send

                async def counting(calls: list[Any]) -> list[Any]:
                    frames.append(len(calls))
                    return await send(calls)

                q._batcher._send = counting
                ids = await asyncio.gather(*(q.send("jobs", b"%d" % i) for i in range(200)))
                assert len(set(ids)) == 200
                assert len(frames) < 50, frames
                got = await q.receive("jobs", max_messages=100, wait_ms=100)
                await asyncio.gather(*(q.ack("jobs", m.receipt) for m in got))
                assert len(got) == 100
        finally:
            await server.stop(1)

    asyncio.run(main())


def test_waiting_receives_on_one_node_share_frames_when_messages_are_ready(
    tmp_path: Path,
) -> None:
    """A receive with ``wait_ms`` first goes in the next frame with the other calls (one log
    write and one fsync for the frame) and long-polls alone only if that found nothing.
    Fails when a single node's waiting receives each travel alone."""

    async def main() -> None:
        server, _ = build_server(tmp_path / "data")
        await server.start()
        try:
            async with await connect(server.address) as q:
                await q.create_queue("jobs")
                await asyncio.gather(*(q.send("jobs", b"%d" % i) for i in range(32)))
                ops: list[str] = []
                request = q._data.request

                async def counting(peer: str, message: Any, *args: Any) -> Any:
                    ops.append(message.get("op"))
                    return await request(peer, message, *args)

                q._data.request = counting  # type: ignore[method-assign]
                found = await asyncio.gather(
                    *(q.receive("jobs", max_messages=1, wait_ms=5_000) for _ in range(32))
                )
                assert sorted(m.body for (m,) in found) == sorted(b"%d" % i for i in range(32))
                assert "receive" not in ops, ops
                assert ops.count("calls") < 16, ops
                late = asyncio.ensure_future(q.receive("jobs", wait_ms=5_000))
                await asyncio.sleep(0.2)  # found nothing in a frame: now it long-polls alone
                assert ops[-1] == "receive" and not late.done()
                await q.send("jobs", b"late")
                (message,) = await asyncio.wait_for(late, 5.0)
                assert message.body == b"late"
        finally:
            await server.stop(1)

    asyncio.run(main())


def test_batcher_reports_a_short_reply_to_every_caller() -> None:
    async def main() -> None:
        async def short(calls: list[Any]) -> list[Any]:
            return []

        batcher = CallBatcher(short)
        results = await asyncio.gather(
            *(batcher.call(["ack", "q", "r"]) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, InvalidArgument) for r in results)

    asyncio.run(main())
