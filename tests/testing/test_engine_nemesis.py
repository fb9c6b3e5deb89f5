"""``blocks.testing.engine_nemesis``: the audit sorts what adapter calls end with (and can
fail), the nemesis carries out the pure plan on engine processes and refuses faults it
cannot inject."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from blocks.core.errors import InvalidArgument, NotFound, Timeout, Unavailable
from blocks.testing.engine_nemesis import (
    EngineNemesis,
    ErrorAudit,
    Hung,
    open_loop,
    run_engine_nemesis,
)
from blocks.testing.engines import EngineProcess
from blocks.testing.nemesis import FaultKind, plan


class EngineClientError(Exception):
    """Stands for an engine client's own exception leaking out of an adapter."""


async def _raise(error: BaseException) -> None:
    raise error


def test_the_audit_accepts_the_blocks_fault_errors() -> None:
    async def main() -> ErrorAudit:
        audit = ErrorAudit()
        assert await audit.guard(asyncio.sleep(0, "ok"), "read") == "ok"
        for error in (Unavailable("down"), Timeout("slow")):
            with pytest.raises(type(error)):
                await audit.guard(_raise(error), "write")
        return audit

    audit = asyncio.run(main())
    assert audit.valid, audit.describe()
    assert audit.calls == 3
    assert audit.errors == {"Unavailable": 1, "Timeout": 1}


def test_the_audit_flags_an_engine_client_exception_and_other_block_errors() -> None:
    async def main() -> ErrorAudit:
        audit = ErrorAudit()
        for error in (EngineClientError("socket closed"), NotFound("gone")):
            with pytest.raises(type(error)):
                await audit.guard(_raise(error), "write")
        return audit

    audit = asyncio.run(main())
    assert not audit.valid
    assert len(audit.foreign) == 2
    assert "EngineClientError" in audit.describe()


def test_the_audit_calls_a_call_past_its_bound_a_hang() -> None:
    async def main() -> ErrorAudit:
        audit = ErrorAudit(hang_s=0.05)
        with pytest.raises(Hung):
            await audit.guard(asyncio.Event().wait(), "receive")
        return audit

    audit = asyncio.run(main())
    assert not audit.valid
    assert audit.hangs == ["receive: no answer within 0.05 s"]


def test_a_blocks_timeout_is_not_a_hang() -> None:
    async def main() -> ErrorAudit:
        audit = ErrorAudit(hang_s=5.0)
        with pytest.raises(Timeout):
            await audit.guard(_raise(Timeout("the adapter's own bound")), "write")
        return audit

    audit = asyncio.run(main())
    assert audit.valid and not audit.hangs


class FakeEngine(EngineProcess):
    """Records the verbs; starts nothing."""

    name = "fake"

    def __init__(self, store_dir: Path) -> None:
        self.binary = "fake"
        self.store_dir = store_dir
        self.port = 1
        self._process = None
        self.verbs: list[str] = []

    def start(self) -> None:
        self.verbs.append("start")

    def kill(self) -> None:
        self.verbs.append("kill")


def test_the_nemesis_runs_the_seeded_plan_of_kills_and_restarts(tmp_path: Path) -> None:
    engine = FakeEngine(tmp_path)
    kinds = (FaultKind.KILL, FaultKind.RESTART)
    nemesis = EngineNemesis(
        {"e": engine}, seed=4, kinds=kinds, steps=3, hold_s=(0, 0), calm_s=0, lead_s=0
    )
    assert nemesis.faults == plan(4, ["e"], kinds, 3, hold_s=(0, 0))
    nemesis.run()
    assert nemesis.survived == nemesis.faults
    expected = [verb for fault in nemesis.faults for verb in ("kill", "start")]
    assert engine.verbs == expected
    assert nemesis.describe().startswith("engine nemesis seed=4 (replay: BLOCKS_NEMESIS_SEED=4)")


def test_a_stop_during_the_lead_applies_no_fault(tmp_path: Path) -> None:
    engine = FakeEngine(tmp_path)
    nemesis = EngineNemesis({"e": engine}, seed=2, kinds=(FaultKind.KILL,), steps=2, lead_s=30)
    nemesis.stop()
    nemesis.run()  # returns at once: the lead's wait ends on the stop
    assert nemesis.survived == [] and engine.verbs == []


def test_the_nemesis_refuses_faults_an_engine_process_cannot_take(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        EngineNemesis({"e": FakeEngine(tmp_path)}, seed=1, kinds=(FaultKind.ISOLATE,))


def test_open_loop_keeps_starting_calls_while_some_wait(tmp_path: Path) -> None:
    """The first call never returns until the end; the others go on and count."""
    started: list[tuple[int, bool]] = []  # (index, whether call 0 had returned)

    async def main() -> None:
        release = asyncio.Event()

        async def call(index: int) -> bool:
            started.append((index, release.is_set()))
            if index == 0:
                await release.wait()
            return True

        async def workload(done: asyncio.Event) -> None:
            deadline = asyncio.get_running_loop().time() + 30
            waiter = asyncio.ensure_future(open_loop(call, done, deadline, after_acks=5))
            await done.wait()
            await asyncio.sleep(0.05)
            release.set()
            await waiter

        engine = FakeEngine(tmp_path)
        nemesis = EngineNemesis(
            {"e": engine}, seed=1, kinds=(FaultKind.RESTART,), steps=1, hold_s=(0, 0), calm_s=0
        )
        nemesis.lead_s = 0.05
        await run_engine_nemesis(nemesis, workload)

    asyncio.run(main())
    assert started[0] == (0, False)
    assert any(index > 0 and not released for index, released in started), started[:5]
