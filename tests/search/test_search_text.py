"""BM25 against a direct computation of the formula; sharding with global DF; tokenizer."""

from __future__ import annotations

import math

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from blocks.core.errors import AlreadyExists, InvalidArgument, NotFound
from blocks.search import BM25Index, ShardedTextIndex, tokenize
from blocks.search.bm25 import CorpusStats

WORDS = ["cat", "dog", "fish", "the", "a", "bird", "Cat", "DOG!"]
K1, B = 1.2, 0.75


def direct_bm25(docs: dict[str, str], query: str) -> dict[str, float]:
    """The formula written out from the documents, nothing cached."""
    tokenized = {d: [w.casefold().strip("!") for w in t.split()] for d, t in docs.items()}
    n = len(tokenized)
    avgdl = sum(len(t) for t in tokenized.values()) / n if n else 0.0
    scores: dict[str, float] = {}
    for term in sorted({w.casefold().strip("!") for w in query.split()}):
        df = sum(1 for t in tokenized.values() if term in t)
        if df == 0:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for doc, terms in tokenized.items():
            tf = terms.count(term)
            if tf:
                denominator = tf + K1 * (1 - B + B * len(terms) / avgdl)
                scores[doc] = scores.get(doc, 0.0) + idf * tf * (K1 + 1) / denominator
    return scores


def test_known_scores_on_a_tiny_corpus() -> None:
    index = BM25Index()
    docs = {"a": "cat dog", "b": "cat cat fish", "c": "bird"}
    for doc_id, text in docs.items():
        index.add(doc_id, text)
    hits = index.search("cat", 10)
    # N=3, df(cat)=2, avgdl=2: idf = ln(1 + 1.5/2.5); doc b: tf=2, |b|=3.
    idf = math.log(1.6)
    assert hits[0].doc_id == "b"
    assert hits[0].score == pytest.approx(idf * 2 * 2.2 / (2 + 1.2 * (0.25 + 0.75 * 1.5)))
    assert hits[1].score == pytest.approx(idf * 2.2 / (1 + 1.2))
    assert [h.doc_id for h in hits] == ["b", "a"]


class TextMachine(RuleBasedStateMachine):
    """BM25Index and a 3-shard ShardedTextIndex against a dict of documents."""

    def __init__(self) -> None:
        super().__init__()
        self.single = BM25Index(k1=K1, b=B)
        self.sharded = ShardedTextIndex(3)
        self.model: dict[str, str] = {}

    doc_ids = st.sampled_from([f"doc{i}" for i in range(8)])
    texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=8).map(" ".join)

    @rule(doc_id=doc_ids, text=texts)
    def add(self, doc_id: str, text: str) -> None:
        if doc_id in self.model:
            for index in (self.single, self.sharded):
                with pytest.raises(AlreadyExists):
                    index.add(doc_id, text)
            return
        self.single.add(doc_id, text)
        self.sharded.add(doc_id, text)
        self.model[doc_id] = text

    @rule(doc_id=doc_ids, text=texts)
    def update(self, doc_id: str, text: str) -> None:
        if doc_id not in self.model:
            with pytest.raises(NotFound):
                self.single.update(doc_id, text)
            return
        self.single.update(doc_id, text)
        self.sharded.upsert(doc_id, text)
        self.model[doc_id] = text

    @rule(doc_id=doc_ids)
    def delete(self, doc_id: str) -> None:
        expected = doc_id in self.model
        assert self.single.delete(doc_id) is expected
        assert self.sharded.delete(doc_id) is expected
        self.model.pop(doc_id, None)

    @rule(
        query=st.lists(st.sampled_from([*WORDS, "zebra"]), min_size=1, max_size=3).map(" ".join),
        k=st.integers(1, 10),
    )
    def search(self, query: str, k: int) -> None:
        want = direct_bm25(self.model, query)
        ranked = sorted(want.items(), key=lambda item: (-item[1], item[0]))[:k]
        got = self.single.search(query, k)
        assert [h.doc_id for h in got] == [d for d, _ in ranked]
        for hit, (_, score) in zip(got, ranked, strict=True):
            assert hit.score == pytest.approx(score, rel=1e-12)
        assert self.sharded.search(query, k) == got  # bit-for-bit: global statistics

    @invariant()
    def sizes(self) -> None:
        assert len(self.single) == len(self.sharded) == len(self.model)
        assert self.single.total_length == sum(len(t.split()) for t in self.model.values())


TestText = TextMachine.TestCase
TestText.settings = settings(stateful_step_count=25)


def test_per_shard_statistics_would_differ() -> None:
    """Why global DF matters: a shard's own idf ranks differently from the global one."""
    sharded = ShardedTextIndex(2)
    for i in range(12):
        sharded.add(f"d{i}", "common " + ("rare" if i == 0 else "filler"))
    global_stats = sharded.global_stats("rare common")
    local = [s.stats(["common", "rare"]) for s in sharded.shards]
    assert CorpusStats.combine(local).doc_freq == global_stats.doc_freq
    assert any(part.num_docs != global_stats.num_docs for part in local)


def test_tokenizer() -> None:
    assert tokenize("Hello, WORLD! ﬁne café_au_lait 42") == [
        "hello",
        "world",
        "fine",
        "café_au_lait",
        "42",
    ]
    assert tokenize("x" * 65 + " ok") == ["ok"]
    assert tokenize("") == []
    with pytest.raises(InvalidArgument):
        tokenize("a" * 1_000_001)
    with pytest.raises(InvalidArgument):
        tokenize(b"bytes")  # type: ignore[arg-type]


def test_bad_text_input_changes_nothing() -> None:
    index = BM25Index()
    index.add("a", "cat")
    for call in (
        lambda: index.add("", "cat"),
        lambda: index.add("x" * 257, "cat"),
        lambda: index.add("b", 3),
        lambda: index.search("cat", 0),
        lambda: index.upsert("a", None),
    ):
        with pytest.raises(InvalidArgument):
            call()  # type: ignore[no-untyped-call]
    assert len(index) == 1 and index.document_terms("a") == {"cat": 1}
    with pytest.raises(InvalidArgument):
        BM25Index(b=2.0)
    assert index.search("nothing here", 3) == []
