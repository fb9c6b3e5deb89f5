"""OpenAI request and response shapes, translated to and from the engine's types (pure).

Theory of operation: ``parse_chat`` and ``parse_completion`` turn a decoded JSON body into a
``ParsedRequest`` (prompt, ``SamplingParams``, ``n``, streaming options), raising ``ApiError``
with OpenAI's error ``type``/``param``/``code`` fields for anything the engine cannot honour:
unknown roles, out-of-range numbers (``param`` names the field), and the fields in
``_refuse_unsupported`` (legacy ``functions``, audio, ...: 400 with code
``unsupported_parameter``; harmless values such as ``modalities: ["text"]`` are accepted).
``logit_bias`` and vLLM's ``ignore_eos`` and ``stop_token_ids`` go to ``SamplingParams``;
``check_vocabulary`` refuses token ids the served model does not have.
``response_format`` and, for chat, ``tools``/``tool_choice`` become a grammar on the
sampling parameters (see ``tools``); a schema keyword the grammar cannot enforce is a 400
naming it, with ``param`` the field and code ``unsupported_schema``. The ``*_response`` and ``*_chunk`` builders produce exactly the
JSON objects OpenAI's API documents, one choice per sequence, so the official client's models
parse them: ``chat.completion``, ``chat.completion.chunk``, ``text_completion``, and a final
chunk with empty ``choices`` carrying ``usage`` when ``stream_options.include_usage`` is set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from blocks.core.errors import InvalidArgument
from blocks.core.http import HttpError
from blocks.inference import token_fields
from blocks.inference.params import MAX_TOKENS_LIMIT, Completion, SamplingParams, TokenLogprob
from blocks.inference.tools import (
    ToolsError,
    history_content,
    plan_tools,
    response_format_grammar,
)

__all__ = [
    "ApiError",
    "ParsedRequest",
    "chat_chunk",
    "chat_logprobs",
    "chat_response",
    "check_vocabulary",
    "completion_chunk",
    "completion_response",
    "error_body",
    "http_error_body",
    "parse_chat",
    "parse_completion",
    "usage",
    "usage_chunk",
]

DEFAULT_MAX_TOKENS = 256
MAX_N = 8  # choices per request; each is a sequence in the engine
MAX_API_PENALTY = 2.0  # OpenAI's range for presence_penalty and frequency_penalty


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.kind, self.param, self.code)


def error_body(
    message: str, kind: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def http_error_body(error: HttpError) -> dict[str, Any]:
    """The OpenAI-shaped body of a refusal at the HTTP layer: ``invalid_request_error``
    below 500, ``server_error`` from it, with the refusal's ``reason`` as ``code``."""
    kind = "invalid_request_error" if error.status < 500 else "server_error"
    return error_body(error.message, kind, code=error.reason)


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    prompt: str | list[int]
    params: SamplingParams
    stream: bool
    include_usage: bool
    model: str
    priority: int
    top_logprobs: int | None  # chat: how many alternatives to report, None = no logprobs
    n: int = 1
    tool_call: bool = False  # a call is forced: each choice's text is a call text (tools)

    def choice_params(self) -> list[SamplingParams]:
        """One ``SamplingParams`` per choice: a seed ``s`` becomes ``s + i`` for choice ``i``,
        so seeded choices differ from each other and repeat from request to request."""
        if self.params.seed is None:
            return [self.params] * self.n
        return [
            replace(self.params, seed=(self.params.seed + i) % (1 << 63)) for i in range(self.n)
        ]


def _number(body: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ApiError(400, f"{name} must be a number in [{low}, {high}]", param=name)
    return float(value)


def _integer(
    body: Mapping[str, Any], name: str, default: int | None, low: int, high: int
) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(400, f"{name} must be an integer in [{low}, {high}]", param=name)
    return value


def _unsupported(name: str, what: str) -> ApiError:
    return ApiError(400, f"{name}: {what}", param=name, code="unsupported_parameter")


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    """400 for fields whose meaning the engine cannot honour (harmless values pass)."""
    later = "is not supported (use tools and tool_choice)"
    if body.get("functions"):
        raise _unsupported("functions", later)
    if body.get("function_call") not in (None, "none"):
        raise _unsupported("function_call", later)
    if body.get("modalities") not in (None, ["text"]):
        raise _unsupported("modalities", 'only ["text"] is supported')
    for name in ("audio", "prediction"):
        if body.get(name) is not None:
            raise _unsupported(name, "is not supported")
    if body.get("echo"):
        raise _unsupported("echo", "is not supported")
    if body.get("suffix"):
        raise _unsupported("suffix", "is not supported")
    if body.get("best_of") not in (None, 1, body.get("n", 1)):
        raise _unsupported("best_of", "only best_of equal to n is supported")


def _common(
    body: Mapping[str, Any], logprobs: int | None
) -> tuple[SamplingParams, bool, bool, int]:
    if not isinstance(body, Mapping):
        raise ApiError(400, "request body must be a JSON object")
    _refuse_unsupported(body)
    max_tokens = _integer(body, "max_completion_tokens", None, 1, MAX_TOKENS_LIMIT)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", DEFAULT_MAX_TOKENS, 1, MAX_TOKENS_LIMIT)
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (
        not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)
    ):
        raise ApiError(400, "stop must be a string or a list of strings", param="stop")
    stream = body.get("stream", False)
    options = body.get("stream_options") or {}
    if not isinstance(stream, bool) or not isinstance(options, Mapping):
        raise ApiError(400, "stream must be a boolean and stream_options an object", param="stream")
    penalty = (-MAX_API_PENALTY, MAX_API_PENALTY)
    try:
        params = SamplingParams(
            max_tokens=max_tokens or DEFAULT_MAX_TOKENS,
            temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
            top_p=_number(body, "top_p", 1.0, 1e-9, 1.0),
            top_k=_integer(body, "top_k", 0, 0, 1 << 20) or 0,
            seed=_integer(body, "seed", None, 0, (1 << 63) - 1),
            stop=tuple(stop or ()),
            logprobs=logprobs,
            presence_penalty=_number(body, "presence_penalty", 0.0, *penalty),
            frequency_penalty=_number(body, "frequency_penalty", 0.0, *penalty),
            grammar=response_format_grammar(body),
            logit_bias=token_fields.logit_bias(body),
            ignore_eos=token_fields.flag(body, "ignore_eos"),
            stop_token_ids=token_fields.stop_token_ids(body),
        )
    except token_fields.FieldError as error:
        raise ApiError(400, str(error), param=error.param) from None
    except ToolsError as error:
        raise ApiError(400, str(error), param=error.param, code="unsupported_schema") from None
    except InvalidArgument as error:
        raise ApiError(400, str(error), param=token_fields.param_of(str(error))) from None
    priority = _integer(body, "priority", 0, 0, 15) or 0
    return params, stream, bool(options.get("include_usage", False)), priority


def check_vocabulary(params: SamplingParams, vocab_size: int) -> None:
    """400 naming the field when a token id is outside the served model's vocabulary."""
    try:
        token_fields.check_vocabulary(params, vocab_size)
    except token_fields.FieldError as error:
        raise ApiError(400, str(error), param=error.param) from None


def parse_chat(body: Any) -> tuple[list[dict[str, str]], ParsedRequest]:
    """Messages and the parsed request of a ``/v1/chat/completions`` body."""
    if not isinstance(body, Mapping):
        raise ApiError(400, "request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list", param="messages")
    clean: list[dict[str, str]] = []
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
        role = message.get("role") if isinstance(message, Mapping) else None
        if role == "developer":
            role = "system"
        if role == "assistant" and message.get("tool_calls"):
            content = _tool_history(message)
        if role not in ("system", "user", "assistant", "tool") or not isinstance(content, str):
            raise ApiError(
                400, "each message needs a supported role and text content", param="messages"
            )
        clean.append({"role": role, "content": content})
    top = None
    if body.get("logprobs") is True:
        top = _integer(body, "top_logprobs", 0, 0, 20) or 0
    params, stream, include_usage, priority = _common(body, top)
    try:
        plan = plan_tools(body)
    except ToolsError as error:
        raise ApiError(400, str(error), param=error.param, code="unsupported_schema") from None
    if plan.forced:  # the call outranks response_format
        try:
            params = replace(params, grammar=plan.grammar)
        except InvalidArgument as error:  # ignore_eos or logit_bias with a forced call
            raise ApiError(400, str(error), param=token_fields.param_of(str(error))) from None
        clean = _with_system(clean, plan.instructions)
    parsed = ParsedRequest(
        "", params, stream, include_usage, _model(body), priority, top, _n(body), plan.forced
    )
    return clean, parsed


def _tool_history(message: Mapping[str, Any]) -> str:
    try:
        return history_content(message)
    except ToolsError as error:
        raise ApiError(400, str(error), param="messages") from None


def _with_system(messages: list[dict[str, str]], text: str) -> list[dict[str, str]]:
    """``messages`` with ``text`` added to the first system message (or a new one)."""
    if messages[0]["role"] == "system":
        first = {"role": "system", "content": f"{messages[0]['content']} {text}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def parse_completion(body: Any) -> ParsedRequest:
    if not isinstance(body, Mapping):
        raise ApiError(400, "request body must be a JSON object")
    raw = body.get("prompt")
    if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], str):
        raw = raw[0]
    prompt: str | list[int]
    if isinstance(raw, str) and raw:
        prompt = raw
    elif (
        isinstance(raw, list)
        and raw
        and all(isinstance(t, int) and not isinstance(t, bool) for t in raw)
    ):
        prompt = list(raw)
    else:
        raise ApiError(
            400, "prompt must be a non-empty string or a list of token ids", param="prompt"
        )
    if body.get("tools") or body.get("tool_choice") not in (None, "none"):
        raise _unsupported("tools", "tools and tool_choice are for chat completions only")
    logprobs = _integer(body, "logprobs", None, 0, 20)
    params, stream, include_usage, priority = _common(body, logprobs)
    return ParsedRequest(
        prompt, params, stream, include_usage, _model(body), priority, logprobs, _n(body)
    )


def _n(body: Mapping[str, Any]) -> int:
    n = _integer(body, "n", 1, 1, MAX_N)
    assert n is not None
    return n


def _model(body: Mapping[str, Any]) -> str:
    """The requested model's id; "" (the served model) when the field is absent."""
    model = body.get("model", "")
    if not isinstance(model, str):
        raise ApiError(400, "model must be a string", param="model")
    return model


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_logprobs(entries: Sequence[TokenLogprob], decode: Any) -> dict[str, Any]:
    def item(token_id: int, logprob: float) -> dict[str, Any]:
        text = decode([token_id])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    return {
        "content": [
            {**item(e.token_id, e.logprob), "top_logprobs": [item(t, lp) for t, lp in e.top]}
            for e in entries
        ]
    }


def _completion_logprobs(entries: Sequence[TokenLogprob], decode: Any) -> dict[str, Any]:
    return {
        "tokens": [decode([e.token_id]) for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{decode([t]): lp for t, lp in e.top} for e in entries],
        "text_offset": [],
    }


def chat_response(
    rid: str,
    created: int,
    model: str,
    dones: Sequence[Completion],
    want_logprobs: bool,
    decode: Any,
) -> dict[str, Any]:
    """A ``chat.completion`` with one choice per finished sequence, in order."""
    choices = _choices(
        dones,
        "message",
        lambda done: {"role": "assistant", "content": done.text},
        (lambda done: chat_logprobs(done.logprobs, decode)) if want_logprobs else None,
    )
    return _envelope(rid, "chat.completion", created, model, choices, _usage_of(dones))


def _choices(
    dones: Sequence[Completion],
    content_field: str,
    content: Callable[[Completion], Any],
    logprobs: Callable[[Completion], dict[str, Any]] | None,
) -> list[dict[str, Any]]:
    """A whole answer's choices, one per finished sequence, in order: its ``content_field``
    is ``content(done)``, its ``logprobs`` ``logprobs(done)`` (``None`` when not asked)."""
    return [
        {
            "index": index,
            content_field: content(done),
            "finish_reason": done.finish_reason.value,
            "logprobs": logprobs(done) if logprobs is not None else None,
        }
        for index, done in enumerate(dones)
    ]


def _envelope(
    rid: str,
    obj: str,
    created: int,
    model: str,
    choices: list[dict[str, Any]],
    usage_fields: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The fields every response and chunk object carries, in OpenAI's order; ``usage``
    only when given (whole answers and the final usage chunk)."""
    body: dict[str, Any] = {
        "id": rid,
        "object": obj,
        "created": created,
        "model": model,
        "choices": choices,
    }
    if usage_fields is not None:
        body["usage"] = usage_fields
    return body


def _usage_of(dones: Sequence[Completion]) -> dict[str, int]:
    """The prompt counted once (the choices share it), every choice's tokens summed."""
    return usage(dones[0].prompt_tokens, sum(d.completion_tokens for d in dones))


def chat_chunk(
    rid: str,
    created: int,
    model: str,
    delta: dict[str, str],
    finish_reason: str | None,
    logprobs: dict[str, Any] | None = None,
    index: int = 0,
) -> dict[str, Any]:
    choice = {"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": logprobs}
    return _envelope(rid, "chat.completion.chunk", created, model, [choice])


def completion_response(
    rid: str,
    created: int,
    model: str,
    dones: Sequence[Completion],
    want_logprobs: bool,
    decode: Any,
) -> dict[str, Any]:
    """A ``text_completion`` with one choice per finished sequence, in order."""
    choices = _choices(
        dones,
        "text",
        lambda done: done.text,
        (lambda done: _completion_logprobs(done.logprobs, decode)) if want_logprobs else None,
    )
    return _envelope(rid, "text_completion", created, model, choices, _usage_of(dones))


def completion_chunk(
    rid: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str | None,
    index: int = 0,
    logprobs: Sequence[TokenLogprob] | None = None,
    decode: Any = None,
) -> dict[str, Any]:
    """One streamed ``text_completion`` chunk; ``logprobs`` (with ``decode``) are this chunk's
    tokens' entries, in the non-streamed answer's shape."""
    lp = None if logprobs is None else _completion_logprobs(logprobs, decode)
    choice = {"index": index, "text": text, "finish_reason": finish_reason, "logprobs": lp}
    return _envelope(rid, "text_completion", created, model, [choice])


def usage_chunk(
    rid: str, created: int, model: str, obj: str, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    return _envelope(rid, obj, created, model, [], usage(prompt_tokens, completion_tokens))
