"""The engine's sampling hook: constrained requests batched with free ones, drafts on."""

from __future__ import annotations

import json
import math

import jsonschema
import pytest

from blocks.core.errors import InvalidArgument
from blocks.inference.engine import EngineConfig, LLMEngine
from blocks.inference.factory import tiny_random_model
from blocks.inference.jsonschema_grammar import compile_schema
from blocks.inference.params import FinishReason, SamplingParams
from blocks.inference.tokenizer import CharTokenizer

SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "ok": {"type": "boolean"},
        "note": {"type": "string", "maxLength": 4},
    },
    "required": ["id", "ok", "note"],
    "additionalProperties": False,
}


def test_constrained_and_free_requests_share_steps_with_drafts_on() -> None:
    config = EngineConfig(num_blocks=64, block_size=8, max_model_len=256, num_speculative_tokens=4)
    engine = LLMEngine(tiny_random_model(seed=3), CharTokenizer(), config)
    grammar = compile_schema(SCHEMA)
    constrained = [
        SamplingParams(max_tokens=120, temperature=t, seed=s, grammar=grammar, logprobs=3)
        for t, s in ((0.0, None), (1.0, 1), (1.5, 2))
    ]
    free = SamplingParams(max_tokens=30, temperature=0)
    ids = [f"c{i}" for i in range(3)]
    for rid, params in zip(ids, constrained, strict=True):
        engine.add_request(rid, "ab ab ab ab ab", params)  # repeats: n-gram drafts would fire
    engine.add_request("free", "ab ab ab ab ab", free)
    texts = {rid: "" for rid in [*ids, "free"]}
    done: dict[str, FinishReason] = {}
    while len(done) < 4:
        for delta in engine.step():
            texts[delta.request_id] += delta.text
            assert all(math.isfinite(lp.logprob) for lp in delta.logprobs)
            if delta.request_id != "free":
                assert len(delta.token_ids) <= 1  # never a draft
            if delta.finish_reason is not None:
                done[delta.request_id] = delta.finish_reason
    for rid in ids:
        assert done[rid] is FinishReason.STOP
        jsonschema.validate(json.loads(texts[rid]), SCHEMA)


def test_a_grammar_cannot_ignore_eos() -> None:
    with pytest.raises(InvalidArgument):
        SamplingParams(grammar=compile_schema({"type": "integer"}), ignore_eos=True)
