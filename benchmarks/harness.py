"""The shared benchmark harness: named contenders, one workload, one run, side by side.

Theory of operation. A benchmark compares *contenders* (our block and the peers a user would
pick instead) on the same *workloads* in the same process run, so that machine noise hits all
of them alike. Rounds are interleaved (round 1 of every contender, then round 2, ...) so a
slow drift of the machine does not favour whoever ran first. For each contender and workload
we report:

* throughput: items per second of the median round (``items_per_op`` lets a batched operation
  count the items it moves);
* p50 and p99 latency of single operations, pooled over all rounds;
* the ratio of its throughput to the named baseline's (``x1.00`` for the baseline itself).

A contender whose ``setup`` raises ``Skip`` (peer not installed, server not found) is reported
as skipped with the reason: never silently dropped. Results go to ``out_dir`` as JSON, a
Markdown table and a PNG bar chart (when matplotlib is installed).

Absolute numbers on a shared machine are noise; ratios within one run are the result.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import statistics
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Contender",
    "Result",
    "Skip",
    "Workload",
    "plot_lines",
    "progress",
    "run_benchmark",
    "write_table",
]

MaybeAwaitable = Any


class Skip(Exception):
    """Raised by a contender's setup when it cannot run here; the reason is reported."""


@dataclass(frozen=True, slots=True)
class Contender:
    """One thing being measured. ``setup`` returns a state handed to every ``op`` call."""

    name: str
    setup: Callable[[], MaybeAwaitable]
    op: Callable[[Any, int], MaybeAwaitable]
    teardown: Callable[[Any], MaybeAwaitable] | None = None
    items_per_op: int = 1


@dataclass(frozen=True, slots=True)
class Workload:
    """``ops`` operations per round, issued by ``concurrency`` concurrent workers."""

    name: str
    ops: int
    concurrency: int = 1
    rounds: int = 3
    warmup_ops: int = 0

    def __post_init__(self) -> None:
        if self.ops < 1 or self.concurrency < 1 or self.rounds < 1 or self.warmup_ops < 0:
            raise ValueError(f"invalid workload {self}")


@dataclass(slots=True)
class Result:
    workload: str
    contender: str
    skipped: str | None = None
    throughput: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    ratio: float | None = None
    round_throughputs: list[float] = field(default_factory=list)


def progress(message: str) -> None:
    """One line of progress on stderr (stdout stays clean for --json)."""
    print(message, file=sys.stderr, flush=True)


async def _maybe_await(value: MaybeAwaitable) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


async def _run_round(
    contender: Contender, state: Any, ops: int, concurrency: int, first_index: int
) -> tuple[float, list[float]]:
    """Run ``ops`` operations; return (elapsed seconds, per-op latencies in seconds)."""
    latencies: list[float] = []
    is_async = inspect.iscoroutinefunction(contender.op)
    if not is_async and concurrency != 1:
        raise ValueError(f"{contender.name}: synchronous ops need concurrency=1")
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
    if is_async:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    else:
        op = contender.op
        for index in range(first_index, end_index):
            op_started = time.perf_counter()
            op(state, index)
            latencies.append(time.perf_counter() - op_started)
    return time.perf_counter() - started, latencies


def _percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index]


async def _run_workload(
    bench_name: str, workload: Workload, contenders: Sequence[Contender]
) -> list[Result]:
    states: dict[str, Any] = {}
    results = {c.name: Result(workload.name, c.name) for c in contenders}
    latencies: dict[str, list[float]] = {c.name: [] for c in contenders}
    for contender in contenders:
        try:
            states[contender.name] = await _maybe_await(contender.setup())
        except Skip as reason:
            results[contender.name].skipped = str(reason) or "skipped"
            progress(f"[{bench_name}] {workload.name}: {contender.name} skipped: {reason}")
    live = [c for c in contenders if c.name in states]
    try:
        for contender in live:
            if workload.warmup_ops:
                await _run_round(contender, states[contender.name], workload.warmup_ops, 1, 0)
        for round_number in range(workload.rounds):
            for contender in live:
                first = workload.warmup_ops + round_number * workload.ops
                elapsed, round_latencies = await _run_round(
                    contender, states[contender.name], workload.ops, workload.concurrency, first
                )
                rate = workload.ops * contender.items_per_op / elapsed if elapsed > 0 else 0.0
                results[contender.name].round_throughputs.append(rate)
                latencies[contender.name].extend(round_latencies)
                progress(
                    f"[{bench_name}] {workload.name}: {contender.name} round "
                    f"{round_number + 1}/{workload.rounds}: {rate:,.0f} items/s"
                )
    finally:
        for contender in live:
            if contender.teardown is not None:
                await _maybe_await(contender.teardown(states[contender.name]))
    for contender in live:
        result = results[contender.name]
        result.throughput = statistics.median(result.round_throughputs)
        ordered = sorted(latencies[contender.name])
        result.p50_ms = _percentile(ordered, 0.50) * 1000
        result.p99_ms = _percentile(ordered, 0.99) * 1000
    return [results[c.name] for c in contenders]


def run_benchmark(
    bench_name: str,
    workloads: Sequence[Workload],
    contenders: Sequence[Contender],
    baseline: str,
    out_dir: str | Path = "results",
) -> list[Result]:
    """Run every workload against every contender, write the reports, return the results."""
    names = [c.name for c in contenders]
    if len(set(names)) != len(names) or baseline not in names:
        raise ValueError(f"contender names must be unique and include the baseline {baseline!r}")
    all_results: list[Result] = []
    for workload in workloads:
        results = _run_loop(_run_workload(bench_name, workload, contenders))
        base = next(r for r in results if r.contender == baseline)
        for result in results:
            if result.skipped is None and base.skipped is None and base.throughput > 0:
                result.ratio = result.throughput / base.throughput
        all_results.extend(results)
    _write_reports(Path(out_dir) / bench_name, bench_name, baseline, all_results)
    return all_results


def _run_loop(coro: Coroutine[Any, Any, list[Result]]) -> list[Result]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a required dependency
        return asyncio.run(coro)
    result: list[Result] = uvloop.run(coro)
    return result


def _write_reports(directory: Path, bench_name: str, baseline: str, results: list[Result]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").write_text(
        json.dumps(
            {
                "benchmark": bench_name,
                "baseline": baseline,
                "results": [asdict(r) for r in results],
            },
            indent=2,
        )
    )
    rows = []
    for r in results:
        if r.skipped is not None:
            rows.append([r.workload, r.contender, f"skipped: {r.skipped}", "", "", ""])
        else:
            ratio = f"x{r.ratio:.2f}" if r.ratio is not None else "n/a"
            rows.append(
                [
                    r.workload,
                    r.contender,
                    f"{r.throughput:,.0f}",
                    f"{r.p50_ms:.3f}",
                    f"{r.p99_ms:.3f}",
                    ratio,
                ]
            )
    columns = ["workload", "contender", "items/s", "p50 ms", "p99 ms", f"vs {baseline}"]
    table = _markdown_table(columns, rows)
    (directory / "results.md").write_text(table)
    print(f"\n## {bench_name}\n\n{table}")
    _plot_bars(directory / "results.png", bench_name, results)
    progress(f"[{bench_name}] wrote {directory}/results.{{json,md,png}}")


def _markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table(
    out_dir: str | Path, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> str:
    """Write ``name.md`` (Markdown table) and ``name.json`` into ``out_dir``; return the table."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    table = _markdown_table(columns, rows)
    (directory / f"{name}.md").write_text(table)
    (directory / f"{name}.json").write_text(
        json.dumps([dict(zip(columns, row, strict=True)) for row in rows], indent=2, default=str)
    )
    return table


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        progress("matplotlib is not installed: no plot written (pip install matplotlib)")
        return None
    return plt


def _plot_bars(path: Path, title: str, results: list[Result]) -> None:
    plt = _pyplot()
    if plt is None:
        return
    workloads = list(dict.fromkeys(r.workload for r in results))
    contenders = list(dict.fromkeys(r.contender for r in results))
    width = 0.8 / max(1, len(contenders))
    figure, axes = plt.subplots(figsize=(max(6, 1.6 * len(workloads) * len(contenders)), 4))
    for offset, contender in enumerate(contenders):
        values = [
            next(
                (r.throughput for r in results if r.workload == w and r.contender == contender), 0.0
            )
            for w in workloads
        ]
        positions = [i + offset * width for i in range(len(workloads))]
        axes.bar(positions, values, width, label=contender)
    axes.set_xticks([i + width * (len(contenders) - 1) / 2 for i in range(len(workloads))])
    axes.set_xticklabels(workloads)
    axes.set_ylabel("items per second")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_lines(
    path: str | Path,
    series: dict[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
) -> None:
    """Draw one line per series (e.g. hit ratio against cache size) into a PNG."""
    plt = _pyplot()
    if plt is None:
        return
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for label, points in series.items():
        xs, ys = zip(*points, strict=True) if points else ((), ())
        axes.plot(xs, ys, marker="o", label=label)
    if logx:
        axes.set_xscale("log")
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
