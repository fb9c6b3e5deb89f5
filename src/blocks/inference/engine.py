"""The synchronous engine: scheduler + model runner + sampling + detokenization.

Theory of operation: ``LLMEngine`` is driven by calling ``step()``; it never sleeps, spawns
or awaits (the asyncio driver in ``async_engine`` does that). One step:

1. the scheduler picks chunks under its token and sequence budgets;
2. the runner computes them in one forward pass and returns logits for chunks that end at a
   sequence's last token;
3. each such row is sampled under its request's parameters and generator;
4. the scheduler records the tokens (and finishes sequences at EOS or max tokens);
5. each request's detokenizer turns new tokens into text; stop strings are searched in the
   text, and text that could still be the start of a stop string is held back, so a stop
   string never leaks into the output.

With ``num_speculative_tokens > 0`` a decoding chunk may carry n-gram drafts (see
``scheduler``); its logits rows verify them by ``speculative.accept_drafts``, the rule that
keeps the target's distribution (greedy: exactly the target's greedy tokens), and a delta
then holds several tokens. Requests with an explicit ``seed`` never carry drafts: whether a
step speculates depends on the batch, and their draws must not.

The result is one ``TokenDelta`` per request that made progress. Times (queue, first token,
per output token) are read from the injected clock and fed to ``EngineMetrics``.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import Conflict, InvalidArgument
from blocks.inference.constrain import Constraint, Vocabulary, apply_masks, token_bytes_of
from blocks.inference.metrics import EngineMetrics
from blocks.inference.model import LlamaForCausalLM
from blocks.inference.params import (
    MAX_LOGIT_BIAS,
    Completion,
    FinishReason,
    SamplingParams,
    TokenDelta,
    TokenLogprob,
)
from blocks.inference.runner import ModelRunner
from blocks.inference.sampling import make_generator, sample_rows, token_logprob
from blocks.inference.scheduler import (
    ScheduledChunk,
    Scheduler,
    SchedulerConfig,
    SeqState,
    SeqUpdate,
)
from blocks.inference.speculative import accept_drafts
from blocks.inference.tokenizer import IncrementalDetokenizer, TokenizerLike

__all__ = ["EngineConfig", "LLMEngine", "join_deltas"]

MAX_REQUEST_ID_CHARS = 128


@dataclass(frozen=True, slots=True)
class EngineConfig:
    num_blocks: int = 512
    block_size: int = 16
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 512
    max_model_len: int = 2048
    max_waiting: int = 1024
    chunked_prefill: bool = True
    prefix_caching: bool = True
    num_speculative_tokens: int = 0
    speculative_ngram: int = 3
    speculative_max_batch: int = 4

    def scheduler_config(self) -> SchedulerConfig:
        return SchedulerConfig(
            num_blocks=self.num_blocks,
            block_size=self.block_size,
            max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens,
            max_model_len=self.max_model_len,
            max_waiting=self.max_waiting,
            chunked_prefill=self.chunked_prefill,
            prefix_caching=self.prefix_caching,
            num_speculative_tokens=self.num_speculative_tokens,
            speculative_ngram=self.speculative_ngram,
            speculative_max_batch=self.speculative_max_batch,
        )


@dataclass(slots=True)
class _Request:
    request_id: str
    seq_id: int
    params: SamplingParams
    prompt_tokens: int
    detokenizer: IncrementalDetokenizer
    generator: torch.Generator | None
    arrival_s: float
    text: str = ""  # all text decoded so far
    sent_chars: int = 0  # how much of ``text`` was handed out
    completion_tokens: int = 0
    scheduled_s: float | None = None
    first_token_s: float | None = None
    token_ids: list[int] = field(default_factory=list)
    constraint: Constraint | None = None  # set when params.grammar is


class LLMEngine:
    """A batched generation engine around one model; see the module docstring."""

    def __init__(
        self,
        model: LlamaForCausalLM,
        tokenizer: TokenizerLike,
        config: EngineConfig | None = None,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        metrics: EngineMetrics | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        if self.config.max_model_len > model.config.max_position:
            self.config = _with_max_len(self.config, model.config.max_position)
        self.model = model
        self.tokenizer = tokenizer
        self.scheduler = Scheduler(self.config.scheduler_config())
        self.runner = ModelRunner(model, self.config.num_blocks, self.config.block_size)
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random(0)
        self.metrics = metrics or EngineMetrics()
        self._requests: dict[str, _Request] = {}
        self._by_seq: dict[int, _Request] = {}
        self._seq_ids = itertools.count()
        self._eos = frozenset(tokenizer.eos_token_ids) | frozenset(model.config.eos_token_ids)
        self._vocabulary: Vocabulary | None = None  # built at the first constrained request

    # ------------------------------------------------------------------ commands

    def add_request(
        self, request_id: str, prompt: str | Sequence[int], params: SamplingParams
    ) -> int:
        """Queue a request; returns its prompt length in tokens.

        Raises ``InvalidArgument`` (bad prompt, too long), ``Conflict`` (duplicate id) or
        ``Overloaded`` (queue full); nothing is queued then.
        """
        if not request_id or len(request_id) > MAX_REQUEST_ID_CHARS:
            raise InvalidArgument(f"request id must be 1 to {MAX_REQUEST_ID_CHARS} chars")
        if request_id in self._requests:
            raise Conflict(f"request {request_id!r} is already running")
        prompt_ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        vocab = self.model.config.vocab_size
        if not prompt_ids or any(not 0 <= t < vocab for t in prompt_ids):
            raise InvalidArgument("prompt must be non-empty with token ids inside the vocabulary")
        _check_logit_bias(params, vocab)
        ends = frozenset(params.stop_token_ids)
        if not params.ignore_eos:
            ends |= self._eos
        seq_id = next(self._seq_ids)
        # Drafts are verified without penalties, and a seeded request's draws must not
        # depend on whether its step speculated.
        speculate = (params.greedy or params.seed is None) and not params.penalized
        speculate = speculate and params.grammar is None  # drafts would bypass the mask
        speculate = speculate and not params.logit_bias  # and the bias
        constraint = None
        if params.grammar is not None:
            constraint = Constraint(params.grammar, self._constraint_vocabulary(), ends)
        self.scheduler.add(
            SeqState(seq_id, prompt_ids, params.max_tokens, ends, speculate=speculate)
        )
        request = _Request(
            request_id=request_id,
            seq_id=seq_id,
            params=params,
            prompt_tokens=len(prompt_ids),
            detokenizer=IncrementalDetokenizer(self.tokenizer),
            generator=make_generator(params, self.rng),
            arrival_s=self.clock.monotonic(),
            constraint=constraint,
        )
        self._requests[request_id] = request
        self._by_seq[seq_id] = request
        self.metrics.count_tokens(prompt=len(prompt_ids))
        return len(prompt_ids)

    def _constraint_vocabulary(self) -> Vocabulary:
        """The tokenizer's vocabulary indexed for grammar masks (built once, ~0.3 s for
        SmolLM2's 49,152 tokens)."""
        if self._vocabulary is None:
            size = self.model.config.vocab_size
            self._vocabulary = Vocabulary(token_bytes_of(self.tokenizer)[:size], size)
        return self._vocabulary

    def abort(self, request_id: str) -> bool:
        """Cancel a request; False if it is unknown or already finished."""
        request = self._requests.pop(request_id, None)
        if request is None:
            return False
        del self._by_seq[request.seq_id]
        self.scheduler.abort(request.seq_id)
        self.metrics.count_request(FinishReason.CANCELLED.value)
        return True

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    # ------------------------------------------------------------------ stepping

    def step(self) -> list[TokenDelta]:
        """Run one batch; return what each request gained."""
        plan = self.scheduler.schedule()
        if not plan.chunks:
            self.scheduler.update(plan, {})
            return []
        now = self.clock.monotonic()
        for chunk in plan.chunks:
            request = self._by_seq[chunk.seq_id]
            if request.scheduled_s is None:
                request.scheduled_s = now
                self.metrics.observe_queue(now - request.arrival_s)
        sampling = [c for c in plan.chunks if c.sample]
        requests = [self._by_seq[c.seq_id] for c in sampling]
        try:
            tokens, logprobs = self._sample(sampling, requests, self.runner.run(plan.chunks))
        except BaseException:
            self.scheduler.discard(plan)
            raise
        sampled = {c.seq_id: t for c, t in zip(sampling, tokens, strict=True)}
        lp_by_seq = {c.seq_id: lp for c, lp in zip(sampling, logprobs, strict=True)}
        updates = self.scheduler.update(plan, sampled)
        now = self.clock.monotonic()
        deltas = [self._apply(u, lp_by_seq[u.seq_id], now) for u in updates]
        stats = self.scheduler.blocks.stats()
        self.metrics.set_cache(stats.usage, stats.prefix_hit_rate)
        return deltas

    def _sample(
        self, chunks: Sequence[ScheduledChunk], requests: Sequence[_Request], logits: torch.Tensor
    ) -> tuple[list[tuple[int, ...]], list[tuple[TokenLogprob, ...]]]:
        """Tokens (and logprobs) per sampling chunk; ``logits`` has ``logit_rows`` per chunk."""
        firsts: list[int] = []  # each chunk's first row in ``logits``
        row = 0
        for chunk in chunks:
            firsts.append(row)
            row += chunk.num_drafts + 1
        plain = [i for i, c in enumerate(chunks) if not c.num_drafts]
        tokens: list[tuple[int, ...]] = [()] * len(chunks)
        logprobs: list[tuple[TokenLogprob, ...]] = [()] * len(chunks)
        if plain:
            rows = logits[[firsts[i] for i in plain]] if len(plain) < len(chunks) else logits
            rows = apply_masks(rows, [requests[i].constraint for i in plain])
            rows = _biased(rows, [requests[i].params for i in plain])
            picked, picked_lp = sample_rows(
                rows,
                [requests[i].params for i in plain],
                [requests[i].generator for i in plain],
                [requests[i].token_ids for i in plain],
            )
            for i, token, lp in zip(plain, picked, picked_lp, strict=True):
                tokens[i] = (token,)
                constraint = requests[i].constraint
                if constraint is not None:
                    constraint.advance(token)
                logprobs[i] = () if lp is None else (lp,)
        for i, chunk in enumerate(chunks):
            if chunk.num_drafts:
                params, generator = requests[i].params, requests[i].generator
                rows = logits[firsts[i] : firsts[i] + chunk.num_drafts + 1].detach().cpu()
                drafts = chunk.token_ids[-chunk.num_drafts :]
                out = accept_drafts(drafts, [None] * len(drafts), rows, params, generator)
                tokens[i] = tuple(out)
                if params.logprobs is not None:
                    top = params.logprobs
                    logprobs[i] = tuple(token_logprob(rows[j], t, top) for j, t in enumerate(out))
        return tokens, logprobs

    def _apply(
        self, update: SeqUpdate, logprobs: tuple[TokenLogprob, ...], now: float
    ) -> TokenDelta:
        request = self._by_seq[update.seq_id]
        reason = update.finish_reason
        texts: list[str] = []
        kept = 0
        for token in update.new_tokens:
            kept += 1
            last = kept == len(update.new_tokens)
            request.completion_tokens += 1
            request.token_ids.append(token)
            self.metrics.count_tokens(generated=1)
            if request.first_token_s is None:
                request.first_token_s = now
                self.metrics.observe_ttft(now - request.arrival_s)
            if not (last and reason is FinishReason.STOP):  # an end token has no text
                request.text += request.detokenizer.push([token])
            text, stopped = self._release_text(request, final=last and reason is not None)
            texts.append(text)
            if stopped:
                if reason is None or not last:  # the stop string came first
                    reason = FinishReason.STOP
                self.scheduler.finish(request.seq_id, reason)  # no-op if already ended
                break
        if reason is not None:
            self._finish(request, reason, now)
        return TokenDelta(
            request_id=request.request_id,
            token_ids=update.new_tokens[:kept],
            text="".join(texts),
            logprobs=logprobs[:kept],
            finish_reason=reason,
            prompt_tokens=request.prompt_tokens,
            completion_tokens=request.completion_tokens,
        )

    def _release_text(self, request: _Request, *, final: bool) -> tuple[str, bool]:
        """Text safe to hand out now, and whether a stop string ended the request."""
        stops = request.params.stop
        if final:
            request.text += request.detokenizer.flush()
        if stops:
            longest = max(len(s) for s in stops)
            window_start = max(0, request.sent_chars - longest + 1)
            hits = [i for i in (request.text.find(s, window_start) for s in stops) if i >= 0]
            if hits:
                cut = max(min(hits), request.sent_chars)
                out = request.text[request.sent_chars : cut]
                request.text = request.text[:cut]
                request.sent_chars = cut
                return out, True
            if not final:
                safe = max(request.sent_chars, len(request.text) - longest + 1)
                out = request.text[request.sent_chars : safe]
                request.sent_chars = safe
                return out, False
        out = request.text[request.sent_chars :]
        request.sent_chars = len(request.text)
        return out, False

    def _finish(self, request: _Request, reason: FinishReason, now: float) -> None:
        del self._requests[request.request_id]
        del self._by_seq[request.seq_id]
        self.metrics.count_request(reason.value)
        if request.first_token_s is not None and request.completion_tokens > 1:
            per_token = (now - request.first_token_s) / (request.completion_tokens - 1)
            self.metrics.observe_tpot(per_token)

    # ------------------------------------------------------------------ convenience

    def generate(
        self, prompts: Sequence[str | Sequence[int]], params: SamplingParams
    ) -> list[Completion]:
        """Run ``prompts`` to completion together (blocking); outputs in prompt order."""
        ids = [f"generate-{next(self._seq_ids)}" for _ in prompts]
        prompt_lens = {
            rid: self.add_request(rid, p, params) for rid, p in zip(ids, prompts, strict=True)
        }
        parts: dict[str, list[TokenDelta]] = {rid: [] for rid in ids}
        done: set[str] = set()
        while len(done) < len(ids):
            for delta in self.step():
                parts[delta.request_id].append(delta)
                if delta.finish_reason is not None:
                    done.add(delta.request_id)
        return [join_deltas(rid, prompt_lens[rid], parts[rid]) for rid in ids]


def join_deltas(request_id: str, prompt_tokens: int, deltas: Sequence[TokenDelta]) -> Completion:
    reason = deltas[-1].finish_reason if deltas else FinishReason.CANCELLED
    assert reason is not None
    return Completion(
        request_id=request_id,
        text="".join(d.text for d in deltas),
        token_ids=tuple(t for d in deltas for t in d.token_ids),
        finish_reason=reason,
        prompt_tokens=prompt_tokens,
        logprobs=tuple(lp for d in deltas for lp in d.logprobs),
    )


def _check_logit_bias(params: SamplingParams, vocab: int) -> None:
    """``InvalidArgument`` for a bias outside the vocabulary or one banning every token."""
    if any(token >= vocab for token, _ in params.logit_bias):
        raise InvalidArgument(f"logit_bias token ids must be below the vocabulary size {vocab}")
    banned = {token for token, bias in params.logit_bias if bias <= -MAX_LOGIT_BIAS}
    if len(banned) >= vocab:
        raise InvalidArgument("logit_bias bans every token of the vocabulary")


def _biased(rows: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
    """``rows`` with each request's ``logit_bias`` added (a copy; the same tensor if none):
    -100 sets the token's logit to -inf, and any +100 leaves only the +100 tokens."""
    if not any(p.logit_bias for p in params):
        return rows
    rows = rows.clone()
    for index, p in enumerate(params):
        if not p.logit_bias:
            continue
        row = rows[index]
        ids = torch.tensor([t for t, _ in p.logit_bias], dtype=torch.long, device=row.device)
        biases = torch.tensor([b for _, b in p.logit_bias], dtype=row.dtype, device=row.device)
        row[ids] += biases
        row[ids[biases <= -MAX_LOGIT_BIAS]] = float("-inf")
        forced = ids[biases >= MAX_LOGIT_BIAS]
        if len(forced):
            kept = row[forced].clone()
            row.fill_(float("-inf"))
            row[forced] = kept
    return rows


def _with_max_len(config: EngineConfig, max_len: int) -> EngineConfig:
    return replace(config, max_model_len=max_len)
