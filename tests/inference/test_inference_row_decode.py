"""The lone-token decode path (``row_decode``, numpy's BLAS) against the reference and torch."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from inference_reference import make_tiny_model, reference_logits

from blocks.inference import row_decode
from blocks.inference.cpu_blas import products
from blocks.inference.model import LlamaForCausalLM, ModelConfig
from blocks.inference.runner import ModelRunner
from blocks.inference.scheduler import ScheduledChunk

pytestmark = pytest.mark.skipif(products() is None, reason="numpy's BLAS is not OpenBLAS")


@pytest.fixture
def row_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the model's calls into the numpy path, so a test knows it ran."""
    calls: list[int] = []
    real = row_decode.decode_row

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(row_decode, "decode_row", counted)
    return calls


def biased_tiny_model(seed: int) -> LlamaForCausalLM:
    """A tiny float64 model with Qwen2's query, key and value biases."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(dataclasses.replace(ModelConfig.tiny(), attention_bias=True))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.8, 1.2)
            else:
                param.normal_(0.0, 1.0 / math.sqrt(param.shape[-1]))
    return model.double().eval()


def decode_steps(runner: ModelRunner, prompt: list[int], steps: list[int]) -> list[torch.Tensor]:
    """Prefill ``prompt``, then decode ``steps`` one token at a time; logits of each step."""
    table = (5, 2, 7)
    runner.run([ScheduledChunk(0, 0, tuple(prompt), table, True)])
    return [
        runner.run([ScheduledChunk(0, len(prompt) + i, (token,), table, True)])[0]
        for i, token in enumerate(steps)
    ]


def test_lone_decode_matches_the_reference(row_calls: list[int]) -> None:
    model = make_tiny_model(seed=11)
    runner = ModelRunner(model, num_blocks=8, block_size=4)
    prompt, steps = [3, 1, 4, 1, 5], [9, 2, 6, 5, 3, 5]  # decodes cross block boundaries
    got = decode_steps(runner, prompt, steps)
    assert len(row_calls) == len(steps)
    for i, logits in enumerate(got):
        want = reference_logits(model, [*prompt, *steps[: i + 1]])[-1]
        torch.testing.assert_close(logits, want, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize(
    ("biased", "dtype", "tolerance"),
    [(False, torch.float32, 1e-5), (True, torch.float64, 1e-9), (True, torch.float32, 1e-5)],
)
def test_lone_decode_equals_the_torch_path(
    biased: bool, dtype: torch.dtype, tolerance: float, row_calls: list[int]
) -> None:
    """Against ``forward``'s torch path (the reference knows no QKV bias)."""
    model = (biased_tiny_model(seed=12) if biased else make_tiny_model(seed=12)).to(dtype)
    prompt, steps = [7, 8, 9], [10, 11, 12, 13, 14]
    fast = decode_steps(ModelRunner(model, num_blocks=8, block_size=4), prompt, steps)
    assert len(row_calls) == len(steps)
    model.blas_products = False
    plain = decode_steps(ModelRunner(model, num_blocks=8, block_size=4), prompt, steps)
    assert len(row_calls) == len(steps)  # the flag turns the numpy path off
    for a, b in zip(fast, plain, strict=True):
        torch.testing.assert_close(a, b, atol=tolerance, rtol=tolerance)


def test_real_model_lone_decode_equals_the_torch_path(real_model, row_calls: list[int]) -> None:  # type: ignore[no-untyped-def]
    """SmolLM2 float32: the same greedy tokens either way, logits within the real-model
    tests' 1e-3 (on logits spread over ~30)."""
    model, tokenizer = real_model
    prompt = tokenizer.encode("The capital of France is")
    runs = []
    for numpy_path in (True, False):
        model.blas_products = numpy_path
        runner = ModelRunner(model, num_blocks=4, block_size=16)
        table = (0, 1, 2)
        logits = [runner.run([ScheduledChunk(0, 0, tuple(prompt), table, True)])[0]]
        tokens: list[int] = []
        for _ in range(8):
            tokens.append(int(logits[-1].argmax()))
            position = len(prompt) + len(tokens) - 1
            chunk = ScheduledChunk(0, position, (tokens[-1],), table, True)
            logits.append(runner.run([chunk])[0])
        runs.append((tokens, torch.stack(logits)))
    model.blas_products = True
    assert len(row_calls) == 8
    (fast_tokens, fast), (plain_tokens, plain) = runs
    assert fast_tokens == plain_tokens
    assert float((fast - plain).abs().max()) < 1e-3


def test_three_operation_rope_is_the_six_operation_one_bit_for_bit() -> None:
    """Key heads rotate exactly as the six-operation spelling; query heads, whose tables
    carry attention's scale, come out as that times the scale, bit for bit when the scale
    is a power of two (head_dim 64)."""
    generator = np.random.default_rng(5)
    heads, kv_heads = 8, 4
    for dtype in (np.float32, np.float64):
        pairs = generator.standard_normal((heads + kv_heads, 64)).astype(dtype)
        angles = generator.uniform(-3.0, 3.0, 32)
        cos, sin = np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)
        first, second = pairs[:, :32], pairs[:, 32:]
        want = np.concatenate((first * cos - second * sin, second * cos + first * sin), axis=1)
        got = pairs.copy()
        cos_t, sin_t = row_decode._rotation_tables(cos, sin, heads, kv_heads, 0.125)
        row_decode._rope(got, cos_t, sin_t, np.empty_like(got))
        assert np.array_equal(got[heads:], want[heads:])
        assert np.array_equal(got[:heads], want[:heads] * dtype(0.125))


def test_consecutive_context_slots_are_read_in_place() -> None:
    run = np.arange(20, 27)
    assert row_decode._context_slots(run) == slice(20, 27)
    assert row_decode._context_slots(run[:1]) == slice(20, 21)
    scattered = np.array([20, 21, 22, 23, 8, 9, 26])  # same ends, not one run
    assert row_decode._context_slots(scattered) is scattered
    # A context read in place and the same slots gathered: the same state and cache.
    model = make_tiny_model(seed=13)
    blas = products()
    assert blas is not None
    blas.match_threads()
    rows = [w.row for w in model.layer_weights() if w.row is not None]
    cfg = model.config
    shape = (cfg.num_layers, 32, 2 * cfg.num_kv_heads, cfg.head_dim)
    cache = torch.randn(shape, generator=torch.Generator().manual_seed(14), dtype=model.dtype)
    results = []
    for slots in (row_decode._context_slots(run), run):
        written = cache.clone()
        hidden = row_decode.decode_token(model, rows, blas, 5, 6, 26, slots, written)
        results.append((hidden, written))
    (in_place, in_place_cache), (gathered, gathered_cache) = results
    assert np.array_equal(in_place, gathered)
    assert torch.equal(in_place_cache, gathered_cache)
    assert not torch.equal(in_place_cache[:, 26], cache[:, 26])  # the new key and value


def test_attention_products_without_matvec_give_the_same_attention() -> None:
    """``_scores``/``_attend`` (numpy's ``matvec``/``vecmat`` from 2.2) and their
    ``matmul`` stand-ins for older numpy, on the layout ``_context`` makes, against the
    products written out per head."""
    generator = np.random.default_rng(6)
    kv_heads, group, count, dim = 3, 3, 11, 64
    context = generator.standard_normal((count, 2 * kv_heads, dim))
    keys, values = row_decode._context(context, kv_heads)
    queries = generator.standard_normal((kv_heads, group, dim))
    probs = generator.random((kv_heads, group, count))
    want_scores = np.stack([queries[k] @ context[:, k].T for k in range(kv_heads)])
    want_attended = np.stack([probs[k] @ context[:, kv_heads + k] for k in range(kv_heads)])
    pairs = [(row_decode._scores, row_decode._attend)]
    pairs.append((row_decode._scores_by_matmul, row_decode._attend_by_matmul))
    for scores_of, attend in pairs:
        scores, attended = np.empty_like(want_scores), np.empty_like(want_attended)
        scores_of(keys, queries, scores)
        attend(probs, values, attended)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(attended, want_attended, rtol=1e-12, atol=1e-12)
