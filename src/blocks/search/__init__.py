"""blocks.search: vector search (exact torch, FAISS, sharded; metadata filters), BM25 and hybrid
text search, typeahead.

Heavy dependencies load on first use: ``ExactIndex`` and ``MiniLMEmbedder`` import torch,
``FaissIndex`` imports faiss; the text index and typeahead need neither.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from blocks.search.api import K_MAX, Metric, SearchResult, VectorIndex
from blocks.search.bm25 import BM25Index, TextHit
from blocks.search.filtered import FilteredResult, search_filtered
from blocks.search.hybrid import reciprocal_rank_fusion
from blocks.search.metadata import And, Eq, In, MetadataStore, Not, Or, Range
from blocks.search.sharded import ShardedIndex
from blocks.search.text_sharded import ShardedTextIndex
from blocks.search.tokenize import tokenize
from blocks.search.typeahead import Typeahead

__all__ = [
    "K_MAX",
    "And",
    "BM25Index",
    "Eq",
    "ExactIndex",
    "FaissIndex",
    "FilteredResult",
    "In",
    "MetadataStore",
    "Metric",
    "MiniLMEmbedder",
    "Not",
    "Or",
    "Range",
    "SearchResult",
    "ShardedIndex",
    "ShardedTextIndex",
    "TextHit",
    "Typeahead",
    "VectorIndex",
    "connect",
    "reciprocal_rank_fusion",
    "search_filtered",
    "tokenize",
]

_LAZY = {
    "ExactIndex": "blocks.search.exact",
    "FaissIndex": "blocks.search.faiss_index",
    "MiniLMEmbedder": "blocks.search.embed",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'blocks.search' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


if TYPE_CHECKING:
    from blocks.search.client import SearchClient


def connect(
    address: str = "127.0.0.1:7400", *, token: str | None = None, timeout_s: float = 30.0
) -> SearchClient:
    """A (blocking) client of the search node at ``address``; use it with ``with`` (``HOST:PORT``, the default is ``blocks search serve``'s)."""
    from blocks.search.client import SearchClient

    return SearchClient(address, token=token, timeout_s=timeout_s)
