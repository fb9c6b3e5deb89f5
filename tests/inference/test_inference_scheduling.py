"""Block manager and scheduler: model-based state machines and pinned-down cases."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.core.errors import Conflict, InvalidArgument, NotFound, Overloaded
from blocks.inference.block_manager import BlockManager, block_hashes
from blocks.inference.contract import (
    BlockManagerMachine,
    SchedulerMachine,
    SpeculativeSchedulerMachine,
)
from blocks.inference.ngram import ngram_propose
from blocks.inference.params import FinishReason
from blocks.inference.scheduler import Scheduler, SchedulerConfig, SeqState

TestBlockManagerContract = BlockManagerMachine.TestCase
TestSchedulerContract = SchedulerMachine.TestCase
TestSpeculativeSchedulerContract = SpeculativeSchedulerMachine.TestCase


def test_prefix_hit_reuses_full_computed_blocks_only() -> None:
    manager = BlockManager(8, 4)
    prompt = list(range(10))
    assert manager.allocate(1, prompt, 10) == 0
    # Not computed yet: no hit, so a chunked prefill is never read before it is written.
    assert manager.cached_prefix_tokens(prompt) == 0
    manager.mark_computed(1, prompt, 10)
    assert manager.cached_prefix_tokens(prompt) == 8
    assert manager.cached_prefix_tokens(prompt[:8]) == 4  # one token is always left to compute
    assert manager.cached_prefix_tokens([0, 1, 2, 3, 9, 9, 9, 9, 9]) == 4
    cached = manager.allocate(2, [*prompt, 42], 11)
    assert cached == 8
    t1, t2 = manager.table(1), manager.table(2)
    assert t1[:2] == t2[:2] and t1[2] != t2[2]
    assert manager.ref_counts[t1[0]] == 2
    manager.free(1)
    manager.free(2)
    manager.check_invariants()
    # Freed blocks keep their contents until reused: a later request still hits.
    assert manager.cached_prefix_tokens(prompt) == 8
    assert manager.stats().prefix_hit_rate == pytest.approx(8 / 21)


def test_eviction_forgets_reused_blocks() -> None:
    manager = BlockManager(3, 2)
    manager.allocate(1, [1, 2, 3, 4, 5], 5)
    manager.mark_computed(1, [1, 2, 3, 4, 5], 5)
    manager.free(1)
    manager.allocate(2, [7, 7, 7, 7, 7, 7], 6)  # takes all three blocks, evicting the cache
    assert manager.cached_prefix_tokens([1, 2, 3, 4, 5]) == 0
    manager.check_invariants()


def test_block_manager_bad_input() -> None:
    with pytest.raises(InvalidArgument):
        BlockManager(0, 4)
    manager = BlockManager(2, 4)
    with pytest.raises(NotFound):
        manager.free(9)
    with pytest.raises(NotFound):
        manager.grow(9, 3)
    with pytest.raises(Conflict):
        manager.allocate(1, list(range(20)), 20)  # needs 5 blocks, has 2
    assert manager.num_free_blocks == 2
    manager.allocate(1, [1], 1)
    with pytest.raises(Conflict):
        manager.allocate(1, [1], 1)
    assert not manager.grow(1, 100)
    assert manager.table(1) == manager.table(1)
    manager.check_invariants()


@given(st.lists(st.integers(0, 2**40), max_size=40), st.integers(1, 8))
def test_block_hashes_are_chained(tokens: list[int], size: int) -> None:
    hashes = block_hashes(tokens, size)
    assert len(hashes) == len(tokens) // size
    # Equal hashes of block i imply the same tokens up to block i (no accidental equality here).
    changed = list(tokens)
    if changed:
        changed[0] += 1
        other = block_hashes(changed, size)
        assert all(a != b for a, b in zip(hashes, other, strict=True))


def drive(
    scheduler: Scheduler, token: int = 1, steps: int = 1000
) -> list[list[tuple[int, int, bool]]]:
    log = []
    for _ in range(steps):
        if not scheduler.has_work():
            break
        out = scheduler.schedule()
        log.append([(c.seq_id, len(c.token_ids), c.sample) for c in out.chunks])
        scheduler.update(out, {c.seq_id: token for c in out.chunks if c.sample})
        scheduler.check_invariants()
    return log


def test_chunked_prefill_mixes_with_decode() -> None:
    config = SchedulerConfig(
        num_blocks=64, block_size=4, max_num_seqs=4, max_num_batched_tokens=8, max_model_len=64
    )
    scheduler = Scheduler(config)
    scheduler.add(SeqState(0, [5] * 3, 4))
    scheduler.add(SeqState(1, [6] * 20, 2))
    log = drive(scheduler)
    # Step 1: all of seq 0 (3 tokens) and the first 5 of seq 1; then 0 decodes one token
    # per step while 1's prompt goes through in chunks of 7.
    assert log[0] == [(0, 3, True), (1, 5, False)]
    assert log[1] == [(0, 1, True), (1, 7, False)]
    assert log[2] == [(0, 1, True), (1, 7, False)]
    assert log[3] == [(0, 1, True), (1, 1, True)]
    assert all(sum(n for _, n, _ in step) <= 8 for step in log)


def test_preemption_by_recompute_keeps_generated_tokens() -> None:
    config = SchedulerConfig(
        num_blocks=4, block_size=2, max_num_seqs=4, max_num_batched_tokens=16, max_model_len=8
    )
    scheduler = Scheduler(config)
    scheduler.add(SeqState(0, [1, 2, 3], 5))
    scheduler.add(SeqState(1, [4, 5, 6], 5))
    first = scheduler.schedule()
    assert [c.seq_id for c in first.chunks] == [0, 1]  # 2 blocks each: pool is full
    scheduler.update(first, {0: 9, 1: 8})
    second = scheduler.schedule()  # position 3 still fits in each sequence's second block
    assert second.preempted == ()
    scheduler.update(second, {0: 9, 1: 7})
    third = scheduler.schedule()  # seq 0 needs a third block: seq 1 is preempted
    assert third.preempted == (1,)
    assert [c.seq_id for c in third.chunks] == [0]
    scheduler.update(third, {0: 9})
    seq1 = scheduler.get(1)
    assert seq1.output == [8, 7] and seq1.num_computed == 0
    assert list(scheduler.waiting) == [seq1]
    drive(scheduler, token=9)
    assert scheduler.blocks.num_free_blocks == 4


def test_scheduler_rejects_and_cancels() -> None:
    config = SchedulerConfig(num_blocks=8, block_size=4, max_model_len=32, max_waiting=2)
    scheduler = Scheduler(config)
    with pytest.raises(InvalidArgument):
        scheduler.add(SeqState(0, list(range(32)), 1))
    with pytest.raises(InvalidArgument):
        SeqState(0, [], 1)
    scheduler.add(SeqState(0, [1], 3))
    scheduler.add(SeqState(1, [1], 3))
    with pytest.raises(Overloaded):
        scheduler.add(SeqState(2, [1], 3))
    with pytest.raises(Conflict):
        scheduler.add(SeqState(0, [1], 3))
    out = scheduler.schedule()
    assert scheduler.abort(0)  # cancelled while its step is in flight
    scheduler.update(out, {0: 3, 1: 3})
    assert not scheduler.abort(0)
    assert scheduler.blocks.num_free_blocks == 8 - 1
    assert scheduler.get(1).output == [3]
    drive(scheduler, token=7)
    assert scheduler.blocks.num_free_blocks == 8


def test_end_reasons() -> None:
    scheduler = Scheduler(SchedulerConfig(num_blocks=8, block_size=4, max_model_len=8))
    scheduler.add(SeqState(0, [1, 2], 10, frozenset({5})))
    scheduler.add(SeqState(1, [1, 2], 2))
    scheduler.add(SeqState(2, [1] * 6, 10))
    reasons = {}
    for _ in range(20):
        if not scheduler.has_work():
            break
        out = scheduler.schedule()
        for u in scheduler.update(
            out, {c.seq_id: 5 if c.seq_id == 0 else 1 for c in out.chunks if c.sample}
        ):
            if u.finish_reason:
                reasons[u.seq_id] = u.finish_reason
    assert reasons == {0: FinishReason.STOP, 1: FinishReason.LENGTH, 2: FinishReason.LENGTH}


def speculative_config(**overrides: int) -> SchedulerConfig:
    fields = dict(
        num_blocks=16,
        block_size=4,
        max_num_seqs=4,
        max_num_batched_tokens=16,
        max_model_len=40,
        num_speculative_tokens=3,
        speculative_ngram=2,
        speculative_max_batch=2,
    )
    return SchedulerConfig(**{**fields, **overrides})


def test_ngram_lookup_finds_the_latest_match() -> None:
    assert ngram_propose([1, 2, 3, 9, 1, 2, 4, 1, 2], n=2, k=2) == [4, 1]
    assert ngram_propose([1, 2, 3, 9, 1, 2], n=2, k=3) == [3, 9, 1]
    assert ngram_propose([5, 6, 7], n=1, k=2) == []
    assert ngram_propose([5, 5], n=1, k=4) == [5]
    assert ngram_propose([1, 2], n=0, k=2) == [] and ngram_propose([1, 1, 1], n=1, k=0) == []


def test_drafts_ride_on_decode_and_only_accepted_ones_count_as_computed() -> None:
    scheduler = Scheduler(speculative_config())
    scheduler.add(SeqState(0, [1, 2, 3, 1, 2], 10))
    first = scheduler.schedule()  # prefill: no drafts
    assert first.chunks[0].num_drafts == 0
    scheduler.update(first, {0: 3})  # context ends 1 2 3 1 2 3: the lookup proposes 1 2 3
    second = scheduler.schedule()
    chunk = second.chunks[0]
    assert chunk.token_ids == (3, 1, 2, 3) and chunk.num_drafts == 3 and chunk.start == 5
    assert len(chunk.block_table) * 4 >= 9  # blocks grew to hold the drafts
    (update,) = scheduler.update(second, {0: [1, 2, 9]})  # two accepted, then a correction
    assert update.new_tokens == (1, 2, 9)
    seq = scheduler.get(0)
    assert seq.output == [3, 1, 2, 9] and seq.num_computed == 8  # 3 at 5, then drafts 1 2
    assert (scheduler.num_draft_tokens, scheduler.num_accepted_tokens) == (3, 2)
    scheduler.check_invariants()


def test_drafts_stop_at_max_tokens_and_at_an_end_token() -> None:
    scheduler = Scheduler(speculative_config())
    scheduler.add(SeqState(0, [4, 4, 4, 4], 3, frozenset({7})))
    scheduler.update(scheduler.schedule(), {0: 4})
    out = scheduler.schedule()
    assert out.chunks[0].num_drafts == 1  # 2 tokens left: one draft plus the verified one
    (update,) = scheduler.update(out, {0: [4, 4]})
    assert update.new_tokens == (4, 4) and update.finish_reason is FinishReason.LENGTH
    assert not scheduler.has_work()
    scheduler.add(SeqState(1, [4, 4, 4, 4], 10, frozenset({7})))
    scheduler.update(scheduler.schedule(), {1: 4})
    out = scheduler.schedule()
    (update,) = scheduler.update(out, {1: [7]})  # an end token ends it at once
    assert update.new_tokens == (7,) and update.finish_reason is FinishReason.STOP
    assert scheduler.blocks.num_free_blocks == 16


def test_no_drafts_in_a_large_batch_or_for_sequences_that_opt_out() -> None:
    scheduler = Scheduler(speculative_config(speculative_max_batch=1))
    scheduler.add(SeqState(0, [1, 1, 1], 10))
    scheduler.add(SeqState(1, [1, 1, 1], 10))
    scheduler.update(scheduler.schedule(), {0: 1, 1: 1})
    assert all(c.num_drafts == 0 for c in scheduler.schedule().chunks)
    alone = Scheduler(speculative_config())
    alone.add(SeqState(0, [1, 1, 1], 10, speculate=False))
    alone.update(alone.schedule(), {0: 1})
    assert alone.schedule().chunks[0].num_drafts == 0


def test_drafts_never_take_blocks_from_others() -> None:
    # Every block is held: seq 0's draft would need a fresh one, so it runs without it
    # rather than preempting seq 1.
    scheduler = Scheduler(speculative_config(num_blocks=3, max_model_len=12))
    scheduler.add(SeqState(0, [1, 1, 1], 10))
    scheduler.add(SeqState(1, [2, 2, 2, 2, 2], 10))
    scheduler.update(scheduler.schedule(), {0: 1, 1: 2})
    assert scheduler.blocks.num_free_blocks == 0
    out = scheduler.schedule()
    # Seq 1's drafts fit in the block it holds; seq 0's would not.
    assert [c.num_drafts for c in out.chunks] == [0, 1] and out.preempted == ()
    scheduler.update(out, {0: 1, 1: [2, 2]})
    scheduler.check_invariants()


def test_bad_speculation_settings() -> None:
    with pytest.raises(InvalidArgument):
        speculative_config(num_speculative_tokens=17)
    with pytest.raises(InvalidArgument):
        speculative_config(speculative_ngram=0)
