"""Lone-row products on the CPU through numpy's BLAS instead of torch's.

Theory of operation: batch-1 decode is a chain of vector-matrix products that each stream a
weight matrix once, so its speed is the speed at which the BLAS reads a matrix. torch's CPU
wheels use MKL; numpy's use OpenBLAS. On the AMD EPYC cores this package is measured on,
OpenBLAS's single-row product reads the model's own ``(in, out)`` matrices 25-30% faster
than MKL's (CPU time, one thread; MKL picks its generic path on non-Intel CPUs), while for
more than one row MKL's GEMM is as good. So the model sends a *lone* row to numpy (see
``model.py``) and everything else to torch. Both read the same storage: a numpy array is a
view of the packed weight tensor, nothing is copied. On one thread numpy's own ``einsum``
loop reads these matrices faster still (``row_decode``); OpenBLAS does a lone row's
products when there are more threads, and attention's small ones always.

OpenBLAS has its own thread pool, which would otherwise use every core for a large
product and fight torch's threads (and everything else) for them: two threads on a loaded
2-core machine read ~10x slower. ``products`` therefore sets OpenBLAS's thread count to
torch's before use, and returns None (use torch) when numpy's BLAS is not an OpenBLAS whose
thread count it can set.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

__all__ = ["BlasProducts", "products"]

# Names of OpenBLAS's thread-count setter: scipy-openblas64 (numpy >= 2 wheels) first.
_SETTERS = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)


class BlasProducts:
    """``x @ w`` for one row through numpy's OpenBLAS, its thread count kept at torch's."""

    def __init__(self, set_threads: Callable[[int], object]) -> None:
        self._set_threads = set_threads
        self._threads = 0  # the count last set; 0 = never

    @property
    def threads(self) -> int:
        """The thread count last given to OpenBLAS (torch's, after ``match_threads``)."""
        return self._threads

    def match_threads(self) -> None:
        """Give OpenBLAS torch's thread count (a no-op when it already has it)."""
        wanted = torch.get_num_threads()
        if wanted != self._threads:
            self._set_threads(wanted)
            self._threads = wanted


_FOUND: list[BlasProducts | None] = []


def products() -> BlasProducts | None:
    """The process's ``BlasProducts``, or None where numpy's BLAS is not a usable OpenBLAS."""
    if not _FOUND:
        _FOUND.append(_find())
    return _FOUND[0]


def _find() -> BlasProducts | None:
    config = np.show_config(mode="dicts")
    blas = config.get("Build Dependencies", {}).get("blas", {})
    if "openblas" not in str(blas.get("name", "")).lower():
        return None
    package = Path(np.__file__).parent
    candidates = sorted(package.parent.glob("numpy.libs/*openblas*")) + sorted(
        package.glob(".dylibs/*openblas*")
    )
    for path in candidates:
        try:
            library = ctypes.CDLL(str(path))
        except OSError:
            continue
        for name in _SETTERS:
            setter = getattr(library, name, None)
            if setter is not None:
                setter.argtypes = [ctypes.c_int]
                setter.restype = None
                return BlasProducts(setter)
    return None
