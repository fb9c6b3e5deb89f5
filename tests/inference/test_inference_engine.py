"""The engine: batch invariance, prefix caching, sampling, stop strings, cancellation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from inference_reference import make_tiny_model, reference_greedy, reference_logits

from blocks.core.errors import Conflict, InvalidArgument
from blocks.inference.contract import EngineContract
from blocks.inference.engine import EngineConfig, LLMEngine
from blocks.inference.params import FinishReason, SamplingParams
from blocks.inference.tokenizer import CharTokenizer

MODEL = make_tiny_model(seed=3)
SMALL = EngineConfig(
    num_blocks=24, block_size=4, max_num_seqs=4, max_num_batched_tokens=16, max_model_len=64
)


class _Chars(CharTokenizer):
    """The character tokenizer with no end-of-sequence id (the contract ignores EOS)."""


def solo(prompt, max_tokens):  # type: ignore[no-untyped-def]
    tokens, gap = reference_greedy(MODEL, list(prompt), max_tokens)
    # float64 throughout: batching changes logits by ~1e-15, so only a top-2 gap below
    # 1e-9 could flip an argmax. Such a near-tie would be reported here, not hidden.
    assert gap > 1e-9, f"near-tie (gap {gap}); choose another seed"
    return tokens


class BatchInvariance(EngineContract):
    def make_subject(self) -> LLMEngine:
        return LLMEngine(MODEL, CharTokenizer(), SMALL)

    solo = staticmethod(solo)


TestBatchInvariance = settings(max_examples=25, stateful_step_count=25)(BatchInvariance).TestCase


def engine(config: EngineConfig = SMALL, **kw) -> LLMEngine:  # type: ignore[no-untyped-def]
    return LLMEngine(MODEL, CharTokenizer(), config, **kw)


def greedy(n: int, **kw) -> SamplingParams:  # type: ignore[no-untyped-def]
    return SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True, **kw)


def test_prefix_cache_hit_gives_the_same_output_as_a_miss() -> None:
    prompt = list(range(1, 30))
    cold = engine(EngineConfig(**{**_asdict(SMALL), "prefix_caching": False}))
    [want] = cold.generate([prompt], greedy(8))
    warm = engine()
    warm.generate([[*prompt, 5]], greedy(2))  # leaves 7 full blocks of this prefix cached
    [got] = warm.generate([prompt], greedy(8))
    stats = warm.scheduler.blocks.stats()
    assert stats.prefix_hit_tokens == 28
    assert got.token_ids == want.token_ids


def _asdict(config: EngineConfig) -> dict[str, object]:
    return {name: getattr(config, name) for name in config.__slots__}


@given(st.integers(0, 2**32), st.floats(0.3, 2.0), st.integers(0, 20), st.floats(0.2, 1.0))
@settings(max_examples=10)
def test_seeded_sampling_does_not_depend_on_the_batch(
    seed: int, temperature: float, top_k: int, top_p: float
) -> None:
    params = SamplingParams(
        max_tokens=6, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, ignore_eos=True
    )
    prompt = [4, 8, 15, 16, 23, 42]
    [alone] = engine().generate([prompt], params)
    others = [[1, 2, 3], list(range(5, 25))]
    batched = engine().generate([others[0], prompt, others[1]], params)
    assert batched[1].token_ids == alone.token_ids


def test_sampling_follows_top_k_and_temperature() -> None:
    prompt = [7, 7, 7]
    logits = reference_logits(MODEL, prompt)[-1]
    top2 = set(torch.topk(logits, 2).indices.tolist())
    eng = engine(EngineConfig(**{**_asdict(SMALL), "max_num_seqs": 32}))
    outs = eng.generate(
        [prompt] * 60, SamplingParams(max_tokens=1, temperature=1.5, top_k=2, ignore_eos=True)
    )
    firsts = [o.token_ids[0] for o in outs]
    assert set(firsts) == top2  # both appear, nothing else does
    greedy_out = eng.generate([prompt], SamplingParams(max_tokens=1, temperature=0.0, top_k=2))
    assert greedy_out[0].token_ids[0] == int(logits.argmax())


def test_logprobs_are_the_models() -> None:
    prompt = [3, 1, 4, 1, 5]
    [out] = engine().generate([prompt], greedy(3, logprobs=3))
    tokens = list(prompt)
    for entry in out.logprobs:
        want = torch.log_softmax(reference_logits(MODEL, tokens)[-1], dim=-1)
        assert math.isclose(entry.logprob, float(want[entry.token_id]), abs_tol=1e-9)
        assert [t for t, _ in entry.top] == torch.topk(want, 3).indices.tolist()
        tokens.append(entry.token_id)


def test_stop_strings_end_output_before_the_string() -> None:
    tokenizer = CharTokenizer()
    [free] = engine().generate(["ABC"], greedy(20))
    text = free.text
    assert len(text) == 20
    stop = text[5:8]
    first = text.find(stop)
    [stopped] = engine().generate(["ABC"], greedy(20, stop=(stop, "not-there")))
    assert stopped.finish_reason is FinishReason.STOP
    assert stopped.text == text[:first]
    # Streamed deltas never contained the stop string either.
    eng = engine()
    eng.add_request("s", "ABC", greedy(20, stop=(stop,)))
    seen = ""
    while eng.has_work():
        for delta in eng.step():
            seen += delta.text
    assert seen == text[:first]
    assert tokenizer.decode(tokenizer.encode(seen)) == seen


def test_stop_token_and_eos_end_the_request() -> None:
    [free] = engine().generate([[9, 9]], greedy(6))
    token = free.token_ids[2]
    [out] = engine().generate([[9, 9]], greedy(6, stop_token_ids=(token,)))
    assert out.finish_reason is FinishReason.STOP
    assert out.token_ids == free.token_ids[: free.token_ids.index(token) + 1]


def test_cancel_frees_everything_and_others_continue() -> None:
    eng = engine()
    eng.add_request("a", [1, 2, 3, 4, 5], greedy(30))
    eng.add_request("b", [6, 7, 8], greedy(5))
    got = [t for d in eng.step() if d.request_id == "b" for t in d.token_ids]
    assert eng.abort("a")
    assert not eng.abort("a")
    while eng.has_work():
        for delta in eng.step():
            assert delta.request_id == "b"
            got.extend(delta.token_ids)
    assert got == solo([6, 7, 8], 5)
    assert eng.scheduler.blocks.num_free_blocks == SMALL.num_blocks


def test_bad_requests_change_nothing() -> None:
    eng = engine()
    with pytest.raises(InvalidArgument):
        eng.add_request("x", [], greedy(2))
    with pytest.raises(InvalidArgument):
        eng.add_request("x", [1, 999], greedy(2))
    with pytest.raises(InvalidArgument):
        eng.add_request("x", list(range(1, 64)) * 2, greedy(2))  # longer than the context
    with pytest.raises(InvalidArgument):
        eng.add_request("", [1], greedy(2))
    eng.add_request("x", [1], greedy(2))
    with pytest.raises(Conflict):
        eng.add_request("x", [1], greedy(2))
    assert eng.num_waiting == 1
    for bad in (
        dict(max_tokens=0),
        dict(temperature=-1.0),
        dict(top_p=0.0),
        dict(top_k=-1),
        dict(stop=("",)),
        dict(logprobs=99),
        dict(seed=-3),
    ):
        with pytest.raises(InvalidArgument):
            SamplingParams(**bad)  # type: ignore[arg-type]


def test_metrics_are_recorded() -> None:
    eng = engine()
    eng.generate([[1, 2, 3], [4, 5, 6, 7]], greedy(4))
    snap = eng.metrics.snapshot()
    assert snap["generation_tokens"] == 8 and snap["prompt_tokens"] == 7
    text = eng.metrics.exposition().decode()
    assert "blocks_inference_ttft_seconds_count 2.0" in text
    assert 'blocks_inference_requests_total{outcome="length"} 2.0' in text


def test_prefix_shared_with_a_sequence_still_prefilling() -> None:
    """A request arriving mid-way through another's chunked prefill of the same prefix must
    not read KV blocks that have not been written yet."""
    eng = engine()
    shared = [(i * 7) % 63 + 1 for i in range(44)]
    eng.add_request("a", shared, greedy(3))
    outputs: dict[str, list[int]] = {"a": [], "b": []}
    for delta in eng.step():  # computes the first 16 of a's 44 prompt tokens
        outputs[delta.request_id].extend(delta.token_ids)
    eng.add_request("b", [*shared, 9], greedy(3))
    while eng.has_work():
        for delta in eng.step():
            outputs[delta.request_id].extend(delta.token_ids)
    assert outputs["a"] == solo(shared, 3)
    assert outputs["b"] == solo([*shared, 9], 3)
