"""Filtered search that returns ``k`` results whenever ``k`` stored ids pass the filter.

Theory of operation. Every index applies a filter *during* its search (see
``blocks.search.metadata``): ``ExactIndex`` masks the corpus before its top-k, so its rows are
always complete. Approximate faiss indexes consult an ``IDSelector`` while they scan, but they
only scan part of the data: IVF probes ``nprobe`` lists, HNSW keeps ``efSearch`` candidates,
and when few ids pass the filter those may hold fewer than ``k`` of them. ``search_filtered``
detects such short rows (fewer results than ``min(k, allowed ids stored)``) and searches those
rows again with a wider scan, ``GROWTH`` times wider each time, at most ``RETRIES_MAX`` times:
IVF up to ``nprobe = nlist`` (every list: complete), HNSW up to ``EF_SEARCH_MAX``. A row still
short after that is returned short and counted in ``FilteredResult.short_rows``; the caller
sees it and can fall back to exact search over the allowed ids. A shared-IVF shard
(``blocks.search.shared_ivf``) is widened the same way, by its own coarse search over the
same centroids, after the scan of the lists its coordinator chose came back short (``first``).

Rejected alternatives: post-filtering a plain top-k (short rows as soon as the filter is
selective), and a fixed over-fetch factor (either too little for selective filters or wasted
work for broad ones); the retry pays only for the rows that came back short.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from blocks.search.api import Filter, SearchResult, VectorIndex
from blocks.search.vectors import allowed_mask

__all__ = ["EF_SEARCH_MAX", "GROWTH", "RETRIES_MAX", "FilteredResult", "search_filtered"]

RETRIES_MAX = 4
GROWTH = 4
EF_SEARCH_MAX = 16_384


@dataclass(frozen=True, slots=True)
class FilteredResult:
    """The result, how many retries widened the scan, and rows still short after them."""

    result: SearchResult
    retries: int
    short_rows: int


def _stored_ids(index: Any) -> Any:
    ids = getattr(index, "ids", None)
    return None if ids is None else ids()


def search_filtered(
    index: VectorIndex,
    queries: Any,
    k: int,
    filter: Filter,
    *,
    nprobe: int | None = None,
    ef_search: int | None = None,
    first: SearchResult | None = None,
) -> FilteredResult:
    """``index.search(queries, k, filter)`` (or ``first``, that search's result already made
    with ``nprobe`` lists), with short rows of a faiss or shared-IVF index searched again
    wider (see the module docstring). Raises what ``index.search`` raises."""
    from blocks.search.faiss_index import FaissIndex
    from blocks.search.shared_ivf import SharedIVFIndex

    if not isinstance(index, FaissIndex | SharedIVFIndex):
        return FilteredResult(index.search(queries, k, filter) if first is None else first, 0, 0)
    probe = index.nprobe if nprobe is None else nprobe
    ef = getattr(index, "ef_search", 0) if ef_search is None else ef_search
    if first is None:
        first = index.search(queries, k, filter, nprobe=probe, ef_search=ef)
    result = first
    ids, distances = result.ids.copy(), result.distances.copy()
    if ((ids >= 0).sum(axis=1) == k).all():
        return FilteredResult(result, 0, 0)  # every row full: nothing to count or widen
    wanted = min(k, int(allowed_mask(filter, _stored_ids(index)).sum()))
    rows = np.asarray(queries)
    retries = 0
    while retries < RETRIES_MAX:
        short = np.flatnonzero((ids >= 0).sum(axis=1) < wanted)
        if len(short) == 0:
            break
        nlist = index.nlist
        if nlist is not None and probe < nlist:
            probe = min(nlist, probe * GROWTH)
        elif getattr(index, "is_hnsw", False) and ef < EF_SEARCH_MAX:
            ef = min(EF_SEARCH_MAX, ef * GROWTH)
        else:
            break  # nothing left to widen (a flat index is complete already)
        again = index.search(rows[short], k, filter, nprobe=probe, ef_search=ef)
        ids[short], distances[short] = again.ids, again.distances
        retries += 1
    short_rows = int(((ids >= 0).sum(axis=1) < wanted).sum())
    return FilteredResult(SearchResult(ids=ids, distances=distances), retries, short_rows)
