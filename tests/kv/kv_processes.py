"""Shared by the kv process tests: ``blocks kv serve`` processes on 127.0.0.1, and TLS files.

``ProcessCluster`` starts nodes as real processes on ports picked here, waits for each to
print its JSON start line, and kills (``kill -9``) or stops (SIGTERM, then SIGKILL) them;
every test stops its cluster in a ``finally``. ``make_tls_files`` writes a fresh CA, a node
certificate for 127.0.0.1/localhost signed by it, and a second, unrelated CA.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from blocks.kv.client import KVClient
from blocks.testing.process import free_ports

START_TIMEOUT_S = 30.0


class ProcessCluster:
    """Nodes ``names`` (more may join later); ``options`` go to every ``blocks kv serve``."""

    def __init__(
        self,
        root: Path,
        names: Iterable[str],
        *,
        token: str | None = None,
        grpc: bool = False,
        options: Iterable[str] = (),
    ) -> None:
        self.root = root
        self.names = list(names)
        self.token_file: Path | None = None
        if token is not None:
            self.token_file = root / "token"
            self.token_file.write_text(token)
        self.grpc_enabled = grpc
        self.options = list(options)
        self.data: dict[str, int] = {}
        self.grpc: dict[str, int] = {}
        self.processes: dict[str, subprocess.Popen[str]] = {}
        for name in self.names:
            self._assign_ports(name)

    def _assign_ports(self, name: str) -> None:
        if name not in self.data:
            self.data[name], self.grpc[name] = free_ports(2)

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.data[name]}"

    def addresses(self) -> list[str]:
        return [self.address(n) for n in self.names]

    def start(self, name: str, peers: Iterable[str] | None = None) -> None:
        """Start ``name``, knowing ``peers`` (default: every other initial node)."""
        self._await_start_line(name, self._spawn(name, peers))

    def start_all(self) -> None:
        """Start every node in ``names`` at once, then wait for each start line: the
        interpreters import side by side instead of one after the other."""
        spawned = [(name, self._spawn(name, None)) for name in self.names]
        for name, process in spawned:
            self._await_start_line(name, process)

    def _spawn(self, name: str, peers: Iterable[str] | None) -> subprocess.Popen[str]:
        self._assign_ports(name)
        if name not in self.names:
            self.names.append(name)
        known = [p for p in self.names if p != name] if peers is None else list(peers)
        command = [
            sys.executable, "-m", "blocks", "kv", "serve", "--node-id", name,
            "--listen", self.address(name), "--data-dir", str(self.root / name), "--json",
            *(f"--peer={p}={self.address(p)}" for p in known), *self.options,
        ]  # fmt: skip
        if self.grpc_enabled:
            command += ["--grpc-listen", f"127.0.0.1:{self.grpc[name]}"]
        if self.token_file is not None:
            command += ["--token-file", str(self.token_file)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.processes[name] = process
        return process

    @staticmethod
    def _await_start_line(name: str, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line and json.loads(line)["node"] == name, (name, line, process.poll())

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.processes.clear()


async def wait_all_healthy(client: KVClient, names: set[str], timeout_s: float = 60.0) -> None:
    """Until every node reports every one of ``names`` as a healthy ring member.

    The deadline is generous because only a failing run waits it out; on a loaded machine a
    restarted node can take many seconds just to start."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reports = await client.status()
        if {r.get("node") for r in reports} >= names and all(
            r.get("members", {}).get(n) == "healthy" for r in reports for n in names
        ):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"cluster not healthy: {await client.status()}")


# --- TLS material ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path

    def serve_options(self) -> list[str]:
        return ["--tls-cert", str(self.cert), "--tls-key", str(self.key), "--tls-ca", str(self.ca)]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: x509.Name,
    issuer: x509.Name,
    public: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=2))
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    else:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), False)
    return builder.sign(signer, hashes.SHA256())


def make_tls_files(directory: Path) -> TlsFiles:
    ca_key, other_key, node_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _certificate(_name("kv test CA"), _name("kv test CA"), ca_key, ca_key, ca=True)
    other = _certificate(_name("other CA"), _name("other CA"), other_key, other_key, ca=True)
    node = _certificate(_name("kv node"), _name("kv test CA"), node_key, ca_key, ca=False)
    files = TlsFiles(
        directory / "ca.crt",
        directory / "node.crt",
        directory / "node.key",
        directory / "other.crt",
    )
    pem = serialization.Encoding.PEM
    files.ca.write_bytes(ca.public_bytes(pem))
    files.other_ca.write_bytes(other.public_bytes(pem))
    files.cert.write_bytes(node.public_bytes(pem))
    files.key.write_bytes(
        node_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files
