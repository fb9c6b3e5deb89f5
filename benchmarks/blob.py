"""``blocks bench blob``: S3 PUT/GET throughput via boto3, ours against moto, with the disk as
the ceiling, plus erasure encode/decode speed.

Every server runs in its own process, as users run them (``blocks blob serve``,
``python -m moto.server``), and the same unchanged boto3 client drives all of them over HTTP
on 127.0.0.1:

* ``moto`` : moto's S3 server, the baseline (it keeps objects in memory);
* ``ceiling (null server)`` : ``benchmarks/null_s3.py``, which answers every call at once and
  does nothing else (no signatures, hashes or disk), with the headers S3 answers and boto3
  parses. What the client reaches against it is the most that boto3 and the shared CPU allow
  any server here: read each ratio against its ratio;
* ``ceiling (bare null server)``, in the 4 KiB workloads: the same without S3's standard
  headers (``null_s3.py --bare``), the ceiling of the rounds before the headers were added;
* ``blocks`` : ``blocks blob serve``, Reed-Solomon 4+2, fsync on (durable on return);
* ``blocks-nofsync`` : the same with ``--no-fsync``;
* ``blocks@before`` (with ``--before-src DIR``): ``blocks blob serve`` from another source
  tree, e.g. the last commit (``git archive HEAD src | tar -x -C DIR``), fsync on: before and
  after side by side in one run;
* ``raw disk (write + fsync)``, in the PUT and upload workloads: each operation writes the
  object's bytes to a file in the data directory (writes of at most 4 MiB) and fsyncs it, the
  ceiling for a durable PUT on this disk, measured in the same interleaved rounds as the
  servers (a single probe after everything gave 172 MB/s in one run and 393 in the next);
* ``raw disk (read)``, in the large GET workload: each operation reads one of the files written
  (and fsynced) when the round started, in reads of at most 4 MiB; like the servers' GETs it
  finds them in the page cache.

The summary gives every row's share of the ceiling and, where the workload has them, of the
bare ceiling and of the raw disk: the median of the per-round ratios (round k against round k of the other, which
ran beside it) with their min and max, and the load average around each workload. Absolute
numbers on a shared machine are noise; these shares are the result. Each server row also
gives the CPU per operation of the server (``/proc``, from the end of its set-up to its
tear-down) and of the client (this process, boto3), median and min-max over rounds: steadier
than wall time when other work shares the cores, and they show whose work a gap is.

Workloads, in MB/s of object bytes: PUT and GET of 4 KiB objects (one client thread, and PUT
from 8 concurrent threads, where concurrent PUTs can share fsyncs), and of 64 MiB objects:
a single PutObject, a GetObject, and ``upload_fileobj`` with boto3's default
``TransferConfig`` (multipart in 8 MiB parts, 10 threads), which is what a user's large upload
does. Then the erasure codec's encode / healthy decode / degraded decode speed.

``--adapter-overhead`` runs only the row of #20 instead: ``blocks API over S3``
(``S3BlobStore``) beside boto3's own client, 4 KiB PUT and GET one at a time, on the null
server (see ``adapter_overhead``).

Peers are installed only for the benchmark:

    .venv/bin/pip install boto3 "moto[server]"
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._adapters import (
    ADAPTER_ROW,
    add_overhead_arguments,
    overhead_workload,
    run_overhead,
)
from benchmarks._processes import track_process
from benchmarks.harness import (
    Contender,
    Result,
    Skip,
    Workload,
    progress,
    ratio_spread,
    run_benchmark,
    write_table,
)

REQUIREMENTS = ["boto3", "moto[server]"]
ACCESS, SECRET = "BENCHKEY", "bench-secret"
MIB = 1024 * 1024
START_TIMEOUT_S = 30.0
CEILING = "ceiling (null server)"
BARE_CEILING = "ceiling (bare null server)"
RAW_DISK = "raw disk (write + fsync)"
RAW_DISK_READ = "raw disk (read)"
DISK_WRITE_BYTES_MAX = 4 * MIB


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--small-ops", type=int, default=300, help="4 KiB operations per round")
    parser.add_argument("--large-ops", type=int, default=3, help="large operations per round")
    parser.add_argument("--large-mib", type=int, default=64, help="size of a large object")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-dir", default=None, help="where our servers store (temp dir)")
    parser.add_argument(
        "--before-src",
        default=None,
        help="a src/ directory of another blocks tree to run as 'blocks@before'",
    )
    parser.add_argument("--only", default=None, help="run only workloads containing this text")
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        help="leave out a contender (repeatable), e.g. --without moto for a quick run",
    )
    add_overhead_arguments(parser)


def _boto3_client(endpoint: str) -> Any:
    try:
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]
    except ImportError as error:
        raise Skip("boto3 is not installed (pip install boto3)") from error
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"}, retries={"max_attempts": 1}, max_pool_connections=16
        ),
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _ServerProcess:
    """A server in its own process on a free port, stopped with SIGINT (then killed)."""

    def __init__(self, argv: Callable[[int], list[str]], env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = track_process(
            subprocess.Popen(
                argv(self.port),
                env={**os.environ, **(env or {})},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise Skip(f"server exited at start: {argv(self.port)[:4]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise Skip("server did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def _blocks_server(root: Path, fsync: bool, src: str | None = None) -> Callable[[], Any]:
    def start() -> Any:
        directory = Path(tempfile.mkdtemp(prefix="blob-bench-", dir=root))

        def argv(port: int) -> list[str]:
            command = [sys.executable, "-m", "blocks", "blob", "serve", "--data-dir"]
            command += [str(directory), "--listen", f"127.0.0.1:{port}"]
            command += ["--access-key", ACCESS, "--secret-key", SECRET]
            return command + ([] if fsync else ["--no-fsync"])

        server = _ServerProcess(argv, {"PYTHONPATH": src} if src else None)
        server.directory = directory  # type: ignore[attr-defined]
        return server

    return start


def _moto_server() -> Any:
    try:
        import moto.server  # noqa: F401
    except ImportError as error:
        raise Skip('moto is not installed (pip install "moto[server]")') from error
    return _ServerProcess(lambda port: [sys.executable, "-m", "moto.server", "-p", str(port)])


def _null_server(bare: bool = False) -> Any:
    root = str(Path(__file__).resolve().parents[1])  # where ``benchmarks`` is importable
    argv = [sys.executable, "-m", "benchmarks.null_s3"]
    flags = ["--bare"] if bare else []
    return _ServerProcess(lambda port: [*argv, str(port), *flags], {"PYTHONPATH": root})


def _bare_null_server() -> Any:
    return _null_server(bare=True)


CpuLog = dict[str, list[tuple[float, float]]]
"""Per contender, each round's (server, client) CPU seconds per operation."""


def _process_cpu_s(process: subprocess.Popen[bytes]) -> float | None:
    """User + system CPU seconds of a running process (``/proc``), or None where unknown."""
    try:
        with open(f"/proc/{process.pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _contender(
    name: str,
    start: Callable[[], Any],
    size: int,
    operation: str,
    concurrency: int,
    cpu_log: CpuLog | None = None,
) -> Contender:
    # Every PUT sends different bytes (a sliding window over random data), so that chunk
    # deduplication cannot skip the writes: we measure storing, not recognising.
    pool = os.urandom(size + 8 * 4096)
    prefill = 16 if size <= MIB else 2

    def fresh(index: int) -> bytes:
        offset = 8 * (index % 4096) + 1
        return pool[offset : offset + size]

    def setup() -> dict[str, Any]:
        server = start()
        client = _boto3_client(server.endpoint)
        client.create_bucket(Bucket="bench")
        for index in range(prefill):
            client.put_object(Bucket="bench", Key=f"obj-{index}", Body=pool[:size])
        cpu = (_process_cpu_s(server.process), time.process_time())
        return {"server": server, "client": client, "ops": itertools.count(), "cpu": cpu}

    def one(state: dict[str, Any], index: int) -> None:
        next(state["ops"])
        client = state["client"]
        if operation == "put":
            client.put_object(Bucket="bench", Key=f"obj-{index % 16}", Body=fresh(index))
        elif operation == "upload":
            from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]

            body = io.BytesIO(fresh(index))
            client.upload_fileobj(body, "bench", f"mp-{index % 4}", Config=TransferConfig())
        else:
            body = client.get_object(Bucket="bench", Key=f"obj-{index % prefill}")["Body"].read()
            assert len(body) == size

    async def concurrent(state: dict[str, Any], index: int) -> None:
        await asyncio.to_thread(one, state, index)

    def teardown(state: dict[str, Any]) -> None:
        ops = next(state["ops"])
        server_before, client_before = state["cpu"]
        server_after = _process_cpu_s(state["server"].process)
        if cpu_log is not None and ops and server_before is not None and server_after:
            client_s = time.process_time() - client_before
            cpu_log.setdefault(name, []).append(
                ((server_after - server_before) / ops, client_s / ops)
            )
        state["server"].stop()
        directory = getattr(state["server"], "directory", None)
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    op = concurrent if concurrency > 1 else one
    return Contender(name, setup, op, teardown, items_per_op=size)


def _raw_disk_contender(root: Path, size: int, concurrency: int) -> Contender:
    """Write ``size`` bytes to a file under ``root`` and fsync it: a durable PUT's ceiling."""
    block = os.urandom(min(size, DISK_WRITE_BYTES_MAX))

    def setup() -> Path:
        return Path(tempfile.mkdtemp(prefix="raw-disk-", dir=root))

    def one(directory: Path, index: int) -> None:
        with open(directory / f"object-{index % 16}", "wb") as handle:
            left = size
            while left > 0:
                left -= handle.write(block[: min(left, len(block))])
            handle.flush()
            os.fsync(handle.fileno())

    async def concurrent(directory: Path, index: int) -> None:
        await asyncio.to_thread(one, directory, index)

    def teardown(directory: Path) -> None:
        shutil.rmtree(directory, ignore_errors=True)

    op = concurrent if concurrency > 1 else one
    return Contender(RAW_DISK, setup, op, teardown, items_per_op=size)


def _raw_disk_read_contender(root: Path, size: int, concurrency: int) -> Contender:
    """Read one of the files written (and fsynced) at set-up: a GET's ceiling on this disk,
    with the page cache as warm as the servers' (they too read what was just written)."""
    files = 16 if size <= MIB else 2  # as many as the servers' prefilled objects
    block = os.urandom(min(size, DISK_WRITE_BYTES_MAX))

    def setup() -> Path:
        directory = Path(tempfile.mkdtemp(prefix="raw-disk-", dir=root))
        for index in range(files):
            with open(directory / f"object-{index}", "wb") as handle:
                left = size
                while left > 0:
                    left -= handle.write(block[: min(left, len(block))])
                handle.flush()
                os.fsync(handle.fileno())
        return directory

    def one(directory: Path, index: int) -> None:
        with open(directory / f"object-{index % files}", "rb", buffering=0) as handle:
            read = 0
            while piece := handle.read(DISK_WRITE_BYTES_MAX):
                read += len(piece)
        assert read == size

    async def concurrent(directory: Path, index: int) -> None:
        await asyncio.to_thread(one, directory, index)

    def teardown(directory: Path) -> None:
        shutil.rmtree(directory, ignore_errors=True)

    op = concurrent if concurrency > 1 else one
    return Contender(RAW_DISK_READ, setup, op, teardown, items_per_op=size)


def _erasure_rows(total_mib: int = 256) -> list[list[str]]:
    from blocks.blob.storage.erasure import ReedSolomonCodec, ReplicationCodec

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


def _workloads(args: argparse.Namespace) -> list[tuple[str, int, str, int, int]]:
    """(name, object size, operation, concurrency, ops per round)."""
    large, small_ops, large_ops = args.large_mib * MIB, args.small_ops, args.large_ops
    label = f"{args.large_mib}m"
    return [
        ("put-4k", 4096, "put", 1, small_ops),
        ("put-4k-x8", 4096, "put", 8, small_ops),
        ("get-4k", 4096, "get", 1, small_ops),
        (f"put-{label}", large, "put", 1, large_ops),
        (f"upload-{label}-multipart", large, "upload", 1, large_ops),
        (f"get-{label}", large, "get", 1, large_ops),
    ]


def _contenders(
    args: argparse.Namespace,
    root: Path,
    size: int,
    operation: str,
    concurrency: int,
    cpu_log: CpuLog | None = None,
) -> list[Contender]:
    shape = (size, operation, concurrency, cpu_log)
    contenders = [_contender("moto", _moto_server, *shape)]
    contenders.append(_contender(CEILING, _null_server, *shape))
    if size <= MIB:  # the headers it leaves out weigh on small requests only
        contenders.append(_contender(BARE_CEILING, _bare_null_server, *shape))
    if args.before_src:
        start = _blocks_server(root, True, str(Path(args.before_src).resolve()))
        contenders.append(_contender("blocks@before", start, *shape))
    for name, fsync in (("blocks", True), ("blocks-nofsync", False)):
        start = _blocks_server(root, fsync)
        contenders.append(_contender(name, start, *shape))
    if operation in ("put", "upload"):
        contenders.append(_raw_disk_contender(root, size, concurrency))
    elif size > MIB:  # reading 4 KiB from the page cache says nothing about the disk
        contenders.append(_raw_disk_read_contender(root, size, concurrency))
    left_out = set(getattr(args, "without", None) or ())
    return [c for c in contenders if c.name not in left_out]


def _share(result: Result, reference: Result | None, percent: bool) -> str:
    """``result``'s median per-round ratio to ``reference`` with its min-max, or ""."""
    if reference is None or reference.skipped is not None or result.skipped is not None:
        return ""
    spread = ratio_spread(result.round_throughputs, reference.round_throughputs)
    if spread is None:
        return ""
    _, low, median, high = spread
    if percent:
        return f"{median:.0%} ({low:.0%}-{high:.0%})"
    return f"x{median:.2f} (x{low:.2f}-x{high:.2f})"


def _cpu_ms(rounds: list[tuple[float, float]] | None, which: int) -> str:
    """The median (min-max) over rounds of server (0) or client (1) CPU ms per operation."""
    if not rounds:
        return ""
    values = sorted(round_[which] * 1e3 for round_ in rounds)
    median = values[len(values) // 2]
    return f"{median:.2f} ({values[0]:.2f}-{values[-1]:.2f})"


def _summary_rows(
    name: str, results: list[Result], load: str, cpu_log: CpuLog | None = None
) -> list[list[str]]:
    """The summary's rows of one workload: MB/s, p50, each row's ratios with spread, and the
    CPU per operation of the server and of the client (boto3, this process)."""
    by_name = {result.contender: result for result in results}
    moto, ceiling = by_name.get("moto"), by_name.get(CEILING)
    bare = by_name.get(BARE_CEILING)
    disk = by_name.get(RAW_DISK) or by_name.get(RAW_DISK_READ)
    rows = []
    for result in results:
        if result.skipped:
            rows.append([name, result.contender, "skipped", *[""] * 7, load])
            continue
        cpu = (cpu_log or {}).get(result.contender)
        rows.append(
            [
                name,
                result.contender,
                f"{result.throughput / 1e6:,.1f}",
                f"{result.p50_ms:.2f}",
                _share(result, moto, percent=False),
                _share(result, ceiling, percent=True),
                _share(result, bare, percent=True),
                _share(result, disk, percent=True),
                _cpu_ms(cpu, 0),
                _cpu_ms(cpu, 1),
                load,
            ]
        )
    return rows


SUMMARY_COLUMNS = [
    "workload",
    "contender",
    "MB/s",
    "p50 ms",
    "vs moto",
    "of the ceiling",
    "of the bare ceiling",
    "of the raw disk",
    "server CPU ms/op",
    "client CPU ms/op",
    "load",
]


def main(args: argparse.Namespace) -> int:
    if getattr(args, "adapter_overhead", False):
        return adapter_overhead(args)
    root = Path(args.data_dir or tempfile.mkdtemp(prefix="blob-bench-root-"))
    root.mkdir(parents=True, exist_ok=True)
    summary: list[list[str]] = []
    try:
        for name, size, operation, concurrency, ops in _workloads(args):
            if args.only and args.only not in name:
                continue
            cpu_log: CpuLog = {}
            contenders = _contenders(args, root, size, operation, concurrency, cpu_log)
            names = [c.name for c in contenders]
            baseline = "moto" if "moto" in names else names[0]
            workload = Workload(name, ops=ops, concurrency=concurrency, rounds=args.rounds)
            load_before = os.getloadavg()[0]
            results = run_benchmark(f"blob-{name}", [workload], contenders, baseline, args.out)
            load = f"{load_before:.1f}-{os.getloadavg()[0]:.1f}"
            summary += _summary_rows(name, results, load, cpu_log)
        progress("[blob] measuring erasure coding")
        table = write_table(
            Path(args.out) / "blob",
            "summary",
            SUMMARY_COLUMNS,
            summary,
        )
        print(
            f"\n## blob: MB/s of object bytes ({args.rounds} interleaved rounds; ratios: median "
            f"of the per-round ratios (min-max); CPU ms/op: median (min-max) over rounds, the "
            f"server's from /proc, the client's (boto3) this process's; load: 1-minute load "
            f"average before-after, {os.cpu_count()} CPUs)\n\n{table}"
        )
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


# -- the S3 adapter (#20): S3BlobStore beside boto3 on the same server -------------------------

OVERHEAD_OBJECT_BYTES = 4096
OVERHEAD_KEYS = 16
OVERHEAD_SHRINK = 4  # a request is about a millisecond here: a quarter of the others' ops


def _shrunk(workload: Workload) -> Workload:
    ops = max(1, workload.ops // OVERHEAD_SHRINK)
    return dataclasses.replace(workload, ops=ops, warmup_ops=ops // 5)


def _s3_overhead_contender(name: str, adapter: bool, operation: str) -> Contender:
    """boto3's own ``put_object``/``get_object`` (the baseline) or ``S3BlobStore``'s, against
    the null S3 server (kept across rounds): a server that answers at once leaves the
    clients' own costs in view, where moto's or ours would hide them under the server's."""
    body = os.urandom(OVERHEAD_OBJECT_BYTES)

    def setup() -> dict[str, Any]:
        server = _null_server()
        try:
            client = _boto3_client(server.endpoint)
            client.create_bucket(Bucket="bench")
            for index in range(OVERHEAD_KEYS):
                client.put_object(Bucket="bench", Key=f"obj-{index}", Body=body)
            store = None
            if adapter:
                from blocks.blob.adapters.s3 import S3BlobStore

                store = S3BlobStore(server.endpoint, access_key=ACCESS, secret_key=SECRET)
        except BaseException:
            server.stop()
            raise
        return {"server": server, "client": client, "store": store}

    def one(state: dict[str, Any], index: int) -> None:
        key = f"obj-{index % OVERHEAD_KEYS}"
        store, client = state["store"], state["client"]
        if operation == "put":
            if store is not None:
                store.put_object("bench", key, body)
            else:
                client.put_object(Bucket="bench", Key=key, Body=body)
        elif store is not None:
            _, data = store.get_object("bench", key)
            assert len(data) == OVERHEAD_OBJECT_BYTES
        else:
            data = client.get_object(Bucket="bench", Key=key)["Body"].read()
            assert len(data) == OVERHEAD_OBJECT_BYTES

    def teardown(state: dict[str, Any]) -> None:
        if state["store"] is not None:
            state["store"].close()
        state["server"].stop()

    return Contender(name, setup, one, teardown)


def adapter_overhead(args: argparse.Namespace) -> int:
    """PUT and GET of 4 KiB objects, one at a time: boto3's client against ``S3BlobStore``
    (names, metadata and checksums checked first; every error mapped) on the null server."""
    adapter = ADAPTER_ROW.format(engine="S3")
    for operation in ("put", "get"):
        run_overhead(
            f"blob-adapter-{operation}-4k",
            _shrunk(overhead_workload(f"{operation}-4k", args)),
            [
                _s3_overhead_contender("boto3", False, operation),
                _s3_overhead_contender(adapter, True, operation),
            ],
            "boto3",
            args.out,
        )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.blob")
    add_arguments(parser)
    parser.add_argument("--out", default="results")
    raise SystemExit(main(parser.parse_args()))
