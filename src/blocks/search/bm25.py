"""``BM25Index``: an in-memory inverted index ranked with Okapi BM25.

Theory of operation. Each document (a string id and its text) is tokenized
(``blocks.search.tokenize``) into term frequencies. The index keeps

* ``postings[term] -> {doc_id: tf}``: the inverted lists,
* ``documents[doc_id] -> (length, {term: tf})``: the forward copy that makes delete and
  update exact (every posting of the old version is removed),
* ``total_length``: the sum of document lengths, for the average.

A query's unique terms are scored, in sorted term order, with

    idf(t)   = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))
    score(d) = sum_t idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * |d| / avgdl))

(Lucene's non-negative idf with the original ``k1 + 1`` numerator). The corpus statistics
``N``, ``avgdl`` and ``df`` come from ``CorpusStats``: by default this index's own, but a
sharded index passes the *global* statistics summed over all shards, which makes a sharded
score bit-for-bit equal to the unsharded one (same inputs, same operation order).

Results are ordered by score descending, then doc id ascending. Everything here is pure
data: no I/O, clocks or randomness.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from blocks.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from blocks.search.api import K_MAX
from blocks.search.tokenize import tokenize

__all__ = ["DOC_ID_CHARS_MAX", "BM25Index", "CorpusStats", "TextHit"]

DOC_ID_CHARS_MAX = 256


@dataclass(frozen=True, slots=True)
class TextHit:
    """One ranked document."""

    doc_id: str
    score: float


@dataclass(frozen=True, slots=True)
class CorpusStats:
    """What BM25 needs to know about the whole corpus, for a set of terms."""

    num_docs: int
    total_length: int
    doc_freq: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_docs < 0 or self.total_length < 0:
            raise InvalidArgument("corpus statistics must be non-negative")

    @staticmethod
    def combine(parts: Iterable[CorpusStats]) -> CorpusStats:
        """Sum of per-shard statistics: the global view over disjoint shards."""
        num_docs = total_length = 0
        doc_freq: Counter[str] = Counter()
        for part in parts:
            num_docs += part.num_docs
            total_length += part.total_length
            doc_freq.update(part.doc_freq)
        return CorpusStats(num_docs, total_length, dict(doc_freq))


def check_doc_id(doc_id: object) -> str:
    if not isinstance(doc_id, str) or not 1 <= len(doc_id) <= DOC_ID_CHARS_MAX:
        raise InvalidArgument(f"doc_id must be a string of 1..{DOC_ID_CHARS_MAX} characters")
    return doc_id


def check_text_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= K_MAX:
        raise InvalidArgument(f"k must be an integer in 1..{K_MAX}, got {k!r}")
    return k


class BM25Index:
    """Documents by string id, ranked with BM25; see the module docstring."""

    def __init__(self, *, k1: float = 1.2, b: float = 0.75, docs_max: int = 10_000_000) -> None:
        if not (k1 >= 0 and 0 <= b <= 1):
            raise InvalidArgument("BM25 needs k1 >= 0 and 0 <= b <= 1")
        if docs_max < 1:
            raise InvalidArgument("docs_max must be >= 1")
        self.k1, self.b, self.docs_max = float(k1), float(b), docs_max
        self._postings: dict[str, dict[str, int]] = {}
        self._documents: dict[str, tuple[int, dict[str, int]]] = {}
        self._total_length = 0

    def __len__(self) -> int:
        return len(self._documents)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._documents

    @property
    def total_length(self) -> int:
        return self._total_length

    def add(self, doc_id: str, text: str) -> None:
        """Index a new document; ``AlreadyExists`` if the id is taken."""
        check_doc_id(doc_id)
        terms = Counter(tokenize(text))
        if doc_id in self._documents:
            raise AlreadyExists(f"document {doc_id!r} exists; use update or upsert")
        if len(self._documents) >= self.docs_max:
            raise FailedPrecondition(f"index holds docs_max={self.docs_max} documents")
        self._insert(doc_id, terms)

    def update(self, doc_id: str, text: str) -> None:
        """Replace an existing document's text; ``NotFound`` if absent."""
        check_doc_id(doc_id)
        terms = Counter(tokenize(text))
        if doc_id not in self._documents:
            raise NotFound(f"document {doc_id!r} does not exist")
        self._drop(doc_id)
        self._insert(doc_id, terms)

    def upsert(self, doc_id: str, text: str) -> None:
        """Add or replace."""
        check_doc_id(doc_id)
        terms = Counter(tokenize(text))
        if doc_id in self._documents:
            self._drop(doc_id)
        elif len(self._documents) >= self.docs_max:
            raise FailedPrecondition(f"index holds docs_max={self.docs_max} documents")
        self._insert(doc_id, terms)

    def delete(self, doc_id: str) -> bool:
        """Remove a document; returns whether it existed."""
        check_doc_id(doc_id)
        if doc_id not in self._documents:
            return False
        self._drop(doc_id)
        return True

    def _insert(self, doc_id: str, terms: Counter[str]) -> None:
        length = sum(terms.values())
        self._documents[doc_id] = (length, dict(terms))
        self._total_length += length
        for term, tf in terms.items():
            self._postings.setdefault(term, {})[doc_id] = tf

    def _drop(self, doc_id: str) -> None:
        length, terms = self._documents.pop(doc_id)
        self._total_length -= length
        for term in terms:
            posting = self._postings[term]
            del posting[doc_id]
            if not posting:
                del self._postings[term]

    def stats(self, terms: Iterable[str]) -> CorpusStats:
        """This index's statistics for ``terms`` (already tokenized)."""
        doc_freq = {t: len(self._postings.get(t, ())) for t in set(terms)}
        return CorpusStats(len(self._documents), self._total_length, doc_freq)

    def query_terms(self, query: str) -> list[str]:
        return sorted(set(tokenize(query)))

    def search(self, query: str, k: int = 10, *, stats: CorpusStats | None = None) -> list[TextHit]:
        """Top ``k`` documents for ``query`` by BM25, using ``stats`` if given (global view)."""
        check_text_k(k)
        terms = self.query_terms(query)
        corpus = stats if stats is not None else self.stats(terms)
        if corpus.num_docs == 0 or not terms:
            return []
        average_length = corpus.total_length / corpus.num_docs if corpus.total_length else 1.0
        scores: dict[str, float] = {}
        for term in terms:
            posting = self._postings.get(term)
            if not posting:
                continue
            df = corpus.doc_freq.get(term, len(posting))
            idf = math.log(1.0 + (corpus.num_docs - df + 0.5) / (df + 0.5))
            for doc_id, tf in posting.items():
                length = self._documents[doc_id][0]
                norm = self.k1 * (1.0 - self.b + self.b * length / average_length)
                scores[doc_id] = scores.get(doc_id, 0.0) + idf * tf * (self.k1 + 1.0) / (tf + norm)
        best = heapq.nsmallest(k, scores.items(), key=lambda item: (-item[1], item[0]))
        return [TextHit(doc_id, score) for doc_id, score in best]

    def document_terms(self, doc_id: str) -> dict[str, int]:
        """Term frequencies of a stored document (a copy)."""
        if doc_id not in self._documents:
            raise NotFound(f"document {doc_id!r} does not exist")
        return dict(self._documents[doc_id][1])
