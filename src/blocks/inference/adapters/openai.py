"""``OpenAIGenerator``: the ``TextGenerator`` API on any OpenAI-compatible server.

Theory of operation
-------------------
``stream(prompt, params)`` is one streamed ``POST /v1/completions`` through the official
``openai`` client (``AsyncOpenAI``): a text prompt or a list of token ids, the sampling
parameters OpenAI's API has (``max_tokens``, ``temperature``, ``top_p``, ``seed``, ``stop``,
the two penalties, ``logit_bias`` keyed by token id as a string, ``logprobs``) as its
fields, and ``stream_options.include_usage`` so the last chunk carries the token counts. Each chunk's text becomes a ``TokenDelta``; the chunk that carries
``finish_reason`` is held until the usage chunk after it, so the final delta has both.
Closing the iterator closes the HTTP response, which cancels the request on servers that
watch their connections (ours does).

Why the official client: it owns the SSE parsing, the error classes by status and the
``Retry-After`` headers, and it is the client users of these servers already run; plain HTTP
would repeat all of it. Retries are off by default (``max_retries=0``): the caller decides,
with ``Overloaded.retry_after_ms``.

What the OpenAI API does not carry:

* token ids: deltas have ``token_ids == ()`` and text only; ``Completion.token_ids`` is empty,
  so ``Completion.completion_tokens`` is 0: the count is the final delta's
  ``completion_tokens`` (from the usage chunk). Streamed logprobs name their tokens by text
  too: each ``TokenLogprob`` has ``token_id == -1`` (unknown), the token's text in
  ``text`` and the alternatives in ``top_text`` (``top`` stays empty);
* ``top_k``, ``ignore_eos``, ``stop_token_ids`` and ``priority`` go as extension fields
  (vLLM's names; ``extensions=False`` refuses them instead): a server that does not know a
  field may ignore it (``blocks inference serve`` honours all four);
* ``grammar`` is refused with ``InvalidArgument``.

Errors: every ``openai`` exception leaves as the block's error (``inference_error``):
400/422 ``InvalidArgument``, 401 ``Unauthenticated``, 403 ``PermissionDenied``, 404
``NotFound``, 409 ``Conflict``, 429 ``Overloaded`` with ``retry_after_ms`` from the
server's headers, 5xx and no connection ``Unavailable``, no answer in time ``Timeout``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import openai

from blocks.core.errors import (
    BlocksError,
    Conflict,
    InvalidArgument,
    NotFound,
    Overloaded,
    PeerError,
    PermissionDenied,
    Timeout,
    Unauthenticated,
    Unavailable,
)
from blocks.inference.params import (
    Completion,
    FinishReason,
    SamplingParams,
    TokenDelta,
    TokenLogprob,
)

__all__ = ["PROMPT_TOKENS_MAX", "OpenAIGenerator", "inference_error", "request_body"]

PROMPT_TOKENS_MAX = 1 << 20
"""The most token ids (or characters) a prompt may hold before it is refused unsent."""
RETRY_AFTER_MS_MAX = 3_600_000
_FINISH = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "content_filter": FinishReason.STOP,  # OpenAI's own: the server ended it on purpose
}


def _retry_after_ms(error: openai.APIStatusError) -> int:
    headers = error.response.headers
    for name, scale in (("retry-after-ms", 1.0), ("retry-after", 1000.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return min(RETRY_AFTER_MS_MAX, max(0, int(float(value) * scale)))
            except ValueError:
                continue
    return 0


def inference_error(error: openai.OpenAIError) -> BlocksError:
    """The block's error for an exception the ``openai`` client raised."""
    if isinstance(error, openai.APITimeoutError):
        return Timeout(f"the inference server did not answer in time: {error}")
    if isinstance(error, openai.APIConnectionError):
        return Unavailable(f"the inference server is unreachable: {error}")
    if isinstance(error, openai.RateLimitError):
        return Overloaded(str(error), retry_after_ms=_retry_after_ms(error))
    if isinstance(error, openai.APIStatusError):
        status = error.status_code
        kinds: dict[int, type[BlocksError]] = {
            400: InvalidArgument,
            401: Unauthenticated,
            403: PermissionDenied,
            404: NotFound,
            409: Conflict,
            422: InvalidArgument,
        }
        kind = kinds.get(status, Unavailable if status >= 500 else PeerError)
        return kind(f"inference server {status}: {error.message}", status=status)
    return PeerError(f"inference server: {error}")


def request_body(
    prompt: str | Sequence[int], params: SamplingParams, *, extensions: bool, priority: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``completions.create`` arguments and the extension fields for one request."""
    if isinstance(prompt, str):
        if not prompt:
            raise InvalidArgument("the prompt is empty")
        wire_prompt: str | list[int] = prompt
    else:
        wire_prompt = list(prompt)
        if not wire_prompt or any(
            isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in wire_prompt
        ):
            raise InvalidArgument("a token prompt is a non-empty list of token ids >= 0")
    if len(wire_prompt) > PROMPT_TOKENS_MAX:
        raise InvalidArgument(f"a prompt longer than {PROMPT_TOKENS_MAX}")
    if getattr(params, "grammar", None) is not None:
        raise InvalidArgument("grammar-constrained output is not carried by this adapter")
    arguments: dict[str, Any] = {
        "prompt": wire_prompt,
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
    }
    if params.seed is not None:
        arguments["seed"] = params.seed
    if params.stop:
        arguments["stop"] = list(params.stop)
    if params.logit_bias:
        arguments["logit_bias"] = {str(token): bias for token, bias in params.logit_bias}
    if params.logprobs is not None:
        arguments["logprobs"] = params.logprobs
    extra: dict[str, Any] = {}
    if params.top_k:
        extra["top_k"] = params.top_k
    if params.ignore_eos:
        extra["ignore_eos"] = True
    if params.stop_token_ids:
        extra["stop_token_ids"] = list(params.stop_token_ids)
    if priority:
        extra["priority"] = priority
    if extra and not extensions:
        raise InvalidArgument(f"{sorted(extra)} are not OpenAI API fields (extensions off)")
    return arguments, extra


class OpenAIGenerator:
    """A ``TextGenerator`` on the server at ``base_url`` (``http://host:port/v1``).

    ``model`` names the model in every request (``""``: the server's own choice, which our
    server and vLLM accept when they serve one). ``client`` replaces the ``AsyncOpenAI`` the
    generator would build. Use from one event loop; ``close()`` releases the connections.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str = "",
        model: str = "",
        timeout_s: float = 60.0,
        max_retries: int = 0,
        extensions: bool = True,
        client: openai.AsyncOpenAI | None = None,
    ) -> None:
        self._client = client or openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "unused",
            timeout=timeout_s,
            max_retries=max_retries,
        )
        self.model = model
        self.extensions = extensions

    async def stream(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams,
        *,
        api_key: str = "",
        priority: int = 0,
    ) -> AsyncIterator[TokenDelta]:
        """Deltas of one streamed completion; the last has ``finish_reason`` and the usage.

        Raises the block's errors on the first iteration (the request is sent then) or
        later: ``Unavailable`` when the stream ends without a ``finish_reason``."""
        arguments, extra = request_body(
            prompt, params, extensions=self.extensions, priority=priority
        )
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        request_id = f"cmpl-{uuid.uuid4().hex[:12]}"
        held: TokenDelta | None = None
        try:
            chunks = await self._client.completions.create(
                model=self.model,
                stream=True,
                stream_options={"include_usage": True},
                extra_body=extra or None,
                extra_headers=headers,
                **arguments,
            )
            async with chunks:
                async for chunk in chunks:
                    request_id = chunk.id or request_id
                    if chunk.usage is not None and held is not None:
                        usage = chunk.usage
                        held = _with_usage(held, usage.prompt_tokens, usage.completion_tokens)
                    for choice in chunk.choices:
                        if held is not None and choice.text:
                            raise PeerError("the inference server sent text after the finish")
                        finish = _finish_reason(choice.finish_reason)
                        delta = TokenDelta(
                            request_id,
                            (),
                            choice.text or "",
                            _logprobs(choice.logprobs),
                            finish_reason=finish,
                        )
                        if finish is None:
                            if delta.text or delta.logprobs:
                                yield delta
                        else:
                            held = delta
        except openai.OpenAIError as error:
            raise inference_error(error) from error
        if held is None:
            raise Unavailable("the completion stream ended before its finish_reason")
        yield held

    async def complete(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams,
        *,
        api_key: str = "",
        priority: int = 0,
    ) -> Completion:
        """The whole completion (streamed, then joined). ``token_ids`` is empty; ``logprobs``
        (when asked) name tokens by text, see the module docstring."""
        texts: list[str] = []
        logprobs: list[TokenLogprob] = []
        async for delta in self.stream(prompt, params, api_key=api_key, priority=priority):
            texts.append(delta.text)
            logprobs.extend(delta.logprobs)
            if delta.finish_reason is not None:
                return Completion(
                    delta.request_id,
                    "".join(texts),
                    (),
                    delta.finish_reason,
                    delta.prompt_tokens,
                    tuple(logprobs),
                )
        raise AssertionError("stream() always ends with a finish_reason")

    async def close(self) -> None:
        await self._client.close()


def _finish_reason(value: str | None) -> FinishReason | None:
    if value is None:
        return None
    reason = _FINISH.get(value)
    if reason is None:
        raise PeerError(f"unknown finish_reason {value!r} from the inference server")
    return reason


def _logprobs(wire: Any) -> tuple[TokenLogprob, ...]:
    """A chunk's ``logprobs`` (``tokens``, ``token_logprobs``, ``top_logprobs``), by text."""
    if wire is None:
        return ()
    tokens = wire.tokens or []
    values = wire.token_logprobs or []
    tops = wire.top_logprobs or [None] * len(tokens)
    if not len(tokens) == len(values) == len(tops):
        raise PeerError("the inference server sent logprobs of mismatched lengths")
    return tuple(
        TokenLogprob(
            -1,
            float(value),
            text=str(token),
            top_text=tuple((str(t), float(v)) for t, v in (top or {}).items()),
        )
        for token, value, top in zip(tokens, values, tops, strict=True)
    )


def _with_usage(delta: TokenDelta, prompt_tokens: int, completion_tokens: int) -> TokenDelta:
    return TokenDelta(
        delta.request_id,
        delta.token_ids,
        delta.text,
        delta.logprobs,
        delta.finish_reason,
        prompt_tokens,
        completion_tokens,
    )
