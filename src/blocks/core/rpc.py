"""How one gRPC call crosses the wire in blocks: tokens, status mapping, metrics, channels.

Theory of operation. Every RPC a ``Server`` serves passes through one ``ServerInterceptor``.
The interceptor asks gRPC for the method's handler and returns a handler of the same kind
(unary or streaming, either side) whose behaviour is the original wrapped in ``_guarded``:

1. *auth*: when the server has a token, the call must carry exactly one
   ``authorization: Bearer <token>`` metadata entry whose token equals the server's, compared
   in constant time (``hmac.compare_digest``). Anything else (no entry, two entries, another
   scheme, a wrong token) ends the call with ``UNAUTHENTICATED`` before the servicer runs.
   Only the standard health service is exempt, so that load balancers can probe without
   secrets.
2. *errors*: an exception leaving the servicer becomes a gRPC status through
   ``blocks.core.errors.grpc_status_of``: a ``BlocksError`` keeps its code and message (and
   ``Overloaded`` its ``retry_after_ms`` as trailing metadata); anything else becomes
   ``INTERNAL`` with its type name only. The traceback goes to the server's log, never to
   the client. A servicer that aborts by itself (``context.abort``) is left alone.
3. *metrics*: each call that reaches the wrapper is observed exactly once in
   ``RpcMetrics`` with its method, final code and duration (read from an injected ``Clock``).

On the client side ``connect_channel`` opens a ``grpc.aio`` channel with the same message-size
limit and keepalive settings the server accepts, attaches the bearer token to every call
through metadata interceptors (so it works with and without TLS), and ``error_from_rpc_error``
or the ``mapped_errors`` context manager turn a failed call back into the ``BlocksError``
class the server raised.

Servicer behaviours are expected to be coroutines or async generators; a plain function is
called inline on the event loop.
"""

from __future__ import annotations

import hmac
import inspect
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from blocks.core.clock import Clock
from blocks.core.closing import AsyncClosing
from blocks.core.errors import BlocksError, InvalidArgument, error_from_status, grpc_status_of
from blocks.core.metrics import RpcMetrics

__all__ = [
    "AUTHORIZATION_METADATA_KEY",
    "HEALTH_SERVICE_PREFIX",
    "HTTP2_FRAME_BYTES_MAX",
    "KEEPALIVE_TIMEOUT_MS",
    "KEEPALIVE_TIME_MS",
    "MESSAGE_BYTES_MAX",
    "ChannelClient",
    "PemSource",
    "ServerInterceptor",
    "bearer_token_matches",
    "channel_options",
    "connect_channel",
    "error_from_rpc_error",
    "mapped_errors",
    "read_pem",
    "validate_token",
]

logger = logging.getLogger(__name__)

AUTHORIZATION_METADATA_KEY = "authorization"
BEARER_SCHEME = "bearer"
HEALTH_SERVICE_PREFIX = "/grpc.health.v1.Health/"
# Default for both directions; gRPC's own receive default (4 MiB) is too small for blob chunks.
MESSAGE_BYTES_MAX = 16 * 1024 * 1024
KEEPALIVE_TIME_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000
TOKEN_CHARS_MAX = 4096
PEM_BYTES_MAX = 1024 * 1024

# A PEM given as bytes is the content; a str or path names a file holding it.
PemSource = bytes | str | os.PathLike[str]


def read_pem(source: PemSource) -> bytes:
    """Return PEM bytes from content (``bytes``) or a file path (``str`` / ``PathLike``)."""
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source)
        try:
            if path.stat().st_size > PEM_BYTES_MAX:
                raise InvalidArgument(f"PEM file {path} is larger than {PEM_BYTES_MAX} bytes")
            data = path.read_bytes()
        except OSError as error:
            raise InvalidArgument(f"cannot read PEM file {path}: {error.strerror}") from error
    if b"-----BEGIN " not in data:
        raise InvalidArgument("not PEM data: no '-----BEGIN ' marker")
    return data


def validate_token(token: str) -> str:
    """Check that ``token`` can travel as a bearer token in gRPC metadata; return it."""
    if not isinstance(token, str) or not token:
        raise InvalidArgument("token must be a non-empty string")
    if len(token) > TOKEN_CHARS_MAX:
        raise InvalidArgument(f"token longer than {TOKEN_CHARS_MAX} characters")
    if not all("!" <= char <= "~" for char in token):
        raise InvalidArgument("token must be printable ASCII without spaces")
    return token


def bearer_token_matches(metadata: Iterable[tuple[str, Any]] | None, expected: str) -> bool:
    """True iff ``metadata`` holds exactly one authorization entry ``Bearer <expected>``.

    The scheme is matched case-insensitively (RFC 6750), the token exactly and in constant
    time. Two authorization entries are refused rather than guessed between.
    """
    values = [value for key, value in metadata or () if key.lower() == AUTHORIZATION_METADATA_KEY]
    if len(values) != 1:
        return False
    value = values[0]
    if isinstance(value, bytes):
        return False
    scheme, _, presented = str(value).partition(" ")
    if scheme.lower() != BEARER_SCHEME:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def _final_code(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.OK


class ServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc,unused-ignore]
    """Auth, error mapping and metrics around every handler of one server (see module doc)."""

    def __init__(
        self,
        *,
        token: str | None,
        metrics: RpcMetrics,
        clock: Clock,
        exempt_prefixes: tuple[str, ...] = (HEALTH_SERVICE_PREFIX,),
    ) -> None:
        self._token = None if token is None else validate_token(token)
        self._metrics = metrics
        self._clock = clock
        self._exempt_prefixes = exempt_prefixes

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: gRPC answers UNIMPLEMENTED itself
            return None
        method: str = handler_call_details.method
        authorized = (
            self._token is None
            or method.startswith(self._exempt_prefixes)
            or bearer_token_matches(handler_call_details.invocation_metadata, self._token)
        )
        return self._wrap(handler, method, authorized)

    @asynccontextmanager
    async def _guarded(
        self, method: str, authorized: bool, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        started_s = self._clock.monotonic()
        self._metrics.rpc_started()
        code = grpc.StatusCode.UNKNOWN
        try:
            if not authorized:
                code = grpc.StatusCode.UNAUTHENTICATED
                await context.abort(code, "missing or wrong bearer token")
            yield
            code = _final_code(context)
        except grpc.aio.AbortError:  # the servicer (or the auth check) already chose a status
            code = _final_code(context)
            if code is grpc.StatusCode.OK:
                code = grpc.StatusCode.UNKNOWN
            raise
        except Exception as error:
            code, details, trailing = grpc_status_of(error)
            if isinstance(error, BlocksError):
                logger.debug("%s failed: %r", method, error)
            else:
                logger.exception("%s raised an unexpected error", method)
            await context.abort(code, details, trailing)
        except BaseException:  # cancelled by the client, a deadline or the end of the grace
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            self._metrics.observe_rpc(method, code, self._clock.monotonic() - started_s)

    def _wrap(
        self, handler: grpc.RpcMethodHandler, method: str, authorized: bool
    ) -> grpc.RpcMethodHandler:
        guarded = self._guarded
        if handler.unary_unary is not None or handler.stream_unary is not None:
            inner = handler.unary_unary or handler.stream_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                async with guarded(method, authorized, context):
                    result = inner(request, context)
                    return await result if inspect.isawaitable(result) else result

            factory = (
                grpc.unary_unary_rpc_method_handler
                if handler.unary_unary is not None
                else grpc.stream_unary_rpc_method_handler
            )
            return factory(unary, handler.request_deserializer, handler.response_serializer)

        inner = handler.unary_stream or handler.stream_stream
        assert inner is not None, "an RpcMethodHandler has exactly one behaviour"
        factory = (
            grpc.unary_stream_rpc_method_handler
            if handler.unary_stream is not None
            else grpc.stream_stream_rpc_method_handler
        )
        if inspect.isasyncgenfunction(inner):

            async def streaming(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                async with guarded(method, authorized, context):
                    async for response in inner(request, context):
                        yield response

            return factory(streaming, handler.request_deserializer, handler.response_serializer)

        async def writing(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            # A streaming servicer that sends with ``context.write`` and returns None.
            async with guarded(method, authorized, context):
                result = inner(request, context)
                if inspect.isawaitable(result):
                    await result

        return factory(writing, handler.request_deserializer, handler.response_serializer)


# ----------------------------------------------------------------------------- client side


def error_from_rpc_error(error: grpc.aio.AioRpcError) -> BlocksError:
    """Rebuild the ``BlocksError`` a server raised from a failed ``grpc.aio`` call."""
    trailing = error.trailing_metadata()
    return error_from_status(error.code(), error.details() or "", trailing or ())


@contextmanager
def mapped_errors() -> Iterator[None]:
    """Within the block, a failed RPC raises the server's ``BlocksError`` class instead.

    Usable around awaits: ``with mapped_errors(): reply = await stub.Get(request)``.
    """
    try:
        yield
    except grpc.aio.AioRpcError as error:
        raise error_from_rpc_error(error) from error


def _with_bearer(details: grpc.aio.ClientCallDetails, token: str) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    metadata.add(AUTHORIZATION_METADATA_KEY, f"Bearer {token}")
    return details._replace(metadata=metadata)


class _Bearer:
    """Adds ``authorization: Bearer <token>`` to each call. grpc.aio files an interceptor under
    the first call shape it is an instance of, so each shape has its own subclass below."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def _intercept(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_bearer(details, self._token), request)


class _BearerUnaryUnary(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc,unused-ignore]
    intercept_unary_unary = _Bearer._intercept


class _BearerUnaryStream(_Bearer, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc,unused-ignore]
    intercept_unary_stream = _Bearer._intercept


class _BearerStreamUnary(_Bearer, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc,unused-ignore]
    intercept_stream_unary = _Bearer._intercept


class _BearerStreamStream(_Bearer, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc,unused-ignore]
    intercept_stream_stream = _Bearer._intercept


# The largest HTTP/2 frame either side accepts (the protocol's default is 16 KiB). A
# 540 KB request in 16 KiB frames cost a gRPC server 1.1 ms of CPU, in frames of up to 1 MiB
# 0.5-0.7 ms (a vector search coordinator sends one such batch to every shard).
HTTP2_FRAME_BYTES_MAX = 1 << 20


def channel_options(
    message_bytes_max: int = MESSAGE_BYTES_MAX, keepalive_time_ms: int = KEEPALIVE_TIME_MS
) -> list[tuple[str, int | str]]:
    """Client channel options: message limits and keepalive pings the server permits."""
    if message_bytes_max <= 0:
        raise InvalidArgument("message_bytes_max must be positive")
    if keepalive_time_ms < 10_000:  # the server refuses pings more often than every 10 s
        raise InvalidArgument("keepalive_time_ms must be at least 10000")
    return [
        ("grpc.max_send_message_length", message_bytes_max),
        ("grpc.max_receive_message_length", message_bytes_max),
        ("grpc.keepalive_time_ms", keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # Reconnect to a restarted server within 0.1-1 s rather than gRPC's default backoff
        # (1 s growing to 2 min), which a client retrying through a restart would meet.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        # Each channel owns its connections: a client made after a server restart must not
        # inherit another channel's failed connection and its backoff.
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.http2.max_frame_size", HTTP2_FRAME_BYTES_MAX),
    ]


def connect_channel(
    address: str,
    token: str | None = None,
    tls_ca: PemSource | None = None,
    *,
    server_name: str | None = None,
    tls_client_cert: tuple[PemSource, PemSource] | None = None,
    message_bytes_max: int = MESSAGE_BYTES_MAX,
    keepalive_time_ms: int = KEEPALIVE_TIME_MS,
    options: Iterable[tuple[str, int | str]] = (),
) -> grpc.aio.Channel:
    """Open a ``grpc.aio`` channel to ``address`` (``host:port``).

    ``tls_ca`` (PEM bytes or a path) turns on TLS and names the CA that must have signed the
    server's certificate; ``server_name`` overrides the name checked against it (useful when
    dialling an IP address); ``tls_client_cert`` is a ``(certificate chain, private key)`` pair
    for servers that require client certificates. ``token`` is sent as ``authorization: Bearer <token>`` on every
    call. Must be called with a running event loop or from the thread that will run one; close
    the channel with ``await channel.close()``.
    """
    all_options = channel_options(message_bytes_max, keepalive_time_ms) + list(options)
    if server_name is not None:
        all_options.append(("grpc.ssl_target_name_override", server_name))
    interceptors: list[Any] = []
    if token is not None:
        validate_token(token)
        shapes = (_BearerUnaryUnary, _BearerUnaryStream, _BearerStreamUnary, _BearerStreamStream)
        interceptors = [shape(token) for shape in shapes]
    if tls_ca is None:
        if tls_client_cert is not None:
            raise InvalidArgument("tls_client_cert needs tls_ca")
        return grpc.aio.insecure_channel(address, options=all_options, interceptors=interceptors)
    chain, key = (None, None)
    if tls_client_cert is not None:
        chain, key = read_pem(tls_client_cert[0]), read_pem(tls_client_cert[1])
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read_pem(tls_ca), private_key=key, certificate_chain=chain
    )
    return grpc.aio.secure_channel(
        address, credentials, options=all_options, interceptors=interceptors
    )


class ChannelClient(AsyncClosing):
    """Base of the blocks' async gRPC clients: owns one channel, closes it, ``async with``.

    A subclass builds its stub on ``self._channel`` and calls it inside ``mapped_errors()``.
    """

    def __init__(self, address: str, token: str | None = None, timeout_s: float = 10.0) -> None:
        self._channel = connect_channel(address, token=token)
        self._timeout_s = timeout_s

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self._channel.close()
