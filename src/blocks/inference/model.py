"""A Llama-family decoder in torch that reads and writes a paged KV cache.

Theory of operation: one forward pass takes the *flattened* tokens of every sequence in the
step (prefill chunks and decode tokens mixed) with their positions. Projections, RoPE, the
MLP and the norms act token by token, so they run on the flat ``(tokens, width)`` tensor.
Only attention needs to know which tokens belong together; ``AttentionBatch`` says so:

* ``slot_mapping[t]``: the cache slot (``block * block_size + offset``) where token ``t``'s
  key and value are written. All new keys and values are written *before* attention, so a
  prefill chunk attends to itself through the cache exactly as to earlier chunks.
* ``groups``: attention runs as one ``scaled_dot_product_attention`` call per group. All
  one-token chunks (decoding sequences) form one group, padded only in context length
  (``key_slots`` ``(batch, max_context)`` is each one's block table unrolled; ``mask`` hides
  the padding, and is left out when there is none). Every longer chunk (a prefill chunk,
  or a token with speculative drafts) is a group of its own: its queries are a contiguous
  run of flat rows, and its mask is causal, offset by the chunk's start (a chunk starting
  at 0 uses SDPA's built-in causal mask). Padding a decode row to a prefill chunk's length,
  as one padded call over everything would, cost 4.5x a mixed step's time (measured: 30
  decodes plus a 400-token chunk, 5.5 s against 1.2 s for the two run apart).

Grouped-query attention uses ``enable_gqa``. The cache layout is ``(layers, slots, 2 *
kv_heads, head_dim)``: a token's keys then its values, so one ``index_copy_`` writes both
and one gather reads both.

**Fast path.** Parameter names follow Hugging Face's ``LlamaForCausalLM`` so a safetensors
checkpoint loads as is (the GGUF loader maps its names onto these). Before the first forward
pass each layer's weights are *packed* (``packing``): query, key and value projections into
one matrix, gate and up projections into another, so a layer runs four matrix products, not
seven; the ``nn.Linear`` parameters become views of the packed storage. If a parameter is
replaced (``model.to(...)``, an assignment), the layer is packed again on the next pass
(``layer_weights``). RoPE rotates queries and keys in place in the projection's output;
residual additions are fused into the products (``addmm``); norms use ``F.rms_norm``.
Weights are in the compute dtype; norms and rotations run in float32 at least (float64
stays float64).

**A lone decode token** on the CPU (float32 or float64; batch-1 decode) does not go through
the torch loop: ``row_decode`` runs the same arithmetic in numpy on views of these packed
weights, its products through numpy's OpenBLAS (``cpu_blas``), and so does ``logits`` for one
row. ``blas_products = False`` turns that off.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from blocks.core.errors import InvalidArgument
from blocks.inference.cpu_blas import BlasProducts, products
from blocks.inference.packing import BLAS_DTYPES, LayerWeights, pack_layer, weight_arena
from blocks.inference.row_decode import (
    RowHead,
    decode_lone,
    decode_token,
    head_arena_bytes,
    head_logits,
    is_lone_decode,
    product_for,
    row_head,
)
from blocks.inference.weight_arena import WeightArena

__all__ = ["AttentionBatch", "AttentionGroup", "LlamaForCausalLM", "ModelConfig", "attention"]


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
    # RoPE frequency i is theta^(-2i/head_dim) / (rope_freq_factors[i] * rope_linear_factor):
    # per-frequency divisors (Llama 3.x's long-context rule, stored as ``rope_freqs`` in GGUF;
    # empty = all 1) and linear position interpolation (``rope_scaling`` "linear").
    rope_freq_factors: tuple[float, ...] = ()
    rope_linear_factor: float = 1.0
    # Qwen2's query, key and value projections carry a bias (its output projection does not).
    attention_bias: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers"):
            if getattr(self, name) < 1:
                raise InvalidArgument(f"{name} must be >= 1")
        if self.num_heads < 1 or self.num_kv_heads < 1 or self.num_heads % self.num_kv_heads:
            raise InvalidArgument("num_heads must be a positive multiple of num_kv_heads")
        if self.head_dim < 2 or self.head_dim % 2:
            raise InvalidArgument("head_dim must be even")
        if self.rope_freq_factors and len(self.rope_freq_factors) != self.head_dim // 2:
            raise InvalidArgument("rope_freq_factors must hold head_dim / 2 values")
        if not all(f > 0 for f in self.rope_freq_factors) or not self.rope_linear_factor > 0:
            raise InvalidArgument("RoPE scaling factors must be positive")

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
class AttentionGroup:
    """Sequences whose attention is one SDPA call; see the module docstring.

    A *decode group* (``count == 0``) has one query per sequence, at flat rows ``rows``
    (None: every flat row, in order). A *chunk group* is one sequence whose ``count``
    queries are flat rows ``first ..``.
    """

    key_slots: torch.Tensor  # (batch, max_context) int64 cache slots, padded
    mask: torch.Tensor | None  # (batch, 1, queries, max_context) bool, True = may attend
    rows: torch.Tensor | None = None  # decode group: (batch,) int64 flat rows
    first: int = 0
    count: int = 0
    causal: bool = False  # chunk starting at position 0: SDPA's own causal mask, no ``mask``


@dataclass(frozen=True, slots=True)
class AttentionBatch:
    """Index tensors describing one step's attention; see the module docstring."""

    positions: torch.Tensor  # (tokens,) int64
    slot_mapping: torch.Tensor  # (tokens,) int64
    groups: tuple[AttentionGroup, ...]


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    wide = _stat_dtype(x.dtype)
    if x.dtype == wide:
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    return F.rms_norm(x.to(wide), (x.shape[-1],), weight.to(wide), eps).to(x.dtype)


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    """Norms and rotations run in float32 at least (float64 stays float64)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def rope_tables(config: ModelConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables ``(max_position, head_dim / 2)``: pair ``(i, i + half)`` turns."""
    half = config.head_dim // 2
    inv_freq = 1.0 / (
        config.rope_theta ** (torch.arange(half, dtype=torch.float64, device=device) / half)
    )
    if config.rope_freq_factors:
        inv_freq = inv_freq / torch.tensor(
            config.rope_freq_factors, dtype=torch.float64, device=device
        )
    inv_freq = inv_freq / config.rope_linear_factor
    angles = torch.outer(
        torch.arange(config.max_position, dtype=torch.float64, device=device), inv_freq
    )
    return angles.cos(), angles.sin()


def apply_rope_(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    """Rotate ``x`` ``(tokens, heads, head_dim)`` in place; ``cos``/``sin`` ``(tokens, 1, half)``.

    The two halves of each head are the pair's coordinates (the rotate-half layout).
    """
    if x.dtype != cos.dtype:
        wide = x.to(cos.dtype)
        apply_rope_(wide, cos, sin)
        x.copy_(wide)
        return
    half = x.shape[-1] // 2
    first, second = x[..., :half], x[..., half:]
    first_sin = first * sin
    first.mul_(cos).addcmul_(second, sin, value=-1.0)
    second.mul_(cos).add_(first_sin)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        width = config.hidden_size
        bias = config.attention_bias
        self.q_proj = nn.Linear(width, config.num_heads * config.head_dim, bias=bias)
        self.k_proj = nn.Linear(width, config.num_kv_heads * config.head_dim, bias=bias)
        self.v_proj = nn.Linear(width, config.num_kv_heads * config.head_dim, bias=bias)
        self.o_proj = nn.Linear(config.num_heads * config.head_dim, width, bias=False)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)


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


def _attend(q: torch.Tensor, cache: torch.Tensor, group: AttentionGroup) -> torch.Tensor:
    """One group's attention output ``(group tokens, heads * head_dim)``; ``q`` is all tokens'
    ``(tokens, heads, head_dim)``."""
    kv_heads = cache.shape[1] // 2
    context = cache[group.key_slots]  # (B, C, 2 * KV, D)
    keys = context[:, :, :kv_heads].transpose(1, 2)
    values = context[:, :, kv_heads:].transpose(1, 2)
    if group.count:
        queries = q[group.first : group.first + group.count].transpose(0, 1).unsqueeze(0)
    else:
        queries = (q if group.rows is None else q[group.rows]).unsqueeze(2)  # (B, H, 1, D)
    out = F.scaled_dot_product_attention(
        queries, keys, values, attn_mask=group.mask, is_causal=group.causal, enable_gqa=True
    )
    return out.transpose(1, 2).reshape(-1, q.shape[1] * q.shape[2])


def attention(q: torch.Tensor, cache: torch.Tensor, batch: AttentionBatch) -> torch.Tensor:
    """Attention output ``(tokens, heads * head_dim)`` over every group of the batch."""
    groups = batch.groups
    if len(groups) == 1 and groups[0].rows is None and not groups[0].first:
        return _attend(q, cache, groups[0])  # one group holding every token, in order
    out = q.new_empty(q.shape[0], q.shape[1] * q.shape[2])
    for group in groups:
        if group.count:
            out[group.first : group.first + group.count] = _attend(q, cache, group)
        else:
            assert group.rows is not None
            out.index_copy_(0, group.rows, _attend(q, cache, group))
    return out


# How many parameters were assigned to any module in this process (``module.name =
# Parameter(...)``, ``register_parameter``, ``load_state_dict(assign=True)``): torch calls
# ``_count_assignment`` for each. ``layer_weights`` looks for replaced parameters only
# when this count moved since it last looked.
_ASSIGNED = [0]


def _count_assignment(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
    _ASSIGNED[0] += 1


nn.modules.module.register_module_parameter_registration_hook(_count_assignment)


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
        # The head's transposed copy for several rows, its column blocks for a lone row
        # (each built when first needed, again when the weight changes).
        self._head_t: tuple[tuple[int, int], torch.Tensor] | None = None
        self._row_head: tuple[tuple[int, int], RowHead] | None = None
        # (the layers' parameters, their packing, ``_ASSIGNED`` when last checked)
        self._packed: tuple[list[nn.Parameter | None], list[LayerWeights], int] | None = None
        self._leaves: list[nn.Module] | None = None
        # Lone-row products (batch-1 decode) on the CPU through numpy's OpenBLAS, which
        # reads these matrices faster than torch's MKL (``cpu_blas``); False: always torch.
        self.blas_products = True

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
        """A zeroed cache ``(layers, slots, 2 * kv_heads, head_dim)`` on the model's device."""
        cfg = self.config
        shape = (cfg.num_layers, num_slots, 2 * cfg.num_kv_heads, cfg.head_dim)
        return torch.zeros(shape, dtype=self.dtype, device=self.device)

    def _layer_parameters(self) -> list[nn.Parameter | None]:
        if self._leaves is None:
            self._leaves = [m for m in self.model.layers.modules() if m._parameters]
        return [p for m in self._leaves for p in m._parameters.values()]

    def layer_weights(self) -> list[LayerWeights]:
        """The packed weights, packing (again) if any layer parameter was replaced.

        A parameter replaced by assignment is seen by identity; ``.to()`` and friends
        (``_apply``) drop the packing; in-place writes go through the views (see above).
        The identity walk (~270 parameters for SmolLM2, 0.2-0.3 ms a pass on a cold cache
        after a decode's weight stream) runs only when a parameter was assigned to some
        module since the last one (``_ASSIGNED``); a write straight into a module's
        ``_parameters`` dict is not an assignment and is not seen.
        """
        packed = self._packed
        if packed is not None:
            if packed[2] == _ASSIGNED[0]:
                return packed[1]
            now = self._layer_parameters()
            if len(now) == len(packed[0]) and all(map(operator.is_, now, packed[0])):
                self._packed = (packed[0], packed[1], _ASSIGNED[0])
                return packed[1]
        # Packing rebinds parameters, which must not become inference tensors.
        with torch.inference_mode(False), torch.no_grad():
            transposed = self.device.type == "cpu"
            decoder = self._decoder_layers()
            # On the CPU the packed matrices go to one huge-page arena, in the order a
            # decode reads them: one stream a token (``weight_arena``).
            arena = weight_arena(decoder) if transposed else None
            layers = [pack_layer(layer, transposed, arena) for layer in decoder]
        self._packed = (self._layer_parameters(), layers, _ASSIGNED[0])
        return layers

    def _apply(self, fn: Any, recurse: bool = True) -> LlamaForCausalLM:
        self._packed = None  # the parameters' data is about to be replaced
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        return self

    def _decoder_layers(self) -> list[DecoderLayer]:
        layers = [layer for layer in self.model.layers if isinstance(layer, DecoderLayer)]
        assert len(layers) == self.config.num_layers
        return layers

    def forward(
        self, token_ids: torch.Tensor, batch: AttentionBatch, kv_cache: torch.Tensor
    ) -> torch.Tensor:
        """Final hidden states ``(tokens, width)``; positions must be below ``max_position``."""
        cfg = self.config
        eps = cfg.rms_norm_eps
        heads, kv_heads, dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        layers = self.layer_weights()
        blas = self._blas_for(token_ids.shape[0])
        rows = [w.row for w in layers if w.row is not None]
        if blas is not None and len(rows) == len(layers) and is_lone_decode(batch):
            blas.match_threads()
            return decode_lone(self, rows, blas, token_ids, batch, kv_cache)
        cos_table, sin_table = self.rope()
        cos = cos_table[batch.positions].unsqueeze(1)
        sin = sin_table[batch.positions].unsqueeze(1)
        x = self.model.embed_tokens(token_ids)
        tokens = x.shape[0]
        for index, w in enumerate(layers):
            cache = kv_cache[index]
            normed = rms_norm(x, w.input_norm, eps)
            if w.qkv_bias is None:
                qkv = (normed @ w.qkv).view(tokens, -1, dim)
            else:
                qkv = torch.addmm(w.qkv_bias, normed, w.qkv).view(tokens, -1, dim)
            apply_rope_(qkv[:, : heads + kv_heads], cos, sin)
            cache.index_copy_(0, batch.slot_mapping, qkv[:, heads:])
            x = torch.addmm(x, attention(qkv[:, :heads], cache, batch), w.o)
            gate, up = (rms_norm(x, w.post_norm, eps) @ w.gate_up).chunk(2, dim=-1)
            x = torch.addmm(x, F.silu(gate).mul_(up), w.down)
        return rms_norm(x, self.model.norm.weight, eps)

    def decode_one(
        self,
        token: int,
        position: int,
        slot: int,
        key_slots: np.ndarray | slice,
        kv_cache: torch.Tensor,
        sample: bool = True,
    ) -> torch.Tensor | None:
        """``forward`` then ``logits`` for one token that sees its whole context
        (``key_slots``: the cache slots of positions ``0 .. position``, in order;
        ``row_decode.table_slots``), without an ``AttentionBatch`` or a torch operation on
        the way: logits ``(1, vocab)``, or ``(0, vocab)`` when not ``sample``; None where the
        numpy path does not apply (then ``forward`` is the way)."""
        blas = self._blas_for(1)
        if blas is None:
            return None
        layers = self.layer_weights()
        rows = [w.row for w in layers if w.row is not None]
        if len(rows) != len(layers):
            return None
        blas.match_threads()
        hidden = decode_token(self, rows, blas, token, position, slot, key_slots, kv_cache)
        if not sample:
            return torch.empty((0, self.config.vocab_size), dtype=torch.float32)
        return self._row_logits(hidden, blas)

    def _row_logits(self, hidden: np.ndarray, blas: BlasProducts) -> torch.Tensor:
        """Logits ``(1, vocab)`` of one final hidden state ``(width,)``: the head as column
        blocks in a huge-page arena (``row_decode``), built when first needed."""
        weight = self.lm_head.weight
        key = (weight.data_ptr(), weight._version)
        if self._row_head is None or self._row_head[0] != key:
            arena = WeightArena(head_arena_bytes(weight))
            self._row_head = (key, row_head(weight, arena))
        logits = torch.from_numpy(head_logits(self._row_head[1], hidden, product_for(blas)))
        return logits.unsqueeze(0)

    def _blas_for(self, rows: int) -> BlasProducts | None:
        """numpy's BLAS when ``rows`` is a lone row it should multiply (see ``cpu_blas``)."""
        if rows != 1 or not self.blas_products or self.device.type != "cpu":
            return None
        if self.dtype not in BLAS_DTYPES:
            return None
        return products()

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits ``(rows, vocab)``, float32 or wider, for the given final hidden states."""
        weight = self.lm_head.weight
        if hidden.device.type == "cpu":
            blas = self._blas_for(hidden.shape[0])
            key = (weight.data_ptr(), weight._version)
            if blas is not None:
                blas.match_threads()
                out = self._row_logits(hidden.detach().reshape(-1).contiguous().numpy(), blas)
            else:
                # CPU BLAS streams a (hidden, vocab) matrix ~1.7x faster than the (vocab,
                # hidden) one F.linear reads (measured at batch 1 to 32); keep a transposed copy.
                if self._head_t is None or self._head_t[0] != key:
                    self._head_t = (key, weight.detach().t().contiguous())
                out = hidden @ self._head_t[1]
        else:
            out = self.lm_head(hidden)
        out = out.to(_stat_dtype(out.dtype))
        return out
