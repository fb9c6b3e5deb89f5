"""The search benchmark's peers other than raw faiss: hnswlib, usearch and LanceDB.

Each builder takes the corpus once and returns ``(parameter, search)`` pairs, where
``search(queries)`` gives the ``(len(queries), k)`` int64 ids (-1 where fewer than ``k`` came
back). An ``ImportError`` means the peer is not installed; the caller turns it into a skipped
row with the reason.

Graph peers get the graph our ``HNSW32`` (faiss ``index_factory``) builds: 32 links per node
(64 on the bottom layer) and a construction beam of 40, so a curve differs by implementation,
not by a cheaper or dearer graph. LanceDB is used as a prototype would use it: a table of
``(id, vector)`` rows searched with no index (a flat scan), then the same table with an
``IVF_FLAT`` index of as many partitions as our IVF has lists, swept over ``nprobes``.
"""

from __future__ import annotations

import atexit
import importlib
import shutil
import tempfile
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

__all__ = [
    "GRAPH_DEGREE",
    "GRAPH_EF_CONSTRUCTION",
    "hnswlib_points",
    "lancedb_points",
    "usearch_points",
]

Search = Callable[[np.ndarray], np.ndarray]
GRAPH_DEGREE = 32  # links per node above the bottom layer, as faiss's "HNSW32"
GRAPH_EF_CONSTRUCTION = 40  # faiss's default efConstruction


def hnswlib_points(
    corpus: np.ndarray, metric: str, k: int, efs: Sequence[int]
) -> list[tuple[str, Search]]:
    """hnswlib at M=32, ef_construction=40; one point per ``ef``."""
    import hnswlib

    index = hnswlib.Index(
        space={"l2": "l2", "ip": "ip", "cosine": "cosine"}[metric], dim=corpus.shape[1]
    )
    index.init_index(
        max_elements=len(corpus), M=GRAPH_DEGREE, ef_construction=GRAPH_EF_CONSTRUCTION
    )
    index.add_items(corpus, np.arange(len(corpus)))

    def search(ef: int, queries: np.ndarray) -> np.ndarray:
        index.set_ef(max(ef, k))  # a property of the index: points run one at a time
        labels: np.ndarray = index.knn_query(queries, k=k)[0]
        return labels.astype(np.int64)

    return [(f"ef={ef}", partial(search, ef)) for ef in efs]


def usearch_points(
    corpus: np.ndarray, metric: str, k: int, efs: Sequence[int]
) -> list[tuple[str, Search]]:
    """usearch at connectivity 32, expansion_add 40 (as hnswlib); one point per ``ef``."""
    # usearch ships no type hints and is not in the project's mypy list: imported by name.
    index_class = importlib.import_module("usearch.index").Index
    index = index_class(
        ndim=corpus.shape[1],
        metric={"l2": "l2sq", "ip": "ip", "cosine": "cos"}[metric],
        connectivity=GRAPH_DEGREE,
        expansion_add=GRAPH_EF_CONSTRUCTION,
    )
    index.add(np.arange(len(corpus)), corpus)

    def search(ef: int, queries: np.ndarray) -> np.ndarray:
        index.expansion_search = ef
        matches = index.search(queries, k)
        keys = np.asarray(matches.keys, dtype=np.int64).reshape(len(queries), k)
        counts = np.asarray(matches.counts).reshape(len(queries), 1)
        keys[np.arange(k)[None, :] >= counts] = -1  # unfilled slots hold garbage keys
        return keys

    return [(f"ef={ef}", partial(search, ef)) for ef in efs]


def rows_by_query(query_index: np.ndarray, ids: np.ndarray, rows: int, k: int) -> np.ndarray:
    """LanceDB's long answer (one row per hit, tagged with its query's position, best first
    within a query) as a ``(rows, k)`` array padded with -1."""
    out = np.full((rows, k), -1, dtype=np.int64)
    if len(ids) == 0:
        return out
    order = np.argsort(query_index, kind="stable")
    query_index, ids = query_index[order], ids[order]
    first = np.searchsorted(query_index, query_index, side="left")
    rank = np.arange(len(ids)) - first
    keep = rank < k
    out[query_index[keep], rank[keep]] = ids[keep]
    return out


def lancedb_points(
    corpus: np.ndarray, metric: str, k: int, partitions: int, nprobes: Sequence[int]
) -> list[tuple[str, str, Search]]:
    """LanceDB (embedded, a temporary directory): ``(contender, parameter, search)`` for its
    flat scan and for each ``nprobes`` of an ``IVF_FLAT`` index over the same table."""
    # Imported by name: neither is in the project's locked test set nor its mypy list.
    lancedb = importlib.import_module("lancedb")
    pa = importlib.import_module("pyarrow")
    ivf_flat = importlib.import_module("lancedb.index").IvfFlat

    directory = tempfile.mkdtemp(prefix="blocks-bench-lancedb-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    distance = {"l2": "l2", "ip": "dot", "cosine": "cosine"}[metric]
    dim = corpus.shape[1]
    data = pa.table(
        {
            "id": pa.array(np.arange(len(corpus), dtype=np.int64)),
            "vector": pa.FixedSizeListArray.from_arrays(
                pa.array(np.ascontiguousarray(corpus, dtype=np.float32).ravel()), dim
            ),
        }
    )
    table: Any = lancedb.connect(directory).create_table("vectors", data)

    def run(query: Any, rows: int) -> np.ndarray:
        answer = query.to_arrow()
        ids = answer["id"].to_numpy()
        if "query_index" not in answer.column_names:  # one query: no tag
            return rows_by_query(np.zeros(len(ids), dtype=np.int64), ids, rows, k)
        return rows_by_query(answer["query_index"].to_numpy(), ids, rows, k)

    def flat(queries: np.ndarray) -> np.ndarray:
        query = table.search(queries).distance_type(distance).bypass_vector_index()
        return run(query.limit(k).select(["id", "_distance"]), len(queries))

    table.create_index("vector", config=ivf_flat(distance_type=distance, num_partitions=partitions))

    def ivf(nprobe: int, queries: np.ndarray) -> np.ndarray:
        query = table.search(queries).distance_type(distance).nprobes(nprobe)
        return run(query.limit(k).select(["id", "_distance"]), len(queries))

    return [("LanceDB (no index)", "-", flat)] + [
        (f"LanceDB IVF_FLAT{partitions}", f"nprobes={n}", partial(ivf, n))
        for n in nprobes
        if n <= partitions
    ]
