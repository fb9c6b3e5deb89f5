"""Packing a decoder layer's weights for the forward pass: fewer, larger matrix products.

Theory of operation: query, key and value projections are packed into one matrix, gate and
up projections into another, so a layer runs four matrix products, not seven (Qwen2's query,
key and value biases are packed the same way into one vector, added by the same ``addmm``).
On the CPU the packed matrices are stored transposed, ``(in, out)`` row-major, because MKL
streams that layout about 1.5x faster at batch 1 (measured; ``F.linear`` reads ``(out,
in)``); on a GPU they stay ``(out, in)`` and are used through a transposed view, which
cuBLAS reads natively. On the CPU every layer's packed matrices are one ``WeightArena``
(huge pages, the order a pass reads them: a token's layers are one forward stream). The
``nn.Linear`` parameters are then rebound as *views* into the packed storage, so weights are
held once, ``load_state_dict`` and in-place edits write through to what the forward pass
reads, and ``state_dict`` still has every original name. On the CPU, for float32 and
float64, each layer also carries the same weights as numpy views (``RowLayer``) for
batch-1 decode's numpy path (``row_decode``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from blocks.inference.row_decode import RowLayer
from blocks.inference.weight_arena import WeightArena

if TYPE_CHECKING:
    from blocks.inference.model import DecoderLayer

__all__ = ["BLAS_DTYPES", "LayerWeights", "pack_layer", "weight_arena"]

# The dtypes numpy's BLAS (and so ``row_decode``) takes.
BLAS_DTYPES = (torch.float32, torch.float64)


@dataclass(frozen=True, slots=True)
class LayerWeights:
    """One layer's packed right-hand matrices (``x @ w``) and its norm weights."""

    qkv: torch.Tensor  # (width, (heads + 2 * kv_heads) * head_dim)
    qkv_bias: torch.Tensor | None  # ((heads + 2 * kv_heads) * head_dim,) when the model has one
    o: torch.Tensor  # (heads * head_dim, width)
    gate_up: torch.Tensor  # (width, 2 * intermediate)
    down: torch.Tensor  # (intermediate, width)
    input_norm: torch.Tensor
    post_norm: torch.Tensor
    # The same weights as numpy views for a lone decode token (``row_decode``); None where
    # that path is not used (not the CPU, or a dtype numpy's BLAS does not take).
    row: RowLayer | None = None


def _fuse(
    parts: list[nn.Linear], transposed: bool, arena: WeightArena | None = None
) -> torch.Tensor:
    """One ``(in, sum of outs)`` right-hand matrix; each part's weight becomes a view of it.

    With ``arena`` (the CPU's transposed layout) the matrix is the arena's next tensor."""
    if arena is not None and transposed:
        outs = sum(part.out_features for part in parts)
        rhs = arena.take((parts[0].in_features, outs), parts[0].weight.dtype)
        start = 0
        for part in parts:
            rhs[:, start : start + part.out_features].copy_(part.weight.detach().t())
            start += part.out_features
    else:
        joined = torch.cat([part.weight.detach() for part in parts], dim=0)  # (outs, in)
        rhs = joined.t().contiguous() if transposed else joined.t()
    _view_parts(parts, "weight", rhs.t())  # (outs, in), a view either way
    return rhs


def _fuse_bias(parts: list[nn.Linear]) -> torch.Tensor | None:
    """One bias vector for ``parts`` (None without biases); each part's bias becomes a view."""
    if parts[0].bias is None:
        return None
    joined = torch.cat([part.bias.detach() for part in parts if part.bias is not None])
    _view_parts(parts, "bias", joined)
    return joined


def _view_parts(parts: list[nn.Linear], name: str, joined: torch.Tensor) -> None:
    """Each part's parameter ``name`` (``weight`` or ``bias``) becomes a frozen view of its
    own rows of ``joined``, whose rows are the parts' outputs in order."""
    start = 0
    for part in parts:
        end = start + part.out_features
        setattr(part, name, nn.Parameter(joined[start:end], requires_grad=False))
        start = end


def _packed_groups(layer: DecoderLayer) -> list[list[nn.Linear]]:
    """The projections packed together, in the order a forward pass reads them."""
    attn, mlp = layer.self_attn, layer.mlp
    return [
        [attn.q_proj, attn.k_proj, attn.v_proj],
        [attn.o_proj],
        [mlp.gate_proj, mlp.up_proj],
        [mlp.down_proj],
    ]


def weight_arena(layers: list[DecoderLayer]) -> WeightArena:
    """An arena holding every layer's packed matrices (see ``weight_arena``)."""
    return WeightArena(
        sum(
            WeightArena.bytes_for(
                [(group[0].in_features, sum(part.out_features for part in group))],
                group[0].weight.dtype,
            )
            for layer in layers
            for group in _packed_groups(layer)
        )
    )


def pack_layer(
    layer: DecoderLayer, transposed: bool, arena: WeightArena | None = None
) -> LayerWeights:
    """``layer``'s packed weights (transposed ``(in, out)`` on the CPU, into ``arena`` when
    given); its ``nn.Linear`` parameters become views of them."""
    attn = layer.self_attn
    qkv, o, gate_up, down = (_fuse(group, transposed, arena) for group in _packed_groups(layer))
    qkv_bias = _fuse_bias([attn.q_proj, attn.k_proj, attn.v_proj])
    input_norm = layer.input_layernorm.weight
    post_norm = layer.post_attention_layernorm.weight
    row = None
    if transposed and qkv.dtype in BLAS_DTYPES:
        row = RowLayer(
            qkv=qkv.numpy(),
            qkv_bias=None if qkv_bias is None else qkv_bias.numpy(),
            o=o.numpy(),
            gate_up=gate_up.numpy(),
            down=down.numpy(),
            input_norm=input_norm.detach().numpy(),
            post_norm=post_norm.detach().numpy(),
        )
    return LayerWeights(
        qkv=qkv,
        qkv_bias=qkv_bias,
        o=o,
        gate_up=gate_up,
        down=down,
        input_norm=input_norm,
        post_norm=post_norm,
        row=row,
    )


BLAS_DTYPES = (torch.float32, torch.float64)
