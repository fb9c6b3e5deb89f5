"""MemoryNetwork: each fault happens, a seed replays exactly, and random fault schedules never
break the network's guarantees (checked against an independent model of links and nodes)."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.core.errors import InvalidArgument, NotFound, Timeout, Unavailable
from blocks.core.memory_network import LinkConfig, MemoryNetwork, NetworkStats, TraceEvent
from blocks.testing import Simulation, run_simulation

NODES = ["n0", "n1", "n2", "n3"]


class Inbox:
    """A handler that records what it receives and echoes requests."""

    def __init__(self) -> None:
        self.received: list[tuple[str, Any]] = []

    async def __call__(self, source: str, message: Any) -> Any:
        self.received.append((source, message))
        return message


def _setup(sim: Simulation, link: LinkConfig | None = None) -> dict[str, Inbox]:
    if link is not None:
        sim.network.set_default_link(link)
    inboxes = {}
    for name in NODES:
        inboxes[name] = Inbox()
        sim.network.transport(name).serve(inboxes[name])
    return inboxes


def _conserved(stats: NetworkStats, in_flight: int) -> bool:
    ended = (
        stats.delivered
        + stats.dropped_loss
        + stats.dropped_partition
        + stats.dropped_crash
        + stats.dropped_late
        + stats.dropped_overload
        + stats.refused
    )
    return ended + in_flight == stats.sent + stats.duplicated


# --- each fault happens -------------------------------------------------------------------


def test_delay_is_applied_each_way_in_virtual_time() -> None:
    async def main(sim: Simulation) -> float:
        _setup(sim, LinkConfig(delay_ms=(100, 100)))
        start = sim.clock.monotonic()
        await sim.network.transport("n0").request("n1", "ping")
        return sim.clock.monotonic() - start

    assert run_simulation(main, seed=3) == pytest.approx(0.2)


def test_loss_drops_messages() -> None:
    async def main(sim: Simulation) -> tuple[int, NetworkStats, int]:
        inboxes = _setup(sim, LinkConfig(loss=0.5))
        for n in range(400):
            await sim.network.transport("n0").send("n1", n)
        await asyncio.sleep(1)
        return len(inboxes["n1"].received), sim.network.stats(), sim.network.in_flight

    received, stats, in_flight = run_simulation(main, seed=3)
    assert 140 < received < 260
    assert stats.dropped_loss == 400 - received
    assert _conserved(stats, in_flight)


def test_total_loss_times_requests_out() -> None:
    async def main(sim: Simulation) -> None:
        inboxes = _setup(sim, LinkConfig(loss=1.0))
        with pytest.raises(Timeout):
            await sim.network.transport("n0").request("n1", 1, timeout_s=1)
        assert inboxes["n1"].received == []

    run_simulation(main, seed=3)


def test_duplication_delivers_twice() -> None:
    async def main(sim: Simulation) -> None:
        inboxes = _setup(sim, LinkConfig(delay_ms=(1, 5), duplicate=1.0))
        for n in range(50):
            await sim.network.transport("n0").send("n1", n)
        await asyncio.sleep(1)
        assert Counter(message for _, message in inboxes["n1"].received) == {
            n: 2 for n in range(50)
        }
        assert sim.network.stats().duplicated == 50

    run_simulation(main, seed=3)


def _arrival_order(seed: int, link: LinkConfig) -> list[Any]:
    async def main(sim: Simulation) -> list[Any]:
        inboxes = _setup(sim, link)
        for n in range(100):
            await sim.network.transport("n0").send("n1", n)
        await asyncio.sleep(5)
        return [message for _, message in inboxes["n1"].received]

    return run_simulation(main, seed=seed)


def test_links_are_fifo_without_reordering() -> None:
    assert _arrival_order(5, LinkConfig(delay_ms=(1, 200))) == list(range(100))


def test_reordering_lets_messages_overtake() -> None:
    arrived = _arrival_order(5, LinkConfig(delay_ms=(1, 2), reorder=0.3, reorder_delay_ms=50))
    assert sorted(arrived) == list(range(100))
    assert arrived != list(range(100))


def test_partition_blocks_both_ways_and_heal_restores() -> None:
    async def main(sim: Simulation) -> None:
        inboxes = _setup(sim)
        net = sim.network
        net.partition([["n0", "n1"], ["n2"]])  # n3 is named nowhere: it joins no one
        for src in NODES:
            for dst in NODES:
                await net.transport(src).send(dst, f"{src}>{dst}")
        await asyncio.sleep(0.1)
        got = {message for inbox in inboxes.values() for _, message in inbox.received}
        together = {("n0", "n1"), ("n1", "n0")} | {(n, n) for n in NODES}
        assert got == {f"{s}>{d}" for s, d in together}
        with pytest.raises(Timeout):
            await net.transport("n2").request("n0", 1, timeout_s=0.5)
        net.heal()
        assert await net.transport("n2").request("n0", 1, timeout_s=0.5) == 1

    run_simulation(main, seed=3)


def test_one_way_block_blocks_one_direction() -> None:
    async def main(sim: Simulation) -> None:
        inboxes = _setup(sim)
        net = sim.network
        net.block("n0", "n1")
        await net.transport("n0").send("n1", "lost")
        await net.transport("n1").send("n0", "arrives")
        await asyncio.sleep(0.1)
        assert inboxes["n1"].received == []
        assert inboxes["n0"].received == [("n1", "arrives")]
        # A request n1 -> n0 is handled, but its reply cannot come back.
        with pytest.raises(Timeout):
            await net.transport("n1").request("n0", "asked", timeout_s=0.5)
        assert inboxes["n0"].received[-1] == ("n1", "asked")
        net.unblock("n0", "n1")
        assert await net.transport("n1").request("n0", "again", timeout_s=0.5) == "again"

    run_simulation(main, seed=3)


def test_messages_in_flight_when_a_link_is_cut_are_dropped() -> None:
    async def main(sim: Simulation) -> None:
        inboxes = _setup(sim, LinkConfig(delay_ms=(100, 100)))
        await sim.network.transport("n0").send("n1", "in flight")
        await asyncio.sleep(0.05)
        sim.network.partition([["n0"], ["n1"]])
        await asyncio.sleep(0.2)
        assert inboxes["n1"].received == []
        assert sim.network.stats().dropped_partition == 1

    run_simulation(main, seed=3)


def test_crash_and_restart() -> None:
    async def main(sim: Simulation) -> None:
        net = sim.network
        inboxes = _setup(sim, LinkConfig(delay_ms=(10, 10)))
        started, cancelled = asyncio.Event(), asyncio.Event()

        async def stuck(source: str, message: Any) -> Any:
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        net.transport("n1").serve(stuck)
        in_flight = asyncio.ensure_future(net.transport("n0").request("n1", 1, timeout_s=1))
        pending_from_n1 = asyncio.ensure_future(net.transport("n1").request("n2", 1))
        await started.wait()
        net.crash("n1")
        assert not net.is_up("n1")
        await asyncio.sleep(0)
        assert cancelled.is_set()  # its running handler stopped
        with pytest.raises(Timeout):  # the reply will never come
            await in_flight
        with pytest.raises(Unavailable):  # its own waiting request failed
            await pending_from_n1
        with pytest.raises(Unavailable):  # new requests fail at once
            await net.transport("n0").request("n1", 2)
        await net.transport("n1").send("n2", "from the dead")
        await asyncio.sleep(0.1)
        assert ("n1", "from the dead") not in inboxes["n2"].received
        net.restart("n1")
        net.transport("n1").serve(inboxes["n1"])
        assert await net.transport("n0").request("n1", 3) == 3

    run_simulation(main, seed=3)


def test_messages_sent_before_a_crash_are_not_delivered_after_restart() -> None:
    async def main(sim: Simulation) -> None:
        inboxes = _setup(sim, LinkConfig(delay_ms=(100, 100)))
        await sim.network.transport("n0").send("n1", "old life")
        sim.network.crash("n0")
        sim.network.restart("n0")
        await asyncio.sleep(0.5)
        assert inboxes["n1"].received == []

    run_simulation(main, seed=3)


def test_bad_configuration_is_refused() -> None:
    for bad in (
        {"delay_ms": (5.0, 1.0)},
        {"delay_ms": (-1.0, 1.0)},
        {"loss": 1.5},
        {"duplicate": -0.1},
        {"reorder": 2.0},
        {"reorder_delay_ms": -1.0},
    ):
        with pytest.raises(InvalidArgument):
            LinkConfig(**bad)
    net = MemoryNetwork(seed=1)
    with pytest.raises(InvalidArgument):
        net.transport("")
    with pytest.raises(NotFound):
        net.crash("ghost")
    with pytest.raises(InvalidArgument):
        net.partition([["a", "b"], ["b"]])
    with pytest.raises(InvalidArgument):
        MemoryNetwork(seed=1, trace_max=0)


def test_handler_task_bound_refuses_with_overloaded() -> None:
    async def main(sim: Simulation) -> list[str]:
        net = MemoryNetwork(seed=1, handler_tasks_max=2)

        async def slow(source: str, message: Any) -> Any:
            await asyncio.sleep(1)
            return message

        net.transport("b").serve(slow)
        a = net.transport("a")
        outcomes = await asyncio.gather(
            *(a.request("b", n) for n in range(4)), return_exceptions=True
        )
        return [type(o).__name__ for o in outcomes]

    assert run_simulation(main, seed=1) == ["int", "int", "Overloaded", "Overloaded"]


# --- determinism ------------------------------------------------------------------------------


async def _chatter(sim: Simulation) -> tuple[list[TraceEvent], list[Any]]:
    inboxes = _setup(sim, LinkConfig(delay_ms=(1, 30), loss=0.1, duplicate=0.1, reorder=0.2))
    outcomes: list[Any] = []

    async def client(name: str) -> None:
        for n in range(15):
            dest = sim.random.choice(NODES)
            try:
                outcomes.append(await sim.network.transport(name).request(dest, n, timeout_s=0.2))
            except (Timeout, Unavailable) as error:
                outcomes.append(type(error).__name__)
            await sim.network.transport(name).send(sim.random.choice(NODES), n)

    async def faults() -> None:
        await asyncio.sleep(0.3)
        sim.network.partition([["n0", "n1"], ["n2", "n3"]])
        sim.network.crash("n3")
        await asyncio.sleep(0.3)
        sim.network.heal()
        sim.network.restart("n3")

    await asyncio.gather(faults(), *(client(name) for name in NODES))
    outcomes.append(sorted((n, sorted(map(str, i.received))) for n, i in inboxes.items()))
    return sim.network.trace(), outcomes


def test_same_seed_replays_exactly() -> None:
    first, second = run_simulation(_chatter, seed=11), run_simulation(_chatter, seed=11)
    assert len(first[0]) > 100
    assert first == second


def test_different_seeds_differ() -> None:
    assert run_simulation(_chatter, seed=11)[0] != run_simulation(_chatter, seed=12)[0]


# --- random fault schedules -----------------------------------------------------------------


@dataclass
class Model:
    """What the test believes the network's cuts and node states are, built independently."""

    groups: dict[str, int] | None = None
    blocked: set[tuple[str, str]] = field(default_factory=set)
    lives: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NODES, 0))
    up: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(NODES, True))

    def cut(self, src: str, dst: str) -> bool:
        if (src, dst) in self.blocked:
            return True
        return self.groups is not None and self.groups.get(src, -1) != self.groups.get(dst, -1)


node_names = st.sampled_from(NODES)
steps = st.one_of(
    st.tuples(st.just("send"), node_names, node_names),
    st.tuples(st.just("request"), node_names, node_names),
    st.tuples(st.just("sleep"), st.integers(0, 50)),
    st.tuples(st.just("partition"), st.lists(st.integers(0, 2), min_size=4, max_size=4)),
    st.tuples(st.just("block"), node_names, node_names),
    st.tuples(st.just("heal")),
    st.tuples(st.just("crash"), node_names),
    st.tuples(st.just("restart"), node_names),
    st.tuples(st.just("bounce"), node_names),  # crash and restart at once
)
links = st.builds(
    LinkConfig,
    delay_ms=st.tuples(st.integers(0, 20), st.integers(0, 20)).map(lambda t: tuple(sorted(t))),
    loss=st.sampled_from([0.0, 0.2]),
    duplicate=st.sampled_from([0.0, 0.3]),
    reorder=st.sampled_from([0.0, 0.3]),
)


def _apply(sim: Simulation, model: Model, step: tuple[Any, ...]) -> None:
    net = sim.network
    if step[0] == "partition":
        model.groups = dict(zip(NODES, step[1], strict=True))
        net.partition([[n for n in NODES if model.groups[n] == g] for g in range(3)])
    elif step[0] == "block":
        model.blocked.add((step[1], step[2]))
        net.block(step[1], step[2])
    elif step[0] == "heal":
        model.groups, model.blocked = None, set()
        net.heal()
    elif step[0] in ("crash", "bounce"):
        if model.up[step[1]]:
            model.lives[step[1]] += 1
        model.up[step[1]] = False
        net.crash(step[1])
        if step[0] == "bounce":
            model.up[step[1]] = True
            net.restart(step[1])
    elif step[0] == "restart":
        model.up[step[1]] = True
        net.restart(step[1])


def _check_trace(trace: list[TraceEvent], models: dict[int, Model]) -> None:
    """Replay the trace against the model snapshots taken as faults were applied."""
    model = models[0]
    sent: dict[int, tuple[str, str, str, int]] = {}
    duplicates: Counter[int] = Counter()
    deliveries: Counter[int] = Counter()
    for index, event in enumerate(trace):
        model = models.get(index, model)
        if event.action == "send":
            sent[event.message_id] = (event.kind, event.src, event.dst, model.lives[event.src])
        elif event.action == "duplicate":
            duplicates[event.message_id] += 1
        elif event.action == "deliver":
            kind, src, dst, life = sent[event.message_id]  # delivered implies sent
            assert (kind, src, dst) == (event.kind, event.src, event.dst)
            assert not model.cut(src, dst), event
            assert model.up[src] and model.up[dst] and model.lives[src] == life, event
            deliveries[event.message_id] += 1
            assert deliveries[event.message_id] <= 1 + duplicates[event.message_id]


@given(seed=st.integers(0, 2**32), link=links, schedule=st.lists(steps, max_size=40))
def test_random_fault_schedules_keep_the_guarantees(
    seed: int, link: LinkConfig, schedule: list[tuple[Any, ...]]
) -> None:
    async def main(sim: Simulation) -> tuple[list[TraceEvent], dict[int, Model], bool]:
        _setup(sim, link)
        model = Model()
        models = {0: Model()}
        waiting = []
        for step in schedule:
            if step[0] == "send" and model.up[step[1]]:
                await sim.network.transport(step[1]).send(step[2], "m")
            elif step[0] == "request" and model.up[step[1]]:
                call = sim.network.transport(step[1]).request(step[2], "q", timeout_s=0.1)
                waiting.append(asyncio.ensure_future(call))
            elif step[0] == "sleep":
                await asyncio.sleep(step[1] / 1000)
            else:
                _apply(sim, model, step)
                models[len(sim.network.trace())] = Model(
                    model.groups, set(model.blocked), dict(model.lives), dict(model.up)
                )
        await asyncio.gather(*waiting, return_exceptions=True)
        await asyncio.sleep(1)
        conserved = _conserved(sim.network.stats(), sim.network.in_flight)
        return sim.network.trace(), models, conserved

    trace, models, conserved = run_simulation(main, seed)
    assert conserved
    _check_trace(trace, models)


def test_a_closed_name_reopened_does_not_receive_its_old_lifes_messages() -> None:
    async def main(sim: Simulation) -> None:
        inboxes = _setup(sim, LinkConfig(delay_ms=(100, 100)))
        await sim.network.transport("n0").send("n1", "from the old n0")
        await sim.network.transport("n0").close()
        sim.network.transport("n0")  # same name, new node
        await asyncio.sleep(0.5)
        assert inboxes["n1"].received == []

    run_simulation(main, seed=3)
