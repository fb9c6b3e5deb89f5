"""Building a ready engine from a model name: device and dtype choice, the tiny test model.

``tiny-random`` is a seeded random-weight model with the character tokenizer: it starts in
milliseconds, so process tests and demos of the serving path need no checkpoint. Any other
name goes through ``loader.load_model`` (``smollm2``, a ``.gguf`` path, a Hugging Face folder
with config.json, safetensors and tokenizer.json).
On a GPU the default compute dtype is bf16; on the CPU it is float32.
"""

from __future__ import annotations

import math

import torch

from blocks.core.errors import InvalidArgument
from blocks.inference.engine import EngineConfig, LLMEngine
from blocks.inference.model import LlamaForCausalLM, ModelConfig
from blocks.inference.tokenizer import CharTokenizer, TokenizerLike

__all__ = ["DTYPES", "default_device", "load_engine", "tiny_random_model"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def tiny_random_model(seed: int = 0, vocab_size: int = 96) -> LlamaForCausalLM:
    """A small random-weight model whose logits are spread out (for tests and demos)."""
    generator = torch.Generator().manual_seed(seed)
    model = LlamaForCausalLM(ModelConfig.tiny(vocab_size=vocab_size))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.8, 1.2, generator=generator)
            else:
                param.normal_(0.0, 1.0 / math.sqrt(param.shape[-1]), generator=generator)
        model.model.embed_tokens.weight.mul_(4.0)
    return model.eval()


def load_engine(
    model: str,
    *,
    device: str | None = None,
    dtype: str | None = None,
    config: EngineConfig | None = None,
) -> LLMEngine:
    device = device or default_device()
    if dtype is None:
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in DTYPES:
        raise InvalidArgument(f"dtype must be one of {sorted(DTYPES)}")
    tokenizer: TokenizerLike
    if model == "tiny-random":
        net = tiny_random_model().to(device=device, dtype=DTYPES[dtype])
        tokenizer = CharTokenizer()
    else:
        from blocks.inference.loader import load_model

        net, loaded = load_model(model, DTYPES[dtype], device)
        if loaded is None:
            raise InvalidArgument(f"{model}: a folder needs tokenizer.json to be served")
        tokenizer = loaded
    return LLMEngine(net, tokenizer, config)
