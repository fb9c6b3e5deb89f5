"""Conformance kit: Hypothesis state machines for the block manager, the scheduler and any
``BatchEngine``.

Theory of operation: each machine drives the real object with random commands and checks it
against a trivial model after every step.

* ``BlockManagerMachine``: a dict of sequence -> token list is the model. Checks reference
  counts against the tables, that free blocks are exactly the unreferenced ones, that
  prefix-cache hits only ever cover full blocks whose tokens equal the request's, and that
  no block is freed twice (the manager asserts it).
* ``SchedulerMachine``: a torch-free fake model samples tokens from a seeded
  ``random.Random``. Checks both step budgets, that waiting sequences hold no blocks, and
  that every sequence ends (stop, length or cancel) with all its blocks returned. The fake
  model accepts a random prefix of any speculative drafts; ``SpeculativeSchedulerMachine``
  runs the same checks with n-gram drafts switched on.
* ``EngineContract`` (a ``blocks.testing.contract.Contract``, the one meant for your
  engines): subclass it, override ``make_subject()`` and set ``solo`` (the greedy output of
  one prompt run alone). Requests arrive, steps run and requests are cancelled in random
  order. Rules: every finished request's tokens equal ``solo``'s (batch invariance, prefix
  caching included: later prompts often share an earlier prompt's start); no delta arrives
  for a request after its end; ``abort`` of a live request returns True; with no new
  arrivals every request finishes. Setting ``make_engine`` (a callable) is the deprecated
  form of ``make_subject``.

The first two machines check this package's own cores, so they have no hooks. Use them with
``TestCase = Machine.TestCase`` in a test module.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from blocks.core.errors import Conflict
from blocks.inference.api import BatchEngine
from blocks.inference.block_manager import BlockManager
from blocks.inference.params import FinishReason, SamplingParams
from blocks.inference.scheduler import Scheduler, SchedulerConfig, SeqState
from blocks.testing.contract import Contract

__all__ = [
    "BlockManagerMachine",
    "EngineContract",
    "SchedulerMachine",
    "SpeculativeSchedulerMachine",
]

_tokens = st.lists(st.integers(0, 3), min_size=1, max_size=24)


class BlockManagerMachine(RuleBasedStateMachine):
    """Model: sequence id -> its tokens; the manager must stay consistent with it."""

    NUM_BLOCKS = 12
    BLOCK_SIZE = 4
    seqs = Bundle("seqs")

    def __init__(self) -> None:
        super().__init__()
        self.manager = BlockManager(self.NUM_BLOCKS, self.BLOCK_SIZE)
        self.model: dict[int, list[int]] = {}
        self.next_id = 0

    @rule(target=seqs, tokens=_tokens)
    def allocate(self, tokens: list[int]) -> int:
        seq_id = self.next_id
        self.next_id += 1
        free_before = self.manager.num_free_blocks
        if not self.manager.can_allocate(tokens, len(tokens)):
            try:
                self.manager.allocate(seq_id, tokens, len(tokens))
            except Conflict:
                assert self.manager.num_free_blocks == free_before
                return seq_id
            raise AssertionError("allocate succeeded although can_allocate said no")
        cached = self.manager.allocate(seq_id, tokens, len(tokens))
        assert cached % self.BLOCK_SIZE == 0 and cached < len(tokens)
        table = self.manager.table(seq_id)
        assert len(table) == self.manager.blocks_for(len(tokens))
        # Every hit block holds exactly our tokens: compare with a sequence that computed them.
        for index in range(cached // self.BLOCK_SIZE):
            block = table[index]
            want = tuple(tokens[index * self.BLOCK_SIZE : (index + 1) * self.BLOCK_SIZE])
            assert self.manager._block_tokens[block] == want
        self.model[seq_id] = list(tokens)
        return seq_id

    @rule(seq=seqs, extra=st.integers(1, 6))
    def grow(self, seq: int, extra: int) -> None:
        if seq not in self.model:
            return
        tokens = self.model[seq]
        new_tokens = tokens + [0] * extra
        before = self.manager.table(seq)
        if self.manager.grow(seq, len(new_tokens)):
            after = self.manager.table(seq)
            assert after[: len(before)] == before
            assert len(after) == self.manager.blocks_for(len(new_tokens))
            self.model[seq] = new_tokens
        else:
            assert self.manager.table(seq) == before

    @rule(seq=seqs)
    def compute(self, seq: int) -> None:
        if seq in self.model:
            self.manager.mark_computed(seq, self.model[seq], len(self.model[seq]))

    @rule(seq=consumes(seqs))
    def free(self, seq: int) -> None:
        if seq in self.model:
            self.manager.free(seq)
            del self.model[seq]

    @invariant()
    def consistent(self) -> None:
        self.manager.check_invariants()
        held = {b for s in self.model for b in self.manager.table(s)}
        assert self.manager.num_free_blocks == self.NUM_BLOCKS - len(held)


class SchedulerMachine(RuleBasedStateMachine):
    """The scheduler with a fake model; see the module docstring."""

    CONFIG = SchedulerConfig(
        num_blocks=10, block_size=4, max_num_seqs=3, max_num_batched_tokens=8, max_model_len=40
    )

    def __init__(self) -> None:
        super().__init__()
        self.scheduler = Scheduler(self.CONFIG)
        self.rng = random.Random(0)
        self.live: set[int] = set()
        self.ended: dict[int, FinishReason] = {}
        self.next_id = 0
        self.steps_without_progress = 0

    @rule(
        prompt=st.lists(st.integers(0, 3), min_size=1, max_size=20), max_tokens=st.integers(1, 12)
    )
    def add(self, prompt: list[int], max_tokens: int) -> None:
        seq_id = self.next_id
        self.next_id += 1
        self.scheduler.add(SeqState(seq_id, prompt, max_tokens, frozenset({7})))
        self.live.add(seq_id)

    @precondition(lambda self: self.scheduler.has_work())
    @rule()
    def step(self) -> None:
        out = self.scheduler.schedule()
        config = self.CONFIG
        assert out.num_batched_tokens <= config.max_num_batched_tokens
        assert len(out.chunks) <= config.max_num_seqs
        assert len({c.seq_id for c in out.chunks}) == len(out.chunks)
        for chunk in out.chunks:
            assert len(chunk.block_table) * config.block_size >= chunk.start + len(chunk.token_ids)
        # A step with work always schedules something: nothing deadlocks.
        assert out.chunks, "scheduler made no progress with work queued"
        sampled: dict[int, list[int]] = {}
        for chunk in out.chunks:
            if chunk.sample:
                # Accept a random prefix of the drafts, then one token of our own.
                drafts = chunk.token_ids[len(chunk.token_ids) - chunk.num_drafts :]
                kept = list(drafts[: self.rng.randint(0, chunk.num_drafts)])
                sampled[chunk.seq_id] = [*kept, self.rng.choice([1, 2, 3, 7])]
            else:
                assert not chunk.num_drafts, "drafts ride only on sampling chunks"
        for update in self.scheduler.update(out, sampled):
            seq = self.scheduler.seqs.get(update.seq_id)
            assert seq is None or len(seq.output) <= seq.max_tokens
            if update.finish_reason is not None:
                self.live.discard(update.seq_id)
                self.ended[update.seq_id] = update.finish_reason

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        seq_id = data.draw(st.sampled_from(sorted(self.live)))
        assert self.scheduler.abort(seq_id)
        assert not self.scheduler.abort(seq_id)
        self.live.discard(seq_id)
        self.ended[seq_id] = FinishReason.CANCELLED

    @invariant()
    def structure(self) -> None:
        self.scheduler.check_invariants()
        assert set(self.scheduler.seqs) == self.live

    def teardown(self) -> None:
        # Liveness: with no new arrivals, everything finishes and every block comes back.
        for _ in range(2_000):
            if not self.scheduler.has_work():
                break
            self.step()
        assert not self.scheduler.has_work(), "requests never finished"
        assert self.scheduler.blocks.num_free_blocks == self.CONFIG.num_blocks
        self.scheduler.check_invariants()


class SpeculativeSchedulerMachine(SchedulerMachine):
    """The same checks while n-gram drafts ride along (tiny vocabulary: lookups hit)."""

    CONFIG = SchedulerConfig(
        num_blocks=10,
        block_size=4,
        max_num_seqs=3,
        max_num_batched_tokens=8,
        max_model_len=40,
        num_speculative_tokens=3,
        speculative_ngram=1,
        speculative_max_batch=2,
    )


class EngineContract(Contract[BatchEngine]):
    """Batch invariance of any ``BatchEngine``; subclass, override ``make_subject``, set
    ``solo``."""

    properties = ("batch invariance", "no delta after the end", "cancel", "liveness")
    legacy_hooks = {"make_engine": "make_subject"}
    make_engine: ClassVar[Callable[[], BatchEngine]]
    """Deprecated: override ``make_subject`` instead."""
    solo: ClassVar[Callable[[Sequence[int], int], list[int]]]
    VOCAB: ClassVar[int] = 64

    def __init__(self) -> None:
        super().__init__()
        self.engine: BatchEngine | None = None
        self.outputs: dict[str, list[int]] = {}
        self.prompts: dict[str, tuple[list[int], int]] = {}
        self.done: set[str] = set()
        self.next_id = 0

    def make_subject(self) -> BatchEngine:
        make_engine: Callable[[], BatchEngine] | None = getattr(type(self), "make_engine", None)
        if make_engine is None:
            raise NotImplementedError(f"{type(self).__name__} must override make_subject()")
        return make_engine()

    @initialize()
    def start(self) -> None:
        self.engine = self.open_subject()

    @rule(
        prompt=st.lists(st.integers(1, 63), min_size=1, max_size=40),
        max_tokens=st.integers(1, 10),
    )
    def add(self, prompt: list[int], max_tokens: int) -> None:
        assert self.engine is not None
        request_id = f"r{self.next_id}"
        self.next_id += 1
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        self.engine.add_request(request_id, prompt, params)
        self.prompts[request_id] = (prompt, max_tokens)
        self.outputs[request_id] = []

    @precondition(lambda self: bool(self.prompts))
    @rule(data=st.data(), extra=st.lists(st.integers(1, 63), min_size=1, max_size=6))
    def add_sharing_prefix(self, data: st.DataObject, extra: list[int]) -> None:
        """A prompt that starts like an earlier one, so prefix caching gets exercised."""
        earlier, _ = self.prompts[data.draw(st.sampled_from(sorted(self.prompts)))]
        self.add(earlier + extra, data.draw(st.integers(1, 10)))

    @precondition(lambda self: self.engine is not None and self.engine.has_work())
    @rule(steps=st.integers(1, 4))
    def step(self, steps: int) -> None:
        assert self.engine is not None
        for _ in range(steps):
            for delta in self.engine.step():
                assert delta.request_id not in self.done, "delta after the end"
                self.outputs[delta.request_id].extend(delta.token_ids)
                if delta.finish_reason is not None:
                    self.done.add(delta.request_id)
                    self._check(delta.request_id)

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        live = sorted(set(self.prompts) - self.done)
        if not live or self.engine is None:
            return
        request_id = data.draw(st.sampled_from(live))
        assert self.engine.abort(request_id)
        self.done.add(request_id)

    def _check(self, request_id: str) -> None:
        prompt, max_tokens = self.prompts[request_id]
        want = type(self).solo(prompt, max_tokens)
        got = self.outputs[request_id]
        assert got == want, f"{request_id}: batched {got} != alone {want}"

    def teardown(self) -> None:
        if self.engine is None:
            return
        for _ in range(500):
            if not self.engine.has_work():
                break
            self.step(1)
        assert not self.engine.has_work()
        assert set(self.prompts) == self.done
        self.finish_subject(self.engine)
