"""One coordinator's channel to one shard replica: calls that can be cancelled.

Theory of operation. The coordinator scatters a search to several replicas at once and must
be able to *cancel* the losers of a hedge, so it does not use the blocking ``SearchClient``:
``ReplicaLink.start(method, request, timeout_s)`` returns the gRPC future of the call
(``cancel()``, ``add_done_callback``), and ``outcome`` turns a finished future into its reply or
the library error the replica raised (``Unavailable`` and ``Timeout`` are retryable, which is
what fail-over and partial answers key on). The channel reconnects to a restarted replica
within about a second (``blocks.core.rpc.channel_options``).
"""

from __future__ import annotations

from typing import Any

import grpc

from blocks.core.errors import Unavailable, error_from_status
from blocks.core.rpc import AUTHORIZATION_METADATA_KEY, channel_options, validate_token
from blocks.search import search_pb2_grpc

__all__ = ["ReplicaLink", "outcome"]


def outcome(future: Any) -> Any:
    """The reply of a finished call, or raise its ``BlocksError`` (``Unavailable`` if cancelled)."""
    if future.cancelled():
        raise Unavailable("the call was cancelled")
    try:
        return future.result()
    except grpc.RpcError as error:
        failed: Any = error  # a grpc.Call at run time
        code, details, trailing = failed.code(), failed.details(), failed.trailing_metadata()
        raise error_from_status(code, details or "", trailing or ()) from None


class ReplicaLink:
    """A gRPC channel to one replica (``host:port``) of one shard."""

    def __init__(self, address: str, *, token: str | None = None) -> None:
        self.address = address
        self._channel = grpc.insecure_channel(address, options=channel_options())
        self._stub: Any = search_pb2_grpc.SearchStub(self._channel)  # type: ignore[no-untyped-call]
        self._metadata = (
            ((AUTHORIZATION_METADATA_KEY, f"Bearer {validate_token(token)}"),) if token else ()
        )

    def start(self, method: str, request: Any, timeout_s: float) -> Any:
        """Start ``method`` (a ``Search`` RPC name); returns its future at once."""
        return getattr(self._stub, method).future(
            request, timeout=max(0.001, timeout_s), metadata=self._metadata
        )

    def call(self, method: str, request: Any, timeout_s: float) -> Any:
        """``method`` to completion: the reply, or the ``BlocksError`` the replica raised."""
        return outcome(self.start(method, request, timeout_s))

    def close(self) -> None:
        self._channel.close()

    def __repr__(self) -> str:
        return f"ReplicaLink({self.address!r})"
