"""Prometheus metrics for one server: a private registry, RPC instruments, an HTTP endpoint.

Theory of operation: every ``Server`` owns one ``RpcMetrics``, and every ``RpcMetrics`` owns
its own ``prometheus_client.CollectorRegistry`` rather than the process-wide default. Two
servers in one process (a test, a notebook cluster) therefore never collide on metric names,
and a block adds its own instruments with ``registry=metrics.registry``.

The RPC instruments are filled by the server interceptor in ``blocks.core.rpc``; each
completed call is observed exactly once through ``observe_rpc``:

* ``blocks_rpc_total{method, code}``: calls completed, by full method name and gRPC code;
* ``blocks_rpc_errors_total{method, code}``: the subset whose code is not ``OK``;
* ``blocks_rpc_duration_seconds{method}``: a latency histogram;
* ``blocks_rpc_in_flight``: calls started and not yet completed.

The HTTP endpoint (``MetricsHttp``) is prometheus-client's WSGI app on a threading ``wsgiref``
server, bound to 127.0.0.1 unless told otherwise: ``/health`` answers 200 ``ok`` while the
owner says it is healthy (503 otherwise) and every other path the Prometheus text; ``stop``
shuts it down and joins the thread within a bounded time. An HTTP block (blob, inference) runs
one beside its own listener with a registry of its own.

With ``access_log`` set, every completed call also writes one line to the ``blocks.access``
logger (method, code, milliseconds): one flag test per call when off. Labels are bounded: a method label is only ever a method the server registered
(unknown methods never reach the interceptor's observation path), and codes are gRPC codes.
"""

from __future__ import annotations

import logging
import socketserver
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

__all__ = ["ACCESS_LOGGER", "LATENCY_BUCKETS_S", "MetricsHttp", "RpcMetrics"]

ACCESS_LOGGER = "blocks.access"
_access_log = logging.getLogger(ACCESS_LOGGER)

# From 100 microseconds to 10 seconds: covers an in-memory call up to a slow quorum write.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

HTTP_STOP_TIMEOUT_S = 5.0
# How often the endpoint's thread looks for a shutdown request; bounds how long stop waits.
HTTP_POLL_INTERVAL_S = 0.05


class _ThreadingWsgiServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
        return


def _always_healthy() -> bool:
    return True


class MetricsHttp:
    """``/metrics`` (Prometheus text of ``registry``) and ``/health`` on one HTTP port."""

    def __init__(
        self, registry: CollectorRegistry, healthy: Callable[[], bool] = _always_healthy
    ) -> None:
        self._metrics_app = make_wsgi_app(registry)
        self._healthy = healthy
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def _app(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/health":
            ok = self._healthy()
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "text/plain; charset=utf-8")],
            )
            return [b"ok\n" if ok else b"not serving\n"]
        body: Iterable[bytes] = self._metrics_app(environ, start_response)
        return body

    @property
    def port(self) -> int | None:
        """The bound port, or None while the endpoint is not running."""
        return None if self._server is None else int(self._server.server_port)

    def start(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve on ``host:port`` (0 picks a free port); returns the bound port."""
        if self._server is not None:
            raise RuntimeError("metrics endpoint already running")
        server = make_server(
            host, port, self._app, server_class=_ThreadingWsgiServer, handler_class=_QuietHandler
        )
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": HTTP_POLL_INTERVAL_S},
            name=f"metrics-http-{server.server_port}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return int(server.server_port)

    def stop(self) -> None:
        """Stop the endpoint if it runs; blocks at most ``HTTP_STOP_TIMEOUT_S``."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(HTTP_STOP_TIMEOUT_S)


# The labelled instruments one (method, code) pair updates: total, errors (None for OK), latency.
_Children = tuple[Any, Any | None, Any]


@dataclass(slots=True)
class RpcMetrics:
    """The RPC instruments of one server, on a registry of its own.

    ``registry`` may be passed in to share one registry between a server and other
    instruments a block creates first; by default a fresh one is made.
    """

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    rpc_total: Counter = field(init=False)
    rpc_errors_total: Counter = field(init=False)
    rpc_duration_seconds: Histogram = field(init=False)
    rpc_in_flight: Gauge = field(init=False)
    _children: dict[tuple[str, grpc.StatusCode], _Children] = field(
        init=False, default_factory=dict
    )
    access_log: bool = False
    _http: MetricsHttp | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.rpc_total = Counter(
            "blocks_rpc",
            "RPCs completed, by method and gRPC status code.",
            ("method", "code"),
            registry=self.registry,
        )
        self.rpc_errors_total = Counter(
            "blocks_rpc_errors",
            "RPCs completed with a status other than OK, by method and code.",
            ("method", "code"),
            registry=self.registry,
        )
        self.rpc_duration_seconds = Histogram(
            "blocks_rpc_duration_seconds",
            "Time from the handler starting to its last response, by method.",
            ("method",),
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.rpc_in_flight = Gauge(
            "blocks_rpc_in_flight",
            "RPCs started and not yet completed.",
            registry=self.registry,
        )

    def rpc_started(self) -> None:
        self.rpc_in_flight.inc()

    def observe_rpc(self, method: str, code: grpc.StatusCode, duration_s: float) -> None:
        """Record one completed call; pairs with exactly one earlier ``rpc_started``."""
        self.rpc_in_flight.dec()
        children = self._children.get((method, code))
        if children is None:
            children = self._children_for(method, code)
        total, errors, duration = children
        total.inc()
        if errors is not None:
            errors.inc()
        duration.observe(max(0.0, duration_s))
        if self.access_log:
            _access_log.info("%s %s %.1fms", method, code.name, duration_s * 1000)

    def _children_for(self, method: str, code: grpc.StatusCode) -> _Children:
        # labels() takes a lock and builds tuples on every call; a hot path asks once per
        # (method, code). The cache is bounded by registered methods x 17 codes.
        errors = None
        if code is not grpc.StatusCode.OK:
            errors = self.rpc_errors_total.labels(method, code.name)
        children = (
            self.rpc_total.labels(method, code.name),
            errors,
            self.rpc_duration_seconds.labels(method),
        )
        self._children[(method, code)] = children
        return children

    @property
    def http_port(self) -> int | None:
        """The bound port of the HTTP endpoint, or None while it is not running."""
        return None if self._http is None else self._http.port

    def start_http(
        self, port: int, host: str = "127.0.0.1", healthy: Callable[[], bool] = _always_healthy
    ) -> int:
        """Serve ``/metrics`` and ``/health`` on ``host:port`` (0: any); returns the port."""
        if self._http is not None:
            raise RuntimeError("metrics endpoint already running")
        http = MetricsHttp(self.registry, healthy)
        bound = http.start(port, host)
        self._http = http
        return bound

    def stop_http(self) -> None:
        """Stop the HTTP endpoint if it runs; blocks at most ``HTTP_STOP_TIMEOUT_S``."""
        http, self._http = self._http, None
        if http is not None:
            http.stop()
