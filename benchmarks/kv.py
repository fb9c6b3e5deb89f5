"""kv benchmark, embedded part: Bitcask per sync policy versus sqlite3 (WAL) and LMDB.

Every contender stores 100-byte values under 16-byte keys in a fresh temporary directory and
runs the same workloads in the same process, rounds interleaved by the harness:

* ``put``: one writer, one key per operation (durable contenders fsync each one);
* ``get``: one reader over keys written during set-up;
* ``put-8-threads``: eight writer threads (a pool of eight, eight calls in flight), the case group
  commit is for: concurrent durable writers sharing fsyncs.

Durable contenders: ``bitcask-always``, ``bitcask-batch``, ``sqlite-wal-full``
(``synchronous=FULL``) and ``lmdb-sync``. Non-durable ones: ``bitcask-never``,
``sqlite-wal-normal`` (``synchronous=NORMAL``: durable against process crashes only) and
``lmdb-nosync``. The baseline is ``sqlite-wal-full``.

Networked part (``--networked``, on by default): the same asyncio load generator, with
``--concurrency`` requests in flight, against

* ``blocks-1-node``: one ``blocks kv serve`` process (N1/R1/W1), through the Python client on
  the TCP data path;
* ``blocks-3-nodes``: three processes, N3/R2/W2, the client routing to a home node;
* ``redis``: a local ``redis-server`` (Debian's package, started here with persistence off)
  through redis-py's asyncio client. The baseline.

Both blocks contenders run ``--sync never`` so that, like Redis's default, no write waits for
an fsync. Beside them, the durable twins: ``blocks-1-node-sync-always`` (every write fsynced
before its reply), ``blocks-3-nodes-sync-always`` (each replica's copy fsynced before it
counts) and ``redis-aof-always`` (``appendonly yes``, ``appendfsync always``).
After each networked workload the run prints every contender's *servers' CPU per operation*
(``/proc`` user+system time of its server processes from the end of the preload to its
close, over the round's operations; median and min-max of the rounds) and, for each
``@before`` twin, the median of the per-round ratios: the servers' cost apart from the load
generator, which shares one process with every contender.
Values are 100 bytes; ``get`` reads keys written during set-up. Every server is started for
its own rounds only (the harness sets it up before each round and stops it after).

Comparing two versions of the code (``--before-src DIR``, a ``src`` directory of another
checkout, e.g. ``git archive HEAD src | tar -x -C /tmp/before``): every blocks contender gets
a twin named ``<name>@before`` running that code, interleaved round by round with the rest
(embedded: the other tree's ``Bitcask`` class, loaded under the same module names in this
process; networked: the node processes run with ``PYTHONPATH=DIR``, the client is this
tree's). ``--only a,b`` keeps the named contenders (and their twins), ``--workloads`` the named
workloads, for short runs while developing.

Peers: sqlite3 ships with Python; LMDB needs ``pip install lmdb`` (skipped when absent).
Redis needs ``apt-get install -y redis-server`` and ``pip install redis``; the set-up tries
both and skips Redis, with the reason, when they cannot be installed.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import importlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from benchmarks._adapters import (
    ADAPTER_ROW,
    add_overhead_arguments,
    overhead_workload,
    redis_contender,
    run_overhead,
)
from benchmarks._processes import track_process
from benchmarks.harness import (
    ROUNDS_DEFAULT,
    Contender,
    Result,
    Skip,
    Workload,
    progress,
    ratio_spread,
    run_benchmark,
)
from blocks.kv import Bitcask

REQUIREMENTS = ["lmdb", "redis"]
APT_PACKAGES = ["redis-server"]

VALUE = b"v" * 100
PRELOAD_KEYS = 2_000


def _key(index: int) -> bytes:
    return b"key-%012d" % index


class _Sqlite:
    def __init__(self, synchronous: str) -> None:
        self.directory = tempfile.mkdtemp(prefix="bench-sqlite-")
        self.connection = sqlite3.connect(
            Path(self.directory) / "kv.db", check_same_thread=False, isolation_level=None
        )
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute(f"PRAGMA synchronous={synchronous}")
        self.connection.execute("CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB NOT NULL)")
        self.lock = threading.Lock()  # one connection; sqlite serialises writers anyway

    def put(self, key: bytes, value: bytes) -> None:
        with self.lock:
            self.connection.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))

    def get(self, key: bytes) -> bytes | None:
        with self.lock:
            row = self.connection.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def close(self) -> None:
        self.connection.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class _Lmdb:
    def __init__(self, sync: bool) -> None:
        try:
            import lmdb
        except ImportError:
            raise Skip("lmdb is not installed (pip install lmdb)") from None
        self.directory = tempfile.mkdtemp(prefix="bench-lmdb-")
        self.env = lmdb.open(self.directory, map_size=1 << 30, sync=sync, metasync=sync)

    def put(self, key: bytes, value: bytes) -> None:
        with self.env.begin(write=True) as txn:
            txn.put(key, value)

    def get(self, key: bytes) -> bytes | None:
        with self.env.begin() as txn:
            value = txn.get(key)
        return None if value is None else bytes(value)

    def close(self) -> None:
        self.env.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class _Bitcask:
    def __init__(self, sync: Any, bitcask: Any = Bitcask) -> None:
        self.directory = tempfile.mkdtemp(prefix="bench-bitcask-")
        self.store = bitcask.open(self.directory, sync=sync)

    def put(self, key: bytes, value: bytes) -> None:
        self.store.put(key, value)

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.store.get(key)
        return value

    def close(self) -> None:
        self.store.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def _load_before(src: str, module: str, attribute: str) -> Any:
    """``module.attribute`` from the ``blocks`` tree under ``src``, this tree left in place.

    The other tree is imported under the same names with this tree's ``blocks`` modules set
    aside, then they are put back: the returned object keeps its own modules alive.
    """
    mine = [name for name in sys.modules if name == "blocks" or name.startswith("blocks.")]
    saved = {name: sys.modules.pop(name) for name in mine}
    sys.path.insert(0, src)
    try:
        return getattr(importlib.import_module(module), attribute)
    finally:
        sys.path.remove(src)
        for name in [n for n in sys.modules if n == "blocks" or n.startswith("blocks.")]:
            del sys.modules[name]
        sys.modules.update(saved)


def _factories(before_src: str | None = None) -> dict[str, Any]:
    bitcasks: dict[str, Any] = {"": Bitcask}
    if before_src is not None:
        bitcasks["@before"] = _load_before(before_src, "blocks.kv", "Bitcask")
    factories: dict[str, Any] = {}
    for suffix, bitcask in bitcasks.items():
        for sync in ("always", "batch", "never"):
            factories[f"bitcask-{sync}{suffix}"] = lambda sync=sync, bitcask=bitcask: _Bitcask(
                sync, bitcask
            )
    return {
        **factories,
        "sqlite-wal-full": lambda: _Sqlite("FULL"),
        "sqlite-wal-normal": lambda: _Sqlite("NORMAL"),
        "lmdb-sync": lambda: _Lmdb(sync=True),
        "lmdb-nosync": lambda: _Lmdb(sync=False),
    }


def _preloaded(factory: Any) -> Any:
    def setup() -> Any:
        store = factory()
        for index in range(PRELOAD_KEYS):
            store.put(_key(index), VALUE)
        return store

    return setup


def _put(store: Any, index: int) -> None:
    store.put(_key(PRELOAD_KEYS + index), VALUE)


def _get(store: Any, index: int) -> None:
    assert store.get(_key(index % PRELOAD_KEYS)) == VALUE


WRITER_THREADS = 8
_WRITERS = concurrent.futures.ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="kv-writer")
"""Eight threads for ``put-8-threads``: ``asyncio.to_thread``'s default pool has only
``cpu_count + 4`` (six on two cores), which would cap the writers below eight."""


async def _threaded_put(store: Any, index: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(_WRITERS, store.put, _key(PRELOAD_KEYS + index), VALUE)


def _close(store: Any) -> None:
    store.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ops", type=int, default=2_000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=ROUNDS_DEFAULT)
    parser.add_argument("--concurrency", type=int, default=16, help="networked: in flight")
    parser.add_argument("--no-embedded", dest="embedded", action="store_false")
    parser.add_argument("--no-networked", dest="networked", action="store_false")
    parser.add_argument("--before-src", help="a src directory to compare against (<name>@before)")
    parser.add_argument("--only", help="comma-separated contenders to keep (and their twins)")
    parser.add_argument("--workloads", help="comma-separated workloads to run (e.g. get,put)")
    add_overhead_arguments(parser)


def main(args: argparse.Namespace) -> int:
    out = getattr(args, "out", "results")
    if getattr(args, "adapter_overhead", False):
        return adapter_overhead(args)
    selection = _Selection(
        getattr(args, "before_src", None),
        getattr(args, "only", None),
        getattr(args, "workloads", None),
    )
    if getattr(args, "embedded", True):
        _embedded(args.ops, args.rounds, out, selection)
    if getattr(args, "networked", True):
        _networked(args.ops, args.rounds, getattr(args, "concurrency", 16), out, selection)
    return 0


class _Selection:
    """What ``--before-src``, ``--only`` and ``--workloads`` keep."""

    def __init__(self, before_src: str | None, only: str | None, workloads: str | None) -> None:
        self.before_src = before_src
        self.only = None if not only else {name.strip() for name in only.split(",")}
        self.workloads = None if not workloads else {w.strip() for w in workloads.split(",")}

    def contenders(self, factories: dict[str, Any], baseline: str) -> dict[str, Any]:
        if self.only is None:
            return factories
        keep = self.only | {baseline}
        return {n: f for n, f in factories.items() if n.removesuffix("@before") in keep}

    def runs(self, workload: str) -> bool:
        return self.workloads is None or workload in self.workloads


def _embedded(ops: int, rounds: int, out: str, selection: _Selection | None = None) -> None:
    selection = selection or _Selection(None, None, None)
    baseline = "sqlite-wal-full"
    factories = selection.contenders(_factories(selection.before_src), baseline)
    for workload, op in (("put", _put), ("get", _get), ("put-8-threads", _threaded_put)):
        if not selection.runs(workload):
            continue
        progress(f"kv: workload {workload}")
        concurrency = 8 if workload == "put-8-threads" else 1
        contenders = [
            Contender(name, setup=_preloaded(factory), op=op, teardown=_close)
            for name, factory in factories.items()
        ]
        results = run_benchmark(
            f"kv-{workload}",
            [Workload(workload, ops=ops, concurrency=concurrency, rounds=rounds)],
            contenders,
            baseline=baseline,
            out_dir=out,
        )
        peer = "lmdb-nosync" if workload == "get" else "sqlite-wal-full"
        _pair_ratios(results, [("bitcask-never", peer), ("bitcask-always", peer)])


def _pair_ratios(results: list[Result], pairs: list[tuple[str, str]]) -> None:
    """Print ``a / b`` per round (min/median/max) for the issue's pairs and every
    ``<name>@before`` twin: the comparisons a run is usually made for."""
    by_name = {r.contender: r for r in results if r.skipped is None}
    pairs = pairs + [(n.removesuffix("@before"), n) for n in by_name if n.endswith("@before")]
    for a, b in pairs:
        if a in by_name and b in by_name:
            spread = ratio_spread(by_name[a].round_throughputs, by_name[b].round_throughputs)
            if spread is not None:
                _, low, median, high = spread
                workload = by_name[a].workload
                progress(f"{workload}: {a} / {b} = {median:.2f} (min {low:.2f}, max {high:.2f})")


# -- networked: blocks nodes and Redis behind the same asyncio load generator ------------------

NET_PRELOAD_KEYS = 1_000


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


SERVER_CPU_US: dict[str, list[float]] = {}
"""Per contender, one value a round: the servers' CPU microseconds per operation (below)."""


def _processes_cpu_s(pids: list[int]) -> float | None:
    """User plus system CPU seconds of ``pids`` so far (``/proc``); None where unreadable."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    try:
        for pid in pids:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None
    return total / ticks


class _ServerCpu:
    """The CPU a contender's server processes spend from the end of its set-up (the preload)
    to its close, per operation of the round: the servers' cost of an operation, apart from
    the load generator's, which shares this process with every contender."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.ops = 0
        self._start: float | None = None

    def begin(self, pids: list[int]) -> None:
        self.ops = 0
        self._start = _processes_cpu_s(pids)

    def end(self, pids: list[int]) -> None:
        now = _processes_cpu_s(pids)
        if self.label and self._start is not None and now is not None and self.ops:
            SERVER_CPU_US.setdefault(self.label, []).append((now - self._start) / self.ops * 1e6)


class _BlocksCluster:
    """``nodes`` ``blocks kv serve`` processes and a connected client."""

    def __init__(
        self, nodes: int, sync: str = "never", src: str | None = None, label: str = ""
    ) -> None:
        self.cpu = _ServerCpu(label)
        self.directory = tempfile.mkdtemp(prefix="bench-kv-net-")
        environment = None if src is None else {**os.environ, "PYTHONPATH": src}
        ports = _free_ports(nodes)
        names = [f"n{i + 1}" for i in range(nodes)]
        self.addresses = [f"127.0.0.1:{p}" for p in ports]
        quorum = ["1", "1", "1"] if nodes == 1 else ["3", "2", "2"]
        self.processes: list[subprocess.Popen[str]] = []
        for name, address in zip(names, self.addresses, strict=True):
            peers = [
                f"--peer={n}={a}" for n, a in zip(names, self.addresses, strict=True) if n != name
            ]
            command = [
                sys.executable, "-m", "blocks", "kv", "serve", "--node-id", name,
                "--listen", address, "--data-dir", f"{self.directory}/{name}", "--sync", sync,
                "--replicas", quorum[0], "--read-quorum", quorum[1], "--write-quorum", quorum[2],
                "--json", *peers,
            ]  # fmt: skip
            process = track_process(
                subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=environment)
            )
            self.processes.append(process)
            assert process.stdout is not None
            process.stdout.readline()
        self.client: Any = None

    async def connect(self) -> None:
        from blocks.kv.client import connect

        self.client = await connect(self.addresses, timeout_s=10.0)
        for _ in range(100):  # until every node sees the others
            reports = await self.client.status()
            if all(set(r.get("members", {}).values()) == {"healthy"} for r in reports):
                break
            await asyncio.sleep(0.1)

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    async def put(self, key: bytes, value: bytes) -> None:
        self.cpu.ops += 1
        await self.client.put(key, value)

    async def get(self, key: bytes) -> bytes | None:
        self.cpu.ops += 1
        value: bytes | None = (await self.client.get(key)).value
        return value

    async def close(self) -> None:
        self.cpu.end(self.pids)
        if self.client is not None:
            await self.client.close()
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


def _ensure_redis() -> None:
    """Install redis-server (apt) and redis-py (pip) if missing; ``Skip`` when impossible."""
    if shutil.which("redis-server") is None and shutil.which("apt-get") is not None:
        progress("kv: installing redis-server with apt-get")
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "redis-server"], capture_output=True, timeout=600
        )
    if shutil.which("redis-server") is None:
        raise Skip("redis-server is not installed (apt-get install redis-server)")
    try:
        importlib.import_module("redis.asyncio")
    except ImportError:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "redis"],
            capture_output=True,
            timeout=600,
        )
        try:
            importlib.import_module("redis.asyncio")
        except ImportError:
            raise Skip("redis-py is not installed (pip install redis)") from None


class _Redis:
    def __init__(self, appendfsync: str | None = None, label: str = "") -> None:
        _ensure_redis()
        self.cpu = _ServerCpu(label)
        persistence = ["--appendonly", "no"]
        if appendfsync is not None:
            persistence = ["--appendonly", "yes", "--appendfsync", appendfsync]
        self.directory = tempfile.mkdtemp(prefix="bench-kv-redis-")
        redis_asyncio: Any = importlib.import_module("redis.asyncio")

        self.port = _free_ports(1)[0]
        self.process = track_process(subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--dir", self.directory, *persistence],
            stdout=subprocess.DEVNULL,
        ))  # fmt: skip
        self.client = redis_asyncio.Redis(host="127.0.0.1", port=self.port)

    async def connect(self) -> None:
        for _ in range(100):
            try:
                await self.client.ping()
                return
            except Exception:
                await asyncio.sleep(0.05)
        raise Skip("redis-server did not start")

    @property
    def pids(self) -> list[int]:
        return [self.process.pid]

    async def put(self, key: bytes, value: bytes) -> None:
        self.cpu.ops += 1
        await self.client.set(key, value)

    async def get(self, key: bytes) -> bytes | None:
        self.cpu.ops += 1
        value: bytes | None = await self.client.get(key)
        return value

    async def close(self) -> None:
        self.cpu.end(self.pids)
        await self.client.aclose()
        self.process.terminate()
        self.process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


def _net_setup(factory: Any) -> Any:
    async def setup() -> Any:
        target = factory()
        await target.connect()
        for index in range(NET_PRELOAD_KEYS):
            await target.put(_key(index), VALUE)
        target.cpu.begin(target.pids)
        return target

    return setup


async def _net_put(target: Any, index: int) -> None:
    await target.put(_key(NET_PRELOAD_KEYS + index), VALUE)


async def _net_get(target: Any, index: int) -> None:
    assert await target.get(_key(index % NET_PRELOAD_KEYS)) == VALUE


async def _net_close(target: Any) -> None:
    await target.close()


def _networked(
    ops: int, rounds: int, concurrency: int, out: str, selection: _Selection | None = None
) -> None:
    selection = selection or _Selection(None, None, None)
    factories: dict[str, Any] = {
        "redis": lambda: _Redis(label="redis"),
        "blocks-1-node": lambda: _BlocksCluster(1, label="blocks-1-node"),
        "blocks-3-nodes": lambda: _BlocksCluster(3, label="blocks-3-nodes"),
        "redis-aof-always": lambda: _Redis(appendfsync="always", label="redis-aof-always"),
        "blocks-1-node-sync-always": lambda: _BlocksCluster(
            1, sync="always", label="blocks-1-node-sync-always"
        ),
        "blocks-3-nodes-sync-always": lambda: _BlocksCluster(
            3, sync="always", label="blocks-3-nodes-sync-always"
        ),
    }
    if selection.before_src is not None:
        src = selection.before_src
        factories["blocks-1-node@before"] = lambda: _BlocksCluster(
            1, src=src, label="blocks-1-node@before"
        )
        factories["blocks-3-nodes@before"] = lambda: _BlocksCluster(
            3, src=src, label="blocks-3-nodes@before"
        )
        factories["blocks-1-node-sync-always@before"] = lambda: _BlocksCluster(
            1, sync="always", src=src, label="blocks-1-node-sync-always@before"
        )
        factories["blocks-3-nodes-sync-always@before"] = lambda: _BlocksCluster(
            3, sync="always", src=src, label="blocks-3-nodes-sync-always@before"
        )
    factories = selection.contenders(factories, "redis")
    for workload, op in (("put", _net_put), ("get", _net_get)):
        if not selection.runs(workload):
            continue
        progress(f"kv: networked workload {workload}, {concurrency} in flight")
        SERVER_CPU_US.clear()
        contenders = [
            Contender(name, setup=_net_setup(factory), op=op, teardown=_net_close)
            for name, factory in factories.items()
        ]
        results = run_benchmark(
            f"kv-net-{workload}",
            [Workload(workload, ops=ops, concurrency=concurrency, rounds=rounds)],
            contenders,
            baseline="redis",
            out_dir=out,
        )
        _pair_ratios(results, [])
        _cpu_report(workload)


def _cpu_report(workload: str) -> None:
    """Print each contender's servers' CPU per operation (median, min-max over its rounds)
    and, for every ``<name>@before`` twin, the median of the per-round ratios (the rounds are
    interleaved, so the i-th values of two contenders come from the same round)."""
    for name, values in SERVER_CPU_US.items():
        ordered = sorted(values)
        median = ordered[len(ordered) // 2]
        progress(
            f"{workload}: {name} servers' CPU per op {median:.0f} us "
            f"(min {ordered[0]:.0f}, max {ordered[-1]:.0f}, {len(values)} rounds)"
        )
    for name, before in SERVER_CPU_US.items():
        after = SERVER_CPU_US.get(name.removesuffix("@before"))
        if not name.endswith("@before") or not after or len(after) != len(before):
            continue
        ratios = sorted(a / b for a, b in zip(after, before, strict=True) if b > 0)
        if ratios:
            progress(
                f"{workload}: servers' CPU per op {name.removesuffix('@before')} / {name} = "
                f"{ratios[len(ratios) // 2]:.2f} (min {ratios[0]:.2f}, max {ratios[-1]:.2f})"
            )


# -- the Redis adapter (#20): RedisKeyValueStore beside redis-py on the same server ------------

ADAPTER_KEYS = 1_000
ADAPTER_VALUE = b"v" * 100


def _raw_redis(url: str) -> Any:
    import redis

    client = redis.Redis.from_url(url)
    client.mset({_key(i): ADAPTER_VALUE for i in range(ADAPTER_KEYS)})
    return client


def _adapter_store(url: str) -> Any:
    from blocks.kv.adapters.redis import RedisKeyValueStore

    store = RedisKeyValueStore.open(url)
    store.put_many([(_key(i), ADAPTER_VALUE) for i in range(ADAPTER_KEYS)])
    return store


def adapter_overhead(args: argparse.Namespace) -> int:
    """``put`` and ``get`` of 100-byte values over 1,000 keys, one at a time: redis-py's
    ``SET``/``GET`` (what a user writes by hand) against ``RedisKeyValueStore`` (a Lua
    script per put, for the version; ``HGET`` per get)."""
    adapter = ADAPTER_ROW.format(engine="redis")
    shapes = (
        ("put", lambda c, i: c.set(_key(i % ADAPTER_KEYS), ADAPTER_VALUE), _adapter_put),
        ("get", lambda c, i: c.get(_key(i % ADAPTER_KEYS)), _adapter_get),
    )
    for workload, raw_op, adapter_op in shapes:
        run_overhead(
            f"kv-adapter-{workload}",
            overhead_workload(workload, args),
            [
                redis_contender("redis-py", _raw_redis, raw_op),
                redis_contender(adapter, _adapter_store, adapter_op),
            ],
            "redis-py",
            getattr(args, "out", "results"),
        )
    return 0


def _adapter_put(store: Any, index: int) -> None:
    store.put(_key(index % ADAPTER_KEYS), ADAPTER_VALUE)


def _adapter_get(store: Any, index: int) -> None:
    store.get(_key(index % ADAPTER_KEYS))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kv")
    add_arguments(parser)
    parser.add_argument("--out", default="results")
    raise SystemExit(main(parser.parse_args()))
