"""``LongPolls``: sleepers wake by key, all at once, or at their timeout; the bound holds."""

from __future__ import annotations

import asyncio

import pytest

from blocks.core.errors import Overloaded
from blocks.core.long_polls import LongPolls


def test_wake_settles_only_that_key() -> None:
    async def run() -> None:
        polls: LongPolls[str] = LongPolls()
        a = asyncio.ensure_future(polls.wait("a", 5.0))
        b = asyncio.ensure_future(polls.wait("b", 5.0))
        await asyncio.sleep(0)
        assert len(polls) == 2
        polls.wake("a")
        await asyncio.wait_for(a, 1.0)
        assert not b.done() and len(polls) == 1
        polls.wake_all()
        await asyncio.wait_for(b, 1.0)
        assert len(polls) == 0

    asyncio.run(run())


def test_a_timeout_ends_the_sleep_and_forgets_the_sleeper() -> None:
    async def run() -> None:
        polls: LongPolls[tuple[str, int]] = LongPolls()
        await polls.wait(("t", 0), 0.01)
        assert len(polls) == 0
        polls.wake(("t", 0))  # nothing left to wake: no error

    asyncio.run(run())


def test_past_the_bound_a_wait_is_refused_before_sleeping() -> None:
    async def run() -> None:
        polls: LongPolls[str] = LongPolls(waiters_max=2)
        sleepers = [asyncio.ensure_future(polls.wait("q", 5.0)) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await polls.wait("q", 5.0)
        assert len(polls) == 2
        polls.wake("q")
        await asyncio.gather(*sleepers)
        assert len(polls) == 0

    asyncio.run(run())


def test_a_cancelled_sleeper_is_forgotten() -> None:
    async def run() -> None:
        polls: LongPolls[str] = LongPolls()
        sleeper = asyncio.ensure_future(polls.wait("q", 5.0))
        await asyncio.sleep(0)
        sleeper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sleeper
        assert len(polls) == 0

    asyncio.run(run())
