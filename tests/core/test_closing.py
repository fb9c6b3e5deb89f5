"""``blocks.core.closing.AsyncClosing``: ``async with`` closes, on success and on error."""

from __future__ import annotations

import asyncio

import pytest

from blocks.core.closing import AsyncClosing


class _Thing(AsyncClosing):
    def __init__(self) -> None:
        self.closed = 0

    async def close(self) -> None:
        self.closed += 1


def test_async_with_gives_the_thing_and_closes_it_once() -> None:
    async def body() -> _Thing:
        async with _Thing() as thing:
            assert thing.closed == 0
        return thing

    assert asyncio.run(body()).closed == 1


def test_an_error_inside_still_closes_and_passes_on() -> None:
    thing = _Thing()

    async def body() -> None:
        async with thing:
            raise KeyError("inside")

    with pytest.raises(KeyError, match="inside"):
        asyncio.run(body())
    assert thing.closed == 1
