"""Running a block's services: gRPC on uvloop, health, auth, TLS, metrics, graceful shutdown.

Theory of operation. A ``Server`` is a lifecycle with explicit states::

    NEW --start()--> STARTING --> SERVING --stop()--> STOPPING --> STOPPED
      \\------------------------stop()------------------------------^

Illegal transitions raise ``FailedPrecondition`` and leave the state as it was; ``stop`` on a
server already stopping or stopped just waits for the first stop to finish.

*Start* runs the components' start hooks in the order they were added (storage first, then
listeners, then background tasks, say), then builds a ``grpc.aio`` server with the
``blocks.core.rpc.ServerInterceptor`` (auth, error mapping, metrics), the standard
``grpc.health.v1`` service and every added service, binds it (TLS when configured), starts
the metrics endpoint when asked, and finally reports ``SERVING`` on the health service. If
anything fails half-way, what was started is stopped again and the error propagates.

*Stop* is the reverse, and each step is bounded:

0. stopping hooks (``add_stopping_hook``) run first, while the server still serves (a
   cluster node announces its departure there), each bounded by ``stop_hook_timeout_s``;
1. health switches every service to ``NOT_SERVING`` at once (so probes see shutdown begin)
   and ends its ``Watch`` streams, which would hold the grace period (``blocks.core.health``);
2. after ``drain_delay_s`` (default 0: time for load balancers to notice), gRPC stops
   accepting new calls and in-flight calls get ``grace_s`` seconds to finish; calls still
   running then are cancelled;
3. the metrics endpoint stops;
4. component stop hooks run in *reverse* order, each bounded by ``stop_hook_timeout_s``; a
   failing hook is logged and the others still run, then the first failure is raised (a hook
   that overran its time as ``blocks.core.errors.Timeout``).

``serve_until_signalled`` starts the server if needed and stops it gracefully on SIGTERM or
SIGINT (or on ``request_stop``); ``run`` is its synchronous entry point on a uvloop loop.
The server binds 127.0.0.1 unless told otherwise, and refuses a port another process holds
(``SO_REUSEPORT`` is off).
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped,unused-ignore]
from prometheus_client import CollectorRegistry

from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import FailedPrecondition, InvalidArgument, Timeout, Unavailable
from blocks.core.health import HealthService
from blocks.core.metrics import RpcMetrics
from blocks.core.rpc import (
    HTTP2_FRAME_BYTES_MAX,
    KEEPALIVE_TIMEOUT_MS,
    MESSAGE_BYTES_MAX,
    PemSource,
    ServerInterceptor,
    read_pem,
    validate_token,
)

__all__ = ["Component", "Server", "ServerState", "TlsConfig"]

logger = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None] | None]

MAX_CONCURRENT_RPCS = 1_000
STOP_HOOK_TIMEOUT_S = 30.0
DEFAULT_GRACE_S = 10.0
# Clients may ping this often at most; blocks.core.rpc.connect_channel pings every 30 s.
PING_INTERVAL_MIN_MS = 10_000


class ServerState(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    SERVING = "serving"
    STOPPING = "stopping"
    STOPPED = "stopped"


_TRANSITIONS: dict[ServerState, frozenset[ServerState]] = {
    ServerState.NEW: frozenset({ServerState.STARTING, ServerState.STOPPED}),
    ServerState.STARTING: frozenset({ServerState.SERVING, ServerState.STOPPING}),
    ServerState.SERVING: frozenset({ServerState.STOPPING}),
    ServerState.STOPPING: frozenset({ServerState.STOPPED}),
    ServerState.STOPPED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Server TLS: certificate chain and private key, each PEM bytes or a file path.

    With ``client_ca`` set, clients must present a certificate signed by it (mutual TLS).
    The files are read when the server starts.
    """

    cert: PemSource
    key: PemSource
    client_ca: PemSource | None = None

    def credentials(self) -> grpc.ServerCredentials:
        pair = [(read_pem(self.key), read_pem(self.cert))]
        if self.client_ca is None:
            return grpc.ssl_server_credentials(pair)
        return grpc.ssl_server_credentials(
            pair, root_certificates=read_pem(self.client_ca), require_client_auth=True
        )


@dataclass(frozen=True, slots=True)
class Component:
    """Start and stop hooks run with the server's lifecycle; either may be sync or async."""

    name: str
    start: Hook | None = None
    stop: Hook | None = None


async def _call_hook(hook: Hook) -> None:
    result = hook()
    if inspect.isawaitable(result):
        await result


def _bind_address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


class Server:
    """One process's gRPC endpoint and the components that share its lifecycle."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        tls: TlsConfig | None = None,
        metrics_port: int | None = None,
        name: str = "blocks",
        *,
        metrics_host: str = "127.0.0.1",
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
        max_concurrent_rpcs: int = MAX_CONCURRENT_RPCS,
        message_bytes_max: int = MESSAGE_BYTES_MAX,
        drain_delay_s: float = 0.0,
        stop_hook_timeout_s: float = STOP_HOOK_TIMEOUT_S,
    ) -> None:
        if not 0 <= port <= 65_535 or (
            metrics_port is not None and not 0 <= metrics_port <= 65_535
        ):
            raise InvalidArgument("ports must be within 0..65535")
        if max_concurrent_rpcs <= 0 or message_bytes_max <= 0:
            raise InvalidArgument("max_concurrent_rpcs and message_bytes_max must be positive")
        if drain_delay_s < 0 or stop_hook_timeout_s <= 0:
            raise InvalidArgument("drain_delay_s must be >= 0 and stop_hook_timeout_s > 0")
        self.name = name
        self.host = host
        self._requested_port = port
        self._token = None if token is None else validate_token(token)
        self._tls = tls
        self._metrics_port = metrics_port
        self._metrics_host = metrics_host
        self._clock = clock if clock is not None else SystemClock()
        self._max_concurrent_rpcs = max_concurrent_rpcs
        self._message_bytes_max = message_bytes_max
        self._drain_delay_s = drain_delay_s
        self._stop_hook_timeout_s = stop_hook_timeout_s
        self.metrics = RpcMetrics(registry if registry is not None else CollectorRegistry())
        self.health = HealthService()
        self._services: list[tuple[Callable[[Any, Any], None], Any]] = []
        self._generic_handlers: list[grpc.GenericRpcHandler] = []
        self._health_names: list[str] = []
        self._components: list[Component] = []
        self._stopping_hooks: list[Component] = []
        self._started_components: list[Component] = []
        self._grpc_server: grpc.aio.Server | None = None
        self._state = ServerState.NEW
        self._port: int | None = None
        self._stopped = asyncio.Event()
        self._stop_requested = asyncio.Event()

    # ------------------------------------------------------------------ configuration

    @property
    def state(self) -> ServerState:
        return self._state

    @property
    def port(self) -> int:
        """The bound gRPC port; only known once ``start`` returned."""
        if self._port is None:
            raise FailedPrecondition("server has not bound a port yet")
        return self._port

    @property
    def address(self) -> str:
        return _bind_address(self.host, self.port)

    @property
    def metrics_port(self) -> int | None:
        """The bound metrics HTTP port while the endpoint runs, else None."""
        return self.metrics.http_port

    @property
    def registry(self) -> CollectorRegistry:
        """This server's Prometheus registry: blocks register their own metrics here."""
        return self.metrics.registry

    def _require_new(self, what: str) -> None:
        if self._state is not ServerState.NEW:
            raise FailedPrecondition(f"cannot {what}: server is {self._state.value}")

    def add_service(
        self, add_to_server: Callable[[Any, Any], None], servicer: Any, *, health_name: str = ""
    ) -> None:
        """Register a generated ``add_XServicer_to_server`` function with its servicer.

        ``health_name`` (the full service name, e.g. ``blocks.kv.Kv``) also reports that
        service on the health endpoint; the overall status ``""`` is always reported.
        """
        self._require_new("add a service")
        self._services.append((add_to_server, servicer))
        if health_name:
            self._health_names.append(health_name)

    def add_generic_handlers(
        self, *handlers: grpc.GenericRpcHandler, health_names: Sequence[str] = ()
    ) -> None:
        """Register generic handlers (e.g. ``grpc.method_handlers_generic_handler``)."""
        self._require_new("add a handler")
        self._generic_handlers.extend(handlers)
        self._health_names.extend(health_names)

    def add_stopping_hook(self, hook: Hook, *, name: str = "") -> None:
        """Run ``hook`` when stopping begins, while calls are still served (step 0)."""
        self._require_new("add a stopping hook")
        self._stopping_hooks.append(Component(name or "stopping hook", None, hook))

    def add_component(
        self, start: Hook | None = None, stop: Hook | None = None, *, name: str = ""
    ) -> None:
        """Run ``start`` before serving and ``stop`` after draining (reverse order of adding)."""
        self._require_new("add a component")
        if start is None and stop is None:
            raise InvalidArgument("a component needs a start or a stop hook")
        self._components.append(
            Component(name or f"component-{len(self._components)}", start, stop)
        )

    def configure_endpoints(
        self,
        *,
        tls: TlsConfig | None = None,
        metrics_listen: tuple[str, int] | None = None,
        access_log: bool = False,
    ) -> None:
        """Set what ``blocks <block> serve`` flags ask for on a server a block built.

        ``tls`` (when given) replaces the server's TLS, ``metrics_listen`` starts ``/metrics``
        and ``/health`` there, ``access_log`` logs one line per call to ``blocks.access``.
        Only while the server is new.
        """
        self._require_new("configure endpoints")
        if metrics_listen is not None:
            host, port = metrics_listen
            if not 0 <= port <= 65_535:
                raise InvalidArgument("ports must be within 0..65535")
            self._metrics_host, self._metrics_port = host, port
        if tls is not None:
            self._tls = tls
        self.metrics.access_log = access_log

    def _is_serving(self) -> bool:
        return self._state is ServerState.SERVING

    def _transition(self, target: ServerState) -> None:
        if target not in _TRANSITIONS[self._state]:
            raise FailedPrecondition(f"server cannot go from {self._state.value} to {target.value}")
        self._state = target

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> int:
        """Start components, then gRPC and metrics; return the bound gRPC port."""
        self._transition(ServerState.STARTING)
        try:
            for component in self._components:
                if component.start is not None:
                    await _call_hook(component.start)
                self._started_components.append(component)
            self._port = await self._start_grpc()
            if self._metrics_port is not None:
                self.metrics.start_http(
                    self._metrics_port, self._metrics_host, healthy=self._is_serving
                )
            for service_name in ("", *self._health_names):
                await self.health.set(service_name, health_pb2.HealthCheckResponse.SERVING)
        except BaseException:
            self._transition(ServerState.STOPPING)
            await self._shutdown(grace_s=0.0, raise_errors=False)
            raise
        self._transition(ServerState.SERVING)
        logger.info("%s serving on %s", self.name, self.address)
        return self._port

    def _grpc_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_send_message_length", self._message_bytes_max),
            ("grpc.max_receive_message_length", self._message_bytes_max),
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
            ("grpc.keepalive_permit_without_calls", 1),
            # Accept client keepalive pings this often (gRPC's default is once per 5 minutes,
            # and more frequent pings get the connection closed as "too many pings"). The
            # C-core name of GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS; a
            # misspelt key is ignored silently, and a client holding a quiet stream open
            # (a Watch) was sent GOAWAY "too_many_pings" after three 30 s keepalives.
            ("grpc.http2.min_ping_interval_without_data_ms", PING_INTERVAL_MIN_MS),
            ("grpc.so_reuseport", 0),
            ("grpc.http2.max_frame_size", HTTP2_FRAME_BYTES_MAX),
        ]

    async def _start_grpc(self) -> int:
        interceptor = ServerInterceptor(token=self._token, metrics=self.metrics, clock=self._clock)
        grpc_server = grpc.aio.server(
            interceptors=[interceptor],
            options=self._grpc_options(),
            maximum_concurrent_rpcs=self._max_concurrent_rpcs,
        )
        self._grpc_server = grpc_server
        health_pb2_grpc.add_HealthServicer_to_server(self.health, grpc_server)
        for add_to_server, servicer in self._services:
            add_to_server(servicer, grpc_server)
        if self._generic_handlers:
            grpc_server.add_generic_rpc_handlers(tuple(self._generic_handlers))
        address = _bind_address(self.host, self._requested_port)
        try:
            if self._tls is None:
                port = grpc_server.add_insecure_port(address)
            else:
                port = grpc_server.add_secure_port(address, self._tls.credentials())
        except RuntimeError as error:
            raise Unavailable(f"cannot bind {address}: {error}") from error
        if port == 0:
            raise Unavailable(f"cannot bind {address}")
        await grpc_server.start()
        return int(port)

    async def set_health(self, serving: bool, service: str = "") -> None:
        """Report ``service`` (``""``: the whole server) as SERVING or NOT_SERVING.

        For a block whose node is up but cannot serve (lost its quorum, still catching up).
        Ignored once shutdown began: a stopping server stays NOT_SERVING.
        """
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set(service, status)

    def request_stop(self) -> None:
        """Ask ``serve_until_signalled`` to stop; safe from signal handlers and callbacks."""
        self._stop_requested.set()

    async def stop(self, grace_s: float = DEFAULT_GRACE_S) -> None:
        """Stop gracefully (see the module docstring); idempotent."""
        if grace_s < 0:
            raise InvalidArgument("grace_s must be >= 0")
        self._stop_requested.set()
        if self._state in (ServerState.STOPPING, ServerState.STOPPED):
            await self._stopped.wait()
            return
        if self._state is ServerState.NEW:
            self._transition(ServerState.STOPPED)
            self._stopped.set()
            return
        self._transition(ServerState.STOPPING)
        logger.info("%s stopping (grace %.1f s)", self.name, grace_s)
        await self._shutdown(grace_s=grace_s, raise_errors=True)

    async def _shutdown(self, *, grace_s: float, raise_errors: bool) -> None:
        assert self._state is ServerState.STOPPING
        errors: list[BaseException] = []
        for hook in self._stopping_hooks:
            assert hook.stop is not None
            try:
                await asyncio.wait_for(_call_hook(hook.stop), self._stop_hook_timeout_s)
            except Exception as error:  # stopping goes on; the failure is logged
                logger.error("%s: %s failed: %r", self.name, hook.name, error)
        try:
            await self.health.enter_graceful_shutdown()
            if self._grpc_server is not None:
                if self._drain_delay_s > 0:
                    await asyncio.sleep(self._drain_delay_s)
                await self._grpc_server.stop(grace_s)
            await asyncio.to_thread(self.metrics.stop_http)
            while self._started_components:
                component = self._started_components.pop()
                if component.stop is None:
                    continue
                try:
                    await asyncio.wait_for(_call_hook(component.stop), self._stop_hook_timeout_s)
                except TimeoutError:
                    message = (
                        f"stop hook of {component.name} took over {self._stop_hook_timeout_s} s"
                    )
                    logger.error("%s: %s", self.name, message)
                    errors.append(Timeout(message))
                except Exception as error:
                    logger.exception("%s: stop hook of %s failed", self.name, component.name)
                    errors.append(error)
        finally:
            self._transition(ServerState.STOPPED)
            self._stopped.set()
        if errors and raise_errors:
            raise errors[0]

    async def wait_stopped(self) -> None:
        """Return once the server has stopped."""
        await self._stopped.wait()

    async def serve_until_signalled(
        self,
        grace_s: float = DEFAULT_GRACE_S,
        signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
    ) -> None:
        """Start (if new), serve until a signal or ``request_stop``, then stop gracefully."""
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        try:
            for sig in signals:
                loop.add_signal_handler(sig, self.request_stop)
                installed.append(sig)
            if self._state is ServerState.NEW:
                await self.start()
            await self._stop_requested.wait()
            logger.info("%s: stop requested", self.name)
            await self.stop(grace_s)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def run(self, grace_s: float = DEFAULT_GRACE_S) -> None:
        """Serve on a new uvloop event loop until SIGTERM/SIGINT; blocks the calling thread."""
        uvloop.run(self.serve_until_signalled(grace_s))
