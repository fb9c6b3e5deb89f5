"""Hugging Face checkpoint folders (config.json, safetensors, tokenizer.json, chat template),
written by transformers' own ``save_pretrained``, loaded and served end to end.

Stated tolerance: float64 on both sides, logits within 1e-5 absolute of transformers' (its
RoPE angles are float32, ~1e-6), same argmax everywhere.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from model_kinds import (
    byte_level_vocab,
    hf_logits,
    make_hf_model,
    our_logits,
    write_tokenizer_files,
)

from blocks.core.errors import InvalidArgument
from blocks.inference.engine import EngineConfig, LLMEngine
from blocks.inference.factory import load_engine
from blocks.inference.hf_folder import HFTokenizer
from blocks.inference.loader import load_model
from blocks.inference.params import SamplingParams

pytest.importorskip("transformers")

TOKENS = [257, 220, 66, 64, 83, 262, 258, 3, 299, 150, 42, 8, 120, 7]
KINDS: dict[str, dict[str, Any]] = {
    "llama": {"tie_word_embeddings": False},
    "qwen2": {"tie_word_embeddings": True, "rope_theta": 1_000_000.0},
    "mistral": {"sliding_window": None},
}
# Llama 3.1's RoPE rule on 16-dim heads and a 64-token original context: the fastest
# frequencies are kept, the slowest divided by 8, one in between blended. transformers 5
# saves it as ``rope_parameters`` (4 wrote ``rope_theta`` and ``rope_scaling``).
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 10_000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}


def write_folder(
    root: Path, kind: str, seed: int = 0, dtype: torch.dtype = torch.float32, **overrides: Any
) -> Any:
    """A folder as a user downloads it; returns the float64 transformers model it holds
    (its weights rounded to ``dtype``, the dtype the safetensors files store)."""
    hf = make_hf_model(kind, seed=seed, **{**KINDS[kind], **overrides})
    with torch.no_grad():
        for param in hf.parameters():
            param.copy_(param.to(dtype))
    # A copy is cast and saved: casting the reference itself would also round its RoPE
    # frequency buffer to bf16 (a 3e-3 logit gap that is transformers', not ours).
    copy.deepcopy(hf).to(dtype).save_pretrained(root)
    write_tokenizer_files(root)
    return hf


@pytest.mark.parametrize(
    ("kind", "dtype"),
    [(kind, torch.float32) for kind in KINDS] + [("qwen2", torch.bfloat16)],
    ids=str,
)
def test_folder_matches_transformers(kind: str, dtype: torch.dtype, tmp_path: Path) -> None:
    hf = write_folder(tmp_path, kind, dtype=dtype)
    assert list(tmp_path.glob("*.safetensors"))
    model, tokenizer = load_model(str(tmp_path), torch.float64)
    assert isinstance(tokenizer, HFTokenizer)
    got, want = our_logits(model, TOKENS), hf_logits(hf, TOKENS)
    assert float((got - want).abs().max()) < 1e-5
    assert torch.equal(got.argmax(-1), want.argmax(-1))
    assert model.config.attention_bias == (kind == "qwen2")


def test_llama3_rope_parameters_match_transformers(tmp_path: Path) -> None:
    hf = write_folder(tmp_path, "llama", seed=8, rope_parameters=LLAMA3_ROPE)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["rope_parameters"]["rope_type"] == "llama3"
    model, _ = load_model(str(tmp_path), torch.float64)
    assert len(set(model.config.rope_freq_factors)) > 2  # kept, divided and blended
    got, want = our_logits(model, TOKENS), hf_logits(hf, TOKENS)
    assert float((got - want).abs().max()) < 1e-5


def test_tokenizer_and_chat_template_come_from_the_folder(tmp_path: Path) -> None:
    hf = write_folder(tmp_path, "qwen2", seed=1)
    model, tokenizer = load_model(str(tmp_path), torch.float64)
    assert isinstance(tokenizer, HFTokenizer)
    tokens, _ = byte_level_vocab()
    end = tokens.index("<|im_end|>")
    assert end in tokenizer.eos_token_ids
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "the and"}])
    assert chat == "<|im_start|>user\nthe and<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer.encode(chat)
    assert ids[0] == tokens.index("<|im_start|>") and end in ids  # control tokens whole
    assert tokenizer.decode(ids) == chat
    assert tokenizer.encode(" the") == [tokens.index("Ġthe")]  # merges applied
    engine = LLMEngine(model, tokenizer, EngineConfig(num_blocks=16, max_model_len=128))
    params = SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True)
    [out] = engine.generate([chat], params)
    hf.generation_config.eos_token_id = None  # as ignore_eos
    with torch.no_grad():
        want = hf.generate(torch.tensor([ids]), max_new_tokens=5, do_sample=False)[0, len(ids) :]
    assert list(out.token_ids) == want.tolist()


def test_mistral_folder_sliding_window(tmp_path: Path) -> None:
    hf = write_folder(tmp_path, "mistral", seed=2, sliding_window=6)
    model, _ = load_model(str(tmp_path), torch.float64)
    assert model.config.max_position == 6
    got, want = our_logits(model, TOKENS[:6]), hf_logits(hf, TOKENS[:6])
    assert float((got - want).abs().max()) < 1e-5


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"model_type": "gemma"}, "gemma"),
        ({"attention_bias": True}, "attention_bias"),
        ({"hidden_act": "gelu"}, "gelu"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "yarn"),
    ],
)
def test_what_is_not_supported_is_refused(
    change: dict[str, Any], match: str, tmp_path: Path
) -> None:
    write_folder(tmp_path, "llama", seed=3)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(InvalidArgument, match=match):
        load_model(str(tmp_path))


def test_qwen2_sliding_window_layers_are_refused(tmp_path: Path) -> None:
    write_folder(tmp_path, "qwen2", seed=4)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(use_sliding_window=True, sliding_window=8)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidArgument, match="sliding"):
        load_model(str(tmp_path))


def test_a_folder_without_tokenizer_json_loads_without_one(tmp_path: Path) -> None:
    write_folder(tmp_path, "llama", seed=5)
    (tmp_path / "tokenizer.json").unlink()
    _, tokenizer = load_model(str(tmp_path))
    assert tokenizer is None
    with pytest.raises(InvalidArgument, match=r"tokenizer\.json"):
        load_engine(str(tmp_path), device="cpu")


def test_a_post_processor_bos_is_not_doubled_by_the_template(tmp_path: Path) -> None:
    """A Llama-style tokenizer.json adds BOS itself; a chat template that writes the BOS
    text too must not give two."""
    from tokenizers import Tokenizer, processors

    write_folder(tmp_path, "llama", seed=7)
    tokens, _ = byte_level_vocab()
    bos = "<|endoftext|>"
    raw = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    raw.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tokens.index(bos))]
    )
    raw.save(str(tmp_path / "tokenizer.json"))
    settings = json.loads((tmp_path / "tokenizer_config.json").read_text())
    settings.update(bos_token=bos, chat_template="{{ bos_token }}{{ messages[0]['content'] }}")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(settings))
    tokenizer = HFTokenizer.from_folder(tmp_path)
    the = tokens.index("the")
    assert tokenizer.encode("the") == [tokens.index(bos), the]
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "the"}])
    assert chat == bos + "the"
    assert tokenizer.encode(chat) == [tokens.index(bos), the]


@pytest.mark.process
def test_serve_a_folder_end_to_end(tmp_path: Path) -> None:
    """``blocks inference serve --model <folder>``, asked by the official client."""
    openai = pytest.importorskip("openai")
    write_folder(tmp_path, "qwen2", seed=6)
    command = [
        sys.executable,
        "-m",
        "blocks",
        "inference",
        "serve",
        "--model",
        str(tmp_path),
        "--model-name",
        "tiny-qwen2",
        "--listen",
        "127.0.0.1:0",
        "--num-blocks",
        "32",
        "--max-model-len",
        "128",
        "--threads",
        "1",
        "--json",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else "no output"
        listen = json.loads(line)["listen"]
        client = openai.OpenAI(
            base_url=f"http://{listen}/v1", api_key="unused", max_retries=0, timeout=60
        )
        assert [m.id for m in client.models.list()] == ["tiny-qwen2"]
        reply = client.chat.completions.create(
            model="tiny-qwen2",
            messages=[{"role": "user", "content": "the and"}],
            max_tokens=4,
            temperature=0,
        )
        tokenizer = HFTokenizer.from_folder(tmp_path)
        chat = tokenizer.apply_chat_template([{"role": "user", "content": "the and"}])
        assert reply.usage is not None
        assert reply.usage.prompt_tokens == len(tokenizer.encode(chat))
        assert reply.choices[0].finish_reason in ("stop", "length")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
