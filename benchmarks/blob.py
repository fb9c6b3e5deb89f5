"""``blocks bench blob``: S3 PUT/GET throughput via boto3, ours against moto, with the disk as
the ceiling, plus erasure encode/decode speed.

Contenders, all driven by the same unchanged boto3 client over HTTP on 127.0.0.1:

* ``blocks`` : ``blocks blob`` server, Reed-Solomon 4+2, fsync on (durable on return);
* ``blocks-nofsync`` : the same without fsync (what moto, which keeps objects in memory or in
  temporary files, is closer to);
* ``moto`` : moto's S3 server (``ThreadedMotoServer``), the baseline.

Workloads: PUT and GET of small (4 KiB) and large (64 MiB) objects, reported in MB/s of
object bytes. Then two extra tables: the raw sequential write speed of the data directory's
disk (4 MiB writes, one fsync at the end: the ceiling for large PUTs) and the erasure codec's
encode / healthy decode / degraded decode (two shards lost) speed.

Peers are installed only for the benchmark:

    .venv/bin/pip install boto3 "moto[server]"
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import Contender, Skip, Workload, progress, run_benchmark, write_table

REQUIREMENTS = ["boto3", "moto[server]"]
ACCESS, SECRET = "BENCHKEY", "bench-secret"
MIB = 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--small-ops", type=int, default=300, help="4 KiB operations per round")
    parser.add_argument("--large-ops", type=int, default=3, help="large operations per round")
    parser.add_argument("--large-mib", type=int, default=64, help="size of a large object")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", default=None, help="where our server stores (temp dir)")


def _boto3_client(endpoint: str) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError as error:
        raise Skip("boto3 is not installed (pip install boto3)") from error
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


class _OurServer:
    """A BlobServer on its own event loop thread, over a fresh data directory."""

    def __init__(self, root: Path, fsync: bool) -> None:
        from blocks.blob import LocalBlobStore
        from blocks.blob.s3api import S3Config
        from blocks.blob.server import BlobServer

        self.directory = Path(tempfile.mkdtemp(prefix="blob-bench-", dir=root))
        self.store = LocalBlobStore(self.directory, fsync=fsync)
        self.server = BlobServer(self.store, config=S3Config(credentials={ACCESS: SECRET}))
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.server.start())
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        if not started.wait(10):
            raise RuntimeError("server did not start")
        self.endpoint = self.server.endpoint

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(grace_s=2), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.store.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class _MotoServer:
    def __init__(self) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as error:
            raise Skip('moto is not installed (pip install "moto[server]")') from error
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.server.start()
        self.endpoint = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.stop()


def _contender(
    name: str, start: Callable[[], Any], size: int, operation: str, prefill: int
) -> Contender:
    # Every PUT sends different bytes (a sliding window over random data), so that chunk
    # deduplication cannot skip the writes: we measure storing, not recognising.
    pool = os.urandom(size + 8 * 4096)
    payload = pool[:size]

    def fresh(index: int) -> bytes:
        offset = 8 * (index % 4096) + 1
        return pool[offset : offset + size]

    def setup() -> dict[str, Any]:
        server = start()
        client = _boto3_client(server.endpoint)
        client.create_bucket(Bucket="bench")
        for index in range(prefill):
            client.put_object(Bucket="bench", Key=f"obj-{index}", Body=payload)
        return {"server": server, "client": client}

    def op(state: dict[str, Any], index: int) -> None:
        client = state["client"]
        if operation == "put":
            client.put_object(Bucket="bench", Key=f"obj-{index % 16}", Body=fresh(index))
        else:
            body = client.get_object(Bucket="bench", Key=f"obj-{index % prefill}")["Body"].read()
            assert len(body) == size

    def teardown(state: dict[str, Any]) -> None:
        state["server"].stop()

    return Contender(name, setup, op, teardown, items_per_op=size)


def _disk_write_mb_s(root: Path, total_mib: int = 512) -> float:
    path = root / "raw-disk-probe"
    block = os.urandom(4 * MIB)
    started = time.perf_counter()
    with open(path, "wb") as handle:
        for _ in range(total_mib // 4):
            handle.write(block)
        handle.flush()
        os.fsync(handle.fileno())
    elapsed = time.perf_counter() - started
    path.unlink()
    return total_mib * MIB / elapsed / 1e6


def _erasure_rows(total_mib: int = 256) -> list[list[str]]:
    from blocks.blob.erasure import ReedSolomonCodec, ReplicationCodec

    rows = []
    chunk = os.urandom(4 * MIB)
    rounds = total_mib // 4
    for codec in (ReedSolomonCodec(4, 2), ReedSolomonCodec(8, 3), ReplicationCodec(3)):
        started = time.perf_counter()
        for _ in range(rounds):
            payloads = codec.encode(chunk)
        encode = time.perf_counter() - started
        healthy = dict(enumerate(payloads))
        degraded = {i: p for i, p in healthy.items() if i >= codec.total - codec.needed}
        if len(degraded) < codec.needed:
            degraded = dict(list(healthy.items())[-codec.needed :])
        timings = []
        for shards in (healthy, degraded):
            started = time.perf_counter()
            for _ in range(rounds):
                assert codec.decode(shards, len(chunk)) == chunk
            timings.append(time.perf_counter() - started)
        megabytes = rounds * len(chunk) / 1e6
        overhead = codec.total / codec.needed
        if isinstance(codec, ReplicationCodec):  # copies are references: nothing to compute
            rows.append([codec.spec(), f"{overhead:.2f}x", "no coding", "no coding", "no coding"])
            continue
        rows.append(
            [
                codec.spec(),
                f"{overhead:.2f}x",
                f"{megabytes / encode:,.0f}",
                f"{megabytes / timings[0]:,.0f}",
                f"{megabytes / timings[1]:,.0f}",
            ]
        )
    return rows


def main(args: argparse.Namespace) -> int:
    root = Path(args.data_dir or tempfile.mkdtemp(prefix="blob-bench-root-"))
    root.mkdir(parents=True, exist_ok=True)
    large = args.large_mib * MIB
    summary: list[list[str]] = []
    try:
        for label, size, ops, prefill in (
            ("4k", 4096, args.small_ops, 16),
            (f"{args.large_mib}m", large, args.large_ops, 2),
        ):
            for operation in ("put", "get"):
                contenders = [
                    _contender("moto", _MotoServer, size, operation, prefill),
                    _contender("blocks", lambda: _OurServer(root, True), size, operation, prefill),
                    _contender(
                        "blocks-nofsync", lambda: _OurServer(root, False), size, operation, prefill
                    ),
                ]
                workload = Workload(f"{operation}-{label}", ops=ops, rounds=args.rounds)
                results = run_benchmark(
                    f"blob-{operation}-{label}", [workload], contenders, "moto", args.out
                )
                for result in results:
                    if result.skipped:
                        summary.append([workload.name, result.contender, "skipped", "", ""])
                        continue
                    ratio = f"x{result.ratio:.2f}" if result.ratio is not None else "n/a"
                    summary.append(
                        [
                            workload.name,
                            result.contender,
                            f"{result.throughput / 1e6:,.1f}",
                            f"{result.p50_ms:.2f}",
                            ratio,
                        ]
                    )
        progress("[blob] measuring raw disk write speed and erasure coding")
        disk = _disk_write_mb_s(root)
        summary.append(
            ["raw disk sequential write", "dd-like, 4 MiB writes + fsync", f"{disk:,.1f}", "", ""]
        )
        table = write_table(
            Path(args.out) / "blob",
            "summary",
            ["workload", "contender", "MB/s", "p50 ms", "vs moto"],
            summary,
        )
        print(f"\n## blob: MB/s of object bytes\n\n{table}")
        erasure = write_table(
            Path(args.out) / "blob",
            "erasure",
            ["codec", "storage overhead", "encode MB/s", "decode MB/s", "decode, m lost MB/s"],
            _erasure_rows(),
        )
        print(f"\n## blob: erasure coding (pyeclib / ISA-L), 4 MiB chunks\n\n{erasure}")
    finally:
        if args.data_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0
