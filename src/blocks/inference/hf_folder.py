"""A Hugging Face checkpoint folder: config.json, ``*.safetensors``, tokenizer.json, chat template.

Theory of operation: ``config.json``'s ``model_type`` picks the architecture and is mapped
onto ``ModelConfig``; the safetensors files already use the names ``LlamaForCausalLM``
expects. What each kind adds, and what is refused rather than served wrongly:

* ``llama`` (also a config without ``model_type``): ``attention_bias`` or ``mlp_bias`` true
  is refused (our layers have no output or MLP biases).
* ``mistral``: the same layers; ``sliding_window`` (Mistral 7B v0.1: 4096) caps the context
  at the window. Within the window sliding-window attention *is* full causal attention, so
  the model stays exact and a longer prompt is refused by the engine's length check.
* ``qwen2``: query, key and value projections carry biases; tied embeddings and its RoPE
  theta come from the config like any other field. Sliding-window layers
  (``use_sliding_window`` / a ``sliding_attention`` layer type) are refused: Qwen2 applies
  them to some layers only, past a context where capping would cut the model short.

Everywhere: ``hidden_act`` other than SiLU is refused; RoPE comes from ``rope_theta`` and
``rope_scaling`` (transformers 4) or ``rope_parameters`` (transformers 5): default, linear
and llama3 are honoured, anything else (YaRN, dynamic, ...) refused.

The tokenizer is ``tokenizer.json`` read by the ``tokenizers`` library (so BPE, byte-level
BPE and SentencePiece-converted tokenizers all work as their authors configured them), with
``tokenizer_config.json`` for the chat template (or ``chat_template.jinja``), the BOS and
EOS tokens; end-of-sequence ids are the union of config.json's, generation_config.json's and
the tokenizer's EOS token. A folder without tokenizer.json loads without a tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from blocks.core.errors import Corruption, InvalidArgument, NotFound
from blocks.inference.loader import build_model, llama3_freq_factors, read_safetensors
from blocks.inference.model import LlamaForCausalLM, ModelConfig
from blocks.inference.tokenizer import MAX_TEXT_CHARS, TokenizerLike, render_chat

__all__ = ["HFTokenizer", "hf_model_config", "load_hf_folder", "load_hf_model"]

MODEL_TYPES = ("llama", "mistral", "qwen2")
MAX_JSON_BYTES = 64 << 20  # tokenizer.json of a 150k-token vocabulary is ~10 MiB


def _read_json(path: Path) -> dict[str, Any]:
    if path.stat().st_size > MAX_JSON_BYTES:
        raise InvalidArgument(f"{path}: larger than {MAX_JSON_BYTES} bytes")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise Corruption(f"{path}: not JSON ({error})") from None
    if not isinstance(value, dict):
        raise Corruption(f"{path}: not a JSON object")
    return value


def _ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    return tuple(int(v) for v in value) if isinstance(value, list) else (int(value),)


def _rope_fields(raw: Mapping[str, Any], head_dim: int) -> dict[str, Any]:
    """``ModelConfig`` RoPE fields: theta plus scaling, from either transformers generation."""
    parameters = raw.get("rope_parameters") or {}
    scaling = raw.get("rope_scaling") or parameters
    theta = float(raw.get("rope_theta") or parameters.get("rope_theta") or 10_000.0)
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    fields: dict[str, Any] = {"rope_theta": theta}
    if kind == "default":
        return fields
    if kind == "linear":
        return {**fields, "rope_linear_factor": float(scaling["factor"])}
    if kind == "llama3":
        factors = llama3_freq_factors(
            head_dim,
            theta,
            float(scaling["factor"]),
            float(scaling["low_freq_factor"]),
            float(scaling["high_freq_factor"]),
            int(scaling["original_max_position_embeddings"]),
        )
        return {**fields, "rope_freq_factors": factors}
    raise InvalidArgument(f"RoPE scaling {kind!r} is not supported (default, linear, llama3 are)")


def _refusals(raw: Mapping[str, Any], kind: str) -> None:
    if kind not in MODEL_TYPES:
        raise InvalidArgument(f"model_type {kind!r} is not supported ({', '.join(MODEL_TYPES)})")
    if raw.get("hidden_act", "silu") != "silu":
        raise InvalidArgument(f"hidden_act {raw['hidden_act']!r} is not supported (silu)")
    if kind != "qwen2" and (raw.get("attention_bias") or raw.get("mlp_bias")):
        raise InvalidArgument("attention_bias / mlp_bias on a llama model is not supported")
    if kind == "qwen2" and (
        raw.get("use_sliding_window") or "sliding_attention" in (raw.get("layer_types") or ())
    ):
        raise InvalidArgument("Qwen2 sliding-window layers are not supported")


def hf_model_config(raw: Mapping[str, Any]) -> ModelConfig:
    """``ModelConfig`` from a parsed config.json; ``InvalidArgument`` for what is refused."""
    kind = str(raw.get("model_type", "llama"))
    _refusals(raw, kind)
    heads = int(raw["num_attention_heads"])
    head_dim = int(raw.get("head_dim") or raw["hidden_size"] // heads)
    context = int(raw.get("max_position_embeddings", 2048))
    window = raw.get("sliding_window") if kind == "mistral" else None
    return ModelConfig(
        vocab_size=int(raw["vocab_size"]),
        hidden_size=int(raw["hidden_size"]),
        intermediate_size=int(raw["intermediate_size"]),
        num_layers=int(raw["num_hidden_layers"]),
        num_heads=heads,
        num_kv_heads=int(raw.get("num_key_value_heads") or heads),
        head_dim=head_dim,
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
        max_position=min(context, int(window)) if window else context,
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        bos_token_id=raw.get("bos_token_id"),
        eos_token_ids=_ids(raw.get("eos_token_id")),
        attention_bias=kind == "qwen2",
        **_rope_fields(raw, head_dim),
    )


def load_hf_model(
    directory: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> LlamaForCausalLM:
    """The model of a folder holding ``config.json`` and ``*.safetensors``."""
    root = Path(directory)
    if not (root / "config.json").is_file():
        raise NotFound(f"no config.json in {root}")
    config = hf_model_config(_read_json(root / "config.json"))
    files = sorted(root.glob("*.safetensors"))
    if not files:
        raise NotFound(f"no .safetensors files in {root}")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update({k: v.float() for k, v in read_safetensors(file).items()})
    return build_model(config, state, dtype, device)


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or ``{"content": ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _chat_template(root: Path, settings: Mapping[str, Any]) -> str | None:
    jinja = root / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    template = settings.get("chat_template")
    if isinstance(template, list):  # named templates: the "default" one serves chat
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


class HFTokenizer:
    """A ``tokenizer.json`` tokenizer with its chat template and special tokens."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        eos_token_ids: tuple[int, ...],
        bos_token: str | None,
        eos_token: str | None,
        chat_template: str | None,
    ) -> None:
        self._tokenizer = tokenizer
        self._eos = eos_token_ids
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.bos_token_id = None if bos_token is None else tokenizer.token_to_id(bos_token)
        self.chat_template = chat_template

    @classmethod
    def from_folder(cls, root: Path, model_eos: tuple[int, ...] = ()) -> HFTokenizer:
        """Read ``tokenizer.json`` (required) and the optional config files beside it."""
        from tokenizers import Tokenizer

        path = root / "tokenizer.json"
        if path.stat().st_size > MAX_JSON_BYTES:
            raise InvalidArgument(f"{path}: larger than {MAX_JSON_BYTES} bytes")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as error:  # the library raises plain Exception subclasses
            raise Corruption(f"{path}: {error}") from None
        settings_path = root / "tokenizer_config.json"
        settings = _read_json(settings_path) if settings_path.is_file() else {}
        generation_path = root / "generation_config.json"
        generation = _read_json(generation_path) if generation_path.is_file() else {}
        eos_token = _token_text(settings.get("eos_token"))
        eos_id = None if eos_token is None else tokenizer.token_to_id(eos_token)
        eos_ids = (*model_eos, *_ids(generation.get("eos_token_id")), *_ids(eos_id))
        return cls(
            tokenizer,
            eos_token_ids=tuple(dict.fromkeys(eos_ids)),
            bos_token=_token_text(settings.get("bos_token")),
            eos_token=eos_token,
            chat_template=_chat_template(root, settings),
        )

    @property
    def vocab_size(self) -> int:
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        return self._eos

    def encode(self, text: str) -> list[int]:
        """Ids as the tokenizer's own post-processor makes them, with one BOS at most (a
        chat template that writes the BOS text would otherwise get a second)."""
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidArgument(f"text longer than {MAX_TEXT_CHARS} characters")
        ids = list(self._tokenizer.encode(text, add_special_tokens=True).ids)
        bos = self.bos_token_id
        if bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
            del ids[0]
        return ids

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(token_ids), skip_special_tokens=False))

    def apply_chat_template(self, messages: Sequence[Mapping[str, str]]) -> str:
        if self.chat_template is None:
            raise InvalidArgument("this model has no chat template; use /v1/completions")
        return render_chat(
            self.chat_template,
            messages,
            bos_token=self.bos_token or "",
            eos_token=self.eos_token or "",
        )


def load_hf_folder(
    directory: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[LlamaForCausalLM, TokenizerLike | None]:
    """Model and, when the folder has ``tokenizer.json``, its tokenizer."""
    root = Path(directory)
    model = load_hf_model(root, dtype, device)
    if not (root / "tokenizer.json").is_file():
        return model, None
    return model, HFTokenizer.from_folder(root, model.config.eos_token_ids)
