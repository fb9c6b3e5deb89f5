"""The Redis adapters under engine faults: the redis-server (append-only file, fsync on every
write, as ``RedisServer`` runs it) is killed (-9), restarted and paused (SIGSTOP) by
``EngineNemesis`` while a workload runs through the adapter.

Checked, with the fault kit's checkers:

* every call ends as the block's ``Unavailable`` or ``Timeout`` or succeeds: no redis-py
  exception escapes and no call hangs (``ErrorAudit``);
* nothing acknowledged is lost, per block: counters keep every acknowledged increment and
  count no increment twice (``check_counter_convergence``: the final value is the
  acknowledged sum plus some subset of the increments whose outcome is unknown); kv puts and
  reads, with a final read of every key, are linearizable per key
  (``check_register_histories``); the sequencer returns no ID twice and each generator's
  IDs increase (``check_unique_ids``); a GCRA limit admits no more than its burst plus its
  rate over the run; a cache read returns only a value that was put (a cache promises no
  durability);
* the adapter works again once the server is back.

The adapters are synchronous: each call runs in a worker thread (``asyncio.to_thread``) so
that the audit can bound it. Each check was seen failing against a redis-server run with
``--appendonly no`` (kv, counters, rate limit). ``BLOCKS_SOAK_SEEDS=N`` runs N seeds of 6 faults each;
``BLOCKS_NEMESIS_SEED=S`` replays one.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from blocks.core.errors import Timeout, Unavailable
from blocks.testing.checkers import (
    check_counter_convergence,
    check_register_histories,
    check_unique_ids,
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
from blocks.testing.nemesis import FaultKind, nemesis_seeds, nemesis_steps

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
    return EngineNemesis({"redis": server}, seed=seed, steps=nemesis_steps(default=3), calm_s=0.5)


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


def _under_faults(nemesis: EngineNemesis, step: Callable[[SyncRun, int], Any]) -> SyncRun:
    """Run ``step(run, i)`` in an open loop while the nemesis works; return the run."""
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

            run = _under_faults(_nemesis(server, seed), step)
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
    with RedisServer(tmp_path / "store") as server:
        run = _kv_under_faults(server, lambda: _nemesis(server, seed), CALL_TIMEOUT_S)
    assert run.audit.errors["Unavailable"] > 0, "the faults reached no call"


def test_redis_kv_a_pause_past_the_timeout_is_a_timeout(tmp_path: Path) -> None:
    """The server stopped (SIGSTOP) for 1.5 s, three times the client's 0.5 s timeout: calls
    end as ``Timeout`` (they may or may not have happened), none hangs, and the history is
    still linearizable once the server is back."""
    with RedisServer(tmp_path / "store") as server:
        pause = (FaultKind.PAUSE,)
        run = _kv_under_faults(
            server,
            lambda: EngineNemesis(
                {"redis": server}, seed=1, kinds=pause, steps=1, hold_s=(1.5, 1.5)
            ),
            0.5,
        )
    assert run.audit.errors["Timeout"] > 0, run.audit.describe()


def _kv_under_faults(
    server: RedisServer, make_nemesis: Callable[[], EngineNemesis], timeout_s: float
) -> SyncRun:
    from blocks.kv.adapters.redis import RedisKeyValueStore

    store = RedisKeyValueStore.open(
        server.url, namespace=f"f{uuid.uuid4().hex[:8]}:", timeout_s=timeout_s
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

        run = _under_faults(make_nemesis(), step)

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
    return run


def _put(store: Any, key: Hashable, value: object) -> bool:
    """``put`` answering True, so that ``History.call`` tells it from a failure (None)."""
    store.put(key, value)
    return True


# -- sequencer -------------------------------------------------------------------------------

GENERATORS = 3
SEQUENCER_SEEDS = nemesis_seeds([3])  # 3: kill, pause, kill: leases lapse and are taken again


@pytest.mark.parametrize("seed", SEQUENCER_SEEDS)
def test_redis_sequencer_issues_no_id_twice(tmp_path: Path, seed: int) -> None:
    """Three ``RedisSnowflake``s on a small lease table (4 worker ids, 1 s leases, so leases
    are renewed, and may lapse and be taken again, around every fault); each generator is
    called by one thread at a time, as it requires. No ID may be returned twice, and each
    generator's IDs increase (``check_unique_ids``)."""
    from blocks.sequencer.adapters.redis import RedisLeaseConfig, RedisSnowflake

    config = RedisLeaseConfig(
        workers=4, ttl_ms=1_000, safety_margin_ms=300, namespace=f"f{uuid.uuid4().hex[:8]}:"
    )
    with RedisServer(tmp_path / "store") as server:
        generators = [
            RedisSnowflake.open(server.url, f"g{number}", config) for number in range(GENERATORS)
        ]
        nemesis = _nemesis(server, seed)
        run = SyncRun(nemesis)

        async def workload(done: asyncio.Event) -> None:
            deadline = asyncio.get_running_loop().time() + DEADLINE_S * 3

            def loop_of(number: int) -> Awaitable[None]:
                async def call(index: int) -> bool:
                    generator = generators[number]
                    return (
                        await run.call("next", number, None, generator.next_id, read=True)
                        is not None
                    )

                return open_loop(
                    call,
                    done,
                    deadline,
                    after_acks=AFTER_FAULTS_ACKS,
                    in_flight_max=1,
                    interval_s=0.002,
                )

            await asyncio.gather(*(loop_of(number) for number in range(GENERATORS)))

        try:
            try:
                asyncio.run(run_engine_nemesis(nemesis, workload))
            except BaseException as error:
                error.add_note(nemesis.describe())
                raise
        finally:
            for generator in generators:
                generator.close()
    result = check_unique_ids(pair_operations(run.history))
    counts = run.history.counts()
    engine_soak_line(
        "redis-sequencer",
        nemesis,
        f"ok={counts['ok']} info={counts['info']} {result.describe()} {run.audit.describe()}",
    )
    assert run.audit.valid, run.audit.describe()
    assert result.valid, (result.describe(), result.duplicates[:5], result.decreases[:5])


# -- cache -----------------------------------------------------------------------------------

CACHE_KEYS = 16


@pytest.mark.parametrize("seed", SEEDS)
def test_redis_cache_surfaces_faults_and_invents_nothing(tmp_path: Path, seed: int) -> None:
    """A cache promises no durability, so only: every call ends as the block's fault error
    or succeeds, and a read returns nothing but a value some put of that key sent."""
    from blocks.cache.adapters.redis import RedisCache

    with RedisServer(tmp_path / "store") as server:
        cache = RedisCache.open(
            server.url, 1_000, namespace=f"f{uuid.uuid4().hex[:8]}:", timeout_s=CALL_TIMEOUT_S
        )
        try:

            async def step(run: SyncRun, index: int) -> bool:
                key = f"k{index % CACHE_KEYS}"
                if index % 2:
                    read = functools.partial(cache.get, key)
                    await run.call("get", key, None, read, read=True)
                    return False  # a miss and an error both answer None: count puts only
                value = f"v{index}"
                put = functools.partial(_put, cache, key, value)
                return await run.call("put", key, value, put, read=False) is not None

            run = _under_faults(_nemesis(server, seed), step)
        finally:
            cache.close()
    operations = pair_operations(run.history)
    written = {(op.key, op.value) for op in operations if op.function == "put"}
    invented = [
        op
        for op in operations
        if op.function == "get" and op.status == "ok" and op.output is not None
        if (op.key, op.output) not in written
    ]
    counts = run.history.counts()
    engine_soak_line(
        "redis-cache",
        run.nemesis,
        f"ok={counts['ok']} info={counts['info']} invented={len(invented)} {run.audit.describe()}",
    )
    assert run.audit.valid, run.audit.describe()
    assert not invented, invented[:5]


# -- rate limit ------------------------------------------------------------------------------

RATE_PER_S, BURST = 20.0, 40


@pytest.mark.parametrize("seed", SEEDS)
def test_redis_gcra_admits_no_more_across_faults(tmp_path: Path, seed: int) -> None:
    """One hot key asked far above its rate while the server is killed and restarted: the
    limiter's state is durable (append-only file), so the admissions over the whole run
    stay within ``BURST + RATE_PER_S * elapsed`` (a restart that forgot the state would hand
    out a fresh burst each time)."""
    from blocks.ratelimit.adapters.redis import RedisGCRA

    with RedisServer(tmp_path / "store") as server:
        limiter = RedisGCRA.open(
            server.url,
            RATE_PER_S,
            BURST,
            namespace=f"f{uuid.uuid4().hex[:8]}:",
            timeout_s=CALL_TIMEOUT_S,
        )
        started = time.monotonic()
        try:

            async def step(run: SyncRun, index: int) -> bool:
                acquire = functools.partial(limiter.acquire, "hot")
                decision = await run.call("acquire", "hot", None, acquire, read=True)
                return decision is not None and decision.allowed

            run = _under_faults(_nemesis(server, seed), step)
        finally:
            limiter.close()
    elapsed_s = time.monotonic() - started
    admitted = sum(
        1
        for op in pair_operations(run.history)
        if op.status == "ok" and getattr(op.output, "allowed", False)
    )
    most = BURST + RATE_PER_S * elapsed_s + 1
    engine_soak_line(
        "redis-ratelimit",
        run.nemesis,
        f"admitted={admitted} most={most:.0f} elapsed={elapsed_s:.1f}s {run.audit.describe()}",
    )
    assert run.audit.valid, run.audit.describe()
    assert admitted <= most, (admitted, most)
