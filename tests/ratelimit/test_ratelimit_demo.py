"""The ``blocks demo`` part for ratelimit runs and says something."""

from __future__ import annotations

import asyncio

from blocks.ratelimit.demo import demo


def test_demo_runs() -> None:
    lines: list[str] = []
    asyncio.run(asyncio.wait_for(demo(lines.append), 60))
    assert len(lines) >= 3
