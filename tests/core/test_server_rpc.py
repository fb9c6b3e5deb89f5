"""The RPC conventions: bearer-token auth, error mapping both ways, metrics, message limits."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import grpc.aio
import msgpack
import pytest
import uvloop
from hypothesis import example, given
from hypothesis import strategies as st
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families

from blocks.core import errors
from blocks.core.errors import BlocksError, InvalidArgument, Overloaded
from blocks.core.rpc import (
    bearer_token_matches,
    connect_channel,
    error_from_rpc_error,
    mapped_errors,
    read_pem,
    validate_token,
)
from blocks.core.server import Server

TEST_TIMEOUT_S = 30.0
TOKEN = "s3cret-token_value.1"
SERVICE = "blocks.test.Echo"
CALL_TIMEOUT_S = 60  # bounds a failing run; 5 s ran out on a loaded 2-core machine

ERROR_CLASSES: tuple[type[BlocksError], ...] = (
    errors.InvalidArgument,
    errors.NotFound,
    errors.AlreadyExists,
    errors.Conflict,
    errors.FailedPrecondition,
    errors.Unavailable,
    errors.Timeout,
    errors.Overloaded,
    errors.Corruption,
    errors.Unauthenticated,
    errors.PermissionDenied,
    errors.Cancelled,
    errors.Internal,
)
ERRORS_BY_NAME = {cls.__name__: cls for cls in ERROR_CLASSES}


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro_fn(), TEST_TIMEOUT_S)

    return uvloop.run(bounded())


class EchoService:
    """Every RPC kind, plus Fail, which raises the error its request names."""

    def __init__(self) -> None:
        self.calls = 0

    async def echo(self, request: bytes, context: Any) -> bytes:
        self.calls += 1
        return request

    async def fail(self, request: bytes, context: Any) -> bytes:
        self.calls += 1
        name, message, retry_after_ms = msgpack.unpackb(request)
        if name == "RuntimeError":
            raise RuntimeError(message)
        cls = ERRORS_BY_NAME[name]
        if cls is Overloaded:
            raise Overloaded(message, retry_after_ms=retry_after_ms)
        raise cls(message)

    async def split(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        self.calls += 1
        for byte in request:
            yield bytes([byte])

    async def join(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        self.calls += 1
        return b"".join([part async for part in requests])

    async def upper(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        self.calls += 1
        async for part in requests:
            yield part.upper()

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Echo": grpc.unary_unary_rpc_method_handler(self.echo),
                "Fail": grpc.unary_unary_rpc_method_handler(self.fail),
                "Split": grpc.unary_stream_rpc_method_handler(self.split),
                "Join": grpc.stream_unary_rpc_method_handler(self.join),
                "Upper": grpc.stream_stream_rpc_method_handler(self.upper),
            },
        )


async def started(**kwargs: Any) -> tuple[Server, EchoService]:
    server = Server(**kwargs)
    service = EchoService()
    server.add_generic_handlers(service.handler())
    await server.start()
    return server, service


async def parts(*items: bytes) -> AsyncIterator[bytes]:
    for item in items:
        yield item


async def call_every_kind(channel: grpc.aio.Channel) -> list[Any]:
    """One call of each RPC kind; returns what each produced."""
    unary = await channel.unary_unary(f"/{SERVICE}/Echo")(b"ab", timeout=CALL_TIMEOUT_S)
    split = [
        r async for r in channel.unary_stream(f"/{SERVICE}/Split")(b"ab", timeout=CALL_TIMEOUT_S)
    ]
    joined = await channel.stream_unary(f"/{SERVICE}/Join")(
        parts(b"a", b"b"), timeout=CALL_TIMEOUT_S
    )
    upper_call = channel.stream_stream(f"/{SERVICE}/Upper")(
        parts(b"a", b"b"), timeout=CALL_TIMEOUT_S
    )
    upper = [r async for r in upper_call]
    return [unary, split, joined, upper]


EXPECTED_EVERY_KIND = [b"ab", [b"a", b"b"], b"ab", [b"A", b"B"]]


# ------------------------------------------------------------------------------ auth


def test_right_token_passes_for_every_rpc_kind() -> None:
    async def body() -> None:
        server, service = await started(token=TOKEN)
        channel = connect_channel(server.address, token=TOKEN)
        try:
            assert await call_every_kind(channel) == EXPECTED_EVERY_KIND
            assert service.calls == 4
        finally:
            await channel.close()
            await server.stop(grace_s=0)

    run(body)


@pytest.mark.parametrize("client_token", [None, "wrong-token", TOKEN + "x", TOKEN[:-1]])
def test_wrong_or_missing_token_is_unauthenticated_for_every_rpc_kind(
    client_token: str | None,
) -> None:
    async def body() -> None:
        server, service = await started(token=TOKEN)
        channel = connect_channel(server.address, token=client_token)
        try:
            attempts: list[Callable[[], Awaitable[Any]]] = [
                lambda: channel.unary_unary(f"/{SERVICE}/Echo")(b"x", timeout=CALL_TIMEOUT_S),
                lambda: call_every_kind(channel),
            ]
            for attempt in attempts:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await attempt()
                assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(errors.Unauthenticated), mapped_errors():
                await channel.unary_unary(f"/{SERVICE}/Echo")(b"x", timeout=CALL_TIMEOUT_S)
            assert service.calls == 0  # the servicer never ran
            for kind_method in ("Split", "Upper"):
                stream = (
                    channel.unary_stream(f"/{SERVICE}/Split")(b"x", timeout=CALL_TIMEOUT_S)
                    if kind_method == "Split"
                    else channel.stream_stream(f"/{SERVICE}/Upper")(
                        parts(b"x"), timeout=CALL_TIMEOUT_S
                    )
                )
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    _ = [r async for r in stream]
                assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.stream_unary(f"/{SERVICE}/Join")(parts(b"x"), timeout=CALL_TIMEOUT_S)
            assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert service.calls == 0
        finally:
            await channel.close()
            await server.stop(grace_s=0)

    run(body)


def test_without_server_token_any_client_passes() -> None:
    async def body() -> None:
        server, _ = await started()
        channel = connect_channel(server.address, token="whatever")
        try:
            assert await call_every_kind(channel) == EXPECTED_EVERY_KIND
        finally:
            await channel.close()
            await server.stop(grace_s=0)

    run(body)


token_chars = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
tokens = st.text(token_chars, min_size=1, max_size=40)


@st.composite
def token_and_metadata(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]]]:
    """An expected token and metadata whose values are often close to it or equal to it."""
    expected = draw(tokens)
    near = st.one_of(
        st.just(expected),
        tokens,
        st.just(expected[:-1]),
        st.just(expected + "x"),
        st.just(expected.upper()),
    )
    value = st.one_of(
        st.tuples(st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", ""]), near).map(
            lambda pair: f"{pair[0]} {pair[1]}" if pair[0] else pair[1]
        ),
        st.just(f"Bearer  {expected}"),
    )
    key = st.sampled_from(["authorization", "Authorization", "x-other", "x-request-id"])
    return expected, draw(st.lists(st.tuples(key, value), max_size=4))


@given(case=token_and_metadata())
@example(case=("tok", [("authorization", "bearer tok")]))
@example(case=("tok", [("Authorization", "BEARER tok"), ("x-other", "Bearer tok")]))
@example(case=("tok", [("authorization", "Bearer tok"), ("authorization", "Bearer tok")]))
@example(case=("tok", [("authorization", "Bearer tok "), ("x-request-id", "grpc")]))
def test_bearer_token_matches_its_model(case: tuple[str, list[tuple[str, str]]]) -> None:
    expected, metadata = case
    authorization = [value for key, value in metadata if key.lower() == "authorization"]
    model = (
        len(authorization) == 1
        and authorization[0][:7].lower() == "bearer "
        and authorization[0][7:] == expected
    )
    assert bearer_token_matches(metadata, expected) is model
    assert bearer_token_matches(None, expected) is False


@pytest.mark.parametrize("bad", ["", "has space", "tab\t", "caf\u00e9", "x" * 5000])
def test_unusable_tokens_are_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_token(bad)
    with pytest.raises(InvalidArgument):
        Server(token=bad)


def test_read_pem_refuses_what_is_not_pem(tmp_path: Any) -> None:
    with pytest.raises(InvalidArgument):
        read_pem(b"not a certificate")
    with pytest.raises(InvalidArgument):
        read_pem(tmp_path / "missing.pem")
    (tmp_path / "ok.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n")
    assert read_pem(str(tmp_path / "ok.pem")).startswith(b"-----BEGIN")


# ------------------------------------------------------------------------------ errors

raised_errors = st.lists(
    st.tuples(
        st.sampled_from(ERROR_CLASSES),
        st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=30),
        st.integers(min_value=0, max_value=10**9),
    ),
    min_size=1,
    max_size=4,
)


class SharedServer:
    """One server and channel on one event loop, for a property test's many examples:
    starting a server per example cost most of the test's time."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.server, _ = self.loop.run_until_complete(started())
        self.channel = self.loop.run_until_complete(self._connect())

    async def _connect(self) -> grpc.aio.Channel:
        return connect_channel(self.server.address)  # made on the loop that uses it

    def run(self, coro_fn: Callable[[], Awaitable[Any]]) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro_fn(), TEST_TIMEOUT_S))

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.channel.close())
            self.loop.run_until_complete(self.server.stop(grace_s=0))
        finally:
            self.loop.close()


@pytest.fixture(scope="module")
def shared_server() -> Iterator[SharedServer]:
    shared = SharedServer()
    try:
        yield shared
    finally:
        shared.close()


@given(cases=raised_errors)
def test_every_blocks_error_round_trips_through_grpc(
    shared_server: SharedServer, cases: list[tuple[type[BlocksError], str, int]]
) -> None:
    async def body() -> None:
        channel = shared_server.channel
        for cls, message, retry_after_ms in cases:
            request = msgpack.packb([cls.__name__, message, retry_after_ms])
            with pytest.raises(BlocksError) as caught, mapped_errors():
                await channel.unary_unary(f"/{SERVICE}/Fail")(request, timeout=CALL_TIMEOUT_S)
            error = caught.value
            assert type(error) is cls
            assert error.message == (message or cls.__name__)
            assert isinstance(error.__cause__, grpc.aio.AioRpcError)
            assert error.__cause__.code() is cls.grpc_code
            if cls is Overloaded:
                assert isinstance(error, Overloaded)
                assert error.retry_after_ms == retry_after_ms

    shared_server.run(body)


def test_unexpected_exception_is_internal_without_leaking_details() -> None:
    async def body() -> None:
        server, _ = await started()
        channel = connect_channel(server.address)
        try:
            request = msgpack.packb(["RuntimeError", "password=hunter2 at /srv/db", 0])
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(f"/{SERVICE}/Fail")(request, timeout=CALL_TIMEOUT_S)
            rpc_error = caught.value
            assert rpc_error.code() is grpc.StatusCode.INTERNAL
            details = rpc_error.details() or ""
            assert "RuntimeError" in details
            assert "hunter2" not in details and "Traceback" not in details
            assert isinstance(error_from_rpc_error(rpc_error), BlocksError)
            # The server keeps serving after a handler blew up.
            assert (
                await channel.unary_unary(f"/{SERVICE}/Echo")(b"ok", timeout=CALL_TIMEOUT_S)
                == b"ok"
            )
        finally:
            await channel.close()
            await server.stop(grace_s=0)

    run(body)


def test_oversize_message_is_refused() -> None:
    async def body() -> None:
        server, service = await started(message_bytes_max=1024)
        channel = connect_channel(server.address)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(f"/{SERVICE}/Echo")(b"x" * 4096, timeout=CALL_TIMEOUT_S)
            assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert service.calls == 0
        finally:
            await channel.close()
            await server.stop(grace_s=0)

    run(body)


# ------------------------------------------------------------------------------ metrics


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(
        f"http://127.0.0.1:{port}/metrics", timeout=CALL_TIMEOUT_S
    ) as reply:
        text = reply.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_endpoint_counts_calls_by_method_and_code() -> None:
    async def body() -> None:
        server, _ = await started(metrics_port=0, token=TOKEN)
        jobs = Counter("blocks_test_jobs", "A block's own metric.", registry=server.registry)
        jobs.inc(3)
        other, _ = await started(metrics_port=0)  # a second registry, no name clash
        channel = connect_channel(server.address, token=TOKEN)
        intruder = connect_channel(server.address)
        try:
            for _ in range(3):
                await channel.unary_unary(f"/{SERVICE}/Echo")(b"x", timeout=CALL_TIMEOUT_S)
            for _ in range(2):
                with pytest.raises(grpc.aio.AioRpcError):
                    request = msgpack.packb(["NotFound", "gone", 0])
                    await channel.unary_unary(f"/{SERVICE}/Fail")(request, timeout=CALL_TIMEOUT_S)
            with pytest.raises(grpc.aio.AioRpcError):
                await intruder.unary_unary(f"/{SERVICE}/Echo")(b"x", timeout=CALL_TIMEOUT_S)
            assert server.metrics_port is not None
            samples = await asyncio.to_thread(scrape, server.metrics_port)
        finally:
            await channel.close()
            await intruder.close()
            await server.stop(grace_s=0)
            await other.stop(grace_s=0)
        echo, fail = f"/{SERVICE}/Echo", f"/{SERVICE}/Fail"
        assert samples[("blocks_rpc_total", (("code", "OK"), ("method", echo)))] == 3
        assert samples[("blocks_rpc_total", (("code", "NOT_FOUND"), ("method", fail)))] == 2
        assert samples[("blocks_rpc_errors_total", (("code", "NOT_FOUND"), ("method", fail)))] == 2
        unauthenticated = (("code", "UNAUTHENTICATED"), ("method", echo))
        assert samples[("blocks_rpc_errors_total", unauthenticated)] == 1
        assert ("blocks_rpc_errors_total", (("code", "OK"), ("method", echo))) not in samples
        assert samples[("blocks_rpc_duration_seconds_count", (("method", echo),))] == 4
        assert samples[("blocks_rpc_in_flight", ())] == 0
        assert samples[("blocks_test_jobs_total", ())] == 3
        assert server.metrics_port is None  # endpoint stopped with the server

    run(body)
