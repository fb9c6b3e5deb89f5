"""Tiled exact top-k in torch: the kernel behind ``ExactIndex``.

Theory of operation: scores are computed as "higher is better" for every metric, so one
selection routine serves all three:

* inner product and cosine (rows already unit length): ``score = q . c``;
* squared L2: ``|q - c|^2 = |q|^2 - 2 q.c + |c|^2``; the ``|q|^2`` term is the same for every
  candidate of one query, so ranking uses ``score = 2 q.c - |c|^2`` and the distance is
  recovered at the end as ``max(0, |q|^2 - score)``.

Memory stays bounded by tiling both sides: queries in blocks of ``query_tile`` rows, the
corpus in blocks of ``corpus_tile`` rows, so the largest temporary is one
``query_tile x corpus_tile`` score matrix whatever the sizes. For each query block a running
top-k (scores and ids) is merged with each corpus tile's top-k.

Ties are broken by smaller id, exactly, without sorting whole tiles: each tile takes its top
``k + 1``; only when the ``(k+1)``-th score equals the ``k``-th can a tied element have been
cut at random, and only those rows are resolved by a full stable sort (id, then score). Merges
of candidate lists sort ``<= 2k`` entries by (score desc, id asc) with two stable sorts.

Filtered-out or padded entries carry score ``-inf``; at the end any ``-inf`` slot becomes id
``-1``. The matmul runs in ``compute_dtype`` (float16/bfloat16 on a GPU halves the bytes
read); scores are always selected in float32.
"""

from __future__ import annotations

import torch

from blocks.search.api import Metric

__all__ = ["merge_candidates", "tiled_topk"]

_NEG_INF = float("-inf")


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


def _tile_topk(
    scores: torch.Tensor, tile_ids: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` of one score tile with exact tie-breaking by id."""
    width = scores.shape[1]
    if width <= k + 1:
        expanded = tile_ids.unsqueeze(0).expand(scores.shape[0], -1)
        return merge_candidates(scores, expanded, k)
    values, positions = torch.topk(scores, k + 1, dim=1)
    top_values, top_positions = values[:, :k], positions[:, :k]
    candidate_ids = tile_ids[top_positions]
    ambiguous = (values[:, k] == values[:, k - 1]) & (values[:, k] > _NEG_INF)
    if bool(ambiguous.any()):
        rows = ambiguous.nonzero().squeeze(1)
        expanded = tile_ids.unsqueeze(0).expand(rows.shape[0], -1)
        fixed_scores, fixed_ids = merge_candidates(scores[rows], expanded, k)
        top_values = top_values.clone()
        candidate_ids = candidate_ids.clone()
        top_values[rows] = fixed_scores
        candidate_ids[rows] = fixed_ids
    return top_values, candidate_ids


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
    corpus_tile: int = 65_536,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of ``queries`` against ``corpus`` rows; returns (distances, ids) float32/int64.

    ``queries`` are float32 ``(nq, d)`` on the corpus's device; ``corpus`` is ``(n, d)`` in the
    compute dtype; ``corpus_sq_norms`` float32 ``(n,)`` (used for L2 only); ``corpus_ids``
    int64 ``(n,)``; ``valid`` an optional bool ``(n,)`` mask of rows allowed to match.
    """
    assert query_tile > 0 and corpus_tile > 0 and k > 0
    num_queries, num_rows = queries.shape[0], corpus.shape[0]
    device = corpus.device
    all_scores = torch.empty((num_queries, k), dtype=torch.float32, device=device)
    all_ids = torch.empty((num_queries, k), dtype=torch.int64, device=device)
    for q_start in range(0, num_queries, query_tile):
        block = queries[q_start : q_start + query_tile]
        block_c = block.to(corpus.dtype)
        best_scores = torch.full((block.shape[0], k), _NEG_INF, device=device)
        best_ids = torch.full((block.shape[0], k), -1, dtype=torch.int64, device=device)
        for c_start in range(0, num_rows, corpus_tile):
            c_stop = min(num_rows, c_start + corpus_tile)
            tile = corpus[c_start:c_stop]
            if metric is not Metric.L2:
                scores = (block_c @ tile.T).float()
            elif tile.dtype == torch.float32:  # one fused BLAS call: 2 q.c - |c|^2
                scores = torch.addmm(
                    corpus_sq_norms[c_start:c_stop], block_c, tile.T, beta=-1, alpha=2
                )
            else:
                scores = (block_c @ tile.T).float().mul_(2.0).sub_(corpus_sq_norms[c_start:c_stop])
            if valid is not None:
                scores = scores.masked_fill_(~valid[c_start:c_stop], _NEG_INF)
            tile_scores, tile_ids = _tile_topk(scores, corpus_ids[c_start:c_stop], k)
            best_scores, best_ids = merge_candidates(
                torch.cat([best_scores, tile_scores], dim=1),
                torch.cat([best_ids, tile_ids], dim=1),
                k,
            )
        q_stop = q_start + block.shape[0]
        all_scores[q_start:q_stop] = best_scores
        all_ids[q_start:q_stop] = best_ids
    empty = all_scores == _NEG_INF
    all_ids = all_ids.masked_fill(empty, -1)
    if metric is Metric.L2:
        query_norms = (queries.float() * queries.float()).sum(dim=1, keepdim=True)
        distances = (query_norms - all_scores).clamp_min_(0.0)
        distances = distances.masked_fill(empty, float("inf"))
    else:
        distances = all_scores
    return distances, all_ids
