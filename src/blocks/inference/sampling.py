"""Picking next tokens from logits: greedy, temperature, top-k, top-p, seeds, logprobs.

Theory of operation: the runner hands over one float32 logits row per sampling sequence.
Each row is processed under its own request's ``SamplingParams`` and drawn with its own
``torch.Generator`` (seeded from the request's seed, or from the engine's injected
``random.Random``), so what one request draws never depends on which other requests share
the step. Sampling runs on the CPU: the rows are small next to the model, and CPU generators
give the same draws whatever device computed the logits.

``target_probs`` is the processed distribution (temperature, then top-k, then top-p,
renormalized) a token is drawn from; speculative decoding uses the same function for both
the target and the draft, which is what makes its acceptance rule exact.

``apply_penalties`` applies OpenAI's presence and frequency penalties to a row before it is
picked from (greedy or sampled); the reported logprobs stay the model's own.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from blocks.inference.params import SamplingParams, TokenLogprob

__all__ = [
    "apply_penalties",
    "argmax_rows",
    "make_generator",
    "sample_rows",
    "target_probs",
    "token_logprob",
]


def make_generator(params: SamplingParams, rng: random.Random) -> torch.Generator | None:
    """The request's generator: None for greedy; seeded by ``params.seed`` or by ``rng``."""
    if params.greedy:
        return None
    generator = torch.Generator(device="cpu")
    seed = params.seed if params.seed is not None else rng.getrandbits(63)
    generator.manual_seed(seed)
    return generator


def target_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Probabilities ``(..., vocab)`` after temperature, top-k and top-p (not for greedy)."""
    assert not params.greedy
    scores = logits.float() / params.temperature
    vocab = scores.shape[-1]
    if 0 < params.top_k < vocab:
        kth = torch.topk(scores, params.top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        sorted_probs = torch.softmax(sorted_scores, dim=-1)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        # Keep the smallest head whose mass reaches top_p (the first token always stays).
        drop_sorted = before >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    return torch.softmax(scores, dim=-1)


def apply_penalties(
    logits: torch.Tensor, generated: Sequence[int], params: SamplingParams
) -> torch.Tensor:
    """``logits`` (one row) less ``count * frequency_penalty + presence_penalty`` per token
    generated so far; the same tensor when the request has no penalties."""
    if not params.penalized or not generated:
        return logits
    ids, counts = torch.unique(torch.tensor(generated, dtype=torch.long), return_counts=True)
    penalty = counts.to(logits.dtype) * params.frequency_penalty + params.presence_penalty
    out = logits.clone()
    out[ids] -= penalty
    return out


def token_logprob(logits: torch.Tensor, token: int, top: int) -> TokenLogprob:
    """The token's log-probability under ``logits`` and the ``top`` most likely tokens'."""
    logprobs = torch.log_softmax(logits, dim=-1)
    alternatives: tuple[tuple[int, float], ...] = ()
    if top > 0:
        values, indices = torch.topk(logprobs, top)
        alternatives = tuple(
            (int(i), float(v)) for i, v in zip(indices.tolist(), values.tolist(), strict=True)
        )
    return TokenLogprob(token_id=token, logprob=float(logprobs[token]), top=alternatives)


def argmax_rows(logits: torch.Tensor) -> list[int]:
    """Each row's first index of its largest value (``torch.argmax``'s answer), by numpy
    for float32/float64 rows on the CPU: torch's argmax took ~125 µs on one 49,152-wide
    row where numpy's takes ~16 (hot, one thread; docs/inference.md)."""
    rows = logits.detach()
    if rows.device.type == "cpu" and rows.dtype in (torch.float32, torch.float64):
        return rows.numpy().argmax(axis=-1).tolist()  # type: ignore[no-any-return]
    return rows.argmax(dim=-1).tolist()


def sample_rows(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator | None],
    generated: Sequence[Sequence[int]] | None = None,
) -> tuple[list[int], list[TokenLogprob | None]]:
    """One token per row of ``logits`` ``(rows, vocab)``, and its logprob when asked.

    ``generated[i]`` is row ``i``'s output so far, needed only for penalized requests.
    """
    assert logits.shape[0] == len(params) == len(generators)
    if params and all(p.greedy and not p.penalized and p.logprobs is None for p in params):
        # Plain greedy rows (batch-1 decode's usual case): one argmax, nothing per row.
        return argmax_rows(logits), [None] * len(params)
    rows = logits.detach().cpu()  # float32 or wider already
    tokens: list[int] = []
    logprobs: list[TokenLogprob | None] = []
    greedy_choice = argmax_rows(rows) if len(params) else []
    for index, (p, generator) in enumerate(zip(params, generators, strict=True)):
        row = rows[index]
        if p.penalized:
            assert generated is not None
            row = apply_penalties(row, generated[index], p)
        if p.greedy:
            token = int(row.argmax()) if p.penalized else int(greedy_choice[index])
        else:
            probs = target_probs(row, p)
            token = int(torch.multinomial(probs, 1, generator=generator))
        tokens.append(token)
        logprobs.append(
            None if p.logprobs is None else token_logprob(rows[index], token, p.logprobs)
        )
    return tokens, logprobs
