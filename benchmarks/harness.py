"""The shared benchmark harness: named contenders, one workload, one run, side by side.

Theory of operation. A benchmark compares *contenders* (our block and the peers a user would
pick instead) on the same *workloads* in the same process run, so that machine noise hits all
of them alike. The harness is built so that it cannot flatter any of them:

* **Started only for its own rounds** (``Lifecycle.PER_ROUND``, the default). Before each of
  its rounds a contender is set up, probed until ready, warmed up, measured, then torn down,
  so no idle server of another contender (timers, GC, fsync threads) runs beside a
  measurement, and every contender starts each round from the same fresh state. The
  alternative, ``Lifecycle.KEPT``, sets every contender up once before the first round and
  tears it down after the last. It is only for in-process objects that do nothing while
  another is measured (a sketch, a cache, an index without threads): then every contender
  is kept equally idle, and a costly build (an index over a million vectors) is not repeated.
* **Interleaved round by round**: round 1 of every contender, then round 2, ..., the starting
  contender rotating each round (``round_order``), so that a drift of the machine's load
  does not favour whoever runs first. ``ROUNDS_DEFAULT`` is 5.
* **The spread is reported**: each round's rate is divided by the baseline's rate in the same
  round; a row's ratio is the median of those per-round ratios, with their min and max
  (``ratio_spread``). One ratio from one round says little on a shared machine.
* **The machine is recorded**: the load average (``os.getloadavg``) before and after each
  workload and the CPU count go into the JSON and under the Markdown table.
* **Readiness is a real request**: a contender may give a ``ready(state)`` probe (a PING, an
  account-info request, a health check); after set-up the harness calls it until it returns
  without raising (and not ``False``) or ``ready_timeout_s`` passes.
* **Every failure is a row**: ``Skip`` from set-up (peer not installed) and any other
  exception from set-up, the probe, a warm-up, a round or tear-down make the contender a
  skipped row with the reason and the stage; it runs no further rounds. Whatever it started is
  stopped: tear-down runs in a ``finally``, and then every process registered through
  ``benchmarks._processes.track_process`` since its set-up began is stopped (an ``atexit``
  hook stops the rest if the run itself dies).

For each contender and workload we report throughput (items per second of the median round;
``items_per_op`` lets a batched operation count the items it moves), p50 and p99 latency of
single operations pooled over all rounds, and the ratio to the named baseline with its spread.
Results go to ``out_dir`` as JSON, a Markdown table and a PNG bar chart (when matplotlib is
installed). Absolute numbers on a shared machine are noise; ratios within one run are the
result, and their spread says how far to trust them.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import os
import statistics
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from benchmarks import _processes
from benchmarks._report import (
    Result,
    WorkloadRecord,
    plot_lines,
    progress,
    write_reports,
    write_table,
)
from benchmarks._stats import min_median_max, percentile

__all__ = [
    "ROUNDS_DEFAULT",
    "Contender",
    "Lifecycle",
    "Result",
    "Skip",
    "Workload",
    "WorkloadRecord",
    "min_median_max",
    "percentile",
    "plot_lines",
    "progress",
    "ratio_spread",
    "round_order",
    "run_benchmark",
    "write_table",
]

MaybeAwaitable = Any
LoadAverage = Callable[[], tuple[float, float, float]]
T = TypeVar("T")

ROUNDS_DEFAULT = 5
READY_TIMEOUT_S_DEFAULT = 30.0
READY_POLL_S = 0.05


class Skip(Exception):
    """Raised by a contender's setup when it cannot run here; the reason is reported."""


class NotReady(Exception):
    """A contender's ``ready`` probe did not succeed within its ``ready_timeout_s``."""


class Lifecycle(enum.Enum):
    """When contenders are set up and torn down (see the module docstring)."""

    PER_ROUND = "per-round"
    KEPT = "kept"


@dataclass(frozen=True, slots=True)
class Contender:
    """One thing being measured. ``setup`` returns a state handed to every ``op`` call.

    ``ready(state)``, when given, is a real request to what ``setup`` started; it is retried
    until it returns without raising and not ``False``, for at most ``ready_timeout_s``.
    """

    name: str
    setup: Callable[[], MaybeAwaitable]
    op: Callable[[Any, int], MaybeAwaitable]
    teardown: Callable[[Any], MaybeAwaitable] | None = None
    items_per_op: int = 1
    ready: Callable[[Any], MaybeAwaitable] | None = None
    ready_timeout_s: float = READY_TIMEOUT_S_DEFAULT

    def __post_init__(self) -> None:
        if self.items_per_op < 1 or self.ready_timeout_s <= 0:
            raise ValueError(f"invalid contender {self.name!r}")


@dataclass(frozen=True, slots=True)
class Workload:
    """``ops`` timed operations per round, issued by ``concurrency`` concurrent workers,
    after ``warmup_ops`` untimed ones each time a contender is set up."""

    name: str
    ops: int
    concurrency: int = 1
    rounds: int = ROUNDS_DEFAULT
    warmup_ops: int = 0
    lifecycle: Lifecycle = Lifecycle.PER_ROUND

    def __post_init__(self) -> None:
        if self.ops < 1 or self.concurrency < 1 or self.rounds < 1 or self.warmup_ops < 0:
            raise ValueError(f"invalid workload {self}")


def round_order(names: Sequence[str], round_number: int) -> list[str]:
    """The order contenders run in round ``round_number`` (0-based): rotated by one a round."""
    if not names:
        return []
    shift = round_number % len(names)
    return [*names[shift:], *names[:shift]]


def ratio_spread(
    rates: Sequence[float], baseline_rates: Sequence[float]
) -> tuple[list[float], float, float, float] | None:
    """Per-round ratios to the baseline and their (min, median, max); ``None`` without any.

    Round ``k`` of the contender is compared with round ``k`` of the baseline only: the two ran
    back to back, under the same load. Rounds where the baseline measured nothing are left out.
    """
    ratios = [rate / base for rate, base in zip(rates, baseline_rates, strict=False) if base > 0]
    if not ratios:
        return None
    return ratios, *min_median_max(ratios)


async def _maybe_await(value: MaybeAwaitable) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


async def _run_round(
    contender: Contender, state: Any, ops: int, concurrency: int, first_index: int
) -> tuple[float, list[float]]:
    """Run ``ops`` operations; return (elapsed seconds, per-op latencies in seconds).

    With concurrent workers the first exception cancels the others (a task group), so no
    operation is still running when the caller tears the contender down.
    """
    latencies: list[float] = []
    next_index = first_index
    end_index = first_index + ops

    async def worker() -> None:
        nonlocal next_index
        while next_index < end_index:
            index = next_index
            next_index += 1
            started = time.perf_counter()
            await contender.op(state, index)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    if inspect.iscoroutinefunction(contender.op):
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(concurrency):
                    group.create_task(worker())
        except BaseExceptionGroup as failures:
            raise failures.exceptions[0] from None
    else:
        op = contender.op
        for index in range(first_index, end_index):
            op_started = time.perf_counter()
            op(state, index)
            latencies.append(time.perf_counter() - op_started)
    return time.perf_counter() - started, latencies


async def _wait_ready(contender: Contender, state: Any) -> None:
    assert contender.ready is not None
    deadline = time.monotonic() + contender.ready_timeout_s
    while True:
        try:
            answer = await _maybe_await(contender.ready(state))
        except Skip:
            raise
        except Exception as error:
            last = f"{type(error).__name__}: {error}"
        else:
            if answer is not False:
                return
            last = "the probe answered not ready"
        if time.monotonic() >= deadline:
            raise NotReady(f"not ready after {contender.ready_timeout_s:g} s ({last})")
        await asyncio.sleep(READY_POLL_S)


_NOT_STARTED = object()


class _WorkloadRun:
    """The rounds of one workload: who is started, who failed, what each round measured."""

    def __init__(self, bench_name: str, workload: Workload, contenders: Sequence[Contender]):
        self.bench_name = bench_name
        self.workload = workload
        self.contenders = {c.name: c for c in contenders}
        self.results = {c.name: Result(workload.name, c.name) for c in contenders}
        self.latencies: dict[str, list[float]] = {c.name: [] for c in contenders}
        self.next_index = dict.fromkeys(self.contenders, 0)
        self.kept: dict[str, Any] = {}  # Lifecycle.KEPT: the started contenders' states
        self.round_orders: list[list[str]] = []

    def _fail(self, name: str, stage: str, error: BaseException) -> None:
        result = self.results[name]
        if result.skipped is not None:
            return  # the first failure is the reason
        if isinstance(error, Skip) and stage == "start":
            reason = str(error) or "skipped"
        else:
            reason = f"{stage}: {type(error).__name__}: {error}"
        result.skipped = reason
        progress(f"[{self.bench_name}] {self.workload.name}: {name} skipped: {reason}")

    async def _ops(
        self, name: str, state: Any, ops: int, concurrency: int
    ) -> tuple[float, list[float]]:
        first = self.next_index[name]
        self.next_index[name] += ops
        return await _run_round(self.contenders[name], state, ops, concurrency, first)

    async def _stop(self, name: str) -> None:
        state = self.kept.pop(name, _NOT_STARTED)
        teardown = self.contenders[name].teardown
        if state is _NOT_STARTED or teardown is None:
            return
        try:
            await _maybe_await(teardown(state))
        except Exception as error:
            self._fail(name, "tear-down", error)

    async def _round(self, name: str, round_number: int) -> None:
        workload = self.workload
        per_round = workload.lifecycle is Lifecycle.PER_ROUND
        since = _processes.mark()
        contender = self.contenders[name]
        stage = "start"
        try:
            state = self.kept.get(name, _NOT_STARTED)
            if state is _NOT_STARTED:
                state = await _maybe_await(contender.setup())
                self.kept[name] = state  # from here on, tear-down runs whatever happens
                if contender.ready is not None:
                    stage = "readiness"
                    await _wait_ready(contender, state)
                if workload.warmup_ops:
                    stage = "warm-up"
                    await self._ops(name, state, workload.warmup_ops, workload.concurrency)
            stage = f"round {round_number + 1}"
            elapsed, latencies = await self._ops(name, state, workload.ops, workload.concurrency)
        except Exception as error:
            self._fail(name, stage, error)
            if not per_round:
                await self._stop(name)
            return
        finally:
            if per_round:
                try:
                    await self._stop(name)
                finally:
                    _processes.stop_since(since)
        rate = workload.ops * contender.items_per_op / elapsed if elapsed else 0.0
        self.results[name].round_throughputs.append(rate)
        self.latencies[name].extend(latencies)
        progress(
            f"[{self.bench_name}] {workload.name}: {name} round "
            f"{round_number + 1}/{workload.rounds}: {rate:,.0f} items/s"
        )

    async def run(self) -> list[Result]:
        since = _processes.mark()
        try:
            for round_number in range(self.workload.rounds):
                live = [n for n, r in self.results.items() if r.skipped is None]
                order = round_order(live, round_number)
                self.round_orders.append(order)
                for name in order:
                    await self._round(name, round_number)
        finally:
            for name in list(self.kept):
                await self._stop(name)
            _processes.stop_since(since)
        for name, result in self.results.items():
            if result.skipped is None and result.round_throughputs:
                result.throughput = statistics.median(result.round_throughputs)
                latencies = self.latencies[name]
                if latencies:
                    result.p50_ms = percentile(latencies, 0.50) * 1000
                    result.p99_ms = percentile(latencies, 0.99) * 1000
        return list(self.results.values())


def _apply_ratios(results: Sequence[Result], baseline: str) -> None:
    base = next(r for r in results if r.contender == baseline)
    if base.skipped is not None:
        return
    for result in results:
        if result.skipped is not None:
            continue
        spread = ratio_spread(result.round_throughputs, base.round_throughputs)
        if spread is not None:
            result.round_ratios, result.ratio_min, result.ratio, result.ratio_max = spread


def _validate(
    workloads: Sequence[Workload], contenders: Sequence[Contender], baseline: str
) -> None:
    names = [c.name for c in contenders]
    if len(set(names)) != len(names) or baseline not in names:
        raise ValueError(f"contender names must be unique and include the baseline {baseline!r}")
    for workload in workloads:
        for contender in contenders:
            if workload.concurrency != 1 and not inspect.iscoroutinefunction(contender.op):
                raise ValueError(
                    f"{contender.name}: synchronous ops need concurrency=1 ({workload.name})"
                )


def run_benchmark(
    bench_name: str,
    workloads: Sequence[Workload],
    contenders: Sequence[Contender],
    baseline: str,
    out_dir: str | Path = "results",
    *,
    load_average: LoadAverage = os.getloadavg,
) -> list[Result]:
    """Run every workload against every contender, write the reports, return the results.

    Raises ``ValueError`` before starting anything when the names are not unique, the
    baseline is not a contender, or a synchronous op is given ``concurrency`` above 1.
    Contenders that fail are skipped rows (see the module docstring), never an exception.
    """
    _validate(workloads, contenders, baseline)
    all_results: list[Result] = []
    records: list[WorkloadRecord] = []
    for workload in workloads:
        load_before = load_average()
        run = _WorkloadRun(bench_name, workload, contenders)
        results = _run_loop(run.run())
        load_after = load_average()
        _apply_ratios(results, baseline)
        all_results.extend(results)
        records.append(
            WorkloadRecord(
                workload=workload.name,
                rounds=workload.rounds,
                lifecycle=workload.lifecycle.value,
                round_orders=run.round_orders,
                cpu_count=os.cpu_count() or 1,
                load_before=load_before,
                load_after=load_after,
            )
        )
    write_reports(Path(out_dir) / bench_name, bench_name, baseline, all_results, records)
    return all_results


def _run_loop(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a required dependency
        return asyncio.run(coro)
    result: T = uvloop.run(coro)
    return result
