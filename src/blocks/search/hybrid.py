"""Hybrid text search: BM25 and vector rankings fused by reciprocal rank.

Theory of operation. BM25 scores and vector similarities live on unrelated scales, so adding
them needs per-corpus weights that drift as the corpus changes. Reciprocal-rank fusion uses
ranks only: a document at 1-based rank ``r`` in a ranking earns ``1 / (k_rrf + r)`` from it,
and its fused score is the sum over rankings (absent from one: nothing from that one). The
constant ``k_rrf`` (60, the value of the method's original description) damps the advantage of
the very top ranks. Ties are broken by document id, so a fusion is deterministic.

Each ranking is cut to ``depth`` entries before fusion (the caller asks each retriever for
``depth`` hits, several times the ``k`` wanted), bounding the work to ``rankings * depth``.
"""

from __future__ import annotations

from collections.abc import Sequence

from blocks.core.errors import InvalidArgument

__all__ = ["HYBRID_DEPTH_FACTOR", "RANKINGS_MAX", "RRF_K_DEFAULT", "reciprocal_rank_fusion"]

RRF_K_DEFAULT = 60
HYBRID_DEPTH_FACTOR = 4  # each retriever is asked for this many times k hits
RANKINGS_MAX = 16


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[str]], limit: int, *, k_rrf: int = RRF_K_DEFAULT
) -> list[tuple[str, float]]:
    """The ``limit`` best ``(doc_id, fused score)``, best first (ties: smaller id first).

    A ranking lists document ids best first; an id repeated within one ranking counts at its
    first (best) rank only. Raises ``InvalidArgument`` for ``limit < 1``, ``k_rrf < 0`` or
    more than ``RANKINGS_MAX`` rankings.
    """
    if limit < 1 or k_rrf < 0 or len(rankings) > RANKINGS_MAX:
        raise InvalidArgument(f"need limit >= 1, k_rrf >= 0, at most {RANKINGS_MAX} rankings")
    scores: dict[str, float] = {}
    for ranking in rankings:
        seen: set[str] = set()
        for rank, doc_id in enumerate(ranking, start=1):
            if doc_id in seen:
                continue
            seen.add(doc_id)
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (k_rrf + rank)
    fused = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return fused[:limit]
