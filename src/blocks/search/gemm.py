"""Score GEMM for exact search on the CPU: one oneDNN matmul with the L2 bias fused in.

Theory of operation: exact search is one large ``queries x corpus^T`` product per tile plus,
for L2, a per-column bias ``-|c|^2 / 2``. On the CPU, ``torch.mm`` runs on MKL, whose float32
GEMM reached about 100 GFLOP/s per core on the AMD EPYC (Zen 5) machines we measured, while
oneDNN's matmul (the kernel behind ``torch.ops.mkldnn._linear_pointwise``, which torch's own
compiler emits for ``Linear`` layers) reached about 230 GFLOP/s on the same core, with
identical float32 accuracy. That op computes ``input @ weight^T + bias`` with the bias added in
the GEMM's epilogue, so the L2 score costs no extra pass over the tile.

The op is an internal torch entry point, so it is used only after a probe: torch has oneDNN,
the op exists, and a small product with exactly representable values (including the bias and
odd shapes) matches float64 bit for bit. The probe runs once per process; if anything fails,
``fused_scores_available`` answers False and callers keep ``torch.addmm``. Only float32 CPU
tensors qualify (float16/bfloat16 and CUDA go through ``torch.mm``).
"""

from __future__ import annotations

import threading

import torch

__all__ = ["fused_scores", "fused_scores_available"]

_probe_lock = threading.Lock()
_probe_result: bool | None = None


def _probe() -> bool:
    try:
        if not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
            return False
        generator = torch.Generator().manual_seed(7)
        queries = torch.randint(-3, 4, (5, 19), generator=generator).float()
        corpus = torch.randint(-3, 4, (33, 19), generator=generator).float()
        bias = torch.randint(-9, 10, (33,), generator=generator).float() * 0.5
        expected = queries.double() @ corpus.double().T + bias.double()
        got = fused_scores(queries, corpus, bias)
        plain = fused_scores(queries[:1], corpus[:1], None)
        return bool(
            got.dtype == torch.float32
            and got.shape == expected.shape
            and torch.equal(got.double(), expected)
            and torch.equal(plain.double(), queries[:1].double() @ corpus[:1].double().T)
        )
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def fused_scores_available(corpus: torch.Tensor) -> bool:
    """True when ``fused_scores`` may be used for this corpus (float32 on the CPU)."""
    global _probe_result
    if corpus.device.type != "cpu" or corpus.dtype != torch.float32:
        return False
    if _probe_result is None:
        with _probe_lock:
            if _probe_result is None:
                _probe_result = _probe()
    return _probe_result


def fused_scores(
    queries: torch.Tensor, corpus: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``queries @ corpus.T (+ bias)`` as a new contiguous float32 ``(m, n)`` tensor."""
    result: torch.Tensor = torch.ops.mkldnn._linear_pointwise(queries, corpus, bias, "none", [], "")
    return result
