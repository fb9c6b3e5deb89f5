"""Engine metrics: latency histograms, token counters and cache gauges, for Prometheus.

Theory of operation: the engine calls ``observe_*`` with durations it measured on its
injected clock; nothing here reads time. Every instrument lives on a registry owned by this
object (never the process-wide default), so two engines in one process do not collide. The
same numbers are kept as plain running sums for ``snapshot()``, which the CLI and benchmark
print as JSON.

* ``blocks_inference_queue_seconds``: arrival to first scheduled step;
* ``blocks_inference_ttft_seconds``: arrival to first generated token;
* ``blocks_inference_tpot_seconds``: mean time per output token after the first, per request;
* ``blocks_inference_{prompt,generation}_tokens``: counters (their rate is tokens/s);
* ``blocks_inference_kv_cache_usage`` and ``blocks_inference_prefix_cache_hit_rate``: gauges;
* ``blocks_inference_requests{outcome}``: finished requests by finish reason or rejection;
* ``blocks_inference_http_connections``: connections accepted (with ``requests``, shows how
  well clients reuse connections);
* ``blocks_inference_http_rejections{reason}``: requests and connections the HTTP server
  refused before they reached the engine (a breached limit or a malformed request).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["EngineMetrics"]

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
OUTCOMES = ("stop", "length", "cancelled", "rejected", "overloaded")


@dataclass(slots=True)
class EngineMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    queue_seconds: Histogram = field(init=False)
    ttft_seconds: Histogram = field(init=False)
    tpot_seconds: Histogram = field(init=False)
    prompt_tokens: Counter = field(init=False)
    generation_tokens: Counter = field(init=False)
    kv_cache_usage: Gauge = field(init=False)
    prefix_hit_rate: Gauge = field(init=False)
    requests: Counter = field(init=False)
    http_rejections: Counter = field(init=False)
    http_connections: Counter = field(init=False)
    _sums: dict[str, float] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        def histogram(name: str, doc: str) -> Histogram:
            return Histogram(name, doc, buckets=LATENCY_BUCKETS_S, registry=self.registry)

        self.queue_seconds = histogram("blocks_inference_queue_seconds", "Queue time.")
        self.ttft_seconds = histogram("blocks_inference_ttft_seconds", "Time to first token.")
        self.tpot_seconds = histogram("blocks_inference_tpot_seconds", "Time per output token.")
        self.prompt_tokens = Counter(
            "blocks_inference_prompt_tokens", "Prompt tokens admitted.", registry=self.registry
        )
        self.generation_tokens = Counter(
            "blocks_inference_generation_tokens", "Tokens generated.", registry=self.registry
        )
        self.kv_cache_usage = Gauge(
            "blocks_inference_kv_cache_usage",
            "Fraction of KV blocks in use.",
            registry=self.registry,
        )
        self.prefix_hit_rate = Gauge(
            "blocks_inference_prefix_cache_hit_rate",
            "Fraction of prompt tokens served from the prefix cache.",
            registry=self.registry,
        )
        self.requests = Counter(
            "blocks_inference_requests", "Finished requests.", ("outcome",), registry=self.registry
        )
        self.http_rejections = Counter(
            "blocks_inference_http_rejections",
            "Requests and connections refused by the HTTP server, by reason.",
            ("reason",),
            registry=self.registry,
        )
        self.http_connections = Counter(
            "blocks_inference_http_connections", "Connections accepted.", registry=self.registry
        )
        for key in ("queue", "ttft", "tpot", "queue_n", "ttft_n", "tpot_n", "prompt", "gen"):
            self._sums[key] = 0.0

    def observe_queue(self, seconds: float) -> None:
        self.queue_seconds.observe(seconds)
        self._sums["queue"] += seconds
        self._sums["queue_n"] += 1

    def observe_ttft(self, seconds: float) -> None:
        self.ttft_seconds.observe(seconds)
        self._sums["ttft"] += seconds
        self._sums["ttft_n"] += 1

    def observe_tpot(self, seconds: float) -> None:
        self.tpot_seconds.observe(seconds)
        self._sums["tpot"] += seconds
        self._sums["tpot_n"] += 1

    def count_tokens(self, prompt: int = 0, generated: int = 0) -> None:
        if prompt:
            self.prompt_tokens.inc(prompt)
            self._sums["prompt"] += prompt
        if generated:
            self.generation_tokens.inc(generated)
            self._sums["gen"] += generated

    def count_request(self, outcome: str) -> None:
        assert outcome in OUTCOMES, outcome
        self.requests.labels(outcome=outcome).inc()

    def count_http_rejection(self, reason: str) -> None:
        self.http_rejections.labels(reason=reason).inc()

    def set_cache(self, kv_usage: float, prefix_hit_rate: float) -> None:
        self.kv_cache_usage.set(kv_usage)
        self.prefix_hit_rate.set(prefix_hit_rate)

    def snapshot(self) -> dict[str, float]:
        """Means and totals as plain numbers."""
        s = self._sums

        def mean(key: str) -> float:
            return s[key] / s[f"{key}_n"] if s[f"{key}_n"] else 0.0

        return {
            "mean_queue_s": mean("queue"),
            "mean_ttft_s": mean("ttft"),
            "mean_tpot_s": mean("tpot"),
            "prompt_tokens": s["prompt"],
            "generation_tokens": s["gen"],
            "kv_cache_usage": float(self.kv_cache_usage._value.get()),
            "prefix_cache_hit_rate": float(self.prefix_hit_rate._value.get()),
        }

    def exposition(self) -> bytes:
        """The Prometheus text format of every instrument."""
        data: bytes = generate_latest(self.registry)
        return data
