"""The kv demo runs, and says what it showed."""

from __future__ import annotations

import asyncio

from blocks.kv.demo import demo


def test_demo_shows_a_kill_hinted_handoff_and_read_repair() -> None:
    lines: list[str] = []
    asyncio.run(asyncio.wait_for(demo(lines.append), 30.0))
    text = "\n".join(lines)
    assert "reads still served: 300/300" in text, text
    assert "0 hints, n3:" in text and "n3 now misses 0" in text, text
