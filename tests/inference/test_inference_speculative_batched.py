"""Speculation inside the batched engine: n-gram drafts verified in the same forward pass."""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from hypothesis import settings
from inference_reference import make_tiny_model, reference_greedy, reference_logits
from test_inference_speculative import chi_square_ok

from blocks.inference.contract import EngineContract
from blocks.inference.engine import EngineConfig, LLMEngine
from blocks.inference.params import SamplingParams
from blocks.inference.sampling import target_probs
from blocks.inference.speculative import accept_drafts
from blocks.inference.tokenizer import CharTokenizer

MODEL = make_tiny_model(seed=3)
SPECULATIVE = EngineConfig(
    num_blocks=32,
    block_size=4,
    max_num_seqs=4,
    max_num_batched_tokens=16,
    max_model_len=64,
    num_speculative_tokens=3,
    speculative_ngram=1,
    speculative_max_batch=4,
)


def engine(config: EngineConfig = SPECULATIVE) -> LLMEngine:
    return LLMEngine(MODEL, CharTokenizer(), config)


def greedy(n: int, **kw) -> SamplingParams:  # type: ignore[no-untyped-def]
    return SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True, **kw)


def solo(prompt, max_tokens):  # type: ignore[no-untyped-def]
    tokens, gap = reference_greedy(MODEL, list(prompt), max_tokens)
    assert gap > 1e-9, f"near-tie (gap {gap}); choose another seed"
    return tokens


class SpeculativeBatchInvariance(EngineContract):
    """Greedy output with drafts in a batch equals each request run alone without them."""

    def make_subject(self) -> LLMEngine:
        return engine()

    solo = staticmethod(solo)


TestSpeculativeBatchInvariance = settings(max_examples=20, stateful_step_count=20)(
    SpeculativeBatchInvariance
).TestCase


def test_greedy_with_drafts_equals_greedy_without_and_drafts_are_accepted() -> None:
    prompts = [[5, 6, 7, 8] * 4, [9, 10, 11] * 5, list(range(1, 20))]
    plain = engine(replace(SPECULATIVE, num_speculative_tokens=0)).generate(prompts, greedy(24))
    spec = engine()
    got = spec.generate(prompts, greedy(24))
    assert [o.token_ids for o in got] == [o.token_ids for o in plain]
    assert [o.text for o in got] == [o.text for o in plain]
    proposed, accepted = spec.scheduler.num_draft_tokens, spec.scheduler.num_accepted_tokens
    assert proposed > 0 and 0 < accepted < proposed  # the test exercised both outcomes
    steps = 0
    again = engine()
    for rid, prompt in enumerate(prompts):
        again.add_request(f"r{rid}", prompt, greedy(24))
    while again.has_work():
        again.step()
        steps += 1
    assert steps < 24 + 2  # fewer passes than tokens: some steps emitted several


def test_logprobs_of_accepted_drafts_are_the_models() -> None:
    prompt = [3, 1, 4, 1, 5] * 3
    spec = engine()
    [out] = spec.generate([prompt], greedy(12, logprobs=2))
    assert spec.scheduler.num_accepted_tokens > 0
    tokens = list(prompt)
    assert len(out.logprobs) == len(out.token_ids) == 12
    for entry in out.logprobs:
        want = torch.log_softmax(reference_logits(MODEL, tokens)[-1], dim=-1)
        assert math.isclose(entry.logprob, float(want[entry.token_id]), abs_tol=1e-9)
        tokens.append(entry.token_id)


def test_seeded_requests_never_carry_drafts() -> None:
    spec = engine()
    params = SamplingParams(max_tokens=10, temperature=1.0, seed=11, ignore_eos=True)
    [out] = spec.generate([[5, 6, 7, 8] * 4], params)
    assert spec.scheduler.num_draft_tokens == 0
    [plain] = engine(replace(SPECULATIVE, num_speculative_tokens=0)).generate(
        [[5, 6, 7, 8] * 4], params
    )
    assert out.token_ids == plain.token_ids


def test_point_mass_drafts_keep_the_target_distribution() -> None:
    """n-gram drafts are point masses: accepted with p(d), else drawn from p without d."""
    gen = torch.Generator().manual_seed(5)
    params = SamplingParams(temperature=1.0, max_tokens=1)
    row = torch.tensor([1.0, 2.0, 0.5, -1.0, 0.0])
    p = target_probs(row, params)
    rows = torch.stack([row, row])
    trials = 4000
    counts: dict[int, int] = {}
    for _ in range(trials):
        token = accept_drafts([1], [None], rows, params, gen)[0]
        counts[token] = counts.get(token, 0) + 1
    assert chi_square_ok(counts, p, trials)
    point = torch.zeros(5)
    point[1] = 1.0
    assert not chi_square_ok(counts, point * 0.5 + p * 0.5, trials)


def test_sampling_with_drafts_in_the_engine_keeps_the_target_distribution() -> None:
    """The token verified against a draft is distributed as under the target alone."""
    prompt = list(range(1, 40))  # every token's successor is known: lookups always draft
    params = SamplingParams(max_tokens=3, temperature=1.0, ignore_eos=True)
    spec = engine(replace(SPECULATIVE, num_blocks=64))
    trials = 500
    outs = spec.generate([prompt] * trials, params)
    assert spec.scheduler.num_draft_tokens > trials / 2
    first = target_probs(reference_logits(MODEL, prompt)[-1].float(), params)
    second = torch.zeros_like(first)
    for token in range(first.shape[0]):
        after = target_probs(reference_logits(MODEL, [*prompt, token])[-1].float(), params)
        second += first[token] * after
    counts: dict[int, int] = {}
    for out in outs:
        counts[out.token_ids[1]] = counts.get(out.token_ids[1], 0) + 1
    assert chi_square_ok(counts, second / second.sum(), trials)
