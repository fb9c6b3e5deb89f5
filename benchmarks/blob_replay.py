"""``python -m benchmarks.blob_replay``: the server's own CPU per small S3 request, without boto3.

A boto3 client costs ~2 ms of CPU per 4 KiB request on this machine, several times what the
server costs, and shares the cores with it, so ``benchmarks.blob``'s ratios move mostly with
the client and the load. This client sends the requests boto3 sends (SigV4-signed, a PUT
with ``Content-MD5`` and ``Expect: 100-continue``, waiting for ``100 Continue`` before the
body) over raw keep-alive sockets (``--clients``, one thread each; one by default), signed
with ``blocks.blob.s3.sigv4`` of the tree it runs from, and reads each answer whole before
the connection's next request. Each contender
is ``blocks blob serve`` (fsync on) from a source tree (``--src NAME=DIR``, repeatable; the
working tree's ``src`` when none is given), started once; rounds alternate the order of
the contenders. Per round and contender: wall time per request and the server's CPU
(``/proc/PID/stat``, user + system, in 10 ms ticks: use a few hundred requests a round).
The summary gives medians (min-max) and, for every contender after the first, the median of
its per-round ratios to the first.

    python -m benchmarks.blob_replay --op put --ops 500 --rounds 10 \
        --src after=src --src before=/tmp/before/src
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from blocks.blob.s3.sigv4 import sign_request

ACCESS, SECRET = "AKIDREPLAY", "replay-secret"
BODY = b"x" * 4096
KEYS = 100


def _request(method: str, path: str, host: str, payload: bytes) -> bytes:
    """A signed request head as boto3 sends it (path-style, unsigned ``Expect``)."""
    amz_date = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    headers = {
        "host": host,
        "x-amz-date": amz_date,
        "x-amz-content-sha256": hashlib.sha256(payload).hexdigest(),
    }
    if payload:
        headers["content-length"] = str(len(payload))
        headers["content-md5"] = base64.b64encode(hashlib.md5(payload).digest()).decode()
    authorization = sign_request(method, path, "", headers, ACCESS, SECRET, amz_date)
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    lines.append(f"authorization: {authorization}")
    if payload:
        lines.append("expect: 100-continue")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _answer(sock: socket.socket, buffer: bytes = b"") -> tuple[bytes, bytes]:
    """The next answer's head and whatever followed its body."""
    while b"\r\n\r\n" not in buffer:
        piece = sock.recv(65536)
        if not piece:
            raise ConnectionError("the server closed the connection")
        buffer += piece
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        rest += sock.recv(65536)
    return head, rest[length:]


class Contender:
    """One ``blocks blob serve`` process and a keep-alive connection to it."""

    def __init__(self, name: str, src: str, port: int, data_dir: str, clients: int) -> None:
        self.name, self.host = name, f"127.0.0.1:{port}"
        command = [sys.executable, "-m", "blocks", "blob", "serve", "--data-dir", data_dir]
        command += ["--listen", self.host, "--access-key", ACCESS, "--secret-key", SECRET]
        environment = dict(os.environ, PYTHONPATH=str(Path(src).resolve()))
        self.process = subprocess.Popen(
            command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.socks = [self._connect(port) for _ in range(clients)]
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.1)
        self.call(self.socks[0], "PUT", "/bench", b"")
        self.put(self.socks[0], 0)

    @staticmethod
    def _connect(port: int) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def call(self, sock: socket.socket, method: str, path: str, payload: bytes) -> None:
        sock.sendall(_request(method, path, self.host, payload))
        rest = b""
        if payload:  # wait for 100 Continue, as boto3 does
            head, rest = _answer(sock)
            assert head.startswith(b"HTTP/1.1 100"), head
            sock.sendall(payload)
        head, rest = _answer(sock, rest)
        assert head.startswith(b"HTTP/1.1 200") and not rest, head

    def put(self, sock: socket.socket, n: int) -> None:
        self.call(sock, "PUT", f"/bench/k{n % KEYS}", BODY)

    def get(self, sock: socket.socket, n: int) -> None:
        self.call(sock, "GET", "/bench/k0", b"")

    def run(self, op: str, ops: int) -> None:
        """``ops`` requests, split over the connections, one thread each."""
        operation = self.put if op == "put" else self.get

        def client(index: int) -> None:
            for n in range(index, ops, len(self.socks)):
                operation(self.socks[index], n)

        if len(self.socks) == 1:
            client(0)
            return
        with ThreadPoolExecutor(len(self.socks)) as pool:
            list(pool.map(client, range(len(self.socks))))

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        self.process.terminate()
        self.process.wait(30)


def _summary(name: str, values: list[float]) -> str:
    return f"{name} {statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--op", choices=("put", "get"), default="put")
    parser.add_argument("--ops", type=int, default=500, help="requests per round")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--clients", type=int, default=1, help="connections, one thread each")
    parser.add_argument("--src", action="append", default=[], help="NAME=DIR (repeatable)")
    args = parser.parse_args()
    sources = [tuple(s.split("=", 1)) for s in args.src] or [("blocks", "src")]
    root = tempfile.mkdtemp(prefix="blob-replay-")
    contenders: list[Contender] = []
    try:
        for name, src in sources:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            directory = tempfile.mkdtemp(dir=root)
            contenders.append(Contender(name, src, port, directory, args.clients))
        wall: dict[str, list[float]] = {c.name: [] for c in contenders}
        cpu: dict[str, list[float]] = {c.name: [] for c in contenders}
        loads: list[str] = []
        for r in range(args.rounds):
            loads.append(Path("/proc/loadavg").read_text().split()[0])
            for contender in contenders[r % len(contenders) :] + contenders[: r % len(contenders)]:
                cpu_start, start = contender.cpu_s(), time.perf_counter()
                contender.run(args.op, args.ops)
                wall[contender.name].append(1e6 * (time.perf_counter() - start) / args.ops)
                cpu[contender.name].append(1e6 * (contender.cpu_s() - cpu_start) / args.ops)
    finally:
        for contender in contenders:
            contender.close()
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"{args.op}-4k x{args.clients}, {args.rounds} rounds of {args.ops}; "
        f"1-min load per round: {loads}"
    )
    first = contenders[0].name
    for name in wall:
        line = f"{name}: {_summary('wall us/op', wall[name])}, "
        line += _summary("server CPU us/op", cpu[name])
        if name != first:
            for what, values in (("wall", wall), ("CPU", cpu)):
                ratios = [a / b for a, b in zip(values[name], values[first], strict=True)]
                line += f"; {what} x{statistics.median(ratios):.2f} of {first}"
                line += f" ({min(ratios):.2f}-{max(ratios):.2f})"
        print(line)


if __name__ == "__main__":
    main()
