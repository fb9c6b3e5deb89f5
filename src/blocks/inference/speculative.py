"""Speculative decoding: a cheap draft proposes tokens, the target checks them in one pass.

Theory of operation: per round, the draft proposes ``k`` tokens ``d_1..d_k`` with their
draft distributions ``q_i``; the target runs once over the last accepted token and the
drafts, giving ``p_1..p_{k+1}``. Drafts are accepted left to right:

* greedy: ``d_i`` is accepted while it equals ``argmax p_i``; at the first mismatch the
  target's argmax is taken instead. The output is exactly the target's greedy output.
* sampling: ``d_i`` is accepted with probability ``min(1, p_i(d_i) / q_i(d_i))``; on
  rejection a token is drawn from ``normalize(max(p_i - q_i, 0))`` and the round ends. If all
  ``k`` are accepted, a bonus token is drawn from ``p_{k+1}``. Each emitted token is then
  distributed exactly as the target's ``p_i`` (Leviathan et al., Chen et al., 2023): the
  accepted mass ``sum_x min(p, q)`` plus the rejected residual add back up to ``p``.

Drafts come from a smaller model sharing the vocabulary (``truncated_draft`` keeps the first
layers of the target), or from *n-gram lookup*: find the latest earlier occurrence of the
last ``n`` tokens and propose what followed. A lookup proposal is a point mass (``q = 1`` on
the token), for which the same rule stays exact.

Rolling back is free with a paged KV cache: rejected positions are simply overwritten later,
because each model's computed-token count is reset to the accepted length. This decoder runs
one sequence at a time (the batch-1, latency-bound case speculation helps with). The batched
engine speculates too, with n-gram drafts only (see ``scheduler``), and verifies them with
``accept_drafts`` from here: a draft *model* would need its own paged cache, preemption and
``k`` sequential passes per step for every sequence in the batch, so it stays here.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from blocks.core.errors import InvalidArgument
from blocks.inference.model import LlamaForCausalLM, ModelConfig
from blocks.inference.ngram import ngram_propose
from blocks.inference.params import SamplingParams
from blocks.inference.runner import ModelRunner
from blocks.inference.sampling import argmax_rows, make_generator, target_probs
from blocks.inference.scheduler import ScheduledChunk

__all__ = [
    "SpeculativeDecoder",
    "SpeculativeResult",
    "accept_drafts",
    "ngram_propose",
    "truncated_draft",
]

MAX_SPECULATIVE_TOKENS = 16


@dataclass(frozen=True, slots=True)
class SpeculativeResult:
    token_ids: tuple[int, ...]
    proposed: int
    accepted: int
    target_passes: int

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0


def truncated_draft(target: LlamaForCausalLM, num_layers: int) -> LlamaForCausalLM:
    """A draft made of the target's first ``num_layers`` layers, its final norm and head."""
    if not 1 <= num_layers <= target.config.num_layers:
        raise InvalidArgument("num_layers must be in [1, target layers]")
    fields = {name: getattr(target.config, name) for name in ModelConfig.__slots__}
    config = ModelConfig(**{**fields, "num_layers": num_layers})
    draft = LlamaForCausalLM(config).to(device=target.device, dtype=target.dtype)
    state = {k: v for k, v in target.state_dict().items() if not _layer_beyond(k, num_layers)}
    draft.load_state_dict(state, strict=False)
    return draft.eval()


def _layer_beyond(name: str, num_layers: int) -> bool:
    parts = name.split(".")
    return len(parts) > 2 and parts[1] == "layers" and int(parts[2]) >= num_layers


def accept_drafts(
    drafts: Sequence[int],
    draft_probs: Sequence[torch.Tensor | None],
    target_rows: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None,
) -> list[int]:
    """Tokens to emit this round: accepted drafts plus one correction or bonus token.

    ``target_rows`` has ``len(drafts) + 1`` logits rows; ``draft_probs[i]`` is ``q_i`` or
    None for a point-mass proposal.
    """
    out: list[int] = []
    greedy = argmax_rows(target_rows) if params.greedy else []  # every row's, in one call
    for index, token in enumerate(drafts):
        row = target_rows[index]
        if params.greedy:
            best = greedy[index]
            out.append(best)
            if best != token:
                return out
            continue
        p = target_probs(row, params)
        q = draft_probs[index]
        q_token = 1.0 if q is None else float(q[token])
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        if q_token > 0 and u < min(1.0, float(p[token]) / q_token):
            out.append(token)
            continue
        if q is None:
            residual = p.clone()
            residual[token] = 0.0
        else:
            residual = torch.clamp(p - q, min=0.0)
        if float(residual.sum()) <= 0.0:  # p == q: nothing to correct towards
            residual = p
        out.append(int(torch.multinomial(residual / residual.sum(), 1, generator=generator)))
        return out
    last = target_rows[len(drafts)]
    if params.greedy:
        out.append(greedy[len(drafts)])
    else:
        bonus = torch.multinomial(target_probs(last, params), 1, generator=generator)
        out.append(int(bonus))
    return out


class SpeculativeDecoder:
    """Generates one sequence with a draft model or n-gram lookup; see the module docstring."""

    def __init__(
        self,
        target: LlamaForCausalLM,
        draft: LlamaForCausalLM | None = None,
        *,
        num_speculative: int = 4,
        ngram: int = 3,
        max_len: int = 1024,
        block_size: int = 16,
        rng: random.Random | None = None,
    ) -> None:
        if not 1 <= num_speculative <= MAX_SPECULATIVE_TOKENS:
            raise InvalidArgument(f"num_speculative must be in [1, {MAX_SPECULATIVE_TOKENS}]")
        if draft is not None and draft.config.vocab_size != target.config.vocab_size:
            raise InvalidArgument("draft and target must share a vocabulary")
        self.k = num_speculative
        self.ngram = ngram
        self.max_len = min(max_len, target.config.max_position)
        num_blocks = -(-(self.max_len + MAX_SPECULATIVE_TOKENS + 1) // block_size)
        self.table = tuple(range(num_blocks))
        self.target = ModelRunner(target, num_blocks, block_size)
        self.draft = None if draft is None else ModelRunner(draft, num_blocks, block_size)
        self.eos = frozenset(target.config.eos_token_ids)
        self.rng = rng or random.Random(0)

    def _propose(
        self,
        context: list[int],
        draft_done: int,
        params: SamplingParams,
        generator: torch.Generator | None,
        k: int,
    ) -> tuple[list[int], list[torch.Tensor | None], int]:
        if self.draft is None:
            looked_up = ngram_propose(context, self.ngram, k)
            return looked_up, [None] * len(looked_up), draft_done
        drafts: list[int] = []
        probs: list[torch.Tensor | None] = []
        work = list(context)
        for _ in range(k):
            chunk = ScheduledChunk(0, draft_done, tuple(work[draft_done:]), self.table, True)
            row = self.draft.run([chunk])[0].cpu()
            draft_done = len(work)
            if params.greedy:
                token = int(row.argmax())
                probs.append(None)
            else:
                q = target_probs(row, params)
                token = int(torch.multinomial(q, 1, generator=generator))
                probs.append(q)
            drafts.append(token)
            work.append(token)
        return drafts, probs, draft_done

    def generate(self, prompt: Sequence[int], params: SamplingParams) -> SpeculativeResult:
        context = list(prompt)
        if not context or len(context) >= self.max_len:
            raise InvalidArgument("prompt must be non-empty and shorter than max_len")
        generator = make_generator(params, self.rng)
        output: list[int] = []
        target_done = draft_done = 0
        proposed = accepted = passes = 0
        while len(output) < params.max_tokens and len(context) < self.max_len:
            room = min(self.k, params.max_tokens - len(output) - 1, self.max_len - len(context) - 1)
            drafts, probs, draft_done = self._propose(
                context, draft_done, params, generator, max(room, 0)
            )
            chunk_tokens = tuple(context[target_done:] + drafts)
            chunk = ScheduledChunk(0, target_done, chunk_tokens, self.table, True)
            rows = self.target.run_all(chunk)[-(len(drafts) + 1) :].cpu()
            passes += 1
            emitted = accept_drafts(drafts, probs, rows, params, generator)
            proposed += len(drafts)
            accepted += len(emitted) - 1
            target_done = len(context) + len(emitted) - 1
            draft_done = min(draft_done, target_done)
            for token in emitted:
                output.append(token)
                context.append(token)
                if (token in self.eos and not params.ignore_eos) or token in params.stop_token_ids:
                    return SpeculativeResult(tuple(output), proposed, accepted, passes)
                if len(output) >= params.max_tokens:
                    break
        return SpeculativeResult(tuple(output), proposed, accepted, passes)
