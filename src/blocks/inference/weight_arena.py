"""One huge-page-backed block of memory for the weights a CPU decode streams.

Theory of operation: batch-1 decode reads every weight once per token, ~540 MB for
SmolLM2-135M in float32, so it is a stream through memory, and on the CPU the page size
shapes that stream: with 4 KiB pages every 4 KiB of weights is one more TLB entry to walk
to, and the core's prefetchers stop at each page boundary. Memory the kernel backs with
2 MiB transparent huge pages (THP) reads faster: a numpy sum over a buffer numpy itself
allocated (numpy asks the kernel for huge pages on large arrays) reads 31 GB/s on one core
where the same sum over torch-allocated memory (4 KiB pages) reads 27 (measured on the
2-core AMD EPYC of docs/inference.md). ``WeightArena`` is that kind of memory for the
model's packed matrices: one anonymous private mapping, ``madvise(MADV_HUGEPAGE)`` before
anything is written to it (pages are backed on first touch, so advice given after the
weights are in place is too late), its start rounded up to a 2 MiB boundary, carved into
tensors in the order the caller asks for them. A decode that asks in the order it reads
gets one forward stream through the whole arena.

Where the kernel has no THP (or the platform no ``MADV_HUGEPAGE``) the arena is ordinary
memory and everything works the same. The tensors it hands out keep the mapping alive
(torch -> numpy array -> mmap), so the arena object itself may be dropped.
"""

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["HUGE_PAGE_BYTES", "WeightArena"]

HUGE_PAGE_BYTES = 2 << 20
ALIGN_BYTES = 64  # a cache line: every tensor starts on one


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN_BYTES) * ALIGN_BYTES


class WeightArena:
    """``capacity_bytes`` of huge-page-advised memory, handed out in order by ``take``."""

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 1:
            raise ValueError("capacity_bytes must be >= 1")
        self._mapping = mmap.mmap(
            -1,
            capacity_bytes + HUGE_PAGE_BYTES,
            flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
        )
        advice = getattr(mmap, "MADV_HUGEPAGE", None)
        if advice is not None:
            # A kernel built without THP refuses the advice: ordinary pages then.
            with contextlib.suppress(OSError):
                self._mapping.madvise(advice)
        raw = np.frombuffer(self._mapping, dtype=np.uint8)
        start = -raw.ctypes.data % HUGE_PAGE_BYTES
        self._bytes = raw[start : start + capacity_bytes]
        self._used = 0  # bytes handed out (rounded up to ALIGN_BYTES each); <= capacity

    @staticmethod
    def bytes_for(shapes: Sequence[tuple[int, ...]], dtype: torch.dtype) -> int:
        """The capacity ``take`` needs for tensors of these shapes, in any order."""
        size = dtype.itemsize
        return sum(_aligned(size * int(np.prod(shape))) for shape in shapes)

    def take(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """The next uninitialised, contiguous ``shape`` tensor of ``dtype``; it starts on a
        cache line, right after the previous one. Raises ``MemoryError`` past capacity."""
        count = int(np.prod(shape))
        nbytes = count * dtype.itemsize
        if self._used + nbytes > self._bytes.shape[0]:
            raise MemoryError(f"weight arena full: {self._used} + {nbytes} bytes")
        piece = self._bytes[self._used : self._used + nbytes]
        self._used += _aligned(nbytes)
        return torch.from_numpy(piece).view(dtype).view(shape)
