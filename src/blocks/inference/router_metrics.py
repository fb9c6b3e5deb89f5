"""The router's Prometheus metrics, read from its state when scraped.

Nothing is counted twice: a collector turns ``Router.stats()`` (the policy's replica states
and the router's counters) into metric families at scrape time, so the numbers in
``GET /metrics`` and ``GET /router/stats`` are the same numbers.

* ``blocks_inference_router_requests_total``, ``_retries_total``, ``_cut_streams_total``,
  ``_unavailable_total`` (answered 503: no replica could take the request);
* ``blocks_inference_router_choices_total{reason}``: affinity, overload, least_loaded;
* per ``replica`` (its URL): ``_replica_up`` (1 or 0), ``_replica_outstanding_tokens``,
  ``_replica_in_flight``, ``_replica_requests_total`` (attempts sent there).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["exposition", "router_registry"]

PREFIX = "blocks_inference_router"


class _RouterCollector:
    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        for name in ("requests", "retries", "cut_streams", "unavailable"):
            yield CounterMetricFamily(f"{PREFIX}_{name}", f"Router {name}.", value=stats[name])
        choices = CounterMetricFamily(
            f"{PREFIX}_choices", "Routing choices by reason.", labels=["reason"]
        )
        for reason, count in stats["reasons"].items():
            choices.add_metric([reason], count)
        yield choices
        up = GaugeMetricFamily(f"{PREFIX}_replica_up", "1 while in rotation.", labels=["replica"])
        tokens = GaugeMetricFamily(
            f"{PREFIX}_replica_outstanding_tokens", "Tokens in flight.", labels=["replica"]
        )
        in_flight = GaugeMetricFamily(
            f"{PREFIX}_replica_in_flight", "Requests in flight.", labels=["replica"]
        )
        sent = CounterMetricFamily(
            f"{PREFIX}_replica_requests", "Attempts sent to the replica.", labels=["replica"]
        )
        for url, replica in stats["replicas"].items():
            up.add_metric([url], 1.0 if replica["health"] == "up" else 0.0)
            tokens.add_metric([url], replica["outstanding_tokens"])
            in_flight.add_metric([url], replica["in_flight"])
            sent.add_metric([url], replica["requests"])
        yield from (up, tokens, in_flight, sent)


def router_registry(stats: Callable[[], dict[str, Any]]) -> CollectorRegistry:
    """A registry whose only collector reads ``stats()`` at each scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RouterCollector(stats))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    data: bytes = generate_latest(registry)
    return data
