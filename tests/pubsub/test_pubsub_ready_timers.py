"""``ReadyTimers`` (the driver's side of ``Ready.timers``), in virtual time: a later request
re-arms lazily and fires once, at the latest time asked; an earlier one re-arms at once;
``close`` silences everything."""

from __future__ import annotations

import asyncio

from blocks.pubsub.ready_timers import ReadyTimers
from blocks.testing.simloop import Simulation, run_simulation


def test_timers_fire_once_at_the_latest_requested_time() -> None:
    async def scenario(sim: Simulation) -> tuple[list[tuple[str, str, int]], int, int]:
        fired: list[tuple[str, str, int]] = []
        timers: ReadyTimers[str] = ReadyTimers(
            sim.clock,
            lambda key, name: fired.append((key, name, int(sim.clock.monotonic() * 1000))),
        )
        timers.arm("p0", "election", 100)
        timers.arm("p0", "election", 300)  # moved later: the armed timer re-arms when it fires
        timers.arm("p1", "election", 200)
        timers.arm("p1", "election", 50)  # moved earlier: re-armed at once
        timers.arm("p1", "leader", 70)  # another name, its own timer
        await asyncio.sleep(1.0)
        wakeups = timers.wakeups
        timers.arm("p2", "election", 1_100)
        timers.close()
        await asyncio.sleep(1.0)
        return fired, wakeups, len(timers)

    fired, wakeups, left = run_simulation(scenario, 1)
    assert fired == [("p1", "election", 50), ("p1", "leader", 70), ("p0", "election", 300)]
    assert wakeups == 4  # p0 at 100 (re-armed, nothing called), then the three that fired
    assert left == 0  # closed: p2 never fired
