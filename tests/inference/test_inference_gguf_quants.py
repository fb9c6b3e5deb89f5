"""GGUF tensor types: our torch dequantizers against the ``gguf`` package's numpy reference,
byte for byte, then whole quantized models against transformers reading the same file.

Stated tolerances: a dequantized tensor equals the reference exactly (both compute
``scale * q (+ offset)`` in float32); model logits (float64 on both sides, same dequantized
weights) agree within 1e-5 absolute on logits whose spread is about 1 to 4 (transformers
computes RoPE angles in float32, which alone accounts for ~1e-6).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from model_kinds import hf_from_gguf, make_hf_model, our_logits, write_gguf

from blocks.core.errors import InvalidArgument
from blocks.inference.loader import load_gguf
from blocks.inference.quants import SUPPORTED_TYPES, dequantize

gguf = pytest.importorskip("gguf")
pytest.importorskip("transformers")
from gguf import GGML_QUANT_SIZES, quants  # noqa: E402
from gguf import GGMLQuantizationType as T  # noqa: E402

QUANTIZED = [T.Q4_0, T.Q4_1, T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K]
# Byte offsets of each type's half-float scales inside a block (kept finite and small in
# random blocks; every other byte is uniformly random).
HALF_SCALES = {T.Q4_0: (0,), T.Q4_1: (0, 2), T.Q8_0: (0,), T.Q4_K: (0, 2), T.Q5_K: (0, 2)}
HALF_SCALES[T.Q6_K] = (208,)
# Scale size that keeps weights of random blocks around 0.05.
SCALE = {T.Q4_0: 0.01, T.Q4_1: 0.005, T.Q8_0: 5e-4, T.Q4_K: 1e-4, T.Q5_K: 5e-5, T.Q6_K: 2e-5}


def random_blocks(kind: T, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """``(rows, bytes per row)`` of valid blocks: random bytes, small finite scales."""
    values, size = GGML_QUANT_SIZES[kind]
    raw = rng.integers(0, 256, size=(rows * cols // values, size), dtype=np.uint8)
    for offset in HALF_SCALES[kind]:
        halves = (rng.uniform(0.2, 1.0, len(raw)) * SCALE[kind]).astype(np.float16)
        raw[:, offset : offset + 2] = halves.view(np.uint8).reshape(-1, 2)
    return raw.reshape(rows, -1)


@pytest.mark.parametrize("kind", QUANTIZED, ids=lambda k: k.name)
def test_random_blocks_match_the_reference(kind: T) -> None:
    raw = random_blocks(kind, 4, 512, np.random.default_rng(int(kind)))
    want = quants.dequantize(raw, kind)
    got = dequantize(raw.tobytes(), int(kind), (4, 512))
    assert got.dtype == torch.float32 and got.shape == (4, 512)
    assert np.array_equal(got.numpy(), want)


@pytest.mark.parametrize("kind", [T.Q4_0, T.Q4_1, T.Q8_0, T.F16, T.BF16], ids=lambda k: k.name)
def test_reference_quantized_weights_round_trip(kind: T) -> None:
    weights = np.random.default_rng(1).standard_normal((3, 256)).astype(np.float32)
    raw = quants.quantize(weights, kind)
    got = dequantize(raw.tobytes(), int(kind), (3, 256)).numpy()
    assert np.array_equal(got, quants.dequantize(raw, kind))
    assert np.abs(got - weights).max() < 0.5  # 4-bit types: half a step of ~1/8 of the range


def test_q4_k_from_the_format_definition() -> None:
    """One hand-built super-block: sub-block s has scale s + 1 and min 2 s (6 bits each,
    the top two bits of scales/mins 4-7 in bytes 0-7), nibble value l % 16 at position l."""
    scales, mins = [s + 1 for s in range(8)], [2 * s for s in range(8)]
    packed = bytearray(12)
    for s in range(4):
        packed[s] = scales[s] | ((scales[s + 4] >> 4) << 6)
        packed[s + 4] = mins[s] | ((mins[s + 4] >> 4) << 6)
        packed[s + 8] = (scales[s + 4] & 0x0F) | ((mins[s + 4] & 0x0F) << 4)
    nibbles = bytearray(128)
    for run in range(4):  # run r: sub-block 2r in low nibbles, 2r + 1 in high nibbles
        for lane in range(32):
            nibbles[32 * run + lane] = (lane % 16) | ((lane % 16) << 4)
    d, dmin = 0.5, 0.25
    block = np.array([d, dmin], dtype=np.float16).tobytes() + bytes(packed) + bytes(nibbles)
    got = dequantize(block, int(T.Q4_K), (256,)).numpy()
    want = [d * scales[i // 32] * (i % 32 % 16) - dmin * mins[i // 32] for i in range(256)]
    assert np.array_equal(got, np.array(want, dtype=np.float32))


def test_bad_input_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="Q2_K"):
        dequantize(bytes(84), int(T.Q2_K), (256,), type_name="Q2_K")
    with pytest.raises(InvalidArgument, match="bytes"):
        dequantize(bytes(17), int(T.Q4_0), (32,))
    with pytest.raises(InvalidArgument, match="whole blocks"):
        dequantize(bytes(18), int(T.Q4_0), (2, 16))
    assert set(SUPPORTED_TYPES) >= {"F32", "F16", "Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K"}


# ---------------------------------------------------------------------- whole models


def encoder(kind: T, seed: int):  # type: ignore[no-untyped-def]
    """Stores each tensor whose rows are whole blocks of ``kind`` in that type."""
    rng = np.random.default_rng(seed)
    values = GGML_QUANT_SIZES[kind][0]

    def encode(name: str, array: np.ndarray) -> tuple[np.ndarray, T | None]:
        if kind == T.F16:
            return array.astype(np.float16), None
        if array.shape[-1] % values:
            return array, None
        if kind in (T.Q4_0, T.Q4_1, T.Q8_0):
            return quants.quantize(array, kind), kind
        return random_blocks(kind, *array.shape, rng), kind  # no reference quantizer

    return encode


@pytest.mark.parametrize("kind", [T.F16, *QUANTIZED], ids=lambda k: k.name)
def test_quantized_llama_matches_transformers(kind: T, tmp_path: Path) -> None:
    # K-quants need rows of 256: the MLP's down projection (intermediate 256) takes them.
    hf = make_hf_model("llama", seed=3, intermediate_size=256)
    path = write_gguf(tmp_path / "q.gguf", hf, "llama", encode=encoder(kind, int(kind)))
    reader = gguf.GGUFReader(str(path))
    assert kind in {t.tensor_type for t in reader.tensors}
    reference = hf_from_gguf(path, "llama", intermediate_size=256)
    ours, _ = load_gguf(path, torch.float64)
    tokens = [5, 77, 260, 3, 299, 150, 42, 8]
    with torch.no_grad():
        want = reference(torch.tensor([tokens])).logits[0].double()
    got = our_logits(ours, tokens)
    assert float((got - want).abs().max()) < 1e-5
    assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_a_file_with_an_unsupported_type_is_refused(tmp_path: Path) -> None:
    hf = make_hf_model("llama", seed=4)

    def q5_0(name: str, array: np.ndarray) -> tuple[np.ndarray, T | None]:
        return quants.quantize(array, T.Q5_0), T.Q5_0

    path = write_gguf(tmp_path / "q5.gguf", hf, "llama", encode=q5_0)
    with pytest.raises(InvalidArgument, match="Q5_0"):
        load_gguf(path)
