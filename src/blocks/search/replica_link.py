"""One coordinator's channel to one shard replica: calls that can be cancelled.

Theory of operation. The coordinator scatters a search to several replicas at once and must
be able to *cancel* the losers of a hedge, so it does not use the blocking ``SearchClient``:
``ReplicaLink.start(method, request, timeout_s)`` returns the gRPC future of the call
(``cancel()``, ``add_done_callback``), and ``outcome`` turns a finished future into its reply or
the library error the replica raised (``Unavailable`` and ``Timeout`` are retryable, which is
what fail-over and partial answers key on). The channel reconnects to a restarted replica
within about a second (``blocks.core.rpc.channel_options``).

**The channel's poller thread is kept.** gRPC's synchronous channel polls its calls on a
thread it starts when a call begins on a channel with no call open, and ends when the last
call finishes. A coordinator's shard calls come one batch at a time, so every call used to
start a thread (about half of the ~1 ms of coordinator CPU a 540 KB search call cost, and a
wait for the thread to start). With ``keep_poller`` the link holds one call open for its
whole life, the health service's ``Watch`` stream of the replica (answered by every
``blocks.core.server.Server``; nothing is read from it), so the thread starts once. When the
stream ends (the replica went away) it is opened again, waiting for the channel to be
ready (``wait_for_ready``), so a dead replica costs no loop of failed calls; a stream that
fails at once anyway (a server without the health service) is opened again at most once per
``KEEPER_REOPEN_S``. A search call's own failure handling does not depend on the stream.
A server that stops gracefully ends the stream itself once it announces ``NOT_SERVING``
(``blocks.core.health``), so the kept call never holds a replica's stop for its grace
period; the link then opens it again as above, for the restarted replica.

**Searches on the data path.** Given a ``DataPathClient`` and the replica's announced
``data_port`` (``use_data_path``), ``start("SearchVectors", ...)`` goes over the core TCP
transport instead (``blocks.search.datapath``); the future has the same interface and the
errors the same classes. A replica restarts on a new data port: when a data-path call fails
``Unavailable`` the link goes back to gRPC for its searches and asks the replica's ``Info``
(on gRPC, without waiting) for the port again, using it once known.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped,unused-ignore]

from blocks.core.errors import Unavailable, error_from_status
from blocks.core.rpc import AUTHORIZATION_METADATA_KEY, channel_options, validate_token
from blocks.search import search_pb2, search_pb2_grpc
from blocks.search.datapath import DataPathClient

__all__ = ["KEEPER_REOPEN_S", "ReplicaLink", "outcome"]

KEEPER_REOPEN_S = 1.0  # the kept stream is opened at most once per this


def outcome(future: Any) -> Any:
    """The reply of a finished call (gRPC or data path), or raise its ``BlocksError``
    (``Unavailable`` if cancelled)."""
    if future.cancelled():
        raise Unavailable("the call was cancelled")
    try:
        return future.result()
    except concurrent.futures.CancelledError:
        raise Unavailable("the call was cancelled") from None
    except grpc.RpcError as error:
        failed: Any = error  # a grpc.Call at run time
        code, details, trailing = failed.code(), failed.details(), failed.trailing_metadata()
        raise error_from_status(code, details or "", trailing or ()) from None


class ReplicaLink:
    """A gRPC channel to one replica (``host:port``) of one shard.

    ``keep_poller`` (default): hold the replica's health ``Watch`` stream open so the
    channel's poller thread is started once, not once per batch (module docstring)."""

    def __init__(self, address: str, *, token: str | None = None, keep_poller: bool = True) -> None:
        self.address = address
        self._channel = grpc.insecure_channel(address, options=channel_options())
        self._stub: Any = search_pb2_grpc.SearchStub(self._channel)  # type: ignore[no-untyped-call]
        self._metadata = (
            ((AUTHORIZATION_METADATA_KEY, f"Bearer {validate_token(token)}"),) if token else ()
        )
        self._lock = threading.Lock()  # guards the three fields below
        self._closed = False
        self._keeper: Any = None  # the open Watch call (or its reopen timer), while kept
        self._opened_at = -KEEPER_REOPEN_S  # time.monotonic() of the last open
        self._data: DataPathClient | None = None
        # the replica's data port while searches use it; 0: it has none; None: not known
        # (searches on gRPC meanwhile, its Info asked at most once per KEEPER_REOPEN_S)
        self._data_port: int | None = 0
        self._asked_at = -KEEPER_REOPEN_S  # time.monotonic() of the last Info sent for it
        if keep_poller:
            self._health: Any = health_pb2_grpc.HealthStub(self._channel)
            self._keep()

    def _keep(self, ended: Any = None) -> None:
        """Open the ``Watch`` stream, or (``ended``: the stream that finished) open it again,
        at once or once ``KEEPER_REOPEN_S`` has passed since the last open; not once closed."""
        with self._lock:
            if self._closed or (ended is not None and ended is not self._keeper):
                return
            wait_s = self._opened_at + KEEPER_REOPEN_S - time.monotonic()
            if ended is not None and wait_s > 0:
                timer = threading.Timer(wait_s, self._keep, args=(None,))
                timer.daemon = True
                self._keeper = timer
                timer.start()
                return
            self._opened_at = time.monotonic()
            keeper = self._keeper = self._health.Watch(
                health_pb2.HealthCheckRequest(service=""),
                metadata=self._metadata,
                wait_for_ready=True,
            )
        keeper.add_done_callback(self._keep)  # runs at once if it ended: not under the lock

    def use_data_path(self, client: DataPathClient, port: int | None) -> None:
        """Send searches to the replica's data path at ``port`` (of this link's host) through
        ``client`` (shared by the links of a coordinator, closed by its owner); port 0: the
        replica has none, searches stay on gRPC; ``None``: not known yet (asked later)."""
        with self._lock:
            self._data = client
        self._set_data_port(port)

    def _set_data_port(self, port: int | None) -> None:
        with self._lock:
            if self._data is None or self._closed:
                return
            if port:
                self._data.set_peer(self.address, self.address.rpartition(":")[0], port)
            self._data_port = port

    def start(self, method: str, request: Any, timeout_s: float) -> Any:
        """Start ``method`` (a ``Search`` RPC name); returns its future at once."""
        data, port = self._data, self._data_port
        if method == "SearchVectors" and data is not None:
            if port:
                future = data.start(self.address, request, timeout_s)
                future.add_done_callback(self._data_call_ended)
                return future
            if port is None:
                self._maybe_ask_port()
        return getattr(self._stub, method).future(
            request, timeout=max(0.001, timeout_s), metadata=self._metadata
        )

    def _data_call_ended(self, future: Any) -> None:
        """A data-path call failed ``Unavailable``: the port is not known any more (searches
        go to gRPC until the replica's ``Info`` names it again)."""
        if future.cancelled() or not isinstance(future.exception(), Unavailable):
            return
        with self._lock:
            self._data_port = None
        self._maybe_ask_port()

    def _maybe_ask_port(self) -> None:
        """Ask the replica's ``Info`` for its data port, without waiting, unless asked in
        the last ``KEEPER_REOPEN_S``."""
        with self._lock:
            now = time.monotonic()
            if self._closed or self._asked_at + KEEPER_REOPEN_S > now:
                return
            self._asked_at = now
        asked = self._stub.Info.future(
            search_pb2.InfoRequest(), timeout=10 * KEEPER_REOPEN_S, metadata=self._metadata
        )
        asked.add_done_callback(self._port_answered)

    def _port_answered(self, future: Any) -> None:
        if not future.cancelled() and future.exception() is None:
            self._set_data_port(int(future.result().data_port))

    def call(self, method: str, request: Any, timeout_s: float) -> Any:
        """``method`` to completion: the reply, or the ``BlocksError`` the replica raised."""
        return outcome(self.start(method, request, timeout_s))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
        self._channel.close()

    def __repr__(self) -> str:
        return f"ReplicaLink({self.address!r})"
