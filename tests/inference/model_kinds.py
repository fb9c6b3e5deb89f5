"""Tiny models of each supported kind, built with transformers and written as GGUF or a folder.

The reference for every comparison is Hugging Face transformers' own implementation of the
architecture (``LlamaForCausalLM``, ``MistralForCausalLM``, ``Qwen2ForCausalLM``), built with
``from_config`` (nothing downloaded) and run in float64. For a GGUF file, transformers reads
the *file* back with its own GGUF reader (``load_gguf_checkpoint``: the ``gguf`` package's
numpy dequantizers and its own undoing of llama.cpp's row order), so our dequantizers, name
mapping and permutation are all checked against an independent path.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blocks.inference.model import LlamaForCausalLM

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = 300
HIDDEN, LAYERS, HEADS, KV_HEADS = 64, 2, 4, 2
HEAD_DIM = HIDDEN // HEADS
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def byte_level_vocab() -> tuple[list[str], list[str]]:
    """~300 tokens: the 256 byte-level symbols, a few merges, then the control tokens."""
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = ["t h", "th e", "Ġ the", "i n", "a n", "an d", "Ġ and", "o u", "e r", "Ġ a"]
    merged = [m.replace(" ", "") for m in merges]
    filler = [f"x{i}" for i in range(VOCAB - len(alphabet) - len(merged) - len(SPECIALS))]
    return [*alphabet, *merged, *filler, *SPECIALS], merges


def hf_config(kind: str, **overrides: Any) -> Any:
    from transformers import AutoConfig

    fields: dict[str, Any] = {
        "vocab_size": VOCAB,
        "hidden_size": HIDDEN,
        "intermediate_size": 128,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "bos_token_id": None,
        "eos_token_id": VOCAB - 1,
    }
    fields.update(overrides)
    return AutoConfig.for_model(kind, **fields)


def make_hf_model(kind: str, seed: int = 0, **overrides: Any) -> Any:
    """A transformers model with weights scaled so logits spread out (float64 holding
    float32-representable values, eval)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config(kind, **overrides), dtype=torch.float64)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.8, 1.2)
            elif name.endswith("bias"):
                param.normal_(0.0, 0.5)
            else:
                param.normal_(0.0, 1.0 / math.sqrt(param.shape[-1]))
        model.model.embed_tokens.weight.mul_(4.0)
        for param in model.parameters():  # float32 values: files store them exactly
            param.copy_(param.float())
    return model.eval()


def hf_logits(model: Any, token_ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([token_ids])).logits[0].double()


def our_logits(model: LlamaForCausalLM, token_ids: list[int]) -> torch.Tensor:
    """Logits at every position through the paged runner, one prefill chunk."""
    from blocks.inference.runner import ModelRunner
    from blocks.inference.scheduler import ScheduledChunk

    runner = ModelRunner(model, num_blocks=8, block_size=64)
    chunk = ScheduledChunk(
        seq_id=0, start=0, token_ids=tuple(token_ids), block_table=(0, 1, 2, 3), sample=True
    )
    return runner.run_all(chunk).double()


def llama_cpp_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter row order for query/key projections: within each head, rows
    ``i`` and ``i + head_dim / 2`` (a rotate-half pair) become adjacent rows ``2i, 2i + 1``."""
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


GGUF_LAYER = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_name(hf_name: str) -> str:
    top = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    if hf_name in top:
        return top[hf_name]
    _, _, index, rest = hf_name.split(".", 3)
    module, _, suffix = rest.rpartition(".")
    return f"blk.{index}.{GGUF_LAYER[module]}.{suffix}"


def write_gguf(
    path: Path,
    model: Any,
    arch: str,
    *,
    encode: Any = None,
    metadata: dict[str, Any] | None = None,
    extra_tensors: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write ``model``'s weights as a GGUF file of ``arch`` (llama or qwen2).

    ``encode(gguf_name, float32 array)`` returns ``(array, raw GGML type or None)`` to store
    a tensor quantized; by default every tensor is float32. ``metadata`` adds uint32 keys,
    ``extra_tensors`` float tensors beyond the model's.
    """
    import gguf

    cfg = model.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"tiny {arch}")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    for key, value in (metadata or {}).items():
        writer.add_uint32(key, value)
    tokens, merges = byte_level_vocab()
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_merges(merges)
    writer.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_chat_template(CHATML)
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        array = tensor.detach().float().numpy()
        target = gguf_name(name)
        if arch == "llama" and ".attn_q." in target:
            array = llama_cpp_permute(array, heads)
        elif arch == "llama" and ".attn_k." in target:
            array = llama_cpp_permute(array, kv_heads)
        raw_type = None
        if encode is not None and array.ndim == 2:
            array, raw_type = encode(target, array)
        writer.add_tensor(target, array, raw_dtype=raw_type)
    for name, array in (extra_tensors or {}).items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def hf_from_gguf(path: Path, kind: str, **overrides: Any) -> Any:
    """A float64 transformers model holding what transformers itself reads from the file."""
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    model = AutoModelForCausalLM.from_config(hf_config(kind, **overrides), dtype=torch.float64)
    loaded = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)
    state = {k: v.double() for k, v in loaded["tensors"].items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [
        m for m in missing if not (m == "lm_head.weight" and model.config.tie_word_embeddings)
    ]
    assert not missing and not unexpected, (missing, unexpected)
    if model.config.tie_word_embeddings:
        model.tie_weights()
    return model.eval()


def write_tokenizer_files(root: Path, eos_token: str = "<|im_end|>") -> None:
    """tokenizer.json (byte-level BPE) and tokenizer_config.json with a ChatML template."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tokens, merges = byte_level_vocab()
    vocab = {token: index for index, token in enumerate(tokens)}
    pairs = [tuple(m.split(" ")) for m in merges]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=pairs))  # type: ignore[arg-type]
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    tokenizer.save(str(root / "tokenizer.json"))
    settings = {"chat_template": CHATML, "eos_token": eos_token, "bos_token": None}
    (root / "tokenizer_config.json").write_text(json.dumps(settings))
