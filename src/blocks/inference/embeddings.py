"""``POST /v1/embeddings``: one vector per input from the served decoder itself.

Theory of operation: the vector of an input is the mean of the served model's final hidden
states (after its last RMSNorm) over the input's tokens, L2-normalised, in float32: the
usual pooling for a decoder-only model, so every model the server loads answers (a
dedicated sentence model, such as ``blocks.search.embed.MiniLMEmbedder``, ranks sentences
better; this endpoint is for clients that need vectors from the same server).
Each input runs alone through one causal forward pass over a scratch KV cache of its own
length, in a worker thread, so the engine's paged cache and its scheduled steps are never
touched; one embedding request computes at a time (a lock), which bounds the scratch
memory to one input.

The request follows OpenAI's: ``input`` is a string, a list of strings, a list of token ids
or a list of such lists; ``encoding_format`` is ``float`` (lists of numbers) or ``base64``
(little-endian float32 bytes, what the official client asks for by default);
``dimensions`` is accepted only when it equals the model's width (nothing is truncated).
Bounds: ``MAX_EMBEDDING_INPUTS`` inputs per request, ``MAX_EMBEDDING_INPUT_TOKENS`` tokens
per input (and the served context); going past either is a 400 naming the limit.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from blocks.core.errors import InvalidArgument
from blocks.inference.engine import LLMEngine
from blocks.inference.model import LlamaForCausalLM
from blocks.inference.openai_api import ApiError
from blocks.inference.runner import build_batch
from blocks.inference.scheduler import ScheduledChunk

__all__ = [
    "MAX_EMBEDDING_INPUTS",
    "MAX_EMBEDDING_INPUT_TOKENS",
    "EmbeddingRequest",
    "answer_embeddings",
    "embed_tokens",
    "parse_embeddings",
]

MAX_EMBEDDING_INPUTS = 64  # inputs per request
MAX_EMBEDDING_INPUT_TOKENS = 2048  # tokens per input (the served context may be less)

Input = str | tuple[int, ...]


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    inputs: tuple[Input, ...]
    base64: bool  # encoding_format == "base64"
    model: str
    dimensions: int | None


def _input_error(message: str) -> ApiError:
    return ApiError(400, message, param="input")


def _is_ids(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value
    )


def parse_embeddings(body: Any) -> EmbeddingRequest:
    """The request of an ``/v1/embeddings`` body; ``ApiError`` (400 naming the field)."""
    if not isinstance(body, Mapping):
        raise ApiError(400, "request body must be a JSON object")
    raw = body.get("input")
    inputs: list[Any]
    if isinstance(raw, str) or (_is_ids(raw) and raw):
        inputs = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(x, str) or _is_ids(x) for x in raw):
        inputs = list(raw)
    else:
        raise _input_error(
            "input must be a string, a list of strings, or a list of token ids (or of such lists)"
        )
    if len(inputs) > MAX_EMBEDDING_INPUTS:
        raise _input_error(f"at most {MAX_EMBEDDING_INPUTS} inputs per request")
    if any(len(x) == 0 for x in inputs):
        raise _input_error("an input is empty")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise ApiError(400, "encoding_format must be 'float' or 'base64'", param="encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)):
        raise ApiError(400, "dimensions must be an integer", param="dimensions")
    model = body.get("model", "")
    if not isinstance(model, str):
        raise ApiError(400, "model must be a string", param="model")
    return EmbeddingRequest(
        tuple(x if isinstance(x, str) else tuple(x) for x in inputs),
        encoding == "base64",
        model,
        dimensions,
    )


@torch.inference_mode()
def embed_tokens(model: LlamaForCausalLM, token_ids: Sequence[int]) -> torch.Tensor:
    """The unit-length float32 vector ``(width,)`` of one input: mean-pooled final hidden
    states of a causal pass over a scratch cache (the engine's cache is not touched)."""
    count = len(token_ids)
    assert 0 < count <= model.config.max_position
    chunk = ScheduledChunk(0, 0, tuple(token_ids), (0,), sample=False)
    ids, batch, _ = build_batch([chunk], count, model.device)
    hidden = model(ids, batch, model.new_kv_cache(count))
    mean = hidden.float().mean(dim=0)
    unit: torch.Tensor = mean / mean.norm().clamp_min(1e-12)
    return unit.cpu()


def _tokenize(engine: LLMEngine, item: Input, index: int, limit: int) -> list[int]:
    try:
        ids = engine.tokenizer.encode(item) if isinstance(item, str) else list(item)
    except InvalidArgument as error:
        raise _input_error(f"input {index}: {error}") from None
    vocab = engine.model.config.vocab_size
    if not ids or any(not 0 <= t < vocab for t in ids):
        raise _input_error(f"input {index}: token ids must be in [0, {vocab})")
    if len(ids) > limit:
        raise _input_error(f"input {index} has {len(ids)} tokens; at most {limit} tokens per input")
    return ids


def _encode(vector: torch.Tensor, as_base64: bool) -> list[float] | str:
    if as_base64:
        data = vector.to(torch.float32).numpy().astype("<f4").tobytes()
        return base64.b64encode(data).decode("ascii")
    return [float(v) for v in vector.tolist()]


async def answer_embeddings(
    body: Any, engine: LLMEngine, model_name: str, lock: asyncio.Lock
) -> dict[str, Any]:
    """The whole ``list`` response to one ``/v1/embeddings`` body; ``ApiError`` for bad input
    (404 ``model_not_found`` for another model's name)."""
    request = parse_embeddings(body)
    if request.model and request.model != model_name:
        raise ApiError(
            404,
            f"The model '{request.model}' does not exist; this server has '{model_name}'.",
            param="model",
            code="model_not_found",
        )
    width = engine.model.config.hidden_size
    if request.dimensions is not None and request.dimensions != width:
        raise ApiError(
            400,
            f"dimensions: only the model's width ({width}) is supported",
            param="dimensions",
            code="unsupported_parameter",
        )
    limit = min(MAX_EMBEDDING_INPUT_TOKENS, engine.config.max_model_len)
    token_lists = [_tokenize(engine, x, i, limit) for i, x in enumerate(request.inputs)]
    async with lock:
        vectors = [await asyncio.to_thread(embed_tokens, engine.model, ids) for ids in token_lists]
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode(v, request.base64)}
            for i, v in enumerate(vectors)
        ],
        "model": model_name,
        "usage": {
            "prompt_tokens": sum(map(len, token_lists)),
            "total_tokens": sum(map(len, token_lists)),
        },
    }
