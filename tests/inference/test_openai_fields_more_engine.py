"""``logit_bias`` inside the engine: validation, and biased requests never verify drafts.

Drafts are verified against the model's own logits, so a biased request that carried them
could emit a token its bias banned (or one other than the forced tokens): the engine keeps
biased requests off speculation. Fast, in-process (no server).
"""

from __future__ import annotations

import pytest

from blocks.core.errors import InvalidArgument
from blocks.inference.engine import EngineConfig, LLMEngine
from blocks.inference.factory import tiny_random_model
from blocks.inference.jsonschema_grammar import compile_schema
from blocks.inference.params import MAX_LOGIT_BIAS_ENTRIES, SamplingParams
from blocks.inference.tokenizer import CharTokenizer

MODEL = tiny_random_model()
SPECULATIVE = EngineConfig(
    num_blocks=64,
    block_size=4,
    max_num_seqs=4,
    max_num_batched_tokens=32,
    max_model_len=128,
    num_speculative_tokens=3,
    speculative_ngram=1,
    speculative_max_batch=4,
)


def engine() -> LLMEngine:
    return LLMEngine(MODEL, CharTokenizer(), SPECULATIVE)


def greedy(n: int, **options: object) -> SamplingParams:
    return SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True, **options)  # type: ignore[arg-type]


def test_a_forced_token_is_every_token_even_where_drafts_would_be_proposed() -> None:
    prompt = [5, 6, 7, 8] * 4  # repetitive: n-gram drafts find matches at once
    plain = engine()
    [unbiased] = plain.generate([prompt], greedy(24))
    assert plain.scheduler.num_draft_tokens > 0  # this prompt does draw drafts
    forced = next(t for t in range(1, 96) if t not in unbiased.token_ids)  # never its choice
    biased = engine()
    [out] = biased.generate([prompt], greedy(24, logit_bias=((forced, 100.0),)))
    assert out.token_ids == (forced,) * 24
    assert biased.scheduler.num_draft_tokens == 0


def test_a_banned_token_never_appears_with_drafts_enabled() -> None:
    prompt = [5, 6, 7, 8] * 4
    [unbiased] = engine().generate([prompt], greedy(24))
    banned = set(unbiased.token_ids)
    biased = engine()
    [out] = biased.generate([prompt], greedy(24, logit_bias=tuple((t, -100.0) for t in banned)))
    assert not banned & set(out.token_ids)
    assert biased.scheduler.num_draft_tokens == 0


def test_logit_bias_is_validated_when_built_and_when_queued() -> None:
    with pytest.raises(InvalidArgument, match="logit_bias"):
        SamplingParams(logit_bias=((1, 100.5),))
    with pytest.raises(InvalidArgument, match="logit_bias"):
        SamplingParams(logit_bias=tuple((i, 1.0) for i in range(MAX_LOGIT_BIAS_ENTRIES + 1)))
    with pytest.raises(InvalidArgument, match="logit_bias"):
        SamplingParams(logit_bias=((-1, 1.0),))
    with pytest.raises(InvalidArgument, match="logit_bias"):
        SamplingParams(logit_bias=((1, 1.0),), grammar=compile_schema({"type": "integer"}))
    queue = engine()
    with pytest.raises(InvalidArgument, match="vocabulary"):
        queue.add_request("a", [1, 2], greedy(2, logit_bias=((96, 1.0),)))
    with pytest.raises(InvalidArgument, match="bans every token"):
        queue.add_request("b", [1, 2], greedy(2, logit_bias=tuple((i, -100.0) for i in range(96))))
    assert not queue.has_work()  # nothing was queued
