"""The pure part of the request-rate sweep: the workload, the measurement window, the metrics.

Theory of operation. One list of requests (prompt text and ``max_tokens``) is generated from
a seed and used at every offered rate and for every contender; only the arrival times change
with the rate: a Poisson process (exponential gaps from a seeded ``random.Random``), or, at
the ``max`` rate, every request at time 0. Nothing here does I/O or reads a clock: the client
records an ``Outcome`` per request (when it was sent, when each streamed chunk arrived, how
many tokens the server says it produced) and these functions turn outcomes into a row.

**Throughput is measured over a window, never from first arrival to last finish.** Let
``A`` be the first arrival, ``L`` the last arrival, ``F`` the first finish (the first
request's last chunk) and ``M`` the median finish (when half of the requests had finished).
If some request finished before the last arrival (``F < L``) the window is ``[F, L]``: the
server has left its empty start behind (one request's whole life has passed) and the
offered load is still arriving. Otherwise (every request arrived before any finished, as at
the ``max`` rate where all arrive at once) the window is ``[A, M]``: at least half of the
load is inside the server all along (the first finish would do too, but one request that
ends at once, at end of sequence, would leave a window of a single token). The tail after
the last arrival (the server draining what it holds) is never counted: its length says how
much work was queued, not how fast it is done. Output tokens count when their chunk arrived
inside the window (a chunk carrying several tokens counts each of them at its time), so a
request that straddles an edge contributes only what it produced inside. A rate is **saturated** when the window
throughput is below ``SATURATION_FRACTION`` of the offered token rate: the realised arrival
rate (``(n - 1) / (L - A)``) times the mean output tokens of the finished requests.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmarks._stats import percentile

__all__ = [
    "MAX_RATE",
    "SATURATION_FRACTION",
    "Outcome",
    "Planned",
    "RateRow",
    "format_rate",
    "percentile",
    "plan_arrivals",
    "plan_requests",
    "rate_row",
    "saturation",
    "window",
]

MAX_RATE = math.inf  # every request at once
SATURATION_FRACTION = 0.9  # saturated: window throughput below this share of the offered rate
_WORD_TEXT = (
    "river stone market ledger window signal harbor lantern orbit copper meadow engine "
    "thread summit valley cipher garden beacon anchor compass mirror canvas timber falcon "
    "glacier prairie quartz saddle tunnel violet wander yellow zephyr bridge candle desert "
    "ember forest granite hollow island jungle kettle lumber marble nectar oyster pepper "
    "quiver ribbon silver tundra umber velvet willow"
)
WORDS = tuple(_WORD_TEXT.split())


@dataclass(frozen=True, slots=True)
class Planned:
    """One request of the workload; ``arrival_s`` is relative to the start of the run."""

    index: int
    arrival_s: float
    prompt: str
    max_tokens: int


@dataclass(slots=True)
class Outcome:
    """What the client saw of one request (times relative to the start of the run).

    ``chunk_times``: when each streamed chunk with a choice arrived; ``tokens``: output
    tokens (the server's ``usage`` when it sent one, else the chunk count); ``prompt_tokens``
    from the same ``usage``.
    """

    index: int
    sent_s: float
    chunk_times: list[float] = field(default_factory=list)
    tokens: int = 0
    error: str | None = None
    prompt_tokens: int = 0  # the server's ``usage``, 0 when it sent none

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.chunk_times)


def plan_requests(
    count: int, seed: int, prompt_words: tuple[int, int], output_tokens: tuple[int, int]
) -> list[tuple[str, int]]:
    """``count`` (prompt, max_tokens) pairs, the same for a given seed whatever the rate."""
    if count < 1 or prompt_words[0] < 1 or output_tokens[0] < 1:
        raise ValueError("count, prompt words and output tokens must be positive")
    rng = random.Random(seed)
    return [
        (
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(*prompt_words))),
            rng.randint(*output_tokens),
        )
        for _ in range(count)
    ]


def plan_arrivals(requests: Sequence[tuple[str, int]], rate: float, seed: int) -> list[Planned]:
    """Arrival times for ``requests``: Poisson at ``rate`` per second, or all at 0 (``max``)."""
    if not rate > 0:
        raise ValueError(f"rate must be positive, not {rate}")
    rng = random.Random(seed + 1)  # arrivals never shift the prompts' random stream
    clock = 0.0
    planned = []
    for index, (prompt, max_tokens) in enumerate(requests):
        planned.append(Planned(index, clock, prompt, max_tokens))
        if rate != MAX_RATE:
            clock += rng.expovariate(rate)
    return planned


def window(planned: Sequence[Planned], outcomes: Sequence[Outcome]) -> tuple[float, float]:
    """The measurement window (see the module docstring); ``(A, A)`` if nothing finished."""
    first_arrival = min(p.arrival_s for p in planned)
    last_arrival = max(p.arrival_s for p in planned)
    finishes = [o.chunk_times[-1] for o in outcomes if o.ok]
    if not finishes:
        return first_arrival, first_arrival
    first_finish = min(finishes)
    if first_finish < last_arrival:
        return first_finish, last_arrival
    ordered = sorted(finishes)  # failed requests never finish: at most the last finish
    median_finish = ordered[min(len(ordered), (len(outcomes) + 1) // 2) - 1]
    return first_arrival, median_finish


def _tokens_in(outcome: Outcome, start: float, end: float) -> float:
    if not outcome.ok:
        return 0.0
    per_chunk = outcome.tokens / len(outcome.chunk_times)
    return per_chunk * sum(1 for t in outcome.chunk_times if start <= t <= end)


@dataclass(frozen=True, slots=True)
class RateRow:
    """One contender at one offered rate."""

    contender: str
    rate: float
    requests: int
    failures: int
    first_error: str
    window_start_s: float
    window_s: float
    window_tokens: float
    throughput_tok_s: float  # window_tokens / window_s
    offered_tok_s: float  # realised arrival rate x mean output tokens; inf when all at once
    ttft_p50_s: float
    ttft_p99_s: float
    tpot_p50_ms: float
    tpot_p99_ms: float

    @property
    def saturated(self) -> bool:
        return self.throughput_tok_s < SATURATION_FRACTION * self.offered_tok_s


def rate_row(
    contender: str, rate: float, planned: Sequence[Planned], outcomes: Sequence[Outcome]
) -> RateRow:
    """Metrics of one run: window throughput, TTFT and TPOT percentiles, failures."""
    assert len(planned) == len(outcomes), "one outcome per planned request"
    start, end = window(planned, outcomes)
    finished = [o for o in outcomes if o.ok]
    failed = [o for o in outcomes if not o.ok]
    tokens = sum(_tokens_in(o, start, end) for o in outcomes)
    mean_tokens = statistics.fmean(o.tokens for o in finished) if finished else 0.0
    ttft = [o.chunk_times[0] - o.sent_s for o in finished]
    tpot = [
        (o.chunk_times[-1] - o.chunk_times[0]) / (o.tokens - 1) for o in finished if o.tokens > 1
    ]
    return RateRow(
        contender=contender,
        rate=rate,
        requests=len(outcomes),
        failures=len(failed),
        first_error=next((o.error or "no output" for o in failed), ""),
        window_start_s=start,
        window_s=end - start,
        window_tokens=tokens,
        throughput_tok_s=tokens / (end - start) if end > start else 0.0,
        offered_tok_s=_arrival_rate(planned) * mean_tokens,
        ttft_p50_s=percentile(ttft, 0.5),
        ttft_p99_s=percentile(ttft, 0.99),
        tpot_p50_ms=percentile(tpot, 0.5) * 1000,
        tpot_p99_ms=percentile(tpot, 0.99) * 1000,
    )


def _arrival_rate(planned: Sequence[Planned]) -> float:
    span = max(p.arrival_s for p in planned) - min(p.arrival_s for p in planned)
    return (len(planned) - 1) / span if span > 0 else math.inf


def saturation(rows: Sequence[RateRow]) -> tuple[float | None, float | None, float]:
    """(highest rate that kept up, lowest saturated rate, best window throughput) of one
    contender's rows; a rate keeps up when its window throughput reaches
    ``SATURATION_FRACTION`` of what was offered. ``max`` is always saturated."""
    kept_up = [r.rate for r in rows if not r.saturated]
    saturated = [r.rate for r in rows if r.saturated]
    best = max((r.throughput_tok_s for r in rows), default=0.0)
    return (max(kept_up) if kept_up else None, min(saturated) if saturated else None, best)


def format_rate(rate: float | None) -> str:
    if rate is None:
        return "-"
    return "max" if rate == MAX_RATE else f"{rate:g}/s"
