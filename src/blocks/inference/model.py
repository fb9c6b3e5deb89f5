"""A Llama-family decoder in torch that reads and writes a paged KV cache.

Theory of operation: one forward pass takes the *flattened* tokens of every sequence in the
step (prefill chunks and decode tokens mixed) with their positions. Projections, RoPE, the
MLP and the norms act token by token, so they run on the flat ``(tokens, width)`` tensor.
Only attention needs to know which tokens belong together; ``AttentionBatch`` says so:

* ``slot_mapping[t]``: the cache slot (``block * block_size + offset``) where token ``t``'s
  key and value are written. All new keys and values are written *before* attention, so a
  prefill chunk attends to itself through the cache exactly as to earlier chunks.
* ``query_index`` ``(batch, max_query)``: which flat tokens form each sequence's queries,
  padded; ``key_slots`` ``(batch, max_context)``: the cache slots of each sequence's whole
  context in position order (its block table unrolled), padded; ``mask`` says which query
  may see which key (causal, and not the padding).
* ``output_index``: where each flat token's output sits in the padded result.

Attention is then one ``scaled_dot_product_attention`` call per layer over the padded batch,
with grouped-query attention (``enable_gqa``). The cache layout is
``(layers, 2, slots, kv_heads, head_dim)``.

Parameter names follow Hugging Face's ``LlamaForCausalLM`` so a safetensors checkpoint loads
as is; the GGUF loader maps its names onto these. Weights are stored in the compute dtype;
norms and softmax statistics are taken in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from blocks.core.errors import InvalidArgument

__all__ = ["AttentionBatch", "LlamaForCausalLM", "ModelConfig"]


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Shape of a Llama-family model."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10_000.0
    rms_norm_eps: float = 1e-5
    max_position: int = 2048
    tie_word_embeddings: bool = True
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers"):
            if getattr(self, name) < 1:
                raise InvalidArgument(f"{name} must be >= 1")
        if self.num_heads < 1 or self.num_kv_heads < 1 or self.num_heads % self.num_kv_heads:
            raise InvalidArgument("num_heads must be a positive multiple of num_kv_heads")
        if self.head_dim < 2 or self.head_dim % 2:
            raise InvalidArgument("head_dim must be even")

    @classmethod
    def tiny(cls, vocab_size: int = 96, num_layers: int = 2) -> ModelConfig:
        """A few-thousand-parameter model for fast tests (random weights)."""
        return cls(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_layers=num_layers,
            num_heads=4,
            num_kv_heads=2,
            head_dim=8,
            rope_theta=10_000.0,
            max_position=512,
            eos_token_ids=(0,),
        )


@dataclass(frozen=True, slots=True)
class AttentionBatch:
    """Index tensors describing one step's attention; see the module docstring."""

    positions: torch.Tensor  # (tokens,) int64
    slot_mapping: torch.Tensor  # (tokens,) int64
    query_index: torch.Tensor  # (batch, max_query) int64 into the flat tokens
    key_slots: torch.Tensor  # (batch, max_context) int64 cache slots
    mask: torch.Tensor  # (batch, 1, max_query, max_context) bool, True = may attend
    output_index: torch.Tensor  # (tokens,) int64 into batch * max_query


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wide = x.to(_stat_dtype(x.dtype))
        wide = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + self.eps)
        return (wide * self.weight.to(wide.dtype)).to(x.dtype)


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    """Norms and rotations run in float32 at least (float64 stays float64)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def rope_tables(config: ModelConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables ``(max_position, head_dim)`` in the rotate-half layout."""
    half = config.head_dim // 2
    inv_freq = 1.0 / (
        config.rope_theta ** (torch.arange(half, dtype=torch.float64, device=device) / half)
    )
    angles = torch.outer(
        torch.arange(config.max_position, dtype=torch.float64, device=device), inv_freq
    )
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``(tokens, heads, head_dim)`` by per-token ``cos``/``sin`` ``(tokens, dim)``."""
    half = x.shape[-1] // 2
    wide = x.to(cos.dtype)
    rotated = torch.cat([-wide[..., half:], wide[..., :half]], dim=-1)
    out = wide * cos[:, None, :] + rotated * sin[:, None, :]
    return out.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        width = config.hidden_size
        self.q_proj = nn.Linear(width, config.num_heads * config.head_dim, bias=False)
        self.k_proj = nn.Linear(width, config.num_kv_heads * config.head_dim, bias=False)
        self.v_proj = nn.Linear(width, config.num_kv_heads * config.head_dim, bias=False)
        self.o_proj = nn.Linear(config.num_heads * config.head_dim, width, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        batch: AttentionBatch,
        cache: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
    ) -> torch.Tensor:
        cfg = self.config
        tokens = x.shape[0]
        q = apply_rope(self.q_proj(x).view(tokens, cfg.num_heads, cfg.head_dim), cos, sin)
        k = apply_rope(self.k_proj(x).view(tokens, cfg.num_kv_heads, cfg.head_dim), cos, sin)
        v = self.v_proj(x).view(tokens, cfg.num_kv_heads, cfg.head_dim)
        key_cache, value_cache = cache[0], cache[1]
        key_cache.index_copy_(0, batch.slot_mapping, k.to(key_cache.dtype))
        value_cache.index_copy_(0, batch.slot_mapping, v.to(value_cache.dtype))
        queries = q[batch.query_index].transpose(1, 2)  # (B, H, Q, D)
        keys = key_cache[batch.key_slots].transpose(1, 2).to(q.dtype)  # (B, KV, C, D)
        values = value_cache[batch.key_slots].transpose(1, 2).to(q.dtype)
        out = F.scaled_dot_product_attention(
            queries, keys, values, attn_mask=batch.mask, enable_gqa=True
        )
        out = out.transpose(1, 2).reshape(-1, cfg.num_heads * cfg.head_dim)
        projected: torch.Tensor = self.o_proj(out[batch.output_index])
        return projected


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return out


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.self_attn = Attention(config)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class LlamaModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    """The decoder plus its output head. ``forward`` returns final hidden states per token."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        # Kept outside the module's buffers so that casting the model to bf16 never rounds
        # the rotation angles; built in float64, cached per (device, dtype).
        self._rope: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        self._head_t: tuple[tuple[int, int], torch.Tensor] | None = None

    def rope(self) -> tuple[torch.Tensor, torch.Tensor]:
        key = (self.device, _stat_dtype(self.dtype))
        if key not in self._rope:
            cos, sin = rope_tables(self.config, torch.device("cpu"))
            self._rope[key] = (cos.to(key[0], key[1]), sin.to(key[0], key[1]))
        return self._rope[key]

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    def new_kv_cache(self, num_slots: int) -> torch.Tensor:
        """A zeroed cache ``(layers, 2, num_slots, kv_heads, head_dim)`` on the model's device."""
        cfg = self.config
        shape = (cfg.num_layers, 2, num_slots, cfg.num_kv_heads, cfg.head_dim)
        return torch.zeros(shape, dtype=self.dtype, device=self.device)

    def forward(
        self, token_ids: torch.Tensor, batch: AttentionBatch, kv_cache: torch.Tensor
    ) -> torch.Tensor:
        if int(batch.positions.max()) >= self.config.max_position:
            raise InvalidArgument("position past the model's maximum")
        cos_table, sin_table = self.rope()
        cos = cos_table[batch.positions]
        sin = sin_table[batch.positions]
        x = self.model.embed_tokens(token_ids)
        for index, layer in enumerate(self.model.layers):
            assert isinstance(layer, DecoderLayer)
            h = layer.input_layernorm(x)
            x = x + layer.self_attn(h, batch, kv_cache[index], cos, sin)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        result: torch.Tensor = self.model.norm(x)
        return result

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits ``(rows, vocab)``, float32 or wider, for the given final hidden states."""
        weight = self.lm_head.weight
        if hidden.device.type == "cpu":
            # CPU BLAS streams a (hidden, vocab) matrix ~1.7x faster than the (vocab, hidden)
            # one F.linear reads (measured at batch 1 to 32); keep a transposed copy.
            key = (weight.data_ptr(), weight._version)
            if self._head_t is None or self._head_t[0] != key:
                self._head_t = (key, weight.detach().t().contiguous())
            out = hidden @ self._head_t[1]
        else:
            out = self.lm_head(hidden)
        out = out.to(_stat_dtype(out.dtype))
        return out
