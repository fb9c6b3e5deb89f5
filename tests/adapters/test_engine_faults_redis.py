"""The Redis adapters under engine faults: the redis-server (append-only file, fsync on every
write, as ``RedisServer`` runs it) is killed (-9), restarted and paused (SIGSTOP) by
``EngineNemesis`` while a workload runs through the adapter.

Checked, with the fault kit's checkers:

* every call ends as the block's ``Unavailable`` or ``Timeout`` or succeeds: no redis-py
  exception escapes and no call hangs (``ErrorAudit``);
* nothing acknowledged is lost, per block: counters keep every acknowledged increment and
  count no increment twice (``check_counter_convergence``: the final value is the
  acknowledged sum plus some subset of the increments whose outcome is unknown);
* the adapter works again once the server is back.

The adapters are synchronous: each call runs in a worker thread (``asyncio.to_thread``) so
that the audit can bound it. ``BLOCKS_SOAK_SEEDS=N`` runs N seeds of 6 faults each;
``BLOCKS_NEMESIS_SEED=S`` replays one.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
import uuid
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from blocks.core.errors import Timeout, Unavailable
from blocks.testing.checkers import (
    check_counter_convergence,
    check_register_histories,
    pair_operations,
)
from blocks.testing.engine_nemesis import (
    EngineNemesis,
    ErrorAudit,
    engine_soak_line,
    open_loop,
    run_engine_nemesis,
)
from blocks.testing.engines import RedisServer, redis_missing
from blocks.testing.history import History
from blocks.testing.nemesis import nemesis_seeds, nemesis_steps

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(redis_missing() is not None, reason=str(redis_missing())),
]

T = TypeVar("T")
SEEDS = nemesis_seeds([1])  # 1: kill, restart, restart
DEADLINE_S = 60.0  # recovery and the final reads, generous for a loaded machine
AFTER_FAULTS_ACKS = 20  # acknowledged calls once the last fault is healed
CALL_TIMEOUT_S = 5.0  # the adapters' socket timeout here


def _nemesis(server: RedisServer, seed: int) -> EngineNemesis:
    return EngineNemesis({"redis": server}, seed=seed, steps=nemesis_steps(default=3), calm_s=1.0)


def _retrying(call: Callable[[], T]) -> T:
    """``call()`` once the server answers again (it loads its append-only file first)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            return call()
        except (Unavailable, Timeout):
            assert time.monotonic() < deadline, f"no answer {DEADLINE_S} s after the faults"
            time.sleep(0.1)


class SyncRun:
    """A history and an audit of calls to a synchronous adapter, each in a worker thread;
    every call has its own client number, so calls may overlap."""

    def __init__(self, nemesis: EngineNemesis) -> None:
        self.nemesis = nemesis
        self.audit = ErrorAudit()
        self.history = History()
        self._clients = itertools.count()

    async def call(
        self, function: str, key: Hashable, value: object, call: Callable[[], T], *, read: bool
    ) -> T | None:
        return await self.history.call(
            next(self._clients),
            function,
            key,
            value,
            self.audit.guard(asyncio.to_thread(call), function),
            read=read,
        )


def _under_faults(server: RedisServer, seed: int, step: Callable[[SyncRun, int], Any]) -> SyncRun:
    """Run ``step(run, i)`` in an open loop while the nemesis works; return the run."""
    nemesis = _nemesis(server, seed)
    run = SyncRun(nemesis)

    async def workload(done: asyncio.Event) -> None:
        deadline = asyncio.get_running_loop().time() + DEADLINE_S * 3
        await open_loop(functools.partial(step, run), done, deadline, after_acks=AFTER_FAULTS_ACKS)

    async def main() -> None:
        await run_engine_nemesis(nemesis, workload)

    try:
        asyncio.run(main())
    except BaseException as error:
        error.add_note(nemesis.describe())
        raise
    return run


# -- counters --------------------------------------------------------------------------------

COUNTER_NAMES = ("a", "b", "c")


@pytest.mark.parametrize("seed", SEEDS)
def test_redis_counters_keep_acknowledged_increments(tmp_path: Path, seed: int) -> None:
    from blocks.counters.adapters.redis import RedisCounters

    with RedisServer(tmp_path / "store") as server:
        counters = RedisCounters.open(
            server.url, namespace=f"f{uuid.uuid4().hex[:8]}:", timeout_s=CALL_TIMEOUT_S
        )
        try:

            async def step(run: SyncRun, index: int) -> bool:
                name, amount = COUNTER_NAMES[index % 3], 1 + index % 5
                done = await run.call(
                    "increment",
                    name,
                    amount,
                    functools.partial(counters.increment, name, amount),
                    read=False,
                )
                return done is not None

            run = _under_faults(server, seed, step)
            final: dict[Hashable, Sequence[int]] = {
                name: [_retrying(functools.partial(counters.value, name))] for name in COUNTER_NAMES
            }
        finally:
            counters.close()
    result = check_counter_convergence(pair_operations(run.history), final)
    counts = run.history.counts()
    engine_soak_line(
        "redis-counters",
        run.nemesis,
        f"ok={counts['ok']} info={counts['info']} {result.describe()} {run.audit.describe()}",
    )
    assert run.audit.valid, run.audit.describe()
    assert result.valid, (result.describe(), result.bounds, final)


# -- kv --------------------------------------------------------------------------------------

KV_KEYS = 16


@pytest.mark.parametrize("seed", SEEDS)
def test_redis_kv_keeps_acknowledged_puts(tmp_path: Path, seed: int) -> None:
    """Writes of unique values and reads on a few keys, then a read of every key once the
    server is back; the whole history, final reads included, must be linearizable per key:
    an acknowledged put that a kill -9 took back would make a final read impossible."""
    from blocks.kv.adapters.redis import RedisKeyValueStore

    with RedisServer(tmp_path / "store") as server:
        store = RedisKeyValueStore.open(
            server.url, namespace=f"f{uuid.uuid4().hex[:8]}:", timeout_s=CALL_TIMEOUT_S
        )
        try:

            async def step(run: SyncRun, index: int) -> bool:
                key = b"k%d" % (index % KV_KEYS)
                if index % 3 == 2:
                    read = functools.partial(store.get, key)
                    return await run.call("read", key, None, read, read=True) is not None
                value = b"v%d" % index
                put = functools.partial(_put, store, key, value)
                return await run.call("write", key, value, put, read=False) is not None

            run = _under_faults(server, seed, step)

            async def final_reads() -> None:
                for number in range(KV_KEYS):
                    key = b"k%d" % number
                    _retrying(functools.partial(store.get, key))  # the server answers again
                    await run.call("read", key, None, functools.partial(store.get, key), read=True)

            asyncio.run(final_reads())
        finally:
            store.close()
    report = check_register_histories(pair_operations(run.history))
    counts = run.history.counts()
    engine_soak_line(
        "redis-kv",
        run.nemesis,
        f"ok={counts['ok']} info={counts['info']} {report.describe()} {run.audit.describe()}",
    )
    assert run.audit.valid, run.audit.describe()
    assert report.valid is True, report.describe()


def _put(store: Any, key: bytes, value: bytes) -> bool:
    """``put`` answering True, so that ``History.call`` tells it from a failure (None)."""
    store.put(key, value)
    return True
