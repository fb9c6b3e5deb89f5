"""What a benchmark run writes: results as JSON, a Markdown table, PNG plots.

The harness measures; this module only formats. A run's report carries, beside every row, how
it was measured: the rounds, whether contenders were started per round or kept, the order the
contenders ran in each round, the machine's CPU count and its load average before and after
each workload. A skipped row keeps its reason. Ratios are the median of per-round ratios to
the baseline, with their spread (min-max) beside them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Result",
    "WorkloadRecord",
    "markdown_table",
    "plot_lines",
    "progress",
    "write_reports",
    "write_table",
]


@dataclass(slots=True)
class Result:
    """One row: a contender on a workload.

    ``throughput`` is items per second of the median round; ``ratio`` the median of the
    per-round ratios to the baseline (``round_ratios``, round by round), ``ratio_min`` and
    ``ratio_max`` their spread. A row with ``skipped`` set has no numbers that count.
    """

    workload: str
    contender: str
    skipped: str | None = None
    throughput: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    ratio: float | None = None
    ratio_min: float | None = None
    ratio_max: float | None = None
    round_throughputs: list[float] = field(default_factory=list)
    round_ratios: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WorkloadRecord:
    """How one workload was run: rounds, lifecycle, order, and the machine around it."""

    workload: str
    rounds: int
    lifecycle: str
    round_orders: list[list[str]]
    cpu_count: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]


def progress(message: str) -> None:
    """One line of progress on stderr (stdout stays clean for --json)."""
    print(message, file=sys.stderr, flush=True)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


_LIFECYCLE_WORDS = {
    "per-round": "started for their own rounds only",
    "kept": "kept started from the first round to the last (idle in-process objects)",
}


def _load(values: tuple[float, float, float]) -> str:
    return "/".join(f"{value:.2f}" for value in values)


def _machine_lines(records: Sequence[WorkloadRecord]) -> str:
    lines = []
    for record in records:
        started = _LIFECYCLE_WORDS.get(record.lifecycle, record.lifecycle)
        lines.append(
            f"- {record.workload}: {record.rounds} interleaved rounds, contenders {started}; "
            f"{record.cpu_count} CPUs, load average 1/5/15 min {_load(record.load_before)} "
            f"before, {_load(record.load_after)} after"
        )
    return "\n".join(lines) + "\n"


def _row(result: Result) -> list[str]:
    if result.skipped is not None:
        return [result.workload, result.contender, f"skipped: {result.skipped}", "", "", "", ""]
    ratio = f"x{result.ratio:.2f}" if result.ratio is not None else "n/a"
    spread = (
        f"x{result.ratio_min:.2f}-x{result.ratio_max:.2f}"
        if result.ratio_min is not None and result.ratio_max is not None
        else "n/a"
    )
    return [
        result.workload,
        result.contender,
        f"{result.throughput:,.0f}",
        f"{result.p50_ms:.3f}",
        f"{result.p99_ms:.3f}",
        ratio,
        spread,
    ]


def write_reports(
    directory: Path,
    bench_name: str,
    baseline: str,
    results: Sequence[Result],
    records: Sequence[WorkloadRecord],
) -> str:
    """Write ``results.{json,md,png}`` into ``directory``; print and return the Markdown."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").write_text(
        json.dumps(
            {
                "benchmark": bench_name,
                "baseline": baseline,
                "workloads": [asdict(record) for record in records],
                "results": [asdict(result) for result in results],
            },
            indent=2,
        )
    )
    columns = [
        "workload",
        "contender",
        "items/s (median round)",
        "p50 ms",
        "p99 ms",
        f"vs {baseline} (median)",
        "spread (min-max)",
    ]
    text = markdown_table(columns, [_row(result) for result in results])
    text += "\n" + _machine_lines(records)
    (directory / "results.md").write_text(text)
    print(f"\n## {bench_name}\n\n{text}")
    _plot_bars(directory / "results.png", bench_name, results)
    progress(f"[{bench_name}] wrote {directory}/results.{{json,md,png}}")
    return text


def write_table(
    out_dir: str | Path, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> str:
    """Write ``name.md`` (Markdown table) and ``name.json`` into ``out_dir``; return the table."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    table = markdown_table(columns, rows)
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


def _plot_bars(path: Path, title: str, results: Sequence[Result]) -> None:
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
    axes.set_ylabel("items per second (median round)")
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
