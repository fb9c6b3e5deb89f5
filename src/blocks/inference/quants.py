"""GGUF tensor types dequantized in torch: F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K.

Theory of operation: a quantized GGUF tensor is a run of fixed-size *blocks*, each holding
``block_values`` weights of one row (rows never share a block). Every function here takes
the raw bytes of whole blocks as a ``(blocks, block_bytes)`` uint8 tensor and returns the
weights ``(blocks, block_values)`` in float32, so the work is a handful of vectorised tensor
operations whatever the tensor's size, on whichever device the bytes are. Scales are IEEE
half floats stored little-endian; every layout below is the one llama.cpp's ``ggml`` writes.

* Q8_0 (34 bytes, 32 values): half ``d``, then 32 signed bytes ``q``; ``w = d * q``.
* Q4_0 (18 bytes, 32 values): half ``d``, then 16 bytes; value ``j < 16`` is the low nibble
  of byte ``j`` and value ``j + 16`` its high nibble; ``w = d * (nibble - 8)``.
* Q4_1 (20 bytes, 32 values): half ``d`` and half ``m``, then nibbles as Q4_0;
  ``w = d * nibble + m``.
* K-quants (256 values in a *super-block*): Q4_K (144 bytes) and Q5_K (176) hold half ``d``,
  half ``dmin``, 12 bytes packing eight 6-bit sub-block scales and eight 6-bit mins, then
  (Q5_K only) 32 bytes of fifth bits, then 128 bytes of nibbles. Sub-block ``s`` (32
  values) has ``w = d * scale[s] * q - dmin * min[s]``. Nibbles come in four 32-byte runs:
  run ``r`` gives sub-block ``2r`` from its low nibbles and ``2r + 1`` from its high ones;
  Q5_K's fifth bit of value ``l`` of sub-block ``s`` is bit ``s`` of high-bit byte ``l``.
  Q6_K (210 bytes) holds 128 bytes of low nibbles, 64 bytes of 2-bit high parts, sixteen
  signed 8-bit scales (one per 16 values), then half ``d``; ``w = d * scale * (q - 32)``
  with ``q`` six bits; see ``_q6_k`` for the order the bits are spread in.

Types outside this list (Q2_K, Q3_K, the IQ family, ...) raise ``InvalidArgument`` naming the
type, never a silently wrong weight.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from blocks.core.errors import InvalidArgument

__all__ = ["SUPPORTED_TYPES", "dequantize", "dequantize_blocks", "layout"]


@dataclass(frozen=True, slots=True)
class Layout:
    """A tensor type's block geometry: ``block_values`` weights in ``block_bytes`` bytes."""

    name: str
    block_values: int
    block_bytes: int


def _half(raw: torch.Tensor, start: int) -> torch.Tensor:
    """The little-endian half float at byte ``start`` of every block, as ``(blocks, 1)``."""
    pair = raw[:, start : start + 2].contiguous()
    return pair.view(torch.float16).to(torch.float32)


def _low_high(nibbles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (nibbles & 0x0F).to(torch.float32), (nibbles >> 4).to(torch.float32)


def _f32(raw: torch.Tensor) -> torch.Tensor:
    return raw.contiguous().view(torch.float32)


def _f16(raw: torch.Tensor) -> torch.Tensor:
    return raw.contiguous().view(torch.float16).to(torch.float32)


def _bf16(raw: torch.Tensor) -> torch.Tensor:
    return raw.contiguous().view(torch.bfloat16).to(torch.float32)


def _q8_0(raw: torch.Tensor) -> torch.Tensor:
    q = raw[:, 2:].contiguous().view(torch.int8).to(torch.float32)
    return _half(raw, 0) * q


def _q4_0(raw: torch.Tensor) -> torch.Tensor:
    low, high = _low_high(raw[:, 2:])
    return _half(raw, 0) * (torch.cat([low, high], dim=1) - 8.0)


def _q4_1(raw: torch.Tensor) -> torch.Tensor:
    low, high = _low_high(raw[:, 4:])
    return _half(raw, 0) * torch.cat([low, high], dim=1) + _half(raw, 2)


def _k_scales(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eight 6-bit scales and eight 6-bit mins from Q4_K/Q5_K's 12 bytes, ``(blocks, 8)``.

    Bytes 0-3 hold scales 0-3 in their low six bits, bytes 4-7 mins 0-3 likewise; bytes
    8-11 hold scales 4-7 (low nibble) and mins 4-7 (high nibble), whose top two bits are the
    spare top bits of bytes 0-3 (scales) and 4-7 (mins).
    """
    p = packed.to(torch.int32)
    first_scales, first_mins, tail = p[:, 0:4], p[:, 4:8], p[:, 8:12]
    scales = torch.cat([first_scales & 63, (tail & 0x0F) | ((first_scales >> 6) << 4)], dim=1)
    mins = torch.cat([first_mins & 63, (tail >> 4) | ((first_mins >> 6) << 4)], dim=1)
    return scales.to(torch.float32), mins.to(torch.float32)


def _k_nibbles(qs: torch.Tensor) -> torch.Tensor:
    """The 256 four-bit values of a K-quant super-block, in sub-block order ``(blocks, 8, 32)``."""
    runs = qs.reshape(-1, 4, 32)
    low, high = runs & 0x0F, runs >> 4
    return torch.stack([low, high], dim=2).reshape(-1, 8, 32)


def _q4_k(raw: torch.Tensor) -> torch.Tensor:
    scales, mins = _k_scales(raw[:, 4:16])
    q = _k_nibbles(raw[:, 16:144]).to(torch.float32)
    d, dmin = _half(raw, 0), _half(raw, 2)
    out = (d * scales).unsqueeze(2) * q - (dmin * mins).unsqueeze(2)
    return out.reshape(-1, 256)


def _q5_k(raw: torch.Tensor) -> torch.Tensor:
    scales, mins = _k_scales(raw[:, 4:16])
    high_bits = raw[:, 16:48].to(torch.int32)  # (blocks, 32): bit s belongs to sub-block s
    shifts = torch.arange(8, dtype=torch.int32, device=raw.device).view(1, 8, 1)
    fifth = (high_bits.unsqueeze(1) >> shifts) & 1  # (blocks, 8, 32)
    q = (_k_nibbles(raw[:, 48:176]).to(torch.int32) | (fifth << 4)).to(torch.float32)
    d, dmin = _half(raw, 0), _half(raw, 2)
    out = (d * scales).unsqueeze(2) * q - (dmin * mins).unsqueeze(2)
    return out.reshape(-1, 256)


def _q6_k(raw: torch.Tensor) -> torch.Tensor:
    """Two halves of 128 values; half ``h`` uses low-nibble bytes ``64h .. 64h + 63``,
    high-part bytes ``32h .. 32h + 31`` and scales ``8h .. 8h + 7``. Within a half, value
    ``32k + l`` (``k`` in 0..3, ``l`` in 0..31) takes the low nibble (k = 0, 1) or high nibble
    (k = 2, 3) of low byte ``l + 32 * (k % 2)``, bits ``2k, 2k + 1`` of high byte ``l`` as its
    top two bits, and scale ``2k + l // 16``."""
    ql = raw[:, 0:128].to(torch.int32).reshape(-1, 2, 2, 32)  # (blocks, half, k % 2, l)
    qh = raw[:, 128:192].to(torch.int32).reshape(-1, 2, 1, 32)  # (blocks, half, 1, l)
    scales = raw[:, 192:208].contiguous().view(torch.int8).to(torch.float32)
    low = torch.cat([ql & 0x0F, ql >> 4], dim=2)  # (blocks, half, k, l)
    shifts = 2 * torch.arange(4, dtype=torch.int32, device=raw.device).view(1, 1, 4, 1)
    q = (low | (((qh >> shifts) & 3) << 4)) - 32  # (blocks, half, 4, 32)
    per_value = scales.reshape(-1, 2, 4, 2, 1).expand(-1, 2, 4, 2, 16).reshape(-1, 2, 4, 32)
    return (_half(raw, 208).view(-1, 1, 1, 1) * per_value * q.to(torch.float32)).reshape(-1, 256)


_DEQUANTIZERS: dict[int, tuple[Layout, Callable[[torch.Tensor], torch.Tensor]]] = {
    0: (Layout("F32", 1, 4), _f32),
    1: (Layout("F16", 1, 2), _f16),
    30: (Layout("BF16", 1, 2), _bf16),
    2: (Layout("Q4_0", 32, 18), _q4_0),
    3: (Layout("Q4_1", 32, 20), _q4_1),
    8: (Layout("Q8_0", 32, 34), _q8_0),
    12: (Layout("Q4_K", 256, 144), _q4_k),
    13: (Layout("Q5_K", 256, 176), _q5_k),
    14: (Layout("Q6_K", 256, 210), _q6_k),
}
SUPPORTED_TYPES = tuple(layout.name for layout, _ in _DEQUANTIZERS.values())


def layout(type_id: int, type_name: str = "") -> Layout:
    """The block geometry of GGML type ``type_id``; ``InvalidArgument`` when not supported."""
    entry = _DEQUANTIZERS.get(int(type_id))
    if entry is None:
        name = type_name or f"type {type_id}"
        raise InvalidArgument(
            f"GGUF tensor type {name} is not supported (supported: {', '.join(SUPPORTED_TYPES)})"
        )
    return entry[0]


def dequantize_blocks(raw: torch.Tensor, type_id: int) -> torch.Tensor:
    """float32 weights ``(blocks, block_values)`` from uint8 bytes ``(blocks, block_bytes)``."""
    block = layout(type_id)
    if raw.dtype != torch.uint8 or raw.dim() != 2 or raw.shape[1] != block.block_bytes:
        raise InvalidArgument(f"{block.name} needs uint8 blocks of {block.block_bytes} bytes")
    if block.block_values == 1:  # plain floats: one "block" per value
        return _DEQUANTIZERS[int(type_id)][1](raw.reshape(1, -1)).reshape(-1, 1)
    return _DEQUANTIZERS[int(type_id)][1](raw)


def dequantize(
    data: bytes | bytearray | memoryview | torch.Tensor,
    type_id: int,
    shape: tuple[int, ...],
    *,
    type_name: str = "",
) -> torch.Tensor:
    """A float32 tensor of ``shape`` (row-major, last dimension innermost) from raw GGUF bytes.

    The byte count must be exactly what ``shape`` takes in this type, and the last
    dimension a whole number of blocks; otherwise ``InvalidArgument``.
    """
    block = layout(type_id, type_name)
    count = 1
    for size in shape:
        count *= int(size)
    if not shape or shape[-1] % block.block_values:
        raise InvalidArgument(
            f"{block.name}: rows of {shape[-1] if shape else 0} values are not whole blocks "
            f"of {block.block_values}"
        )
    raw = (
        data
        if isinstance(data, torch.Tensor)
        else torch.frombuffer(bytearray(data), dtype=torch.uint8)
    )
    raw = raw.reshape(-1)
    blocks = count // block.block_values
    if raw.numel() != blocks * block.block_bytes:
        raise InvalidArgument(
            f"{block.name}: {raw.numel()} bytes for {count} values (want {blocks * block.block_bytes})"
        )
    return dequantize_blocks(raw.reshape(blocks, block.block_bytes), type_id).reshape(shape)
