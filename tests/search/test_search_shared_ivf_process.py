"""A shared IVF across real processes: ``serve --kind shared-ivf`` shards and a coordinator.

Three shards with data directories; the coordinator trains the centroids once and assigns
each query's lists. Checked against faiss's own ``IVF<nlist>,Flat`` over every vector,
trained on the same sample: the same ids at every ``nprobe``. Then a shard is killed with
SIGKILL (answers flagged partial, naming it) and restarted on its data directory, the
coordinator is restarted (it reads the centroids back from the shards), and a fourth, empty
shard is added and rebalanced into (it is given the centroids first): the answers stay the
single index's throughout. The shards serve their searches on the TCP data path
(``serve --data-path``, ``blocks.search.datapath``), so the kill and the restart on a new data
port are also the data path's.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from blocks.search import FaissIndex
from blocks.search.coordinator import connect_shards
from blocks.search.rebalance import rebalance

SERVE = [sys.executable, "-m", "blocks", "search", "serve", "--listen", "127.0.0.1:0", "--json"]
DIM, NLIST, COUNT = 16, 24, 2_400


def launch(data_dir: Path, port: int = 0) -> subprocess.Popen[str]:
    argv = [*SERVE, "--dim", str(DIM), "--metric", "l2", "--kind", "shared-ivf"]
    argv += ["--spec", f"IVF{NLIST}", "--data-dir", str(data_dir), "--data-path"]
    if port:
        argv[argv.index("127.0.0.1:0")] = f"127.0.0.1:{port}"
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def address_of(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.kill()
        raise AssertionError(
            f"node did not start: {process.stderr.read() if process.stderr else ''}"
        )
    address: str = json.loads(line)["address"]
    return address


@pytest.mark.process
def test_shared_ivf_shards_answer_as_one_index_through_crash_restart_and_a_new_shard(
    tmp_path: Path,
) -> None:
    processes = [launch(tmp_path / f"s{n}") for n in range(4)]  # three now, one added later
    try:
        addresses = [address_of(process) for process in processes]
        spec = ",".join(f"shard-{n}={addresses[n]}" for n in range(3))
        rng = np.random.default_rng(23)
        centres = rng.normal(size=(30, DIM)) * 3
        vectors = centres[rng.integers(0, 30, COUNT)] + rng.normal(size=(COUNT, DIM))
        vectors = vectors.astype(np.float32)
        queries = vectors[rng.integers(0, COUNT, 20)] + 0.1
        single = FaissIndex(DIM, f"IVF{NLIST},Flat", "l2")
        single.train(vectors[:1_000])
        single.add(np.arange(COUNT), vectors)

        def same_as_single(coordinator: object, **options: object) -> None:
            for nprobe in (1, 4):
                got = coordinator.search(queries, 10, nprobe=nprobe, **options)  # type: ignore[attr-defined]
                want = single.search(queries, 10, nprobe=nprobe)
                assert got.ids.tolist() == want.ids.tolist(), nprobe

        coordinator = connect_shards(spec, timeout_ms=60_000, deadline_ms=60_000)
        assert coordinator.nlist == NLIST and coordinator.coarse is None
        coordinator.train(vectors[:1_000])
        coordinator.add(np.arange(COUNT), vectors)
        same_as_single(coordinator)

        processes[1].send_signal(signal.SIGKILL)  # acknowledged writes are in its log
        processes[1].wait(timeout=30)
        partial = coordinator.search(queries, 10, nprobe=4, allow_partial=True)
        assert partial.partial and partial.missing_shard_names == ("shard-1",)
        host_port = addresses[1].rpartition(":")[2]
        processes[1] = launch(tmp_path / "s1", int(host_port))
        address_of(processes[1])
        coordinator.close()

        restarted = connect_shards(spec, timeout_ms=60_000, deadline_ms=60_000)
        assert restarted.coarse is not None and restarted.coarse.nlist == NLIST
        assert len(restarted) == COUNT
        same_as_single(restarted)
        restarted.close()

        grown = f"{spec},shard-3={addresses[3]}"
        report = rebalance(spec, grown, page_rows=256)
        assert sum(report.vectors.values()) > 0
        after = connect_shards(grown, timeout_ms=60_000, deadline_ms=60_000)
        assert len(after) == COUNT
        same_as_single(after)
        after.close()
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
