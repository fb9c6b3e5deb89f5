"""Measuring the engine against the machine: bandwidth, peak GEMM rate, decode speed, FLOPs.

Theory of operation: a fraction of a roofline is only honest when both sides are measured
in the same run on the same machine, with the same torch thread count. These helpers are
that measuring tape, used by ``blocks bench inference``:

* ``bandwidth_gb_s``: read bandwidth, from summing a 256 MiB tensor (decode streams its
  weights: reads), best of five;
* ``gemm_gflops``: the peak rate of this model's own layer products at a large batch;
* ``batch1_decode``: decode tokens/s of a lone greedy request;
* ``request_flops``: the arithmetic one request needs, with no padding, which divided by
  the peak rate gives a ceiling no engine can beat on the machine.

``cpu_time=True`` times by this thread's CPU time instead of the wall clock (meaningful
with one torch thread): on a machine shared with other work it leaves out the time the
core was given to someone else, for both sides of the ratio alike.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from blocks.inference.model import ModelConfig

__all__ = ["bandwidth_gb_s", "batch1_decode", "gemm_gflops", "request_flops"]


def bandwidth_gb_s(device: str, cpu_time: bool = False) -> float:
    """Read bandwidth: sum a 256 MiB tensor, best of 5 (decode streams weights: reads).

    ``cpu_time`` times by this thread's CPU time (one torch thread only): on a shared machine
    that leaves out the time other processes hold the core, as ``batch1_decode`` does too.
    """
    clock = time.thread_time if cpu_time else time.perf_counter
    source = torch.ones(64 * 1024 * 1024, dtype=torch.float32, device=device)
    best = float("inf")
    for _ in range(5):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = clock()
        source.sum()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, clock() - started)
    return source.numel() * 4 / best / 1e9


def batch1_decode(engine: Any, prompt: list[int], tokens: int, cpu_time: bool = False) -> float:
    """Decode tokens/s of a lone greedy request after its first token (best of 3)."""
    from blocks.inference.params import SamplingParams

    clock = time.thread_time if cpu_time else time.perf_counter
    best = 0.0
    for attempt in range(3):
        params = SamplingParams(max_tokens=tokens + 1, temperature=0.0, ignore_eos=True)
        engine.add_request(f"roofline-{attempt}", prompt, params)
        engine.step()  # prefill and first token
        started = clock()
        count = 0
        while engine.has_work():
            count += sum(len(d.token_ids) for d in engine.step())
        best = max(best, count / (clock() - started))
    return best


def gemm_gflops(model: Any, rows: int = 256) -> float:
    """Peak dense throughput of this model's own layer products at ``rows`` tokens (wall)."""
    weights = model.layer_weights()[0]
    mats = [weights.qkv, weights.o, weights.gate_up, weights.down]
    inputs = [torch.randn(rows, m.shape[0], dtype=m.dtype, device=m.device) for m in mats]
    flops = sum(2 * rows * m.shape[0] * m.shape[1] for m in mats)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for x, m in zip(inputs, mats, strict=True):
            x @ m
        if m.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return float(flops / best / 1e9)


def request_flops(config: ModelConfig, prompt_tokens: int, output_tokens: int) -> float:
    """FLOPs to serve one request: every prompt and output token through the layers
    (products and causal attention) and the head once per output token; the last output
    token is never fed back."""
    width, layers = config.hidden_size, config.num_layers
    q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    per_layer = width * (q + 2 * kv) + q * width + 3 * width * config.intermediate_size
    computed = prompt_tokens + output_tokens - 1
    products = computed * 2 * layers * per_layer + output_tokens * 2 * width * config.vocab_size
    # Scores and the weighted sum: 4 * q flops per (query, key) pair.
    attention = 4 * q * layers * computed * (computed + 1) / 2
    return float(products + attention)
