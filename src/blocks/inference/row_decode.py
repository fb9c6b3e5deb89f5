"""One decode token of one sequence, on the CPU, in numpy: batch-1 decode's fast path.

Theory of operation: batch-1 decode streams every weight matrix once per token, so the
products set its pace. With one thread every product, the head's included, is numpy's own
``einsum`` loop (``x[i] * w[i, :]`` summed row after row, a plain forward read of the
matrix), which keeps pace with memory: 28-29 GB/s on the model's own matrices, as fast as
a numpy sum reads, where OpenBLAS's vector-matrix kernel reads the same matrices at 19-24
(cold, huge pages, one thread; see ``_product``). With more threads the products are
OpenBLAS's (``cpu_blas``), which can split a product over them and ``einsum`` cannot. The
head is read as column blocks of its own (``RowHead``), as the loop wants its output to
stay in the core's first-level cache. What is left is the small work between two products: norms, RoPE, the
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
one model, as they may through ``forward``. The buffers a call needs are allocated once at
its start and every product writes into one (``out=``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from blocks.inference.cpu_blas import BlasProducts
from blocks.inference.weight_arena import WeightArena

if TYPE_CHECKING:
    from blocks.inference.model import AttentionBatch, LlamaForCausalLM

__all__ = [
    "HEAD_BLOCK_COLUMNS",
    "RowHead",
    "RowLayer",
    "RowModel",
    "decode_lone",
    "decode_row",
    "head_arena_bytes",
    "head_logits",
    "is_lone_decode",
    "product_for",
    "row_head",
]

# Columns of one head block: the einsum loop's output block (12 kB in float32) stays in the
# first-level cache while the block's rows stream past it. 1024-3072 all read the head at
# 27-28 GB/s; the whole (576, 49152) head in one einsum 11-14, OpenBLAS 23-25 (measured).
HEAD_BLOCK_COLUMNS = 3072

# ``product(x, w, out)``: ``x @ w`` for a vector ``x`` into ``out``.
Product = Callable[[np.ndarray, np.ndarray, np.ndarray], object]


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


@dataclass(frozen=True, slots=True)
class RowHead:
    """The output head ``(width, vocab)`` as column blocks, each a contiguous
    ``(width, columns)`` array, in vocabulary order (the last may be narrower)."""

    blocks: tuple[np.ndarray, ...]
    vocab_size: int


def row_head(
    weight: torch.Tensor, arena: WeightArena, columns: int = HEAD_BLOCK_COLUMNS
) -> RowHead:
    """``weight`` ``(vocab, width)`` (the head's, or the tied embedding) copied into
    ``arena`` as ``RowHead`` blocks; ``arena`` needs ``head_arena_bytes`` of room."""
    vocab, width = weight.shape
    blocks = []
    for start in range(0, vocab, columns):
        part = weight[start : start + columns].detach()
        block = arena.take((width, part.shape[0]), weight.dtype)
        block.copy_(part.t())
        blocks.append(block.numpy())
    return RowHead(tuple(blocks), vocab)


def head_arena_bytes(weight: torch.Tensor, columns: int = HEAD_BLOCK_COLUMNS) -> int:
    """Room ``row_head`` takes for ``weight`` ``(vocab, width)``."""
    vocab, width = weight.shape
    shapes = [(width, min(columns, vocab - start)) for start in range(0, vocab, columns)]
    return WeightArena.bytes_for(shapes, weight.dtype)


def head_logits(head: RowHead, hidden: np.ndarray, product: Product) -> np.ndarray:
    """Logits ``(vocab,)`` of one final hidden state ``(width,)``."""
    out = np.empty(head.vocab_size, dtype=hidden.dtype)
    start = 0
    for block in head.blocks:
        end = start + block.shape[1]
        product(hidden, block, out[start:end])
        start = end
    return out


def _einsum_product(x: np.ndarray, w: np.ndarray, out: np.ndarray) -> object:
    """``x @ w`` into ``out`` by numpy's own loop: for each row ``i`` of ``w``, ``out +=
    x[i] * w[i]``, a forward read of ``w`` (one thread)."""
    return np.einsum("i,ij->j", x, w, out=out)


def _blas_product(x: np.ndarray, w: np.ndarray, out: np.ndarray) -> object:
    """``x @ w`` into ``out`` by OpenBLAS, on its (torch's) thread count."""
    return np.matmul(x, w, out=out)


def product_for(blas: BlasProducts) -> Product:
    """The product a lone row uses: ``einsum`` on one thread, OpenBLAS on more (see the
    module docstring)."""
    return _einsum_product if blas.threads == 1 else _blas_product


def _rope(pairs: np.ndarray, cos2: np.ndarray, sin2: np.ndarray, scratch: np.ndarray) -> None:
    """Rotate ``pairs`` ``(heads, head_dim)`` in place, as ``model.apply_rope_`` does, with
    ``cos2 = [cos, cos]`` and ``sin2 = [-sin, sin]`` (``_rotation``): ``first * cos - second
    * sin`` and ``second * cos + first * sin`` in three operations instead of six, each
    product rounded once and then added, so bit for bit the six-operation result."""
    heads = pairs.shape[0]
    swapped = pairs.reshape(heads, 2, -1)[:, ::-1]  # (second, first) of every head, a view
    np.multiply(swapped, sin2.reshape(2, -1), out=scratch.reshape(heads, 2, -1))
    np.multiply(pairs, cos2, out=pairs)
    np.add(pairs, scratch, out=pairs)


def _rotation(cos: np.ndarray, sin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``_rope``'s ``(cos2, sin2)`` for one position's ``cos``/``sin`` ``(head_dim / 2,)``."""
    return np.concatenate((cos, cos)), np.concatenate((-sin, sin))


def _context_slots(key_slots: np.ndarray) -> np.ndarray | slice:
    """``key_slots`` as a slice when they are one run of consecutive slots (a sequence whose
    blocks lie in order): attention then reads the cache in place instead of gathering a
    copy of every layer's context."""
    first, count = int(key_slots[0]), key_slots.shape[0]
    if int(key_slots[-1]) - first == count - 1 and bool((np.diff(key_slots) == 1).all()):
        return slice(first, first + count)
    return key_slots


def _attend(
    q: np.ndarray, cache: np.ndarray, key_slots: np.ndarray | slice, kv_heads: int, scale: float
) -> np.ndarray:
    """One query's attention output ``(heads * head_dim,)`` over ``key_slots`` of ``cache``.

    ``q`` is ``(heads, head_dim)``; query head ``h`` reads kv head ``h // (heads / kv_heads)``
    (SDPA's ``enable_gqa``)."""
    heads, dim = q.shape
    context = cache[key_slots]  # (C, 2 * kv_heads, head_dim): a gathered copy, or a view
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
    product: Product,
    token_id: int,
    position: int,
    slot: int,
    key_slots: np.ndarray | slice,
    kv_cache: np.ndarray,
) -> torch.Tensor:
    """Final hidden state ``(1, width)`` of ``token_id`` at ``position``; its key and value
    are written to ``slot`` of every layer of ``kv_cache`` ``(layers, slots, 2 * kv, D)``
    first, and it attends to ``key_slots`` (its context, itself included, in order).
    ``product(x, w, out)`` computes ``x @ w`` into ``out``."""
    heads, kv_heads, dim = model.num_heads, model.num_kv_heads, model.head_dim
    rotated = (heads + kv_heads) * dim
    cos2, sin2 = _rotation(model.cos[position], model.sin[position])
    scale = 1.0 / math.sqrt(dim)
    first = model.layers[0]
    x = model.embed[token_id].copy()
    normed = np.empty_like(x)
    added = np.empty_like(x)  # a product's output before it joins the residual
    qkv = np.empty(first.qkv.shape[1], dtype=x.dtype)
    gate_up = np.empty(first.gate_up.shape[1], dtype=x.dtype)
    gate, up = np.split(gate_up, 2)
    scratch = np.empty((heads + kv_heads, dim), dtype=cos2.dtype)
    silu_scratch = np.empty(first.down.shape[0], dtype=x.dtype)
    for index, layer in enumerate(model.layers):
        product(_rms_norm(x, layer.input_norm, model.eps, normed), layer.qkv, qkv)
        if layer.qkv_bias is not None:
            qkv += layer.qkv_bias
        _rope(qkv[:rotated].reshape(heads + kv_heads, dim), cos2, sin2, scratch)
        cache = kv_cache[index]
        cache[slot] = qkv[heads * dim :].reshape(2 * kv_heads, dim)
        attended = _attend(
            qkv[: heads * dim].reshape(heads, dim), cache, key_slots, kv_heads, scale
        )
        product(attended, layer.o, added)
        x += added
        product(_rms_norm(x, layer.post_norm, model.eps, normed), layer.gate_up, gate_up)
        # SiLU(gate) * up, as F.silu then mul_: gate / (1 + exp(-gate)) * up, in ``gate``
        np.negative(gate, out=silu_scratch)
        np.exp(silu_scratch, out=silu_scratch)
        silu_scratch += 1
        np.divide(gate, silu_scratch, out=gate)
        gate *= up
        product(gate, layer.down, added)
        x += added
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
    key_slots = _context_slots(batch.groups[0].key_slots[0].numpy())
    position, slot = int(batch.positions[0]), int(batch.slot_mapping[0])
    token = int(token_ids[0])
    product = product_for(blas)
    return decode_row(row_model, product, token, position, slot, key_slots, kv_cache.numpy())
