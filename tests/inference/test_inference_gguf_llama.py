"""Llama-family GGUF files beyond SmolLM2: SentencePiece tokenizers and Llama 3.x RoPE.

Every file here is a tiny random model written by the ``gguf`` package in the test, so the
metadata is exactly what the test says and nothing is downloaded.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from inference_reference import reference_logits

from blocks.core.errors import InvalidArgument
from blocks.inference.engine import EngineConfig, LLMEngine
from blocks.inference.loader import llama3_freq_factors, load_gguf
from blocks.inference.params import SamplingParams
from blocks.inference.sentencepiece import SentencePieceTokenizer

gguf = pytest.importorskip("gguf")

SPACE = "\u2581"
# A small SentencePiece vocabulary: specials, all 256 byte pieces, then scored pieces.
WORDS = {  # piece -> score (higher merges first)
    SPACE: -1.0,
    "a": -2.0,
    "b": -2.0,
    "c": -2.0,
    "ab": -3.0,
    "bc": -1.5,  # beats "ab": in "abc", b joins c first
    "abc": -4.0,
    SPACE + "a": -2.5,
    SPACE + "abc": -5.0,
    "cc": -6.0,
}
PIECES = ["<unk>", "<s>", "</s>", *[f"<0x{b:02X}>" for b in range(256)], *WORDS]
SCORES = [0.0, 0.0, 0.0, *[0.0] * 256, *WORDS.values()]
TYPES = [2, 3, 3, *[6] * 256, *[1] * len(WORDS)]
IDS = {piece: index for index, piece in enumerate(PIECES)}


def spm(**options: object) -> SentencePieceTokenizer:
    return SentencePieceTokenizer(
        PIECES,
        SCORES,
        TYPES,
        eos_token_ids=(2,),
        bos_token_id=1,
        unknown_token_id=0,
        **options,  # type: ignore[arg-type]
    )


def test_merges_follow_scores_with_byte_fallback() -> None:
    t = spm()
    # "▁abc": ▁ a b c -> (b,c) first (score -1.5), then (▁,a) -> ▁a (-2.5, above a+bc's
    # -4.0), then ▁a + bc -> ▁abc.
    assert t.encode("abc") == [IDS[SPACE + "abc"]]
    assert t.encode("abcc") == [IDS[SPACE + "abc"], IDS["c"]]  # "cc" (-6) never competes
    # Spaces become ▁; "ab" alone merges (no "bc" competitor).
    assert t.encode("ab ab") == [IDS[SPACE + "a"], IDS["b"], IDS[SPACE + "a"], IDS["b"]]
    # "é" is no piece: its two UTF-8 bytes as byte pieces.
    assert t.encode("é") == [IDS[SPACE], IDS["<0xC3>"], IDS["<0xA9>"]]
    assert t.decode(t.encode("é")) == "é"
    # Control pieces in the text are matched whole and split it.
    assert t.encode("<s>a</s>") == [IDS["<s>"], IDS["a"], IDS["</s>"]]
    assert t.encode("") == []


def test_bos_and_space_prefix_options() -> None:
    with_bos = spm(add_bos=True)
    assert with_bos.encode("a") == [1, IDS[SPACE + "a"]]
    assert with_bos.encode("<s>a") == [1, IDS["a"]]  # never two BOS
    assert spm(add_space_prefix=False).encode("a b") == [IDS["a"], IDS[SPACE], IDS["b"]]


def test_decode_drops_only_the_prefix_space() -> None:
    t = spm()
    assert t.decode([IDS[SPACE + "a"], IDS["bc"]]) == "abc"
    assert t.decode([IDS[SPACE], IDS[SPACE + "a"]]) == " a"
    assert t.decode([IDS["<0xC3>"]]).endswith("\ufffd")  # half a character: held back


@given(st.text(alphabet="abc é\n\u4e2d", max_size=40))
def test_decode_inverts_encode(text: str) -> None:
    t = spm()
    assert t.decode(t.encode(text)) == text


def test_merge_matches_a_brute_force_reference() -> None:
    """The heap merge equals the quadratic rule: merge the best-scored pair, leftmost first."""

    def brute(text: str) -> list[str]:
        if not text:
            return []
        symbols = list(SPACE + text.replace(" ", SPACE))
        while True:
            best = None
            for i in range(len(symbols) - 1):
                piece = symbols[i] + symbols[i + 1]
                if piece in WORDS and (best is None or WORDS[piece] > best[0]):
                    best = (WORDS[piece], i)
            if best is None:
                return symbols
            i = best[1]
            symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]

    rng = np.random.default_rng(5)
    for _ in range(300):
        text = "".join(rng.choice(list("abc "), size=int(rng.integers(0, 12))))
        assert spm().encode(text) == [IDS[p] for p in brute(text)], text


# ---------------------------------------------------------------------- GGUF files

HIDDEN, HEADS, KV_HEADS, FFN, HEAD_DIM = 32, 4, 2, 64, 8


def write_gguf(
    path: Path,
    *,
    rope_freqs: list[float] | None = None,
    scaling: tuple[str, float] | None = None,
    seed: int = 0,
) -> Path:
    rng = np.random.default_rng(seed)
    vocab = len(PIECES)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(1)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10_000.0)
    if scaling is not None:
        writer.add_string("llama.rope.scaling.type", scaling[0])
        writer.add_rope_scaling_factor(scaling[1])
    writer.add_tokenizer_model("llama")
    writer.add_token_list(PIECES)
    writer.add_token_scores(SCORES)
    writer.add_token_types(TYPES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / math.sqrt(shape[-1])).astype(np.float32)

    writer.add_tensor("token_embd.weight", weight(vocab, HIDDEN) * 4)
    writer.add_tensor("output_norm.weight", np.ones(HIDDEN, dtype=np.float32))
    writer.add_tensor("output.weight", weight(vocab, HIDDEN))
    layer = {
        "attn_norm": np.ones(HIDDEN, dtype=np.float32),
        "ffn_norm": np.ones(HIDDEN, dtype=np.float32),
        "attn_q": weight(HIDDEN, HIDDEN),
        "attn_k": weight(KV_HEADS * HEAD_DIM, HIDDEN),
        "attn_v": weight(KV_HEADS * HEAD_DIM, HIDDEN),
        "attn_output": weight(HIDDEN, HIDDEN),
        "ffn_gate": weight(FFN, HIDDEN),
        "ffn_up": weight(FFN, HIDDEN),
        "ffn_down": weight(HIDDEN, FFN),
    }
    for name, array in layer.items():
        writer.add_tensor(f"blk.0.{name}.weight", array)
    if rope_freqs is not None:
        writer.add_tensor("rope_freqs.weight", np.array(rope_freqs, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_sentencepiece_gguf_loads_and_generates(tmp_path: Path) -> None:
    # Reproduces: a Llama-2-style file raised KeyError 'tokenizer.ggml.merges'.
    model, tokenizer = load_gguf(write_gguf(tmp_path / "spm.gguf"))
    assert isinstance(tokenizer, SentencePieceTokenizer)
    assert tokenizer.encode("abc") == [1, IDS[SPACE + "abc"]]
    engine = LLMEngine(model, tokenizer, EngineConfig(num_blocks=16, max_model_len=64))
    [out] = engine.generate(["ab c"], SamplingParams(max_tokens=4, temperature=0, ignore_eos=True))
    assert len(out.token_ids) == 4 and out.text == tokenizer.decode(list(out.token_ids))


def test_rope_freqs_are_honoured(tmp_path: Path) -> None:
    # Reproduces: a Llama-3.1/3.2 file raised KeyError 'rope_freqs'.
    factors = [1.0, 1.5, 4.0, 8.0]
    model, _ = load_gguf(write_gguf(tmp_path / "l3.gguf", rope_freqs=factors), torch.float64)
    assert model.config.rope_freq_factors == tuple(factors)
    plain, _ = load_gguf(write_gguf(tmp_path / "plain.gguf"), torch.float64)
    tokens = [5, 200, 261, 262, 263, 264, 265, 266, 267, 268]
    expected = reference_logits(model, tokens)
    unscaled = reference_logits(plain, tokens)
    got = engine_logits(model, tokens)
    assert torch.allclose(got, expected, atol=1e-9)
    assert not torch.allclose(got, unscaled, atol=1e-3)  # the factors really changed RoPE


def engine_logits(model, tokens: list[int]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Logits at every position through the paged runner (one prefill chunk)."""
    from blocks.inference.runner import ModelRunner
    from blocks.inference.scheduler import ScheduledChunk

    runner = ModelRunner(model, num_blocks=8, block_size=16)
    chunk = ScheduledChunk(
        seq_id=0, start=0, token_ids=tuple(tokens), block_table=(0,), sample=True
    )
    return runner.run_all(chunk)


def test_linear_rope_scaling_is_honoured_and_yarn_refused(tmp_path: Path) -> None:
    model, _ = load_gguf(write_gguf(tmp_path / "lin.gguf", scaling=("linear", 4.0)))
    assert model.config.rope_linear_factor == 4.0
    with pytest.raises(InvalidArgument, match="yarn"):
        load_gguf(write_gguf(tmp_path / "yarn.gguf", scaling=("yarn", 4.0)))


def test_llama3_frequency_factors() -> None:
    # Llama 3.1's published rope_scaling on its 128-dim heads.
    factors = llama3_freq_factors(128, 500_000.0, 8.0, 1.0, 4.0, 8192)
    assert len(factors) == 64
    assert factors[0] == 1.0 and factors[-1] == 8.0
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(factors))
    blended = [f for f in factors if 1.0 < f < 8.0]
    assert blended  # the middle band is interpolated, not switched
    with pytest.raises(InvalidArgument):
        llama3_freq_factors(128, 500_000.0, 8.0, 4.0, 1.0, 8192)


# A template in the style Llama-2 files carry: it writes the BOS piece and raises on bad input.
INST_TEMPLATE = (
    "{% if messages[0]['role'] != 'user' %}{{ raise_exception('start with a user') }}{% endif %}"
    "{% for m in messages %}{% if m['role'] == 'user' %}{{ bos_token + '[INST] ' + m['content']"
    " + ' [/INST]' }}{% else %}{{ ' ' + m['content'] + ' ' + eos_token }}{% endif %}{% endfor %}"
)


def test_chat_templates_see_bos_and_eos_and_can_refuse() -> None:
    t = spm(add_bos=True, chat_template=INST_TEMPLATE)
    text = t.apply_chat_template([{"role": "user", "content": "abc"}])
    assert text == "<s>[INST] abc [/INST]"
    ids = t.encode(text)
    assert ids[0] == 1 and ids.count(1) == 1  # the template's BOS, not a second one
    with pytest.raises(InvalidArgument, match="start with a user"):
        t.apply_chat_template([{"role": "assistant", "content": "x"}])


@pytest.mark.parametrize(
    ("rope_scaling", "expected"),
    [
        (None, {"rope_freq_factors": (), "rope_linear_factor": 1.0}),
        ({"rope_type": "linear", "factor": 2.0}, {"rope_linear_factor": 2.0}),
        (
            {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
            {"rope_freq_factors": llama3_freq_factors(8, 10_000.0, 8.0, 1.0, 4.0, 64)},
        ),
    ],
)
def test_safetensors_rope_scaling_is_read(
    tmp_path: Path, rope_scaling: dict[str, object] | None, expected: dict[str, object]
) -> None:
    from inference_reference import make_tiny_model

    from blocks.inference.loader import load_safetensors, write_safetensors

    model = make_tiny_model(seed=2, dtype=torch.float32)
    cfg = model.config
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    write_safetensors(tmp_path / "model.safetensors", state)
    config = {
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "rope_theta": cfg.rope_theta,
        "max_position_embeddings": cfg.max_position,
        "tie_word_embeddings": True,
        "rope_scaling": rope_scaling,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = load_safetensors(tmp_path)
    for name, value in expected.items():
        assert getattr(loaded.config, name) == value
    factors = loaded.config.rope_freq_factors
    if factors:  # 8-dim heads: the fast pairs are kept, the slowest is divided by 8
        assert factors[0] == 1.0 and factors[-1] == 8.0
    (tmp_path / "config.json").write_text(
        json.dumps({**config, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
    )
    with pytest.raises(InvalidArgument, match="yarn"):
        load_safetensors(tmp_path)
