"""The public VectorIndex contract, run against every implementation."""

from __future__ import annotations

from hypothesis import settings

from blocks.search import ExactIndex, FaissIndex, Metric, ShardedIndex
from blocks.search.contract import vector_index_contract

_FEW = settings(stateful_step_count=20)


def _sharded(dim: int, metric: Metric) -> ShardedIndex:
    return ShardedIndex.build(lambda: ExactIndex(dim, metric, corpus_tile=5), 3, replicas=2)


TestExactContract = vector_index_contract(
    lambda dim, metric: ExactIndex(dim, metric, corpus_tile=7, query_tile=2)
).TestCase
TestExactContract.settings = _FEW

TestShardedContract = vector_index_contract(_sharded).TestCase
TestShardedContract.settings = _FEW

TestFaissFlatContract = vector_index_contract(
    lambda dim, metric: FaissIndex(dim, "Flat", metric), exact=False
).TestCase
TestFaissFlatContract.settings = _FEW

TestFaissHnswContract = vector_index_contract(
    lambda dim, metric: FaissIndex(dim, "HNSW8", metric, ef_search=64), exact=False
).TestCase
TestFaissHnswContract.settings = _FEW
