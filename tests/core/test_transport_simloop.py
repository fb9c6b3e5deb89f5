"""The virtual-time loop: time jumps to the next timer, ordering is exact, stuck programs stop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.core.clock import Clock
from blocks.core.errors import InvalidArgument
from blocks.testing import (
    SimClock,
    Simulation,
    SimulationDeadlock,
    SimulationTimeLimit,
    VirtualTimeLoop,
    run_simulation,
)


def test_a_simulated_day_costs_no_wall_time() -> None:
    async def main(sim: Simulation) -> tuple[float, int]:
        await asyncio.sleep(24 * 3600)
        return sim.clock.monotonic(), sim.clock.now_ms()

    started = time.perf_counter()
    elapsed_s, now_ms = run_simulation(main, seed=0, wall_start_ms=1_000)
    assert time.perf_counter() - started < 60  # far from a day, even in a paused process
    assert elapsed_s == pytest.approx(24 * 3600)
    assert now_ms == 1_000 + 24 * 3600 * 1000


def test_sim_clock_is_a_blocks_clock() -> None:
    clock = SimClock(wall_start_ms=5)
    assert isinstance(clock, Clock)
    assert (clock.now_ms(), clock.monotonic()) == (5, 0.0)
    with pytest.raises(InvalidArgument):
        SimClock(wall_start_ms=-1)


@given(st.lists(st.integers(0, 1000), min_size=1, max_size=30))
def test_timers_fire_in_deadline_order_at_their_deadlines(delays_ms: list[int]) -> None:
    async def main(sim: Simulation) -> list[tuple[float, int]]:
        fired: list[tuple[float, int]] = []

        async def sleeper(index: int, delay_ms: int) -> None:
            await asyncio.sleep(delay_ms / 1000)
            fired.append((sim.loop.time(), index))

        await asyncio.gather(*(sleeper(i, d) for i, d in enumerate(delays_ms)))
        return fired

    fired = run_simulation(main, seed=0)
    assert sorted(index for _, index in fired) == list(range(len(delays_ms)))
    deadlines = [delays_ms[index] for _, index in fired]
    assert deadlines == sorted(deadlines)  # ties: some fixed order, not necessarily FIFO
    for at, index in fired:
        assert at == pytest.approx(delays_ms[index] / 1000)
    assert run_simulation(main, seed=0) == fired


def test_wait_for_times_out_in_virtual_time() -> None:
    async def main(sim: Simulation) -> float:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10), 2.5)
        return sim.clock.monotonic()

    assert run_simulation(main, seed=0) == pytest.approx(2.5)


def test_work_handed_to_a_thread_runs_inline_in_call_order() -> None:
    """``to_thread`` (group commit's fsync rounds use it) works in a simulation: the function
    runs on the loop's thread at once, so a seed decides everything; errors reach the caller."""

    async def main(sim: Simulation) -> tuple[list[str], float, str]:
        order: list[str] = []

        def work(name: str) -> str:
            order.append(f"{name}@{threading.current_thread().name}")
            if name == "bad":
                raise ValueError("refused")
            return name

        async def task(name: str, delay_s: float) -> str:
            await asyncio.sleep(delay_s)
            return await asyncio.to_thread(work, name)

        results = await asyncio.gather(task("b", 0.2), task("a", 0.1))
        try:
            await asyncio.to_thread(work, "bad")
        except ValueError as error:
            message = str(error)
        order.extend(results)
        return order, sim.clock.monotonic(), message

    main_thread = threading.current_thread().name
    order, elapsed_s, message = run_simulation(main, seed=3)
    assert order == [f"a@{main_thread}", f"b@{main_thread}", f"bad@{main_thread}", "b", "a"]
    assert elapsed_s == pytest.approx(0.2)
    assert message == "refused"


def test_a_program_waiting_forever_is_a_deadlock() -> None:
    async def main(sim: Simulation) -> None:
        await asyncio.get_running_loop().create_future()

    with pytest.raises(SimulationDeadlock) as caught:
        run_simulation(main, seed=42)
    assert any("seed=42" in note for note in caught.value.__notes__)


def test_virtual_time_is_bounded() -> None:
    async def main(sim: Simulation) -> None:
        while True:
            await asyncio.sleep(60)

    with pytest.raises(SimulationTimeLimit):
        run_simulation(main, seed=0, time_limit_s=3600)


def test_failures_name_the_seed() -> None:
    async def main(sim: Simulation) -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError) as caught:
        run_simulation(main, seed=1234)
    assert any("seed=1234" in note for note in caught.value.__notes__)


def test_application_random_is_seeded_and_separate_from_the_network() -> None:
    async def main(sim: Simulation) -> list[float]:
        return [sim.random.random() for _ in range(3)]

    assert run_simulation(main, seed=9) == run_simulation(main, seed=9)
    assert run_simulation(main, seed=9) != run_simulation(main, seed=10)


def test_loop_rejects_bad_limits() -> None:
    with pytest.raises(InvalidArgument):
        VirtualTimeLoop(time_limit_s=0)
