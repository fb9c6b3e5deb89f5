"""Speculative decoding keeps the target's greedy output and its sampling distribution."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from inference_reference import make_tiny_model, reference_greedy, reference_logits

from blocks.core.errors import InvalidArgument
from blocks.inference.params import SamplingParams
from blocks.inference.sampling import target_probs
from blocks.inference.speculative import (
    SpeculativeDecoder,
    accept_drafts,
    ngram_propose,
    truncated_draft,
)

TARGET = make_tiny_model(seed=5)
DRAFT = make_tiny_model(seed=6)  # unrelated weights: many rejections, still exact


@given(
    st.lists(st.integers(1, 63), min_size=1, max_size=12),
    st.integers(1, 12),
    st.sampled_from(["model", "ngram", "truncated"]),
)
@settings(max_examples=15)
def test_speculative_greedy_equals_target_greedy(
    prompt: list[int], max_tokens: int, kind: str
) -> None:
    draft = {"model": DRAFT, "ngram": None, "truncated": truncated_draft(TARGET, 1)}[kind]
    decoder = SpeculativeDecoder(
        TARGET, draft, num_speculative=3, ngram=1, max_len=64, block_size=4
    )
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    result = decoder.generate(prompt, params)
    want, _ = reference_greedy(TARGET, prompt, max_tokens)
    assert list(result.token_ids) == want
    assert result.target_passes <= max_tokens


def test_ngram_lookup_accepts_repeats() -> None:
    assert ngram_propose([1, 2, 3, 9, 1, 2], n=2, k=3) == [3, 9, 1]
    assert ngram_propose([1, 2, 3], n=2, k=3) == []
    prompt = [5, 6, 7, 8] * 4
    decoder = SpeculativeDecoder(TARGET, None, num_speculative=4, ngram=2, max_len=64, block_size=4)
    result = decoder.generate(
        prompt, SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    )
    assert list(result.token_ids) == reference_greedy(TARGET, prompt, 8)[0]


def chi_square_ok(counts: dict[int, int], probs: torch.Tensor, total: int) -> bool:
    """Pearson chi-square against ``probs`` with small cells pooled; 0.1% significance."""
    observed, expected = [], []
    rest_o, rest_e = 0.0, 0.0
    for token, p in enumerate(probs.tolist()):
        if p * total >= 5:
            observed.append(counts.get(token, 0))
            expected.append(p * total)
        else:
            rest_o += counts.get(token, 0)
            rest_e += p * total
    observed.append(rest_o)
    expected.append(rest_e)
    stat = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True) if e > 0)
    dof = max(1, sum(1 for e in expected if e > 0) - 1)
    # Wilson-Hilferty approximation of the chi-square 99.9% quantile.
    z = 3.09
    critical = dof * (1 - 2 / (9 * dof) + z * (2 / (9 * dof)) ** 0.5) ** 3
    return stat < critical


def test_acceptance_rule_reproduces_the_target_distribution() -> None:
    """Drafts drawn from q, filtered by the rule, come out distributed as p."""
    gen = torch.Generator().manual_seed(7)
    params = SamplingParams(temperature=1.0, max_tokens=1)
    target_row = torch.tensor([2.0, 1.0, 0.5, -1.0, 0.0, 1.5])
    p = target_probs(target_row, params)
    q = torch.softmax(torch.tensor([0.0, 2.0, 0.0, 1.0, -2.0, 0.0]), dim=-1)
    rows = torch.stack([target_row, target_row])
    counts: dict[int, int] = {}
    trials = 6000
    for _ in range(trials):
        draft = int(torch.multinomial(q, 1, generator=gen))
        first = accept_drafts([draft], [q], rows, params, gen)[0]
        counts[first] = counts.get(first, 0) + 1
    assert chi_square_ok(counts, p, trials)
    # And the check has teeth: the draft distribution itself is rejected.
    assert not chi_square_ok({i: int(c * trials) for i, c in enumerate(q.tolist())}, p, trials)


def test_speculative_sampling_matches_target_end_to_end() -> None:
    prompt = [11, 12, 13]
    params = SamplingParams(max_tokens=2, temperature=1.0, ignore_eos=True)
    p_first = target_probs(reference_logits(TARGET, prompt)[-1].float(), params)
    decoder = SpeculativeDecoder(
        TARGET, DRAFT, num_speculative=2, max_len=32, block_size=4, rng=random.Random(3)
    )
    counts: dict[int, int] = {}
    trials = 400
    for _ in range(trials):
        first = decoder.generate(prompt, params).token_ids[0]
        counts[first] = counts.get(first, 0) + 1
    assert chi_square_ok(counts, p_first, trials)


def test_bad_configuration() -> None:
    with pytest.raises(InvalidArgument):
        SpeculativeDecoder(TARGET, make_tiny_model(vocab=32))
    with pytest.raises(InvalidArgument):
        SpeculativeDecoder(TARGET, None, num_speculative=0)
    with pytest.raises(InvalidArgument):
        truncated_draft(TARGET, 9)
