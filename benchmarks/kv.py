"""kv benchmark, embedded part: Bitcask per sync policy versus sqlite3 (WAL) and LMDB.

Every contender stores 100-byte values under 16-byte keys in a fresh temporary directory and
runs the same workloads in the same process, rounds interleaved by the harness:

* ``put``: one writer, one key per operation (durable contenders fsync each one);
* ``get``: one reader over keys written during set-up;
* ``put-8-threads``: eight writer threads (through ``asyncio.to_thread``), the case group
  commit is for: concurrent durable writers sharing fsyncs.

Durable contenders: ``bitcask-always``, ``bitcask-batch``, ``sqlite-wal-full``
(``synchronous=FULL``) and ``lmdb-sync``. Non-durable ones: ``bitcask-never``,
``sqlite-wal-normal`` (``synchronous=NORMAL``: durable against process crashes only) and
``lmdb-nosync``. The baseline is ``sqlite-wal-full``.

Peers: sqlite3 ships with Python; LMDB needs ``pip install lmdb`` (skipped when absent).
The networked part of issue 3 (one node and a 3-node cluster versus Redis) waits for the
kv service.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import threading
from pathlib import Path
from typing import Any

from benchmarks.harness import Contender, Skip, Workload, progress, run_benchmark
from blocks.kv import Bitcask

REQUIREMENTS = ["lmdb"]

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
    def __init__(self, sync: Any) -> None:
        self.directory = tempfile.mkdtemp(prefix="bench-bitcask-")
        self.store = Bitcask.open(self.directory, sync=sync)

    def put(self, key: bytes, value: bytes) -> None:
        self.store.put(key, value)

    def get(self, key: bytes) -> bytes | None:
        return self.store.get(key)

    def close(self) -> None:
        self.store.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def _factories() -> dict[str, Any]:
    return {
        "bitcask-always": lambda: _Bitcask("always"),
        "bitcask-batch": lambda: _Bitcask("batch"),
        "bitcask-never": lambda: _Bitcask("never"),
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


async def _threaded_put(store: Any, index: int) -> None:
    import asyncio

    await asyncio.to_thread(store.put, _key(PRELOAD_KEYS + index), VALUE)


def _close(store: Any) -> None:
    store.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ops", type=int, default=2_000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=3)


def main(args: argparse.Namespace) -> int:
    ops, rounds = args.ops, args.rounds
    out = getattr(args, "out", "results")
    factories = _factories()
    baseline = "sqlite-wal-full"
    for workload, op in (("put", _put), ("get", _get), ("put-8-threads", _threaded_put)):
        progress(f"kv: workload {workload}")
        concurrency = 8 if workload == "put-8-threads" else 1
        contenders = [
            Contender(name, setup=_preloaded(factory), op=op, teardown=_close)
            for name, factory in factories.items()
        ]
        run_benchmark(
            f"kv-{workload}",
            [Workload(workload, ops=ops, concurrency=concurrency, rounds=rounds)],
            contenders,
            baseline=baseline,
            out_dir=out,
        )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kv")
    add_arguments(parser)
    parser.add_argument("--out", default="results")
    raise SystemExit(main(parser.parse_args()))
