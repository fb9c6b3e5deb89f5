"""The shared serve flags reach the server: TLS, token, metrics and the access log."""

from __future__ import annotations

import asyncio
import logging
import urllib.request
from pathlib import Path

import grpc
import pytest
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped,unused-ignore]

from blocks.cli import build_parser, server_options
from blocks.core.rpc import connect_channel
from blocks.ratelimit.service import build_server, make_limiter
from tests.core.test_server_tls import issue, make_ca

TOKEN = "cli-token"


def test_tls_token_metrics_and_access_log_flags(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca, ca_key, ca_cert = make_ca("cli test CA")
    server_pem = issue(ca_key, ca_cert, "localhost")
    (tmp_path / "cert.pem").write_bytes(server_pem.cert)
    (tmp_path / "key.pem").write_bytes(server_pem.key)
    (tmp_path / "token").write_text(TOKEN + "\n")
    args = build_parser().parse_args(
        [
            *("ratelimit", "serve", "--listen", "127.0.0.1:0"),
            *("--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem")),
            *("--token-file", str(tmp_path / "token"), "--metrics-listen", "127.0.0.1:0"),
            "--access-log",
        ]
    )
    options = server_options(args)
    assert options.token == TOKEN and options.metrics_listen == ("127.0.0.1", 0)

    async def scenario() -> None:
        server, _ = build_server(
            make_limiter("token-bucket", rate_per_s=1, burst=1, window_ms=1000),
            host=options.host,
            port=options.port,
            token=options.token,
        )
        options.configure(server)
        await server.start()
        try:
            channel = connect_channel(f"127.0.0.1:{server.port}", TOKEN, tls_ca=ca.cert)
            stub = health_pb2_grpc.HealthStub(channel)
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            await channel.close()
            plain = connect_channel(f"127.0.0.1:{server.port}", TOKEN)
            with pytest.raises(grpc.aio.AioRpcError):
                await health_pb2_grpc.HealthStub(plain).Check(
                    health_pb2.HealthCheckRequest(), timeout=3
                )
            await plain.close()
            url = f"http://127.0.0.1:{server.metrics_port}"
            health = await asyncio.to_thread(lambda: urllib.request.urlopen(url + "/health"))
            assert health.status == 200 and health.read() == b"ok\n"
            metrics = await asyncio.to_thread(lambda: urllib.request.urlopen(url + "/metrics"))
            assert b"blocks_rpc_total" in metrics.read()
        finally:
            await server.stop(0)

    access = logging.getLogger("blocks.access")
    access.propagate = True  # let caplog see the lines
    try:
        with caplog.at_level(logging.INFO, logger="blocks.access"):
            uvloop.run(asyncio.wait_for(scenario(), 60))
    finally:
        access.propagate = False
    assert any("/grpc.health.v1.Health/Check OK" in r.getMessage() for r in caplog.records)


def test_tls_key_without_cert_is_a_usage_error(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["cache", "serve", "--listen", "127.0.0.1:0", "--tls-key", str(tmp_path / "k")]
    )
    with pytest.raises(ValueError, match="--tls-cert and --tls-key go together"):
        server_options(args)
