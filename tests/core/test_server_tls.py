"""TLS: a self-signed CA made in the test, server certs from bytes and paths, mutual TLS."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from blocks.core.errors import InvalidArgument
from blocks.core.rpc import connect_channel
from blocks.core.server import Server, TlsConfig

TEST_TIMEOUT_S = 30.0
TOKEN = "tls-token"
ECHO = "/blocks.test.Echo/Echo"


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro_fn(), TEST_TIMEOUT_S)

    return uvloop.run(bounded())


@dataclass(frozen=True, slots=True)
class Pem:
    cert: bytes
    key: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(common_name: str) -> tuple[Pem, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Pem(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)), key, cert


def issue(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, common_name: str) -> Pem:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(san, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return Pem(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


@pytest.fixture(scope="module")
def pki() -> dict[str, Pem]:
    ca, ca_key, ca_cert = make_ca("blocks test CA")
    other_ca, _, _ = make_ca("someone else's CA")
    return {
        "ca": ca,
        "other_ca": other_ca,
        "server": issue(ca_key, ca_cert, "localhost"),
        "client": issue(ca_key, ca_cert, "client"),
    }


async def echo(request: bytes, context: Any) -> bytes:
    return request


async def start(tls: TlsConfig, token: str | None = None) -> Server:
    server = Server(tls=tls, token=token)
    server.add_generic_handlers(
        grpc.method_handlers_generic_handler(
            "blocks.test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
        )
    )
    await server.start()
    return server


async def expect_refused(channel: grpc.aio.Channel) -> None:
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(ECHO)(b"x", timeout=3)
        assert caught.value.code() in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )
    finally:
        await channel.close()


def test_tls_from_pem_bytes_with_token(pki: dict[str, Pem]) -> None:
    async def body() -> None:
        server = await start(TlsConfig(pki["server"].cert, pki["server"].key), token=TOKEN)
        channel = connect_channel(server.address, token=TOKEN, tls_ca=pki["ca"].cert)
        try:
            assert await channel.unary_unary(ECHO)(b"secure", timeout=5) == b"secure"
            no_token = connect_channel(server.address, tls_ca=pki["ca"].cert)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await no_token.unary_unary(ECHO)(b"x", timeout=5)
            assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
            await no_token.close()
        finally:
            await channel.close()
            await server.stop(grace_s=0)

    run(body)


def test_tls_from_paths_and_clients_that_must_fail(pki: dict[str, Pem], tmp_path: Path) -> None:
    for name in ("ca", "other_ca", "server"):
        (tmp_path / f"{name}.crt").write_bytes(pki[name].cert)
    (tmp_path / "server.key").write_bytes(pki["server"].key)

    async def body() -> None:
        tls = TlsConfig(tmp_path / "server.crt", str(tmp_path / "server.key"))
        server = await start(tls)
        try:
            channel = connect_channel(server.address, tls_ca=tmp_path / "ca.crt")
            named = connect_channel(
                f"localhost:{server.port}", tls_ca=pki["ca"].cert, server_name="localhost"
            )
            try:
                assert await channel.unary_unary(ECHO)(b"a", timeout=5) == b"a"
                assert await named.unary_unary(ECHO)(b"b", timeout=5) == b"b"
            finally:
                await channel.close()
                await named.close()
            await expect_refused(connect_channel(server.address))  # plaintext client
            await expect_refused(connect_channel(server.address, tls_ca=tmp_path / "other_ca.crt"))
        finally:
            await server.stop(grace_s=0)

    run(body)


def test_mutual_tls_requires_a_client_certificate(pki: dict[str, Pem]) -> None:
    async def body() -> None:
        tls = TlsConfig(pki["server"].cert, pki["server"].key, client_ca=pki["ca"].cert)
        server = await start(tls)
        try:
            client = (pki["client"].cert, pki["client"].key)
            channel = connect_channel(server.address, tls_ca=pki["ca"].cert, tls_client_cert=client)
            try:
                assert await channel.unary_unary(ECHO)(b"m", timeout=5) == b"m"
            finally:
                await channel.close()
            await expect_refused(connect_channel(server.address, tls_ca=pki["ca"].cert))
        finally:
            await server.stop(grace_s=0)

    run(body)


def test_bad_tls_material_fails_start_cleanly(tmp_path: Path) -> None:
    async def body() -> None:
        server = Server(tls=TlsConfig(tmp_path / "missing.crt", tmp_path / "missing.key"))
        with pytest.raises(InvalidArgument):
            await server.start()
        with pytest.raises(InvalidArgument):
            connect_channel("127.0.0.1:1", tls_client_cert=(b"x", b"y"))

    run(body)
