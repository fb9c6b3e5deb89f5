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
(``out=``), so a layer is 28 calls of arithmetic and nothing else. The engine reaches this
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

# The ufuncs of the layer loop, bound once: a module global is one dictionary look-up, where
# ``np.add`` is two, and after a weight stream each look-up's memory is cold.
add, multiply, subtract, divide = np.add, np.multiply, np.subtract, np.divide
exp, negative, matmul = np.exp, np.negative, np.matmul
add_reduce, maximum_reduce = np.add.reduce, np.maximum.reduce

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


def _rope(pairs: np.ndarray, cos_t: np.ndarray, sin_t: np.ndarray, scratch: np.ndarray) -> None:
    """Rotate ``pairs`` ``(heads, head_dim)`` in place, as ``model.apply_rope_`` does, by
    tables from ``_rotation_tables`` (one row per head)."""
    halves = _halves(pairs)
    _rotate(halves, halves[:, ::-1], cos_t, sin_t, _halves(scratch))


def _halves(values: np.ndarray) -> np.ndarray:
    """``values`` ``(..., head_dim)`` as ``(..., 2, head_dim / 2)``: a view."""
    return values.reshape(*values.shape[:-1], 2, -1)


def _rotate(
    halves: np.ndarray,
    swapped: np.ndarray,
    cos_t: np.ndarray,
    sin_t: np.ndarray,
    scratch: np.ndarray,
) -> None:
    """``first * cos - second * sin`` and ``second * cos + first * sin`` in three operations
    instead of six, each product rounded once and then added, so bit for bit the
    six-operation result: ``halves`` is the pairs as ``_halves``, ``swapped`` its
    ``[:, ::-1]`` (second, first), ``cos_t``/``sin_t`` ``_rotation_tables``, ``scratch``
    the shape of ``halves``."""
    multiply(swapped, sin_t, scratch)
    multiply(halves, cos_t, halves)
    add(halves, scratch, halves)


def _rotation_tables(
    cos: np.ndarray, sin: np.ndarray, heads: int, kv_heads: int, query_scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """``_rotate``'s tables ``(heads + kv_heads, 2, head_dim / 2)`` for one position's
    ``cos``/``sin`` ``(head_dim / 2,)``: ``[cos, cos]`` and ``[-sin, sin]`` per head, the
    query heads' rows times ``query_scale``. With attention's ``1 / sqrt(head_dim)`` there,
    rotated queries come out scaled and scores need no multiply of their own; when the scale
    is a power of two (``head_dim`` a power of 4, SmolLM2's 64) every product is scaled
    exactly, so scores are bit for bit those of scaling them after."""
    cos_t = np.empty((heads + kv_heads, 2, cos.shape[0]), dtype=cos.dtype)
    sin_t = np.empty_like(cos_t)
    cos_t[...] = cos
    sin_t[:, 0] = -sin
    sin_t[:, 1] = sin
    multiply(cos_t[:heads], query_scale, cos_t[:heads])
    multiply(sin_t[:heads], query_scale, sin_t[:heads])
    return cos_t, sin_t


def _context_slots(key_slots: np.ndarray) -> np.ndarray | slice:
    """``key_slots`` as a slice when they are one run of consecutive slots (a sequence whose
    blocks lie in order): attention then reads the cache in place instead of gathering a
    copy of every layer's context."""
    first, count = int(key_slots[0]), key_slots.shape[0]
    if int(key_slots[-1]) - first == count - 1 and bool((np.diff(key_slots) == 1).all()):
        return slice(first, first + count)
    return key_slots


def _context(context: np.ndarray, kv_heads: int) -> tuple[np.ndarray, np.ndarray]:
    """Keys and values, each ``(..., kv, 1, C, D)`` (the 1 broadcasts over a kv head's
    group of query heads), of a context ``(..., C, 2 * kv, D)`` of the cache (a gathered copy
    or a view): views, as ``_scores`` and ``_attend`` take them."""
    lead = context.ndim - 3  # a layer axis in front, or none
    order = (*range(lead), lead + 1, lead, lead + 2)
    keys = context[..., :kv_heads, :].transpose(order)[..., None, :, :]
    values = context[..., kv_heads:, :].transpose(order)[..., None, :, :]
    return keys, values


def _scores_by_matmul(keys: np.ndarray, queries: np.ndarray, out: np.ndarray) -> object:
    """``_scores`` where numpy has no ``matvec`` (before 2.2)."""
    return matmul(queries, keys[:, 0].swapaxes(-1, -2), out)


def _attend_by_matmul(probs: np.ndarray, values: np.ndarray, out: np.ndarray) -> object:
    """``_attend`` where numpy has no ``vecmat`` (before 2.2)."""
    return matmul(probs, values[:, 0], out)


# Attention's two products for one query a head: ``_scores(keys, queries, out)``, ``(kv, 1,
# C, D)`` by ``(kv, group, D)`` into ``(kv, group, C)``, and ``_attend(probs, values, out)``,
# ``(kv, group, C)`` by ``(kv, 1, C, D)`` into ``(kv, group, D)``. numpy's ``matvec`` and
# ``vecmat`` gufuncs take ~20 and ~18 us just after a weight stream where ``matmul``'s three
# small OpenBLAS products a call took ~27 and ~28; a token spends ~0.2-0.5 ms less outside
# the weight products (docs/inference.md). They round differently from OpenBLAS (SmolLM2's
# final hidden state moved by up to 7e-5; the same greedy tokens).
_scores = getattr(np, "matvec", _scores_by_matmul)
_attend = getattr(np, "vecmat", _attend_by_matmul)


def _rms_norm(x: np.ndarray, weight: np.ndarray, eps: float, out: np.ndarray) -> None:
    """``x / sqrt(mean(x^2) + eps) * weight`` into ``out`` (``F.rms_norm``'s arithmetic;
    the layer loop spells it out). The sum of squares is the ``einsum`` loop's, whose
    set-up the next product then finds in cache, where BLAS's ``dot`` is code of its own to
    fetch after every weight stream."""
    scale = 1.0 / math.sqrt(float(_c_einsum("i,i->", x, x)) / x.shape[0] + eps)
    multiply(x, scale, out)
    multiply(out, weight, out)


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
    value, each layer's cache slot and, when it lies in place, context) is made once, before
    the layer loop, so each layer is the arithmetic alone: each numpy call after a weight
    stream costs more than it would hot (see the module docstring)."""
    heads, kv_heads, dim = model.num_heads, model.num_kv_heads, model.head_dim
    x: np.ndarray = model.embed[token_id].copy()
    cos_t, sin_t = _rotation_tables(
        model.cos[position], model.sin[position], heads, kv_heads, 1.0 / math.sqrt(dim)
    )
    layers: list[tuple[RowLayer, np.ndarray, np.ndarray | None, np.ndarray | None]]
    if isinstance(key_slots, slice):  # views of the cache (written in the loop)
        all_keys, all_values = _context(kv_cache[:, key_slots], kv_heads)
        count = all_keys.shape[-2]
        layers = list(zip(model.layers, kv_cache[:, slot], all_keys, all_values, strict=True))
    else:
        count = key_slots.shape[0]
        layers = [(layer, kv_cache[i, slot], None, None) for i, layer in enumerate(model.layers)]
    _run_layers(model, product, x, layers, cos_t, sin_t, count, (kv_cache, key_slots))
    normed = np.empty_like(x)
    _rms_norm(x, model.final_norm, model.eps, normed)
    return normed


def _run_layers(
    model: RowModel,
    product: Product,
    x: np.ndarray,
    layers: Sequence[tuple[RowLayer, np.ndarray, np.ndarray | None, np.ndarray | None]],
    cos_t: np.ndarray,
    sin_t: np.ndarray,
    count: int,
    cache: tuple[np.ndarray, np.ndarray | slice],
) -> None:
    """``decode_row``'s layer loop, ``x`` the residual stream updated in place. Each of
    ``layers`` is a layer, its cache slot ``(2 * kv, D)`` and its context's keys and values
    as views, or None to gather them from ``cache`` (the cache and the context's slots) once
    the slot is written."""
    heads, kv_heads, dim = model.num_heads, model.num_kv_heads, model.head_dim
    group, rotated, eps, dtype = heads // kv_heads, (heads + kv_heads) * dim, model.eps, x.dtype
    normed, added = np.empty_like(x), np.empty_like(x)  # ``added``: a product's output
    first = model.layers[0]
    qkv = np.empty(first.qkv.shape[1], dtype=dtype)
    halves = _halves(qkv[:rotated].reshape(heads + kv_heads, dim))
    swapped, scratch = halves[:, ::-1], np.empty(halves.shape, dtype=cos_t.dtype)
    grouped = qkv[: heads * dim].reshape(kv_heads, group, dim)
    new_kv = qkv[heads * dim :].reshape(2 * kv_heads, dim)
    scores = np.empty((kv_heads, group, count), dtype=dtype)
    peak = np.empty((kv_heads, group, 1), dtype=dtype)
    attended = np.empty(heads * dim, dtype=dtype)
    attended_groups = attended.reshape(kv_heads, group, dim)
    gate_up = np.empty(first.gate_up.shape[1], dtype=dtype)
    gate, up = gate_up[: gate_up.shape[0] // 2], gate_up[gate_up.shape[0] // 2 :]
    silu_scratch = np.empty(first.down.shape[0], dtype=dtype)
    sqrt, width = math.sqrt, x.shape[0]
    # Every step is spelled out here rather than called (``_rms_norm``, ``_rotate``): after a
    # weight stream a Python call's frame set-up is one more piece of cold code (inlining
    # norms, RoPE, attention and SiLU took ~0.14 ms off a token; docs/inference.md).
    for index, (layer, cache_slot, keys, values) in enumerate(layers):
        scale = 1.0 / sqrt(float(_c_einsum("i,i->", x, x)) / width + eps)
        multiply(x, scale, normed)
        multiply(normed, layer.input_norm, normed)
        product(normed, layer.qkv, qkv)
        if layer.qkv_bias is not None:
            add(qkv, layer.qkv_bias, qkv)
        multiply(swapped, sin_t, scratch)  # RoPE as ``_rotate``, queries scaled
        multiply(halves, cos_t, halves)
        add(halves, scratch, halves)
        cache_slot[...] = new_kv  # not np.copyto: a Python dispatcher runs first
        if keys is None or values is None:
            keys, values = _context(cache[0][index][cache[1]], kv_heads)
        # Attention, one query per head; a softmax in five operations, the same ones (and
        # so the same rounding) as ``max``, subtract, ``exp``, ``sum``, divide.
        _scores(keys, grouped, scores)
        maximum_reduce(scores, -1, None, peak, keepdims=True)
        subtract(scores, peak, scores)
        exp(scores, scores)
        add_reduce(scores, -1, None, peak, keepdims=True)
        divide(scores, peak, scores)
        _attend(scores, values, attended_groups)
        product(attended, layer.o, added)
        add(x, added, x)
        scale = 1.0 / sqrt(float(_c_einsum("i,i->", x, x)) / width + eps)
        multiply(x, scale, normed)
        multiply(normed, layer.post_norm, normed)
        product(normed, layer.gate_up, gate_up)
        # SiLU(gate) * up, as F.silu then mul_: gate / (1 + exp(-gate)) * up, in ``gate``
        negative(gate, silu_scratch)
        exp(silu_scratch, silu_scratch)
        add(silu_scratch, 1, silu_scratch)
        divide(gate, silu_scratch, gate)
        multiply(gate, up, gate)
        product(gate, layer.down, added)
        add(x, added, x)


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
