"""GGUF files (llama.cpp's format) of the Llama family and Qwen2: shape, weights, tokenizer.

Theory of operation: ``gguf_file`` parses the file (metadata and a memory map of each
tensor's bytes); ``quants.dequantize`` turns every tensor into float32 in torch, and the
names are mapped onto ``LlamaForCausalLM``'s (Hugging Face's) names.

Architectures (``general.architecture``) and what differs between them:

* ``llama`` (Llama 1-3, TinyLlama, SmolLM, Mistral 7B, which llama.cpp writes as llama):
  llama.cpp's converter permutes the rows of the query and key projections so that RoPE
  rotates *adjacent* pairs; our model rotates the two *halves* of each head (as Hugging Face
  does), so those rows are permuted back here.
* ``qwen2`` (Qwen2, Qwen2.5): query, key and value projections carry biases
  (``blk.N.attn_q.bias`` ...); its RoPE already rotates halves, so nothing is permuted; its
  large ``rope.freq_base`` (1e6) is read like every other key.

Both: a file without ``output.weight`` ties the head to the embedding; a ``rope_freqs``
tensor (Llama 3.x) holds one divisor per frequency; ``rope.scaling.type`` "linear" divides
every frequency by ``rope.scaling.factor``; any other scaling (YaRN, ...) is refused rather
than silently ignored. ``attention.sliding_window`` (Mistral's, where a converter writes it)
caps the context at the window: within it, sliding-window attention *is* full causal
attention, so capping keeps the model exact and longer prompts are refused by the engine's
length check instead of being answered wrongly. Any other architecture, an unknown tensor
name, or a tensor type ``quants`` lacks is ``InvalidArgument`` naming it.

The tokenizer follows ``tokenizer.ggml.model``: "gpt2" is byte-level BPE with merges
(``tokenizer.BPETokenizer``), "llama" is SentencePiece-style score-ordered merges with byte
fallback (``sentencepiece.SentencePieceTokenizer``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from blocks.core.errors import InvalidArgument
from blocks.inference.gguf_file import GGUFTensor, read_gguf
from blocks.inference.loader import build_model
from blocks.inference.model import LlamaForCausalLM, ModelConfig
from blocks.inference.quants import dequantize
from blocks.inference.sentencepiece import SentencePieceTokenizer
from blocks.inference.tokenizer import BPETokenizer, TokenizerLike

__all__ = ["ARCHITECTURES", "load_gguf"]

# architecture -> whether llama.cpp permuted its query/key rows (biases are read where present)
ARCHITECTURES: dict[str, bool] = {"llama": True, "qwen2": False}
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}


class _Fields:
    """Typed access to GGUF metadata, with the architecture's key prefix filled in."""

    def __init__(self, fields: Mapping[str, Any], arch: str) -> None:
        self._fields = fields
        self.arch = arch

    def get(self, key: str, default: Any = None) -> Any:
        value = self._fields.get(key.replace("{arch}", self.arch))
        return default if value is None else value


def _unpermute_rope_rows(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo llama.cpp's row order (adjacent pairs) back to rotate-half order, per head."""
    rows = weight.shape[0]
    head_dim = rows // num_heads
    return (
        weight.reshape(num_heads, head_dim // 2, 2, *weight.shape[1:])
        .transpose(1, 2)
        .reshape(weight.shape)
    )


def _gguf_config(
    fields: _Fields, tensors: Mapping[str, Any], rope_freqs: tuple[float, ...]
) -> ModelConfig:
    scaling = fields.get("{arch}.rope.scaling.type", "none")
    if scaling not in ("none", "linear"):
        raise InvalidArgument(
            f"RoPE scaling {scaling!r} is not supported (linear and Llama 3 frequency factors are)"
        )
    linear = float(fields.get("{arch}.rope.scaling.factor", 1.0)) if scaling == "linear" else 1.0
    width = int(fields.get("{arch}.embedding_length"))
    heads = int(fields.get("{arch}.attention.head_count"))
    eos = fields.get("tokenizer.ggml.eos_token_id")
    eot = fields.get("tokenizer.ggml.eot_token_id")
    bos = fields.get("tokenizer.ggml.bos_token_id")
    eos_ids = tuple(dict.fromkeys(int(t) for t in (eos, eot) if t is not None))
    embedding = tensors["token_embd.weight"]
    context = int(fields.get("{arch}.context_length", 2048))
    window = int(fields.get("{arch}.attention.sliding_window", 0) or 0)
    return ModelConfig(
        vocab_size=int(embedding.shape[1]),  # GGUF shapes list the innermost dimension first
        hidden_size=width,
        intermediate_size=int(fields.get("{arch}.feed_forward_length")),
        num_layers=int(fields.get("{arch}.block_count")),
        num_heads=heads,
        num_kv_heads=int(fields.get("{arch}.attention.head_count_kv", heads)),
        head_dim=int(fields.get("{arch}.rope.dimension_count", width // heads)),
        rope_theta=float(fields.get("{arch}.rope.freq_base", 10_000.0)),
        rms_norm_eps=float(fields.get("{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        max_position=min(context, window) if window > 0 else context,
        tie_word_embeddings="output.weight" not in tensors,
        bos_token_id=None if bos is None else int(bos),
        eos_token_ids=eos_ids,
        rope_freq_factors=rope_freqs,
        rope_linear_factor=linear,
        attention_bias=any(name.endswith("attn_q.bias") for name in tensors),
    )


def _gguf_tokenizer(fields: _Fields, config: ModelConfig) -> TokenizerLike:
    kind = fields.get("tokenizer.ggml.model", "gpt2")
    template = fields.get("tokenizer.chat_template")
    if kind == "llama":
        unknown = fields.get("tokenizer.ggml.unknown_token_id")
        return SentencePieceTokenizer(
            fields.get("tokenizer.ggml.tokens"),
            fields.get("tokenizer.ggml.scores"),
            fields.get("tokenizer.ggml.token_type"),
            eos_token_ids=config.eos_token_ids,
            bos_token_id=config.bos_token_id,
            unknown_token_id=None if unknown is None else int(unknown),
            add_bos=bool(fields.get("tokenizer.ggml.add_bos_token", True)),
            add_space_prefix=bool(fields.get("tokenizer.ggml.add_space_prefix", True)),
            chat_template=template,
        )
    if kind != "gpt2":
        raise InvalidArgument(f"unsupported tokenizer {kind!r} (gpt2 BPE and llama SentencePiece)")
    return BPETokenizer(
        fields.get("tokenizer.ggml.tokens"),
        fields.get("tokenizer.ggml.merges"),
        fields.get("tokenizer.ggml.token_type"),
        eos_token_ids=config.eos_token_ids,
        bos_token_id=config.bos_token_id,
        chat_template=template,
        split_digits=fields.get("tokenizer.ggml.pre") in ("smollm", "llama3", "qwen2"),
    )


def _dequantized(tensor: GGUFTensor) -> torch.Tensor:
    """float32 weights of one GGUF tensor, in row-major (numpy) shape order."""
    from gguf import GGMLQuantizationType

    try:
        type_name = GGMLQuantizationType(tensor.tensor_type).name
    except ValueError:
        type_name = ""
    shape = tuple(int(d) for d in reversed(tensor.shape))
    raw = torch.from_numpy(tensor.data.copy())
    return dequantize(raw, tensor.tensor_type, shape, type_name=type_name)


def _state_name(name: str) -> tuple[str, str, str]:
    """``(our parameter name, GGUF kind, suffix)`` for a GGUF tensor name."""
    stem, _, suffix = name.rpartition(".")
    if suffix not in ("weight", "bias"):
        raise InvalidArgument(f"unexpected GGUF tensor {name!r}")
    if stem.startswith("blk."):
        _, index, kind = stem.split(".", 2)
        if kind not in _LAYER_NAMES:
            raise InvalidArgument(f"unsupported GGUF tensor {name!r} (not a Llama/Qwen2 layer)")
        return f"model.layers.{index}.{_LAYER_NAMES[kind]}.{suffix}", kind, suffix
    if stem not in _TOP_NAMES:
        raise InvalidArgument(f"unsupported GGUF tensor {name!r}")
    return f"{_TOP_NAMES[stem]}.{suffix}", stem, suffix


def load_gguf(
    path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[LlamaForCausalLM, TokenizerLike]:
    """Model (dequantized, then cast to ``dtype``) and tokenizer from a GGUF file.

    Raises ``InvalidArgument`` for an architecture, tensor, tensor type or RoPE scaling this
    module does not implement (see the module docstring).
    """
    reader = read_gguf(path)
    arch = str(reader.fields.get("general.architecture", ""))
    if arch not in ARCHITECTURES:
        raise InvalidArgument(
            f"unsupported architecture {arch!r} (supported: {', '.join(ARCHITECTURES)})"
        )
    permuted = ARCHITECTURES[arch]
    fields = _Fields(reader.fields, arch)
    tensors = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in tensors:
        raise InvalidArgument(f"{path}: no token_embd.weight tensor")
    rope = tensors.pop("rope_freqs.weight", None)
    rope_freqs = () if rope is None else tuple(float(x) for x in _dequantized(rope).ravel())
    config = _gguf_config(fields, tensors, rope_freqs)
    state: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        key, kind, _ = _state_name(name)
        weights = _dequantized(tensor)
        if permuted and kind == "attn_q":
            weights = _unpermute_rope_rows(weights, config.num_heads)
        elif permuted and kind == "attn_k":
            weights = _unpermute_rope_rows(weights, config.num_kv_heads)
        state[key] = weights.contiguous()
    return build_model(config, state, dtype, device), _gguf_tokenizer(fields, config)
