"""The search benchmark's process part: one process against a coordinator over 4 shard processes.

Three contenders hold the same corpus and answer the same batches of queries:

* ``in-process``: our ``FaissIndex`` in the benchmark's own process (what "single process"
  means in the goal: no RPC at all);
* ``one serve process``: ``blocks search serve`` holding everything, called over gRPC;
* ``coordinator + 4 shards``: four ``serve`` processes holding a quarter each (routed by the
  coordinator's ring) and a coordinator ``serve --remote-shards``, called over gRPC;
* ``coordinator + 4 shards, shared IVF`` (IVF settings only): the same, with the shards
  started ``--kind shared-ivf``: one set of centroids for the collection (the single index's
  ``nlist``, trained once by the coordinator on the same sample), each query's lists chosen
  once by the coordinator, each shard scanning only those lists of its quarter
  (``blocks.search.coarse``), at the single index's ``nprobe``.

Each setting is a faiss factory string for the whole index and one for a shard, with the
search parameter each takes: ``Flat`` (exact, where the merged answer must equal brute force)
and IVF, where a shard holding a quarter of the vectors gets a quarter of the lists and, to
start with, a quarter of the probes (rounded up), so a query scans about as many vectors in all
as the unsharded index does; the shards' probes are then raised one at a time until the
cluster's recall is at least the single index's (``_match_recall``), so both are timed at the
same recall. Recall@10 of every contender is measured against the float64 truth, and
for ``Flat`` the rows whose id set differs from the truth are counted.

Shard processes run with ``OMP_NUM_THREADS`` = ``shard_threads`` (default 1): four shards on
two cores each spinning two OpenMP threads would fight over the cores. The single process keeps
faiss's default (every core). Processes are started once and kept across rounds
(``Lifecycle.KEPT``): loading the corpus through gRPC every round would cost more than the
rounds, and an idle ``serve`` sleeps in its event loop between calls.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._processes import stop_process, track_process
from benchmarks.harness import (
    Contender,
    Lifecycle,
    Workload,
    progress,
    ratio_spread,
    run_benchmark,
    write_table,
)

__all__ = ["ClusterSetting", "cluster_part", "cluster_settings"]

START_TIMEOUT_S = 120.0
CALL_TIMEOUT_S = 600.0
SEND_BYTES_MAX = 2_000_000  # per AddVectors call, under gRPC's 4 MB message limit
TRAIN_BYTES_MAX = 12_000_000  # the one Train call's sample, under the 16 MB message limit
SHARDS = 4
CPU_ROUNDS = 5  # interleaved rounds of the CPU-time accounting
CPU_BATCHES = 4  # batches per contender per round (a clock tick is 10 ms)
IN_PROCESS = "in-process"
ONE_SERVE = "one serve process"
CLUSTER = f"coordinator + {SHARDS} shards"
SHARED = f"coordinator + {SHARDS} shards, shared IVF"


@dataclass(frozen=True, slots=True)
class ClusterSetting:
    """An index setting: the whole index's factory string and parameter, and a shard's."""

    label: str
    spec: str
    shard_spec: str
    nprobe: int | None = None
    shard_nprobe: int | None = None
    shared_spec: str | None = None  # the shared-IVF cluster's shard spec (same nlist, nprobe)

    @property
    def trained(self) -> bool:
        return self.spec.startswith("IVF")


def cluster_settings(nlist: int, nprobe: int) -> list[ClusterSetting]:
    """Exact, and IVF at ``nprobe`` of ``nlist`` lists (shards: a quarter of each)."""
    shard_nlist = max(1, nlist // SHARDS)
    shard_nprobe = max(1, -(-nprobe // SHARDS))
    return [
        ClusterSetting("Flat (exact)", "Flat", "Flat"),
        ClusterSetting(
            f"IVF{nlist} nprobe={nprobe} (shards IVF{shard_nlist})",
            f"IVF{nlist},Flat",
            f"IVF{shard_nlist},Flat",
            nprobe,
            shard_nprobe,
            shared_spec=f"IVF{nlist}",
        ),
    ]


def _serve(
    argv: list[str], threads: int | None, src: str | None = None
) -> tuple[subprocess.Popen[str], str]:
    """Start ``blocks search serve ARGV`` and return it with the address it announced;
    ``src``: a ``src`` directory to run instead of the installed tree (an A/B twin)."""
    command = [sys.executable, "-m", "blocks", "search", "serve", "--listen", "127.0.0.1:0"]
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    process = track_process(
        subprocess.Popen([*command, *argv, "--json"], stdout=subprocess.PIPE, text=True, env=env)
    )
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if line.lstrip().startswith("{"):
            return process, str(json.loads(line)["address"])
    stop_process(process)
    raise RuntimeError(f"serve {argv} did not announce its address")


def _load(target: Any, corpus: np.ndarray, train: np.ndarray | None) -> None:
    if train is not None:
        target.train(train)
    step = max(1, SEND_BYTES_MAX // (4 * corpus.shape[1]))
    for first in range(0, len(corpus), step):
        target.add(np.arange(first, min(first + step, len(corpus))), corpus[first : first + step])


@dataclass(slots=True)
class _Started:
    search: Callable[[np.ndarray], np.ndarray]
    processes: list[subprocess.Popen[str]]
    closers: list[Callable[[], None]]
    nprobe: int | None = None  # the cluster's per-shard nprobe, raised to match recall


def _in_process(setting: ClusterSetting, corpus: np.ndarray, metric: str, train: Any) -> _Started:
    from blocks.search import FaissIndex

    index = FaissIndex(corpus.shape[1], setting.spec, metric)
    _load(index, corpus, train if setting.trained else None)

    def search(queries: np.ndarray) -> np.ndarray:
        ids: np.ndarray = index.search(queries, 10, nprobe=setting.nprobe).ids
        return ids

    return _Started(search, [], [])


def _common(corpus: np.ndarray, metric: str, kind: str = "faiss") -> list[str]:
    return ["--dim", str(corpus.shape[1]), "--metric", metric, "--kind", kind]


def _one_serve(setting: ClusterSetting, corpus: np.ndarray, metric: str, train: Any) -> _Started:
    from blocks.search.client import SearchClient

    process, address = _serve([*_common(corpus, metric), "--spec", setting.spec], None)
    client = SearchClient(address, timeout_s=CALL_TIMEOUT_S)
    _load(client, corpus, train if setting.trained else None)

    def search(queries: np.ndarray) -> np.ndarray:
        ids: np.ndarray = client.search(queries, 10, nprobe=setting.nprobe).ids
        return ids

    return _Started(search, [process], [client.close])


def _cluster(
    setting: ClusterSetting,
    corpus: np.ndarray,
    metric: str,
    train: Any,
    shard_threads: int,
    *,
    shared: bool = False,
    coarse_threads: int | None = None,
    pipeline: tuple[int, int] | None = None,
    src: str | None = None,
    data_path: bool = False,
) -> _Started:
    """Four shards and a coordinator: each shard its own IVF (``shard_spec``, its nprobe
    matched to the single index's recall), or with ``shared`` one IVF over all shards
    (``shared_spec``: the single index's lists, trained once by the coordinator, probed at
    the single index's nprobe, each query's lists chosen once by the coordinator); ``src``:
    every process of the cluster runs that source tree (``_serve``); ``data_path``: the
    shards serve searches on their TCP data port (``serve --data-path``)."""
    from blocks.search.client import SearchClient

    processes, shards = [], []
    if shared:
        assert setting.shared_spec is not None
        shard_argv = [*_common(corpus, metric, "shared-ivf"), "--spec", setting.shared_spec]
    else:
        shard_argv = [*_common(corpus, metric), "--spec", setting.shard_spec]
    if data_path:
        shard_argv.append("--data-path")
    for number in range(SHARDS):
        process, address = _serve(shard_argv, shard_threads, src)
        processes.append(process)
        shards.append(f"s{number}={address}")
    coordinator, address = _serve(
        [
            "--dim", str(corpus.shape[1]), "--metric", metric,
            "--remote-shards", ",".join(shards), "--deadline-ms", str(int(CALL_TIMEOUT_S * 1000)),
            *(["--coarse-threads", str(coarse_threads)] if coarse_threads is not None else []),
            *(
                ["--pipeline-rows", str(pipeline[0]), "--pipeline-depth", str(pipeline[1])]
                if pipeline is not None
                else []
            ),
        ],
        None,
        src,
    )  # fmt: skip
    processes.append(coordinator)
    client = SearchClient(address, timeout_s=CALL_TIMEOUT_S)
    _load(client, corpus, train if setting.trained else None)

    def search(queries: np.ndarray) -> np.ndarray:
        result = client.search(queries, 10, nprobe=started.nprobe)
        assert not result.partial, "a complete cluster answered partially"
        ids: np.ndarray = result.ids
        return ids

    nprobe = setting.nprobe if shared else setting.shard_nprobe
    started = _Started(search, processes, [client.close], nprobe)
    return started


def _pipeline_label(rows: int, depth: int) -> str:
    if depth == 1:
        return "batches sent whole"
    return f"chunks of {rows} rows, {depth} in flight"


def _parse_pipelines(text: str) -> list[tuple[int, int]]:
    """``"256x3,500x2,1"`` -> ``[(256, 3), (500, 2), (1, 1)]`` (ROWSxDEPTH; ``1``: whole)."""
    pipelines = []
    for item in text.split(","):
        rows, _, depth = item.strip().partition("x")
        pipelines.append((int(rows), int(depth)) if depth else (1, 1))
    return pipelines


def _match_recall(
    cluster: _Started,
    setting: ClusterSetting,
    queries: np.ndarray,
    truth: np.ndarray,
    target: float,
    recall: Callable[[np.ndarray, np.ndarray], float],
) -> np.ndarray:
    """Raise the shards' nprobe from a quarter of the single index's until the cluster's recall
    is at least ``target`` (the single index's), so the two are timed at the same recall;
    stops at the single index's nprobe. Returns the cluster's answers at the chosen nprobe."""
    ids = cluster.search(queries)
    if setting.shard_nprobe is None or setting.nprobe is None:
        return ids
    while recall(ids, truth) < target and (cluster.nprobe or 0) < setting.nprobe:
        cluster.nprobe = (cluster.nprobe or 0) + 1
        ids = cluster.search(queries)
    return ids


def _stop(started: _Started) -> None:
    for close in started.closers:
        close()
    for process in started.processes:
        stop_process(process)


def _identity(started: _Started) -> _Started:
    return started


def _search_op(queries: np.ndarray, started: _Started, op: int) -> np.ndarray:
    return started.search(queries)


def _process_cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of processes so far (``/proc/<pid>/stat``, clock ticks)."""
    ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _cpu_ms_per_batch(
    started: dict[str, _Started], queries: np.ndarray, rounds: int, batches: int
) -> dict[str, float]:
    """CPU time one batch costs all the processes a contender uses (this process, whose
    threads call or run the index, plus its servers), median over interleaved rounds of
    ``batches`` batches. Unlike wall time this hardly moves with other work on the cores: on
    saturated cores QPS is at best cores / CPU time per query, whatever the scheduling."""
    samples: dict[str, list[float]] = {label: [] for label in started}
    for _ in range(rounds):
        for label, contender in started.items():
            pids = [process.pid for process in contender.processes]
            before = time.process_time() + _process_cpu_s(pids)
            for _ in range(batches):
                contender.search(queries)
            spent = time.process_time() + _process_cpu_s(pids) - before
            samples[label].append(1000 * spent / batches)
    return {label: float(np.median(values)) for label, values in samples.items()}


def _differs(ids: np.ndarray, truth: np.ndarray) -> int:
    return sum(set(a.tolist()) != set(b.tolist()) for a, b in zip(ids, truth, strict=True))


def cluster_part(
    name: str,
    out: Path,
    corpus: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    *,
    metric: str,
    settings: list[ClusterSetting],
    rounds: int,
    ops: int = 3,
    shard_threads: int = 1,
    recall: Callable[[np.ndarray, np.ndarray], float],
    coarse_threads_ab: int | None = None,
    pipeline_ab: list[tuple[int, int]] | None = None,
    before_src: str | None = None,
    data_path_ab: bool = False,
) -> list[dict[str, Any]]:
    """Per setting: recall and QPS of the three contenders, interleaved round by round, with
    each round's QPS divided by the in-process contender's in the same round; ``before_src``:
    also a shared-IVF cluster whose processes run that source tree (``@before``);
    ``data_path_ab``: also one whose shards serve searches on their TCP data port."""
    # One Train call carries the sample: under gRPC's 16 MB message cap (24k rows at 128-d).
    # Every contender trains on the same rows, so their IVF lists are alike.
    train = corpus[: min(len(corpus), TRAIN_BYTES_MAX // (4 * corpus.shape[1]))]
    summary: list[dict[str, Any]] = []
    for setting in settings:
        builders = {
            IN_PROCESS: partial(_in_process, setting, corpus, metric, train),
            ONE_SERVE: partial(_one_serve, setting, corpus, metric, train),
            CLUSTER: partial(_cluster, setting, corpus, metric, train, shard_threads),
        }
        if setting.shared_spec is not None:
            shared = partial(_cluster, setting, corpus, metric, train, shard_threads, shared=True)
            builders[SHARED] = shared
            if coarse_threads_ab is not None:  # an A/B of the coordinator's coarse threads
                builders[f"{SHARED}, coarse on {coarse_threads_ab} threads"] = partial(
                    shared, coarse_threads=coarse_threads_ab
                )
            if data_path_ab:  # the shards' searches over the core TCP transport
                builders[f"{SHARED}, TCP data path"] = partial(shared, data_path=True)
            if before_src is not None:  # the same cluster, another version of the code
                builders[f"{SHARED} @before"] = partial(shared, src=before_src)
            for chunk_rows, depth in pipeline_ab or []:  # A/B of the coordinator's pipeline
                builders[f"{SHARED}, {_pipeline_label(chunk_rows, depth)}"] = partial(
                    shared, pipeline=(chunk_rows, depth)
                )
        started = {label: build() for label, build in builders.items()}
        progress(f"{name} processes: {setting.label} loaded")
        try:
            answers = {label: s.search(queries) for label, s in started.items() if label != CLUSTER}
            shared_nprobe = started[SHARED].nprobe if SHARED in started else None
            target = recall(answers[IN_PROCESS], truth)
            answers[CLUSTER] = _match_recall(
                started[CLUSTER], setting, queries, truth, target, recall
            )
            shard_nprobe = started[CLUSTER].nprobe
            contenders = [
                Contender(
                    label,
                    setup=partial(_identity, s),
                    op=partial(_search_op, queries),
                    items_per_op=len(queries),
                )
                for label, s in started.items()
            ]
            results = run_benchmark(
                f"{name}-processes",
                [
                    Workload(
                        setting.spec, ops=ops, warmup_ops=1, rounds=rounds, lifecycle=Lifecycle.KEPT
                    )
                ],
                contenders,
                baseline=IN_PROCESS,
                out_dir=out,
            )
            cpu_ms = _cpu_ms_per_batch(started, queries, CPU_ROUNDS, CPU_BATCHES)
        finally:
            for s in started.values():
                _stop(s)
        serve_rates = next(r.round_throughputs for r in results if r.contender == ONE_SERVE)
        for result in results:
            ids = answers[result.contender]
            vs_serve = ratio_spread(result.round_throughputs, serve_rates)
            summary.append(
                {
                    "setting": setting.label
                    + (
                        f", shards nprobe={shard_nprobe}"
                        if shard_nprobe and result.contender == CLUSTER
                        else f", shared IVF nprobe={shared_nprobe}"
                        if result.contender.startswith(SHARED)
                        else ""
                    ),
                    "contender": result.contender,
                    "recall@10": recall(ids, truth),
                    "rows differing from float64 truth": _differs(ids, truth),
                    "rows differing from in-process": _differs(ids, answers[IN_PROCESS]),
                    "qps": result.throughput,
                    "ratio": result.ratio,
                    "ratio_min": result.ratio_min,
                    "ratio_max": result.ratio_max,
                    "skipped": result.skipped,
                    "vs_serve": None if vs_serve is None else vs_serve[1:],
                    "cpu_ms_per_batch": cpu_ms[result.contender],
                    "cpu_ratio": cpu_ms[IN_PROCESS] / cpu_ms[result.contender],
                }
            )
    rows = [
        (
            row["setting"],
            row["contender"],
            f"{row['recall@10']:.4f}",
            f"{row['rows differing from float64 truth']}/{len(queries)}",
            f"{row['rows differing from in-process']}/{len(queries)}",
            f"{row['qps']:,.0f}" if row["skipped"] is None else f"skipped: {row['skipped']}",
            f"x{row['ratio']:.2f}" if row["ratio"] is not None else "n/a",
            f"x{row['ratio_min'] or 0:.2f}-x{row['ratio_max'] or 0:.2f}",
            "n/a"
            if row["vs_serve"] is None
            else "x{1:.2f} (x{0:.2f}-x{2:.2f})".format(*row["vs_serve"]),
            f"{row['cpu_ms_per_batch']:.1f}",
            f"x{row['cpu_ratio']:.2f}",
        )
        for row in summary
    ]
    table = write_table(
        out,
        f"{name}-processes",
        [
            "index",
            "contender",
            "recall@10",
            "rows != truth",
            "rows != in-process",
            "QPS (median round)",
            "vs in-process",
            "spread",
            "vs one serve process (spread)",
            f"CPU ms / {len(queries):,}-query batch (all processes)",
            "in-process CPU / its CPU",
        ],
        rows,
    )
    load = os.getloadavg()
    print(f"\n## {name}: one process vs {CLUSTER} (load now {load[0]:.2f})\n\n{table}")
    return summary


def main(argv: list[str] | None = None) -> int:
    """The process part alone, at a given IVF operating point (no curve sweep first):

    python -m benchmarks._search_cluster --n 200000 --nprobe 6 --rounds 5 --out results
    """
    import argparse

    from benchmarks.search import brute_force_truth, recall_at_k
    from blocks.search.synthetic import clustered_vectors

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--n", type=int, default=200_000, help="clustered vectors")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--nprobe", type=int, default=6, help="the single index's nprobe")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ops", type=int, default=3, help="query batches per round")
    parser.add_argument("--shard-threads", type=int, default=1)
    parser.add_argument("--no-flat", dest="flat", action="store_false", help="IVF only")
    parser.add_argument(
        "--ab-coarse-threads",
        type=int,
        default=None,
        help="also a shared-IVF cluster whose coordinator's coarse search uses N threads",
    )
    parser.add_argument(
        "--ab-pipeline",
        type=_parse_pipelines,
        default=None,
        help="also shared-IVF clusters whose coordinator pipelines a batch as ROWSxDEPTH "
        "(e.g. 1,128x3,500x2; 1: batches sent whole)",
    )
    parser.add_argument(
        "--before-src",
        default=None,
        help="also a shared-IVF cluster whose serve processes run this src directory "
        "(an A/B of two versions of the code, interleaved in the same rounds)",
    )
    parser.add_argument(
        "--ab-data-path",
        action="store_true",
        help="also a shared-IVF cluster whose shards serve searches on a TCP data port "
        "(serve --data-path)",
    )
    parser.add_argument("--out", default="results")
    args = parser.parse_args(argv)
    corpus, queries = clustered_vectors(
        args.n, args.dim, clusters=256, seed=1, queries=args.queries
    )
    nlist = max(16, int(4 * args.n**0.5)) // 16 * 16  # as benchmarks.search picks it
    settings = cluster_settings(nlist, args.nprobe)
    if not args.flat:
        settings = [setting for setting in settings if setting.trained]
    cluster_part(
        "clustered",
        Path(args.out) / "search",
        corpus,
        queries,
        brute_force_truth(corpus, queries, "l2", 10),
        metric="l2",
        settings=settings,
        rounds=args.rounds,
        ops=args.ops,
        shard_threads=args.shard_threads,
        recall=recall_at_k,
        coarse_threads_ab=args.ab_coarse_threads,
        pipeline_ab=args.ab_pipeline,
        before_src=None if args.before_src is None else str(Path(args.before_src).resolve()),
        data_path_ab=args.ab_data_path,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
