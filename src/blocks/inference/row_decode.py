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
one model, as they may through ``forward``. The buffers a call needs, and every view of
them the layers use, are made once at its start; every numpy call then writes into one
(``out=``), so a layer is ~30 calls of arithmetic and nothing else. The engine reaches this
path without building torch index tensors (``table_slots``, ``LlamaForCausalLM.decode_one``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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
    "decode_token",
    "head_arena_bytes",
    "head_logits",
    "is_lone_decode",
    "product_for",
    "row_head",
    "table_slots",
]

# Columns of one head block: the einsum loop's output block (12 kB in float32) stays in the
# first-level cache while the block's rows stream past it. 1024-3072 all read the head at
# 27-28 GB/s; the whole (576, 49152) head in one einsum 11-14, OpenBLAS 23-25 (measured).
HEAD_BLOCK_COLUMNS = 3072

# numpy's einsum loop itself, without ``np.einsum``'s Python wrapper (which only looks for
# ``optimize`` before calling it): ~150 calls a token, each after a weight stream.
try:
    from numpy._core.multiarray import c_einsum as _c_einsum
except ImportError:  # numpy < 2
    _c_einsum = np.einsum

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
    return _c_einsum("i,ij->j", x, w, out=out)


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
    halves = _halves(pairs)
    _rotate(halves, halves[:, ::-1], _halves(cos2), _halves(sin2), _halves(scratch))


def _halves(values: np.ndarray) -> np.ndarray:
    """``values`` ``(..., head_dim)`` as ``(..., 2, head_dim / 2)``: a view."""
    return values.reshape(*values.shape[:-1], 2, -1)


def _rotate(
    halves: np.ndarray,
    swapped: np.ndarray,
    cos_halves: np.ndarray,
    sin_halves: np.ndarray,
    scratch: np.ndarray,
) -> None:
    """``_rope``'s three operations on views made once per token: ``halves`` is the pairs
    as ``_halves``, ``swapped`` its ``[:, ::-1]`` (second, first), ``scratch`` its shape."""
    np.multiply(swapped, sin_halves, out=scratch)
    np.multiply(halves, cos_halves, out=halves)
    np.add(halves, scratch, out=halves)


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
    keys, values = _context(cache[key_slots], kv_heads)
    grouped = q.reshape(kv_heads, heads // kv_heads, dim)
    scores = np.empty((*grouped.shape[:2], keys.shape[-1]), dtype=q.dtype)
    out = np.empty(heads * dim, dtype=q.dtype)
    peak = np.empty((*grouped.shape[:2], 1), dtype=q.dtype)
    _attend_into(
        grouped, keys, values, q.dtype.type(scale), scores, peak, out.reshape(grouped.shape)
    )
    return out


def _context(context: np.ndarray, kv_heads: int) -> tuple[np.ndarray, np.ndarray]:
    """Keys ``(..., kv, D, C)`` and values ``(..., kv, C, D)`` of a context ``(..., C, 2 *
    kv, D)`` of the cache (a gathered copy or a view): views."""
    lead = context.ndim - 3  # a layer axis in front, or none
    axes = tuple(range(lead))
    keys = context[..., :kv_heads, :].transpose(*axes, lead + 1, lead + 2, lead)
    values = context[..., kv_heads:, :].transpose(*axes, lead + 1, lead, lead + 2)
    return keys, values


def _attend_into(
    grouped: np.ndarray,
    keys: np.ndarray,
    values: np.ndarray,
    scale: np.generic,
    scores: np.ndarray,
    peak: np.ndarray,
    out: np.ndarray,
) -> None:
    """Attention of ``grouped`` queries ``(kv, group, D)`` over ``keys`` ``(kv, D, C)`` and
    ``values`` ``(kv, C, D)`` into ``out`` ``(kv, group, D)``; ``scores`` ``(kv, group, C)``
    and ``peak`` ``(kv, group, 1)`` are scratch. A softmax in five operations, the same
    ones (and so the same rounding) as ``max``, subtract, ``exp``, ``sum``, divide."""
    np.matmul(grouped, keys, out=scores)
    np.multiply(scores, scale, out=scores)
    np.maximum.reduce(scores, axis=-1, keepdims=True, out=peak)
    np.subtract(scores, peak, out=scores)
    np.exp(scores, out=scores)
    np.add.reduce(scores, axis=-1, keepdims=True, out=peak)
    np.divide(scores, peak, out=scores)
    np.matmul(scores, values, out=out)


def _rms_norm(x: np.ndarray, weight: np.ndarray, eps: float, out: np.ndarray) -> None:
    """``x / sqrt(mean(x^2) + eps) * weight`` into ``out`` (``F.rms_norm``'s arithmetic)."""
    scale = 1.0 / math.sqrt(float(np.dot(x, x)) / x.shape[0] + eps)
    np.multiply(x, x.dtype.type(scale), out=out)
    np.multiply(out, weight, out=out)


def decode_row(
    model: RowModel,
    product: Product,
    token_id: int,
    position: int,
    slot: int,
    key_slots: np.ndarray | slice,
    kv_cache: np.ndarray,
) -> np.ndarray:
    """Final hidden state ``(width,)`` of ``token_id`` at ``position``; its key and value
    are written to ``slot`` of every layer of ``kv_cache`` ``(layers, slots, 2 * kv, D)``
    first, and it attends to ``key_slots`` (its context, itself included, in order).
    ``product(x, w, out)`` computes ``x @ w`` into ``out``.

    Every buffer and every view of one (the query heads, the rotated pairs, the new key and
    value, the context of every layer when it lies in place) is made once, before the layer
    loop, so each layer is the arithmetic alone: each numpy call after a weight stream
    costs more than it would hot (see the module docstring)."""
    heads, kv_heads, dim = model.num_heads, model.num_kv_heads, model.head_dim
    group = heads // kv_heads
    rotated = (heads + kv_heads) * dim
    cos2, sin2 = _rotation(model.cos[position], model.sin[position])
    cos_halves, sin_halves = _halves(cos2), _halves(sin2)
    first = model.layers[0]
    x: np.ndarray = model.embed[token_id].copy()
    dtype, eps = x.dtype, model.eps
    scale = dtype.type(1.0 / math.sqrt(dim))
    normed: np.ndarray = np.empty_like(x)
    added = np.empty_like(x)  # a product's output before it joins the residual
    qkv = np.empty(first.qkv.shape[1], dtype=dtype)
    halves = _halves(qkv[:rotated].reshape(heads + kv_heads, dim))
    swapped = halves[:, ::-1]
    scratch = np.empty(halves.shape, dtype=cos2.dtype)
    grouped = qkv[: heads * dim].reshape(kv_heads, group, dim)
    new_kv = qkv[heads * dim :].reshape(2 * kv_heads, dim)
    all_keys: np.ndarray | None = None  # every layer's keys and values when in place
    all_values: np.ndarray | None = None
    if isinstance(key_slots, slice):  # views of the cache (written below)
        all_keys, all_values = _context(kv_cache[:, key_slots], kv_heads)
        count = all_keys.shape[-1]
    else:
        count = key_slots.shape[0]
    scores = np.empty((kv_heads, group, count), dtype=dtype)
    peak = np.empty((kv_heads, group, 1), dtype=dtype)
    attended = np.empty(heads * dim, dtype=dtype)
    attended_groups = attended.reshape(kv_heads, group, dim)
    gate_up = np.empty(first.gate_up.shape[1], dtype=dtype)
    gate, up = np.split(gate_up, 2)
    silu_scratch = np.empty(first.down.shape[0], dtype=dtype)
    for index, layer in enumerate(model.layers):
        _rms_norm(x, layer.input_norm, eps, normed)
        product(normed, layer.qkv, qkv)
        if layer.qkv_bias is not None:
            np.add(qkv, layer.qkv_bias, out=qkv)
        _rotate(halves, swapped, cos_halves, sin_halves, scratch)
        kv_cache[index, slot] = new_kv
        if all_keys is not None and all_values is not None:
            keys, values = all_keys[index], all_values[index]
        else:
            keys, values = _context(kv_cache[index][key_slots], kv_heads)
        _attend_into(grouped, keys, values, scale, scores, peak, attended_groups)
        product(attended, layer.o, added)
        np.add(x, added, out=x)
        _rms_norm(x, layer.post_norm, eps, normed)
        product(normed, layer.gate_up, gate_up)
        # SiLU(gate) * up, as F.silu then mul_: gate / (1 + exp(-gate)) * up, in ``gate``
        np.negative(gate, out=silu_scratch)
        np.exp(silu_scratch, out=silu_scratch)
        np.add(silu_scratch, 1, out=silu_scratch)
        np.divide(gate, silu_scratch, out=gate)
        np.multiply(gate, up, out=gate)
        product(gate, layer.down, added)
        np.add(x, added, out=x)
    _rms_norm(x, model.final_norm, eps, normed)
    return normed


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
    key_slots = _context_slots(batch.groups[0].key_slots[0].numpy())
    position, slot = int(batch.positions[0]), int(batch.slot_mapping[0])
    hidden = decode_token(model, rows, blas, int(token_ids[0]), position, slot, key_slots, kv_cache)
    return torch.from_numpy(hidden).unsqueeze(0)


def decode_token(
    model: LlamaForCausalLM,
    rows: list[RowLayer],
    blas: BlasProducts,
    token: int,
    position: int,
    slot: int,
    key_slots: np.ndarray | slice,
    kv_cache: torch.Tensor,
) -> np.ndarray:
    """``decode_row`` of ``model`` (its current tensors, as numpy views; ``rows`` its layers'
    packed views) for ``token`` at ``position``, written to ``slot``, seeing ``key_slots``."""
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
    product = product_for(blas)
    return decode_row(row_model, product, token, position, slot, key_slots, kv_cache.numpy())


def table_slots(table: Sequence[int], count: int, block_size: int) -> np.ndarray | slice:
    """The cache slots of positions ``0 .. count - 1`` of a sequence with block ``table``,
    in order: a slice when those blocks are consecutive (``_context_slots``), else an array."""
    blocks = -(-count // block_size)
    first = table[0]
    if all(table[i] == first + i for i in range(1, blocks)):
        return slice(first * block_size, first * block_size + count)
    slots = np.asarray(table[:blocks], dtype=np.int64)[:, None] * block_size
    return (slots + np.arange(block_size)).reshape(-1)[:count]
