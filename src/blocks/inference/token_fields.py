"""Request fields that speak in token ids: ``logit_bias``, ``ignore_eos``, ``stop_token_ids``.

Theory of operation: OpenAI's ``logit_bias`` (``{"token id": bias}``, at most 300 entries,
biases in [-100, 100]) and vLLM's extensions ``ignore_eos`` (a boolean) and
``stop_token_ids`` (a list of ids) are read from a decoded JSON body into the values
``SamplingParams`` takes. Pure functions; a malformed field raises ``FieldError`` naming
it, which the OpenAI layer turns into a 400 with that ``param``. Whether an id exists
depends on the served model, so ``check_vocabulary`` runs once the model is known.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from blocks.inference.params import (
    MAX_LOGIT_BIAS,
    MAX_LOGIT_BIAS_ENTRIES,
    MAX_STOP_TOKEN_IDS,
    SamplingParams,
)

__all__ = [
    "FieldError",
    "check_vocabulary",
    "flag",
    "logit_bias",
    "param_of",
    "stop_token_ids",
]

MAX_TOKEN_ID_DIGITS = 12  # a longer key cannot be an id of any vocabulary we serve


class FieldError(ValueError):
    """A request field is malformed; ``param`` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def param_of(message: str) -> str | None:
    """The field an ``InvalidArgument`` from ``SamplingParams`` is about, when it names one."""
    for name in ("logit_bias", "ignore_eos", "stop_token_ids"):
        if message.startswith(name) or f" {name}" in message:
            return name
    return None


def flag(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise FieldError(name, f"{name} must be a boolean")
    return value


def logit_bias(body: Mapping[str, Any]) -> tuple[tuple[int, float], ...]:
    """``{"token id": bias}`` as pairs sorted by id; ``FieldError`` when malformed."""
    raw = body.get("logit_bias")
    if raw is None:
        return ()
    if not isinstance(raw, Mapping) or len(raw) > MAX_LOGIT_BIAS_ENTRIES:
        raise FieldError(
            "logit_bias",
            f"logit_bias must map at most {MAX_LOGIT_BIAS_ENTRIES} token ids to biases",
        )
    pairs: dict[int, float] = {}
    for key, value in raw.items():
        text = str(key)
        if not text.isdecimal() or len(text) > MAX_TOKEN_ID_DIGITS:
            raise FieldError("logit_bias", f"logit_bias key {text!r} is not a token id")
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not -MAX_LOGIT_BIAS <= value <= MAX_LOGIT_BIAS
        ):
            raise FieldError(
                "logit_bias",
                f"logit_bias values must be numbers in [-{MAX_LOGIT_BIAS:g}, {MAX_LOGIT_BIAS:g}]",
            )
        pairs[int(text)] = float(value)
    return tuple(sorted(pairs.items()))


def stop_token_ids(body: Mapping[str, Any]) -> tuple[int, ...]:
    raw = body.get("stop_token_ids")
    if raw is None:
        return ()
    if (
        not isinstance(raw, list)
        or len(raw) > MAX_STOP_TOKEN_IDS
        or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in raw)
    ):
        raise FieldError(
            "stop_token_ids",
            f"stop_token_ids must be a list of at most {MAX_STOP_TOKEN_IDS} token ids",
        )
    return tuple(raw)


def check_vocabulary(params: SamplingParams, vocab_size: int) -> None:
    """``FieldError`` when ``logit_bias`` or ``stop_token_ids`` has an id the served model's
    vocabulary lacks, or when ``logit_bias`` bans every token."""
    for name, ids in (
        ("logit_bias", [t for t, _ in params.logit_bias]),
        ("stop_token_ids", list(params.stop_token_ids)),
    ):
        if any(t >= vocab_size for t in ids):
            raise FieldError(
                name, f"{name}: token ids must be below the vocabulary size {vocab_size}"
            )
    if sum(1 for _, bias in params.logit_bias if bias <= -MAX_LOGIT_BIAS) >= vocab_size:
        raise FieldError("logit_bias", "logit_bias bans every token")
