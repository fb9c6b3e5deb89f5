"""Continuous-batching scheduler: which tokens of which sequences run in the next step.

Theory of operation (no torch, no clock, no I/O): sequences wait in a FIFO ``waiting`` queue
and run in a ``running`` list. Each ``schedule()`` builds one step under two budgets, at
most ``max_num_batched_tokens`` tokens and ``max_num_seqs`` sequences:

1. Running sequences first, oldest first. Each asks for its uncomputed tokens: one for a
   decoding sequence, the rest of its prompt (capped by the remaining token budget: *chunked
   prefill*) for one still prefilling. Prefill chunks and decode tokens share the step.
2. If a running sequence's next tokens need a KV block and none is free, the newest running
   sequence is *preempted by recompute*: its blocks are freed, its computed count reset, and
   it goes back to the front of ``waiting`` with its generated tokens kept, to be prefilled
   again (prompt + output so far) later. Recompute costs compute, never correctness.
3. With budget left and nothing preempted this step, waiting sequences are admitted in
   order, each reusing any prefix-cached blocks (those tokens are not computed again).
   Admission stops at the first sequence that does not fit, so order is kept.

A chunk that reaches a sequence's last known token is marked ``sample``: the model's logits
there pick the next token. ``update()`` takes those tokens, advances computed counts,
registers newly full blocks in the prefix cache and finishes sequences that hit an end
condition.

**Speculation** (``num_speculative_tokens > 0``): while at most ``speculative_max_batch``
sequences run, a decoding sequence's chunk also carries up to that many *drafts* from n-gram
lookup in its own tokens (``ngram.ngram_propose``), paid from the same token budget and
only if its blocks can grow to hold them. The engine verifies them in the same pass and
hands back the accepted drafts plus one token; the computed count then covers exactly the
accepted positions, so KV written for rejected drafts sits past it and is overwritten later
(nothing to roll back, and no block holding it is ever registered in the prefix cache).
Speculation pays when a step is bandwidth-bound (few sequences: checking ``k`` more tokens
costs about as much as one); in a large batch the step is compute-bound and rejected drafts
would be wasted work, hence the batch limit. ``abort()`` cancels a sequence at any time. Every sequence ends up finished
(stop, length, cancelled) and every block it held is released exactly once.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from blocks.core.errors import Conflict, InvalidArgument, NotFound, Overloaded
from blocks.inference.block_manager import BlockManager
from blocks.inference.ngram import ngram_propose
from blocks.inference.params import FinishReason

MAX_SPECULATIVE_TOKENS = 16

__all__ = [
    "MAX_SPECULATIVE_TOKENS",
    "ScheduledChunk",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerOutput",
    "SeqState",
    "SeqStatus",
    "SeqUpdate",
]


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    num_blocks: int = 256
    block_size: int = 16
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 512
    max_model_len: int = 2048
    max_waiting: int = 1024
    chunked_prefill: bool = True
    prefix_caching: bool = True
    num_speculative_tokens: int = 0  # n-gram drafts per decoding sequence and step; 0 = off
    speculative_ngram: int = 3  # tokens matched by the lookup
    speculative_max_batch: int = 4  # speculate only while at most this many sequences run

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1 or self.max_num_batched_tokens < 1 or self.max_waiting < 1:
            raise InvalidArgument("scheduler limits must be >= 1")
        if not 0 <= self.num_speculative_tokens <= MAX_SPECULATIVE_TOKENS:
            raise InvalidArgument(
                f"num_speculative_tokens must be in [0, {MAX_SPECULATIVE_TOKENS}]"
            )
        if self.speculative_ngram < 1 or self.speculative_max_batch < 1:
            raise InvalidArgument("speculative_ngram and speculative_max_batch must be >= 1")
        if not 2 <= self.max_model_len <= self.num_blocks * self.block_size:
            raise InvalidArgument("max_model_len must be in [2, num_blocks * block_size]")
        if not self.chunked_prefill and self.max_num_batched_tokens < self.max_model_len:
            raise InvalidArgument("without chunked prefill the token budget must fit a prompt")


class SeqState:
    """One request's token state as the scheduler sees it (mutable, owned by the scheduler)."""

    __slots__ = (
        "end_token_ids",
        "finish_reason",
        "max_tokens",
        "num_computed",
        "num_preemptions",
        "output",
        "prompt",
        "seq_id",
        "speculate",
        "status",
    )

    def __init__(
        self,
        seq_id: int,
        prompt: Sequence[int],
        max_tokens: int,
        end_token_ids: frozenset[int] = frozenset(),
        *,
        speculate: bool = True,
    ) -> None:
        if not prompt:
            raise InvalidArgument("prompt must hold at least one token")
        if max_tokens < 1:
            raise InvalidArgument("max_tokens must be >= 1")
        self.seq_id = seq_id
        self.prompt = tuple(prompt)
        self.output: list[int] = []
        self.max_tokens = max_tokens
        self.end_token_ids = end_token_ids
        self.num_computed = 0  # tokens whose KV is in the cache; <= num_tokens
        self.status = SeqStatus.WAITING
        self.finish_reason: FinishReason | None = None
        self.num_preemptions = 0
        self.speculate = speculate  # may carry drafts when the scheduler speculates

    @property
    def token_ids(self) -> list[int]:
        return [*self.prompt, *self.output]

    @property
    def num_tokens(self) -> int:
        return len(self.prompt) + len(self.output)


@dataclass(frozen=True, slots=True)
class ScheduledChunk:
    """Compute ``token_ids`` at positions ``start ..``; sample after the last one if ``sample``."""

    seq_id: int
    start: int
    token_ids: tuple[int, ...]
    block_table: tuple[int, ...]
    sample: bool
    # Trailing tokens of ``token_ids`` that are speculative drafts, verified this step.
    num_drafts: int = 0


@dataclass(frozen=True, slots=True)
class SchedulerOutput:
    chunks: tuple[ScheduledChunk, ...]
    preempted: tuple[int, ...]

    @property
    def num_batched_tokens(self) -> int:
        return sum(len(c.token_ids) for c in self.chunks)


@dataclass(frozen=True, slots=True)
class SeqUpdate:
    seq_id: int
    new_tokens: tuple[int, ...]  # one, or accepted drafts plus one; cut after an end token
    finish_reason: FinishReason | None


class Scheduler:
    """See the module docstring. Not thread-safe: one driver calls it."""

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.blocks = BlockManager(
            config.num_blocks, config.block_size, prefix_caching=config.prefix_caching
        )
        self.waiting: deque[SeqState] = deque()
        self.running: list[SeqState] = []
        self.seqs: dict[int, SeqState] = {}
        self._in_flight: SchedulerOutput | None = None
        self.num_preemptions = 0
        self.num_draft_tokens = 0  # drafts proposed and verified
        self.num_accepted_tokens = 0  # of which accepted

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: SeqState) -> None:
        """Queue a new sequence; ``Overloaded`` if the waiting queue is full."""
        if seq.seq_id in self.seqs:
            raise Conflict(f"sequence {seq.seq_id} exists")
        if seq.num_tokens >= self.config.max_model_len:
            raise InvalidArgument(
                f"prompt of {seq.num_tokens} tokens leaves no room in a context of "
                f"{self.config.max_model_len}"
            )
        if len(self.waiting) >= self.config.max_waiting:
            raise Overloaded("scheduler queue full", retry_after_ms=1000)
        self.seqs[seq.seq_id] = seq
        self.waiting.append(seq)

    def schedule(self) -> SchedulerOutput:
        assert self._in_flight is None, "update() must follow every schedule()"
        budget = self.config.max_num_batched_tokens
        chunks: list[ScheduledChunk] = []
        preempted: list[int] = []
        cfg = self.config
        speculating = (
            cfg.num_speculative_tokens > 0 and len(self.running) <= cfg.speculative_max_batch
        )
        index = 0
        while index < len(self.running) and budget > 0:
            seq = self.running[index]
            count = min(seq.num_tokens - seq.num_computed, budget)
            assert count > 0
            drafts: tuple[int, ...] = ()
            if speculating and seq.num_tokens - seq.num_computed == 1:
                drafts = self._drafts(seq, budget - 1)
                if drafts and not self.blocks.grow(seq.seq_id, seq.num_tokens + len(drafts)):
                    drafts = ()  # drafts never cost another sequence its blocks
            while not self.blocks.grow(seq.seq_id, seq.num_computed + count):
                victim = self.running[-1]
                self._preempt(victim)
                preempted.append(victim.seq_id)
                if victim is seq:
                    break
            if seq.status is not SeqStatus.RUNNING:
                break
            chunks.append(self._chunk(seq, count, drafts))
            budget -= count + len(drafts)
            index += 1
        if not preempted:
            budget = self._admit(budget, chunks)
        out = SchedulerOutput(tuple(chunks), tuple(preempted))
        self._in_flight = out
        return out

    def _admit(self, budget: int, chunks: list[ScheduledChunk]) -> int:
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting[0]
            tokens = seq.token_ids
            cached = self.blocks.cached_prefix_tokens(tokens)
            remaining = seq.num_tokens - cached
            if remaining > budget and not self.config.chunked_prefill:
                break
            count = min(remaining, budget)
            if not self.blocks.can_allocate(tokens, cached + count):
                break
            got = self.blocks.allocate(seq.seq_id, tokens, cached + count)
            assert got == cached
            self.waiting.popleft()
            seq.num_computed = cached
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)
            chunks.append(self._chunk(seq, count))
            budget -= count
        return budget

    def _drafts(self, seq: SeqState, room: int) -> tuple[int, ...]:
        """N-gram drafts for a decoding sequence, never past its max tokens or model length."""
        cfg = self.config
        k = min(
            cfg.num_speculative_tokens,
            room,
            seq.max_tokens - len(seq.output) - 1,
            cfg.max_model_len - seq.num_tokens - 1,
        )
        if k < 1 or not seq.speculate:
            return ()
        return tuple(ngram_propose(seq.token_ids, cfg.speculative_ngram, k))

    def _chunk(self, seq: SeqState, count: int, drafts: tuple[int, ...] = ()) -> ScheduledChunk:
        start = seq.num_computed
        tokens = seq.token_ids[start : start + count]
        return ScheduledChunk(
            seq_id=seq.seq_id,
            start=start,
            token_ids=(*tokens, *drafts),
            block_table=tuple(self.blocks.table(seq.seq_id)),
            sample=start + count == seq.num_tokens,
            num_drafts=len(drafts),
        )

    def _preempt(self, seq: SeqState) -> None:
        self.running.remove(seq)
        self.blocks.free(seq.seq_id)
        seq.num_computed = 0
        seq.status = SeqStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def update(
        self, output: SchedulerOutput, sampled: Mapping[int, int | Sequence[int]]
    ) -> list[SeqUpdate]:
        """Apply one step's results: ``sampled[seq_id]`` for every chunk with ``sample``.

        For a chunk with drafts it is the accepted drafts (a prefix of them) plus one token;
        otherwise one token. Tokens after an end condition are dropped. Chunks whose
        sequence was aborted meanwhile are skipped.
        """
        assert output is self._in_flight, "update() takes the last schedule()'s output"
        self._in_flight = None
        updates: list[SeqUpdate] = []
        for chunk in output.chunks:
            seq = self.seqs.get(chunk.seq_id)
            if seq is None or seq.status is not SeqStatus.RUNNING:
                continue
            if not chunk.sample:
                seq.num_computed = chunk.start + len(chunk.token_ids)
                self.blocks.mark_computed(seq.seq_id, seq.token_ids, seq.num_computed)
                continue
            got = sampled[chunk.seq_id]
            tokens = (got,) if isinstance(got, int) else tuple(got)
            drafts = chunk.token_ids[len(chunk.token_ids) - chunk.num_drafts :]
            assert 1 <= len(tokens) <= chunk.num_drafts + 1, "one token plus accepted drafts"
            assert tokens[:-1] == drafts[: len(tokens) - 1], "accepted tokens must be drafts"
            self.num_draft_tokens += chunk.num_drafts
            self.num_accepted_tokens += len(tokens) - 1
            emitted, reason = self._append(seq, tokens)
            # KV is valid up to the last accepted draft; rejected drafts' slots lie beyond.
            seq.num_computed = chunk.start + len(chunk.token_ids) - chunk.num_drafts
            seq.num_computed += len(emitted) - 1
            self.blocks.mark_computed(seq.seq_id, seq.token_ids, seq.num_computed)
            if reason is not None:
                self.finish(seq.seq_id, reason)
            updates.append(SeqUpdate(seq.seq_id, emitted, reason))
        return updates

    def _append(
        self, seq: SeqState, tokens: tuple[int, ...]
    ) -> tuple[tuple[int, ...], FinishReason | None]:
        """Append tokens in order up to the first that ends the sequence."""
        for count, token in enumerate(tokens, start=1):
            seq.output.append(token)
            reason = self._end_reason(seq, token)
            if reason is not None:
                return tokens[:count], reason
        return tokens, None

    def discard(self, output: SchedulerOutput) -> None:
        """Forget a step that failed to run: nothing advances, the chunks run again later."""
        assert output is self._in_flight, "discard() takes the last schedule()'s output"
        self._in_flight = None

    def _end_reason(self, seq: SeqState, token: int) -> FinishReason | None:
        if token in seq.end_token_ids:
            return FinishReason.STOP
        if len(seq.output) >= seq.max_tokens or seq.num_tokens >= self.config.max_model_len:
            return FinishReason.LENGTH
        return None

    def finish(self, seq_id: int, reason: FinishReason) -> bool:
        """End a sequence now (stop string, cancel); False if it already ended or is unknown."""
        seq = self.seqs.pop(seq_id, None)
        if seq is None:
            return False
        if seq.status is SeqStatus.WAITING:
            self.waiting.remove(seq)
        elif seq.status is SeqStatus.RUNNING:
            self.running.remove(seq)
            self.blocks.free(seq_id)
        seq.status = SeqStatus.FINISHED
        seq.finish_reason = reason
        return True

    def abort(self, seq_id: int) -> bool:
        return self.finish(seq_id, FinishReason.CANCELLED)

    def get(self, seq_id: int) -> SeqState:
        try:
            return self.seqs[seq_id]
        except KeyError:
            raise NotFound(f"sequence {seq_id} is not live") from None

    def check_invariants(self) -> None:
        """Assert structural invariants (used by tests and the contract)."""
        self.blocks.check_invariants()
        live = {s.seq_id for s in self.waiting} | {s.seq_id for s in self.running}
        assert live == set(self.seqs), "live set disagrees with queues"
        assert len(self.running) <= self.config.max_num_seqs
        for seq in self.waiting:
            assert seq.status is SeqStatus.WAITING and not self.blocks.has(seq.seq_id)
        for seq in self.running:
            assert seq.status is SeqStatus.RUNNING
            assert 0 <= seq.num_computed <= seq.num_tokens
            covered = len(self.blocks.table(seq.seq_id)) * self.config.block_size
            assert covered >= seq.num_computed
