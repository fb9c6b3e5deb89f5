"""One decode token of one sequence, on the CPU, in numpy: batch-1 decode's fast path.

Theory of operation: batch-1 decode streams every weight matrix once per token, so the
products set its pace: numpy's OpenBLAS (``cpu_blas``) for the wide ones and numpy's own
``einsum`` loop for the two whose output is only the model width, whichever read faster
(measured, see ``_narrow_product``). What is left is the small work between two products: norms, RoPE, the
cache write, attention over the context, SiLU. Each product's multi-megabyte stream
evicts from the core's caches the code and data that work needs, so the first operations
after it pay to fetch them again; torch's dispatch of one small operation touches far more
of both than a numpy ufunc does (measured on SmolLM2: ~15 ms of the ~45 ms token went to
the small operations with torch, see docs/inference.md). This module runs the same
arithmetic as ``LlamaForCausalLM.forward`` for a lone decode token as numpy calls on views
of the model's own tensors (weights, RoPE tables, KV cache: nothing is copied), with
attention written out for one query over its context (grouped-query heads, no mask: a lone
decode token sees its whole context).

Everything is per call: no buffer is shared between calls, so two threads may decode with
one model, as they may through ``forward``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from blocks.inference.cpu_blas import BlasProducts

if TYPE_CHECKING:
    from blocks.inference.model import AttentionBatch, LlamaForCausalLM

__all__ = ["RowLayer", "RowModel", "decode_lone", "decode_row", "is_lone_decode"]


@dataclass(frozen=True, slots=True)
class RowLayer:
    """One layer's weights as numpy views: packed ``(in, out)`` matrices and norm weights."""

    qkv: np.ndarray
    qkv_bias: np.ndarray | None
    o: np.ndarray
    gate_up: np.ndarray
    down: np.ndarray
    input_norm: np.ndarray
    post_norm: np.ndarray


@dataclass(frozen=True, slots=True)
class RowModel:
    """What ``decode_row`` needs of a model, as numpy views of its tensors."""

    layers: tuple[RowLayer, ...]
    embed: np.ndarray  # (vocab, width)
    final_norm: np.ndarray
    cos: np.ndarray  # (max_position, head_dim / 2), the norm/rotation dtype
    sin: np.ndarray
    num_heads: int
    num_kv_heads: int
    head_dim: int
    eps: float


def _rms_norm(x: np.ndarray, weight: np.ndarray, eps: float, out: np.ndarray) -> np.ndarray:
    """``x / sqrt(mean(x^2) + eps) * weight`` into ``out`` (``F.rms_norm``'s arithmetic)."""
    scale = 1.0 / math.sqrt(float(np.dot(x, x)) / x.shape[0] + eps)
    np.multiply(x, x.dtype.type(scale), out=out)
    np.multiply(out, weight, out=out)
    return out


def _narrow_product(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w`` by numpy's own loop, for the matrices whose output is only ``width`` wide
    (the output and down projections): OpenBLAS reads those at 12-14 GB/s, this loop at
    16-18 (and its wider products and the head at 20-22, where this loop falls behind)."""
    out: np.ndarray = np.einsum("i,ij->j", x, w)
    return out


def _rope(pairs: np.ndarray, cos: np.ndarray, sin: np.ndarray, scratch: np.ndarray) -> None:
    """Rotate ``pairs`` ``(heads, head_dim)`` in place, as ``model.apply_rope_`` does."""
    half = pairs.shape[1] // 2
    first, second = pairs[:, :half], pairs[:, half:]
    first_sin, second_sin = scratch[0], scratch[1]
    np.multiply(first, sin, out=first_sin)
    np.multiply(second, sin, out=second_sin)
    np.multiply(first, cos, out=first)
    np.subtract(first, second_sin, out=first)
    np.multiply(second, cos, out=second)
    np.add(second, first_sin, out=second)


def _attend(
    q: np.ndarray, cache: np.ndarray, key_slots: np.ndarray, kv_heads: int, scale: float
) -> np.ndarray:
    """One query's attention output ``(heads * head_dim,)`` over ``key_slots`` of ``cache``.

    ``q`` is ``(heads, head_dim)``; query head ``h`` reads kv head ``h // (heads / kv_heads)``
    (SDPA's ``enable_gqa``)."""
    heads, dim = q.shape
    context = cache[key_slots]  # (C, 2 * kv_heads, head_dim), a gathered copy
    keys = context[:, :kv_heads].transpose(1, 2, 0)  # (kv, D, C)
    values = context[:, kv_heads:].transpose(1, 0, 2)  # (kv, C, D)
    grouped = q.reshape(kv_heads, heads // kv_heads, dim)
    scores = np.matmul(grouped, keys)  # (kv, group, C)
    scores *= scores.dtype.type(scale)
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    out: np.ndarray = np.matmul(scores, values).reshape(heads * dim)
    return out


def decode_row(
    model: RowModel,
    blas: BlasProducts,
    token_id: int,
    position: int,
    slot: int,
    key_slots: np.ndarray,
    kv_cache: np.ndarray,
) -> torch.Tensor:
    """Final hidden state ``(1, width)`` of ``token_id`` at ``position``; its key and value
    are written to ``slot`` of every layer of ``kv_cache`` ``(layers, slots, 2 * kv, D)``
    first, and it attends to ``key_slots`` (its context, itself included, in order)."""
    heads, kv_heads, dim = model.num_heads, model.num_kv_heads, model.head_dim
    rotated = (heads + kv_heads) * dim
    cos, sin = model.cos[position], model.sin[position]
    scale = 1.0 / math.sqrt(dim)
    x = model.embed[token_id].copy()
    normed = np.empty_like(x)
    scratch = np.empty((2, heads + kv_heads, dim // 2), dtype=cos.dtype)
    silu_scratch = np.empty(model.layers[0].down.shape[0], dtype=x.dtype)
    matmul = blas.matmul_array
    for index, layer in enumerate(model.layers):
        qkv = matmul(_rms_norm(x, layer.input_norm, model.eps, normed), layer.qkv)
        if layer.qkv_bias is not None:
            qkv += layer.qkv_bias
        _rope(qkv[:rotated].reshape(heads + kv_heads, dim), cos, sin, scratch)
        cache = kv_cache[index]
        cache[slot] = qkv[heads * dim :].reshape(2 * kv_heads, dim)
        attended = _attend(
            qkv[: heads * dim].reshape(heads, dim), cache, key_slots, kv_heads, scale
        )
        x += _narrow_product(attended, layer.o)
        gate_up = matmul(_rms_norm(x, layer.post_norm, model.eps, normed), layer.gate_up)
        gate, up = np.split(gate_up, 2)
        # SiLU(gate) * up, as F.silu then mul_: gate / (1 + exp(-gate)) * up, in ``gate``
        np.negative(gate, out=silu_scratch)
        np.exp(silu_scratch, out=silu_scratch)
        silu_scratch += 1
        np.divide(gate, silu_scratch, out=gate)
        gate *= up
        x += _narrow_product(gate, layer.down)
    hidden = _rms_norm(x, model.final_norm, model.eps, normed)
    return torch.from_numpy(hidden).unsqueeze(0)


def is_lone_decode(batch: AttentionBatch) -> bool:
    """One decoding token that sees its whole context: one group, no rows, no mask."""
    if len(batch.groups) != 1:
        return False
    group = batch.groups[0]
    return not group.count and group.rows is None and group.mask is None


def decode_lone(
    model: LlamaForCausalLM,
    rows: list[RowLayer],
    blas: BlasProducts,
    token_ids: torch.Tensor,
    batch: AttentionBatch,
    kv_cache: torch.Tensor,
) -> torch.Tensor:
    """``model.forward`` for a lone decode token (``is_lone_decode``), through ``decode_row``
    on numpy views of the model's current tensors; ``rows`` are its layers' packed views."""
    cfg = model.config
    cos, sin = model.rope()
    row_model = RowModel(
        layers=tuple(rows),
        embed=model.model.embed_tokens.weight.detach().numpy(),
        final_norm=model.model.norm.weight.detach().numpy(),
        cos=cos.numpy(),
        sin=sin.numpy(),
        num_heads=cfg.num_heads,
        num_kv_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        eps=cfg.rms_norm_eps,
    )
    key_slots = batch.groups[0].key_slots[0].numpy()
    position, slot = int(batch.positions[0]), int(batch.slot_mapping[0])
    token = int(token_ids[0])
    return decode_row(row_model, blas, token, position, slot, key_slots, kv_cache.numpy())
