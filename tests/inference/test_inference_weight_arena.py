"""The weights a CPU decode streams: one huge-page arena in read order, the head in blocks."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from inference_reference import make_tiny_model

from blocks.inference import row_decode
from blocks.inference.cpu_blas import products
from blocks.inference.runner import ModelRunner
from blocks.inference.scheduler import ScheduledChunk
from blocks.inference.weight_arena import HUGE_PAGE_BYTES, WeightArena


def _vm_flags(address: int) -> list[str]:
    """The kernel's VmFlags of the mapping holding ``address`` (Linux)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:
            low, high = (int(part, 16) for part in head.split("-"))
            inside = low <= address < high
        elif inside and line.startswith("VmFlags:"):
            return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


def test_packed_layers_are_one_stream_in_read_order() -> None:
    model = make_tiny_model(seed=3, dtype=torch.float32)
    packed = model.layer_weights()
    matrices = [m for w in packed for m in (w.qkv, w.o, w.gate_up, w.down)]
    assert matrices[0].data_ptr() % HUGE_PAGE_BYTES == 0
    for before, after in itertools.pairwise(matrices):
        end = before.data_ptr() + before.numel() * before.element_size()
        assert 0 <= after.data_ptr() - end < 64  # the next one starts on the next cache line
    # Still the parameters (held once), and still correct.
    attn = model.model.layers[0].self_attn
    assert attn.k_proj.weight.untyped_storage().data_ptr() == packed[0].qkv.data_ptr()
    torch.testing.assert_close(packed[0].qkv[:, : attn.q_proj.out_features].t(), attn.q_proj.weight)


@pytest.mark.skipif(
    not sys.platform.startswith("linux")
    or not Path("/sys/kernel/mm/transparent_hugepage/enabled").exists(),
    reason="transparent huge pages are a Linux feature",
)
def test_the_arena_asks_for_huge_pages() -> None:
    model = make_tiny_model(seed=3, dtype=torch.float32)
    qkv = model.layer_weights()[0].qkv
    assert "hg" in _vm_flags(qkv.data_ptr())  # MADV_HUGEPAGE is on the mapping


def test_arena_hands_out_aligned_tensors_and_refuses_past_capacity() -> None:
    shapes = [(3, 5), (7,)]
    arena = WeightArena(WeightArena.bytes_for(shapes, torch.bfloat16))
    first, second = (arena.take(shape, torch.bfloat16) for shape in shapes)
    assert (first.shape, second.shape) == ((3, 5), (7,))
    assert second.data_ptr() - first.data_ptr() == 64
    first.fill_(1.5)
    second.fill_(-2.0)
    assert float(first.sum()) == 22.5 and float(second.sum()) == -14.0
    with pytest.raises(MemoryError):
        arena.take((1,), torch.bfloat16)


@pytest.mark.parametrize("product", [row_decode._einsum_product, row_decode._blas_product])
def test_head_blocks_give_the_whole_product(product: row_decode.Product) -> None:
    weight = torch.randn(10, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    arena = WeightArena(row_decode.head_arena_bytes(weight, columns=4))
    head = row_decode.row_head(weight, arena, columns=4)
    assert [b.shape for b in head.blocks] == [(4, 4), (4, 4), (4, 2)]  # the last is narrower
    hidden = np.linspace(-1.0, 1.0, 4)
    np.testing.assert_allclose(
        row_decode.head_logits(head, hidden, product), weight.numpy() @ hidden, rtol=1e-12
    )


@pytest.mark.skipif(products() is None, reason="numpy's BLAS is not OpenBLAS")
@pytest.mark.parametrize("threads", [1, 2])
def test_lone_decode_on_one_or_more_threads_equals_the_torch_path(threads: int) -> None:
    """One thread takes the einsum products, more take OpenBLAS's; both match torch."""
    model = make_tiny_model(seed=4, dtype=torch.float32)
    table = (1, 2)
    chunks = [ScheduledChunk(0, 0, (3, 4, 5), table, True)] + [
        ScheduledChunk(0, 3 + i, (t,), table, True) for i, t in enumerate((6, 7, 8))
    ]
    wanted = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fast_runner = ModelRunner(model, num_blocks=4, block_size=4)
        fast = [fast_runner.run([c])[0] for c in chunks]
        blas = products()
        assert blas is not None and blas.threads == threads
    finally:
        torch.set_num_threads(wanted)
    model.blas_products = False
    plain_runner = ModelRunner(model, num_blocks=4, block_size=4)
    plain = [plain_runner.run([c])[0] for c in chunks]
    for a, b in zip(fast, plain, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
