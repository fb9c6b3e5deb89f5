"""blocks.inference: a batched torch LLM engine with an OpenAI-compatible server.

The scheduler, block manager, admission control and request types need no torch and are
imported eagerly; the model, engine, server and loaders import torch and load on first use.
See ``docs/inference.md`` for the design.
"""

from __future__ import annotations

import importlib
from typing import Any

from blocks.inference.admission import AdmissionConfig, AdmissionController
from blocks.inference.api import BatchEngine, TextGenerator
from blocks.inference.block_manager import BlockManager
from blocks.inference.params import Completion, FinishReason, SamplingParams, TokenDelta
from blocks.inference.scheduler import Scheduler, SchedulerConfig

__all__ = [
    "AdmissionConfig",
    "AdmissionController",
    "AsyncEngine",
    "BatchEngine",
    "BlockManager",
    "Completion",
    "EngineConfig",
    "FinishReason",
    "InferenceServer",
    "LLMEngine",
    "LlamaForCausalLM",
    "ModelConfig",
    "SamplingParams",
    "Scheduler",
    "SchedulerConfig",
    "SpeculativeDecoder",
    "TextGenerator",
    "TokenDelta",
    "connect",
    "load_engine",
    "load_model",
]

_LAZY = {
    "AsyncEngine": "blocks.inference.async_engine",
    "EngineConfig": "blocks.inference.engine",
    "InferenceServer": "blocks.inference.server",
    "LLMEngine": "blocks.inference.engine",
    "LlamaForCausalLM": "blocks.inference.model",
    "ModelConfig": "blocks.inference.model",
    "SpeculativeDecoder": "blocks.inference.speculative",
    "load_engine": "blocks.inference.factory",
    "load_model": "blocks.inference.loader",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'blocks.inference' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def connect(address: str = "127.0.0.1:8000", *, token: str | None = None) -> Any:
    """An ``openai.AsyncOpenAI`` client of the server at ``address`` (``HOST:PORT``).

    The server speaks the OpenAI API, so its client is OpenAI's own (``pip install openai``);
    ``token`` is one of the server's API keys.
    """
    try:
        openai = importlib.import_module("openai")
    except ModuleNotFoundError:
        from blocks.core.errors import FailedPrecondition

        raise FailedPrecondition("blocks.inference.connect needs `pip install openai`") from None
    return openai.AsyncOpenAI(base_url=f"http://{address}/v1", api_key=token or "none")
