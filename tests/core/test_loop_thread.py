"""``blocks.core.loop_thread.LoopThread``: results, errors, timeouts and stop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from blocks.core.errors import FailedPrecondition, Timeout
from blocks.core.loop_thread import BlockingWrapper, LoopThread


def test_results_and_errors_come_back_unchanged() -> None:
    runner = LoopThread("test")
    try:

        async def double(x: int) -> int:
            await asyncio.sleep(0)
            return 2 * x

        async def fail() -> None:
            raise KeyError("inner")

        assert runner.call(double(21)) == 42
        with pytest.raises(KeyError, match="inner"):
            runner.call(fail())
    finally:
        runner.stop()


def test_a_late_call_is_cancelled_and_raises_timeout() -> None:
    runner = LoopThread("test")
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def was_cancelled() -> bool:
        await asyncio.wait_for(cancelled.wait(), 60)
        return True

    try:
        with pytest.raises(Timeout):
            runner.call(forever(), timeout_s=0.05)
        assert runner.call(was_cancelled())
    finally:
        runner.stop()


def test_a_coroutine_that_raises_timeouterror_is_not_reported_as_our_timeout() -> None:
    runner = LoopThread("test")

    async def own_timeout() -> None:
        raise TimeoutError("its own")

    try:
        with pytest.raises(TimeoutError, match="its own"):
            runner.call(own_timeout(), timeout_s=60)
    finally:
        runner.stop()


def test_after_stop_calls_are_refused_and_stop_is_idempotent() -> None:
    runner = LoopThread("test")
    runner.stop()
    runner.stop()
    assert not runner.running
    assert runner.loop.is_closed()

    async def never() -> None:  # pragma: no cover - must not run
        raise AssertionError("ran after stop")

    with pytest.raises(FailedPrecondition):
        runner.call(never())


class _Client:
    def __init__(self) -> None:
        self.closed_on: asyncio.AbstractEventLoop | None = None

    async def close(self) -> None:
        self.closed_on = asyncio.get_running_loop()


def test_a_blocking_wrapper_closes_its_client_on_its_loop_then_stops() -> None:
    client = _Client()

    async def build() -> _Client:
        return client

    wrapper = BlockingWrapper(build)
    loop = wrapper._runner.loop
    wrapper.close()
    assert client.closed_on is loop
    assert not wrapper._runner.running


def test_a_blocking_wrapper_whose_client_fails_to_build_stops_its_thread() -> None:
    async def fail() -> _Client:
        raise ConnectionError("no server")

    class Failing(BlockingWrapper[_Client]):
        thread_name = "test-wrapper-fails"

    with pytest.raises(ConnectionError, match="no server"):
        Failing(fail)
    alive = [t for t in threading.enumerate() if t.name == "test-wrapper-fails"]
    assert alive == []
