"""GGUF model kinds beyond plain Llama: Qwen2 (QKV bias, tied embeddings, theta 1e6) and
Mistral (Llama layers with a sliding window), against transformers on the same weights.

Stated tolerance: float64 on both sides, logits within 1e-5 absolute (transformers builds
its RoPE angles in float32, ~1e-6), and the same argmax at every position.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from model_kinds import (
    HIDDEN,
    hf_from_gguf,
    hf_logits,
    make_hf_model,
    our_logits,
    write_gguf,
)

from blocks.core.errors import InvalidArgument
from blocks.inference.engine import EngineConfig, LLMEngine
from blocks.inference.loader import load_gguf
from blocks.inference.params import SamplingParams
from blocks.inference.tokenizer import BPETokenizer

gguf = pytest.importorskip("gguf")
pytest.importorskip("transformers")

TOLERANCE = 1e-5
TOKENS = [257, 220, 66, 64, 83, 262, 258, 3, 299, 150, 42, 8, 120, 7]


def assert_same_logits(got: torch.Tensor, want: torch.Tensor) -> None:
    assert float((got - want).abs().max()) < TOLERANCE
    assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_qwen2_matches_transformers(tmp_path: Path) -> None:
    hf = make_hf_model("qwen2", seed=1, tie_word_embeddings=True, rope_theta=1_000_000.0)
    path = write_gguf(tmp_path / "qwen2.gguf", hf, "qwen2")
    model, tokenizer = load_gguf(path, torch.float64)
    cfg = model.config
    assert cfg.attention_bias and cfg.tie_word_embeddings and cfg.rope_theta == 1_000_000.0
    assert isinstance(tokenizer, BPETokenizer)
    # Against the transformers model the file was written from, and against what
    # transformers itself reads back from the file.
    assert_same_logits(our_logits(model, TOKENS), hf_logits(hf, TOKENS))
    reread = hf_from_gguf(path, "qwen2", tie_word_embeddings=True, rope_theta=1_000_000.0)
    assert_same_logits(our_logits(model, TOKENS), hf_logits(reread, TOKENS))


def test_qwen2_biases_matter(tmp_path: Path) -> None:
    """The comparison above would catch a loader that dropped the biases: zeroing them
    moves the logits far past the tolerance. They are zeroed after a first forward pass
    packed them, so this also checks that in-place edits reach the packed bias."""
    hf = make_hf_model("qwen2", seed=2)
    model, _ = load_gguf(write_gguf(tmp_path / "q.gguf", hf, "qwen2"), torch.float64)
    assert float((our_logits(model, TOKENS) - hf_logits(hf, TOKENS)).abs().max()) < TOLERANCE
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.bias.zero_()  # type: ignore[union-attr]
            layer.self_attn.k_proj.bias.zero_()  # type: ignore[union-attr]
    assert float((our_logits(model, TOKENS) - hf_logits(hf, TOKENS)).abs().max()) > 1e-2


def test_qwen2_generates_what_transformers_generates(tmp_path: Path) -> None:
    hf = make_hf_model("qwen2", seed=3, tie_word_embeddings=True)
    model, tokenizer = load_gguf(write_gguf(tmp_path / "q.gguf", hf, "qwen2"), torch.float64)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "the and"}])
    ids = tokenizer.encode(prompt)
    assert tokenizer.decode(ids) == prompt
    engine = LLMEngine(model, tokenizer, EngineConfig(num_blocks=16, max_model_len=128))
    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    [out] = engine.generate([ids], params)
    hf.generation_config.eos_token_id = None  # as ignore_eos: six tokens whatever they are
    with torch.no_grad():
        want = hf.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False)[0, len(ids) :]
    assert list(out.token_ids) == want.tolist()


def test_mistral_sliding_window_caps_the_context(tmp_path: Path) -> None:
    window = 8
    hf = make_hf_model("mistral", seed=4, sliding_window=window)
    path = write_gguf(
        tmp_path / "mistral.gguf",
        hf,
        "llama",
        metadata={"llama.attention.sliding_window": window},
    )
    model, tokenizer = load_gguf(path, torch.float64)
    assert model.config.max_position == window
    # Within the window transformers' sliding-window attention is full attention, and ours
    # matches it; past it the two would differ, so a longer prompt is refused instead.
    assert_same_logits(our_logits(model, TOKENS[:window]), hf_logits(hf, TOKENS[:window]))
    longer = hf_logits(hf, TOKENS[: window + 4])[window:]
    full = make_hf_model("llama", seed=4)  # same seed, same weights, no window
    assert float((longer - hf_logits(full, TOKENS[: window + 4])[window:]).abs().max()) > 1e-3
    engine = LLMEngine(model, tokenizer, EngineConfig(num_blocks=16, max_model_len=64))
    assert engine.config.max_model_len == window
    with pytest.raises(InvalidArgument, match="context"):
        engine.generate([TOKENS[:window]], SamplingParams(max_tokens=2))


def test_mistral_without_a_window_is_llama(tmp_path: Path) -> None:
    hf = make_hf_model("mistral", seed=5, sliding_window=None)
    model, _ = load_gguf(write_gguf(tmp_path / "m.gguf", hf, "llama"), torch.float64)
    assert model.config.max_position == hf.config.max_position_embeddings
    assert_same_logits(our_logits(model, TOKENS), hf_logits(hf, TOKENS))


def test_unsupported_architectures_and_tensors_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "phi.gguf"
    writer = gguf.GGUFWriter(str(path), "phi3")
    writer.add_tensor("token_embd.weight", np.zeros((4, HIDDEN), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(InvalidArgument, match="phi3"):
        load_gguf(path)
    # A tensor our layers do not have (as a mixture-of-experts file carries) is named.
    hf = make_hf_model("llama", seed=6)
    extra = {"blk.0.ffn_gate_inp.weight": np.zeros((2, HIDDEN), dtype=np.float32)}
    path = write_gguf(tmp_path / "moe.gguf", hf, "llama", extra_tensors=extra)
    with pytest.raises(InvalidArgument, match="ffn_gate_inp"):
        load_gguf(path)
