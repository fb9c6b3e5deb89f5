"""TcpTransport over TLS: certificates made here, clients that must work and clients refused.

A CA and certificates are generated per module with ``cryptography``; a recording relay sits
between dialer and listener where a test needs to see what crossed the wire.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from blocks.core.errors import InvalidArgument, Unauthenticated, Unavailable
from blocks.core.net import TcpTransport, client_tls_context, server_tls_context

TOKEN = "s3cret-bearer-token"
SECRET_PAYLOAD = "payload-that-must-not-leak"


def _run(body: Callable[[], Awaitable[None]], *, use_uvloop: bool = True) -> None:
    bounded = asyncio.wait_for(body(), 20)
    if use_uvloop:
        uvloop.run(bounded)
    else:
        asyncio.run(bounded)


# --- certificates --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pem:
    cert: bytes
    key: bytes


@dataclass(frozen=True, slots=True)
class Authority:
    pem: Pem
    key: ec.EllipticCurvePrivateKey
    name: x509.Name


def _subject(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> Any:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=2))
    )


def _pem(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Pem:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return Pem(cert.public_bytes(serialization.Encoding.PEM), key_pem)


def _authority(common_name: str) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _subject(common_name)
    cert = (
        _builder(name, name, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Authority(_pem(cert, key), key, name)


def _leaf(ca: Authority, common_name: str) -> Pem:
    key = ec.generate_private_key(ec.SECP256R1())
    names = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert = (
        _builder(_subject(common_name), ca.name, key)
        .add_extension(names, critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return _pem(cert, key)


@pytest.fixture(scope="module")
def pki() -> dict[str, Pem]:
    ca, stranger = _authority("blocks transport CA"), _authority("some other CA")
    return {
        "ca": ca.pem,
        "other_ca": stranger.pem,
        "server": _leaf(ca, "node-b"),
        "client": _leaf(ca, "node-a"),
        "imposter": _leaf(stranger, "node-b"),
    }


# --- listeners, dialers and a relay --------------------------------------------------------


async def _echo(source: str, message: Any) -> Any:
    return {"from": source, "echo": message}


async def _listener(server_pem: Pem, **options: Any) -> TcpTransport:
    tls = server_tls_context(server_pem.cert, server_pem.key, options.pop("client_ca", None))
    server = TcpTransport("b", tls=tls, **options)
    await server.start()
    server.serve(_echo)
    return server


def _dialer(address: tuple[str, int], **options: Any) -> TcpTransport:
    return TcpTransport("a", listen=None, peers={"b": address}, **options)


class Relay:
    """A TCP relay that records every byte the dialer sent to the listener."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.upstream_bytes = bytearray()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        return (host, port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        for source, sink, record in ((reader, up_writer, True), (up_reader, writer, False)):
            task = asyncio.create_task(self._pipe(source, sink, record))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, record: bool
    ) -> None:
        try:
            while chunk := await source.read(65536):
                if record:
                    self.upstream_bytes += chunk
                sink.write(chunk)
                await sink.drain()
        except ConnectionError:
            pass
        finally:
            sink.close()

    async def close(self) -> None:
        for task in list(self._pipes):
            task.cancel()
        if self._server is not None:
            self._server.close()


# --- tests: what must work -----------------------------------------------------------------


@pytest.mark.parametrize("use_uvloop", [True, False], ids=["uvloop", "asyncio"])
def test_tls_dialer_talks_to_tls_listener(pki: dict[str, Pem], use_uvloop: bool) -> None:
    async def body() -> None:
        server = await _listener(pki["server"], token=TOKEN)
        assert server.address is not None
        client = _dialer(server.address, token=TOKEN, tls_ca=pki["ca"].cert)
        try:
            assert await client.request("b", "hello", timeout_s=5) == {"from": "a", "echo": "hello"}
            replies = await asyncio.gather(
                *(client.request("b", n, timeout_s=5) for n in range(64))
            )
            assert [reply["echo"] for reply in replies] == list(range(64))
            big = b"\x5a" * 300_000  # many TLS records in one frame
            assert (await client.request("b", big, timeout_s=5))["echo"] == big
            assert client.stats().get("dials") == 1  # all of it on one pipelined connection
        finally:
            await client.close()
            await server.close()

    _run(body, use_uvloop=use_uvloop)


def test_the_token_and_the_data_never_cross_the_wire_in_clear(pki: dict[str, Pem]) -> None:
    async def exchange(tls: bool) -> bytes:
        if tls:
            server = await _listener(pki["server"], token=TOKEN)
        else:
            server = TcpTransport("b", token=TOKEN)
            await server.start()
            server.serve(_echo)
        assert server.address is not None
        relay = Relay(server.address)
        tls_options = {"tls_ca": pki["ca"].cert, "tls_server_name": "localhost"} if tls else {}
        client = _dialer(await relay.start(), token=TOKEN, **tls_options)
        try:
            reply = await client.request("b", SECRET_PAYLOAD, timeout_s=5)
            assert reply["echo"] == SECRET_PAYLOAD
        finally:
            await client.close()
            await relay.close()
            await server.close()
        return bytes(relay.upstream_bytes)

    async def body() -> None:
        in_clear = await exchange(tls=False)  # the relay does see plaintext when there is some
        assert TOKEN.encode() in in_clear and SECRET_PAYLOAD.encode() in in_clear
        encrypted = await exchange(tls=True)
        assert encrypted  # the exchange did go through the relay
        assert TOKEN.encode() not in encrypted
        assert SECRET_PAYLOAD.encode() not in encrypted

    _run(body)


def test_material_from_paths_and_a_checked_server_name(pki: dict[str, Pem], tmp_path: Path) -> None:
    for name in ("ca", "server"):
        (tmp_path / f"{name}.crt").write_bytes(pki[name].cert)
    (tmp_path / "server.key").write_bytes(pki["server"].key)

    async def body() -> None:
        tls = server_tls_context(tmp_path / "server.crt", str(tmp_path / "server.key"))
        server = TcpTransport("b", tls=tls)
        await server.start()
        server.serve(_echo)
        assert server.address is not None
        port = server.address[1]
        by_name = TcpTransport(
            "a", listen=None, peers={"b": ("localhost", port)}, tls_ca=tmp_path / "ca.crt"
        )
        by_override = _dialer(
            server.address, tls_ca=str(tmp_path / "ca.crt"), tls_server_name="localhost"
        )
        wrong_name = _dialer(
            server.address, tls_ca=pki["ca"].cert, tls_server_name="elsewhere.test"
        )
        try:
            assert (await by_name.request("b", 1, timeout_s=5))["echo"] == 1
            assert (await by_override.request("b", 2, timeout_s=5))["echo"] == 2
            with pytest.raises(Unavailable):
                await wrong_name.request("b", 3, timeout_s=5)
            assert wrong_name.stats().get("tls_failures") == 1
        finally:
            for transport in (by_name, by_override, wrong_name, server):
                await transport.close()

    _run(body)


def test_a_wrong_token_is_still_rejected_inside_tls(pki: dict[str, Pem]) -> None:
    async def body() -> None:
        server = await _listener(pki["server"], token=TOKEN)
        assert server.address is not None
        client = _dialer(server.address, token="not-the-token", tls_ca=pki["ca"].cert)
        try:
            with pytest.raises(Unauthenticated):
                await client.request("b", "x", timeout_s=5)
            assert server.stats().get("unauthenticated") == 1
        finally:
            await client.close()
            await server.close()

    _run(body)


def test_mutual_tls_requires_a_client_certificate(pki: dict[str, Pem]) -> None:
    async def body() -> None:
        server = await _listener(pki["server"], client_ca=pki["ca"].cert)
        assert server.address is not None
        client_pem = pki["client"]
        with_cert = _dialer(
            server.address,
            tls_ca=client_tls_context(pki["ca"].cert, (client_pem.cert, client_pem.key)),
        )
        without_cert = _dialer(server.address, tls_ca=pki["ca"].cert)
        try:
            assert (await with_cert.request("b", "m", timeout_s=5))["echo"] == "m"
            with pytest.raises(Unavailable):
                await without_cert.request("b", "m", timeout_s=5)
        finally:
            for transport in (with_cert, without_cert, server):
                await transport.close()

    _run(body)


# --- tests: what must be refused -----------------------------------------------------------


def test_plaintext_dialer_is_refused_by_tls_listener(pki: dict[str, Pem]) -> None:
    calls: list[Any] = []

    async def recording(source: str, message: Any) -> Any:
        calls.append(message)
        return message

    async def body() -> None:
        server = await _listener(pki["server"], token=TOKEN)
        server.serve(recording)
        assert server.address is not None
        plain = _dialer(server.address, token=TOKEN, connect_timeout_s=3)
        good = _dialer(server.address, token=TOKEN, tls_ca=pki["ca"].cert)
        try:
            with pytest.raises(Unavailable):
                await plain.request("b", "in clear", timeout_s=5)
            await plain.send("b", "one-way in clear")  # dropped, never raises
            assert plain.stats().get("oneway_dropped") == 1
            assert await good.request("b", "ok", timeout_s=5) == "ok"  # the listener serves on
            assert calls == ["ok"]
            assert server.stats().get("connections_accepted") == 1  # only the TLS dialer
        finally:
            for transport in (plain, good, server):
                await transport.close()

    _run(body)


@pytest.mark.parametrize("trust", ["other_ca", "imposter"])
def test_dialer_refuses_a_listener_it_cannot_verify(pki: dict[str, Pem], trust: str) -> None:
    """``other_ca``: the dialer trusts another CA. ``imposter``: the listener's certificate
    names the right host but was signed by a CA the dialer does not trust."""

    async def body() -> None:
        server_pem = pki["imposter"] if trust == "imposter" else pki["server"]
        ca = pki["ca"] if trust == "imposter" else pki["other_ca"]
        server = await _listener(server_pem, token=TOKEN)
        assert server.address is not None
        relay = Relay(server.address)
        client = _dialer(
            await relay.start(), token=TOKEN, tls_ca=ca.cert, tls_server_name="localhost"
        )
        try:
            with pytest.raises(Unavailable, match="certificate"):
                await client.request("b", SECRET_PAYLOAD, timeout_s=5)
            assert client.stats().get("tls_failures") == 1
            assert TOKEN.encode() not in relay.upstream_bytes  # it gave nothing away
            assert server.stats().get("connections_accepted", 0) == 0
        finally:
            await client.close()
            await relay.close()
            await server.close()

    _run(body)


def test_tls_dialer_is_refused_by_plaintext_listener(pki: dict[str, Pem]) -> None:
    async def body() -> None:
        server = TcpTransport("b")
        await server.start()
        server.serve(_echo)
        assert server.address is not None
        client = _dialer(server.address, tls_ca=pki["ca"].cert)
        try:
            with pytest.raises(Unavailable):
                await client.request("b", "x", timeout_s=5)
            assert client.stats().get("tls_failures") == 1
        finally:
            await client.close()
            await server.close()

    _run(body)


def test_plaintext_dialer_told_when_the_listener_answers_in_tls() -> None:
    """Some TLS stacks answer a plaintext greeting with an alert record; the dialer names the
    cause instead of reporting a malformed frame."""
    alert = b"\x15\x03\x03\x00\x02\x02\x46"  # TLS 1.2 record: fatal protocol_version alert

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(alert)
        await writer.drain()
        await reader.read(100)  # until the dialer hangs up
        writer.close()

    async def body() -> None:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()[:2]
        client = _dialer((host, port))
        try:
            with pytest.raises(Unavailable, match="speaks TLS"):
                await client.request("b", "x", timeout_s=5)
            assert client.stats().get("peer_errors", 0) == 0
        finally:
            await client.close()
            server.close()

    _run(body)


# --- tests: bad configuration --------------------------------------------------------------


def test_bad_tls_material_raises_invalid_argument(pki: dict[str, Pem], tmp_path: Path) -> None:
    server, other = pki["server"], pki["client"]
    with pytest.raises(InvalidArgument):
        server_tls_context(tmp_path / "missing.crt", tmp_path / "missing.key")
    with pytest.raises(InvalidArgument):
        server_tls_context(b"not a pem", server.key)
    with pytest.raises(InvalidArgument):
        server_tls_context(server.cert, other.key)  # the key does not match the certificate
    with pytest.raises(InvalidArgument):
        client_tls_context(b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    with pytest.raises(InvalidArgument):
        TcpTransport("b", tls=client_tls_context(pki["ca"].cert))  # a dialer's context
    with pytest.raises(InvalidArgument):
        TcpTransport("a", listen=None, tls_ca=server_tls_context(server.cert, server.key))
    with pytest.raises(InvalidArgument):
        TcpTransport("a", listen=None, tls_server_name="localhost")  # no tls_ca
    with pytest.raises(InvalidArgument):
        TcpTransport("a", listen=None, tls_ca=tmp_path / "missing.crt")
    default_client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    assert TcpTransport("a", listen=None, tls_ca=default_client).name == "a"
