"""Tiled exact top-k in torch: the kernel behind ``ExactIndex``.

Theory of operation. Scores are "higher is better" for every metric, so one selection routine
serves all three:

* inner product and cosine (rows already unit length): ``score = q.c``;
* squared L2: ``|q - c|^2 = |q|^2 - 2 q.c + |c|^2``; ``|q|^2`` is the same for every candidate of
  one query, so ranking uses ``score = q.c - |c|^2 / 2`` (a GEMM plus a per-column bias) and the
  distance is recovered at the end as ``max(0, |q|^2 - 2 score)``.

*Tiling.* Queries go in blocks of ``query_tile`` rows and the corpus in tiles of
``corpus_tile`` rows (a tile whose width is not a multiple of 64 is split in two so the main
part divides into slabs), so the largest temporary is one ``query_tile x corpus_tile`` score matrix
whatever the sizes. Each tile yields ``k`` candidates per query into a pool of
``(tiles_per_merge + 1) * k`` columns; when the pool is full it is merged down to the running
best ``k`` (slot 0), so merging costs a sort of a few hundred entries every few tiles.

*Scores.* On the CPU in float32 the GEMM and the L2 bias run as one oneDNN matmul
(``blocks.search.gemm``): about twice the throughput of the MKL path behind ``torch.mm`` on
the machines we measured. Elsewhere (CUDA, float16/bfloat16) ``addmm``/``matmul`` are used.

*Selection without sorting the tile.* ``torch.topk`` over a whole wide tile costs more than the
GEMM that produced it. So a tile of width ``w`` is viewed as ``g`` slabs of ``h = w / g``
columns and reduced to ``M[:, j] = max_r S[:, r*h + j]`` (one vectorised pass). Every element of
the tile's top ``k`` lies in one of the ``k`` columns ``j`` with the largest ``M`` (each of
those columns holds an element at least as good), so ``topk(M, k+1)`` picks ``k`` columns,
their ``g * k`` elements are gathered, and ``topk(E, k+1)`` gives the tile's candidates. Every
element left out scores at most ``cut = max(E's (k+1)-th, M's (k+1)-th)``.

*Exact ties.* If ``cut`` is below the ``k``-th candidate, the candidates are exactly the tile's
top ``k`` under any tie rule. If it equals it, some elements scoring ``cut`` were dropped
arbitrarily; for those rows (rare with real data) the tile is searched again: the candidates
above ``cut`` stay, and the remaining slots take the smallest ids among all elements scoring
exactly ``cut`` (a ``topk`` over ids, smallest first). Merges sort by (score desc, id asc), so
the final answer is the exact top ``k`` with ties broken by smaller id.

Filtered-out or padded entries carry score ``-inf``; at the end any ``-inf`` slot becomes id
``-1`` with the metric's worst distance. Selection always runs in float32.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from blocks.search.api import Metric
from blocks.search.gemm import fused_scores, fused_scores_available

__all__ = ["merge_candidates", "slab_count", "tiled_topk"]

_NEG_INF = float("-inf")
_ID_SENTINEL = torch.iinfo(torch.int64).max
_POOL_ENTRIES = 4096
"""Per query row, the merge pool holds at most about this many candidates (at least 2k)."""
_SLABS_MAX = 64


def merge_candidates(
    scores: torch.Tensor, ids: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best ``k`` columns of each row by (score desc, id asc); pads with ``-inf`` / ``-1``."""
    by_id = torch.argsort(ids, dim=1, stable=True)
    scores = scores.gather(1, by_id)
    ids = ids.gather(1, by_id)
    by_score = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :k]
    top_scores = scores.gather(1, by_score)
    top_ids = ids.gather(1, by_score)
    if top_scores.shape[1] < k:
        pad = k - top_scores.shape[1]
        top_scores = torch.nn.functional.pad(top_scores, (0, pad), value=_NEG_INF)
        top_ids = torch.nn.functional.pad(top_ids, (0, pad), value=-1)
    return top_scores, top_ids


def slab_count(width: int, k: int) -> int:
    """Slabs ``g`` for a tile of ``width`` columns, or 0 when plain ``topk`` is used.

    Prefer slabs at least ``64 (k+1)`` wide (where ``torch.topk`` on the CPU switches to its
    cheaper partial-sort path); otherwise balance ``width / g`` against ``g * k``.
    """
    best = 0
    g = 2
    while g <= _SLABS_MAX and width % g == 0 and width // g >= 64 * (k + 1):
        best = g
        g *= 2
    if best >= 4:
        return best
    g = 1
    while 2 * g <= math.isqrt(width // (k + 1)) and width % (2 * g) == 0:
        g *= 2
    return g if g >= 2 and width // g >= k + 1 else 0


@dataclass(frozen=True, slots=True)
class _Corpus:
    """What every tile needs: rows, L2 bias (``-|c|^2 / 2``) or None, ids, filter."""

    rows: torch.Tensor
    bias: torch.Tensor | None
    ids: torch.Tensor
    excluded: torch.Tensor | None
    fused: bool
    slabs: bool


def _scores(block: torch.Tensor, corpus: _Corpus, start: int, stop: int) -> torch.Tensor:
    """Float32 ``(m, stop - start)`` scores of a query block against one corpus tile."""
    tile = corpus.rows[start:stop]
    bias = None if corpus.bias is None else corpus.bias[start:stop]
    if corpus.fused:
        scores = fused_scores(block, tile, bias)
    elif bias is not None and tile.dtype == torch.float32:
        scores = torch.addmm(bias, block, tile.T)
    else:
        scores = (block @ tile.T).float()
        if bias is not None:
            scores.add_(bias)
    if corpus.excluded is not None:
        scores.masked_fill_(corpus.excluded[start:stop], _NEG_INF)
    return scores


def _select(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(values (m, k+1), columns (m, k+1))`` best first, and the ``cut`` (m,) per row."""
    rows, width = scores.shape
    slabs = slab_count(width, k)
    if slabs == 0:
        values, columns = torch.topk(scores, k + 1, dim=1)
        return values, columns, values[:, k]
    height = width // slabs
    maxima = scores.view(rows, slabs, height).amax(dim=1)
    slab_best, slab_columns = torch.topk(maxima, k + 1, dim=1)
    chosen = slab_columns[:, :k]
    offsets = torch.arange(slabs, device=scores.device).mul_(height)
    flat = (chosen.unsqueeze(1) + offsets.view(1, slabs, 1)).view(rows, slabs * k)
    gathered = scores.gather(1, flat)
    values, positions = torch.topk(gathered, k + 1, dim=1)
    columns = flat.gather(1, positions)
    return values, columns, torch.maximum(values[:, k], slab_best[:, k])


def _tile_candidates(
    scores: torch.Tensor, tile_ids: torch.Tensor, k: int, slabs: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The tile's exact top ``k`` per row as (scores, ids), ties broken by smaller id."""
    rows, width = scores.shape
    if width <= k:
        pad = k - width
        values = torch.nn.functional.pad(scores, (0, pad), value=_NEG_INF)
        ids = torch.nn.functional.pad(tile_ids.unsqueeze(0).expand(rows, -1), (0, pad), value=-1)
        return values, ids
    if slabs:
        values, columns, cut = _select(scores, k)
    else:
        values, columns = torch.topk(scores, k + 1, dim=1)
        cut = values[:, k]
    values, ids = values[:, :k], tile_ids[columns[:, :k]]
    tied = (cut == values[:, k - 1]) & (cut > _NEG_INF)
    if bool(tied.any()):
        values, ids = _break_ties(scores, tile_ids, values, ids, cut, tied)
    return values, ids


def _break_ties(
    scores: torch.Tensor,
    tile_ids: torch.Tensor,
    values: torch.Tensor,
    ids: torch.Tensor,
    cut: torch.Tensor,
    tied: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows where the cut fell inside a run of equal scores: fill with the smallest tied ids."""
    k = values.shape[1]
    rows = tied.nonzero().squeeze(1)
    row_cut = cut[rows].unsqueeze(1)
    keys = torch.where(scores[rows] == row_cut, tile_ids.unsqueeze(0), _ID_SENTINEL)
    tie_ids = torch.topk(keys, k, dim=1, largest=False).values  # ascending
    above = (values[rows] > row_cut).sum(dim=1, keepdim=True)
    slot = torch.arange(k, device=values.device).unsqueeze(0)
    from_ties = tie_ids.gather(1, (slot - above).clamp_min_(0))
    keep = slot < above
    values, ids = values.clone(), ids.clone()
    values[rows] = torch.where(keep, values[rows], row_cut)
    ids[rows] = torch.where(keep, ids[rows], from_ties)
    return values, ids


def _tile_bounds(rows: int, corpus_tile: int) -> Iterator[tuple[int, int]]:
    """Tiles of ``corpus_tile`` rows; a tile whose width is not a multiple of 64 is split into
    a multiple of 64 (which divides into slabs) and a short remainder."""
    for start in range(0, rows, corpus_tile):
        stop = min(rows, start + corpus_tile)
        split = stop - (stop - start) % 64
        if start < split < stop:
            yield start, split
            start = split
        yield start, stop


def _block_topk(
    block: torch.Tensor, corpus: _Corpus, k: int, corpus_tile: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top ``k`` (scores, ids) of one query block over the whole corpus."""
    rows, device = block.shape[0], block.device
    per_merge = max(1, min(16, _POOL_ENTRIES // k - 1))
    pool_scores = torch.full((rows, (per_merge + 1) * k), _NEG_INF, device=device)
    pool_ids = torch.full((rows, (per_merge + 1) * k), -1, dtype=torch.int64, device=device)
    slot = 1
    for start, stop in _tile_bounds(corpus.rows.shape[0], corpus_tile):
        scores = _scores(block, corpus, start, stop)
        values, ids = _tile_candidates(scores, corpus.ids[start:stop], k, corpus.slabs)
        pool_scores[:, slot * k : (slot + 1) * k] = values
        pool_ids[:, slot * k : (slot + 1) * k] = ids
        slot += 1
        if slot == per_merge + 1:
            best_scores, best_ids = merge_candidates(pool_scores, pool_ids, k)
            pool_scores[:, :k], pool_ids[:, :k] = best_scores, best_ids
            slot = 1
    return merge_candidates(pool_scores[:, : slot * k], pool_ids[:, : slot * k], k)


def tiled_topk(
    queries: torch.Tensor,
    corpus: torch.Tensor,
    corpus_sq_norms: torch.Tensor,
    corpus_ids: torch.Tensor,
    k: int,
    metric: Metric,
    *,
    valid: torch.Tensor | None = None,
    query_tile: int = 256,
    corpus_tile: int = 16_384,
    slabs: bool = True,
    fused: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of ``queries`` against ``corpus`` rows; returns (distances, ids) float32/int64.

    ``queries`` are float32 ``(nq, d)`` on the corpus's device; ``corpus`` is ``(n, d)`` in the
    compute dtype; ``corpus_sq_norms`` float32 ``(n,)`` (used for L2 only); ``corpus_ids``
    int64 ``(n,)``; ``valid`` an optional bool ``(n,)`` mask of rows allowed to match.
    ``slabs=False`` selects each tile with a plain ``topk`` and ``fused=False`` keeps the GEMM
    on ``torch.mm``/``addmm`` (same answers up to rounding; for tests and comparisons).
    """
    assert query_tile > 0 and corpus_tile > 0 and k > 0
    num_queries, device = queries.shape[0], corpus.device
    fused = fused and fused_scores_available(corpus)
    prepared = _Corpus(
        rows=corpus,
        bias=corpus_sq_norms.mul(-0.5) if metric is Metric.L2 else None,
        ids=corpus_ids,
        excluded=None if valid is None else ~valid,
        fused=fused,
        slabs=slabs and device.type == "cpu",  # on a GPU a plain topk is already cheap
    )
    all_scores = torch.empty((num_queries, k), dtype=torch.float32, device=device)
    all_ids = torch.empty((num_queries, k), dtype=torch.int64, device=device)
    for q_start in range(0, num_queries, query_tile):
        block = queries[q_start : q_start + query_tile]
        block = block.contiguous() if fused else block.to(corpus.dtype)
        q_stop = q_start + block.shape[0]
        all_scores[q_start:q_stop], all_ids[q_start:q_stop] = _block_topk(
            block, prepared, k, corpus_tile
        )
    empty = all_scores == _NEG_INF
    all_ids.masked_fill_(empty, -1)
    if metric is not Metric.L2:
        return all_scores, all_ids
    query_norms = (queries.float() * queries.float()).sum(dim=1, keepdim=True)
    distances = (query_norms - 2.0 * all_scores).clamp_min_(0.0)
    return distances.masked_fill_(empty, float("inf")), all_ids
