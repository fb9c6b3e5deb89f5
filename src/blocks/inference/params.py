"""Requests, sampling parameters and outputs: the messages that cross the engine's edge.

Theory of operation: everything a caller hands the engine is validated here, when the
dataclass is built, so the scheduler and the model runner never see a negative ``max_tokens``
or a ``top_p`` of 3. Every field has a named bound; going past one raises ``InvalidArgument``
and changes nothing. These types carry no torch and no I/O, so the scheduler, the admission
controller and the HTTP layer can share them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from blocks.core.errors import InvalidArgument
from blocks.inference.jsonschema_grammar import Grammar

__all__ = [
    "MAX_LOGIT_BIAS",
    "MAX_LOGIT_BIAS_ENTRIES",
    "MAX_LOGPROBS",
    "MAX_STOP_STRINGS",
    "MAX_STOP_STRING_CHARS",
    "MAX_STOP_TOKEN_IDS",
    "MAX_TOKENS_LIMIT",
    "Completion",
    "FinishReason",
    "SamplingParams",
    "TokenDelta",
    "TokenLogprob",
]

MAX_TOKENS_LIMIT = 32_768
MAX_STOP_STRINGS = 8
MAX_STOP_STRING_CHARS = 128
MAX_LOGPROBS = 20
MAX_STOP_TOKEN_IDS = 64
MAX_PENALTY = 100.0  # |presence_penalty|, |frequency_penalty| (OpenAI's API allows 2)
MAX_LOGIT_BIAS_ENTRIES = 300  # OpenAI's documented maximum
MAX_LOGIT_BIAS = 100.0  # |bias|; -100 bans a token, +100 forces it (one of those so biased)


class FinishReason(enum.Enum):
    """Why a request stopped producing tokens (OpenAI's ``finish_reason`` values)."""

    STOP = "stop"  # end-of-sequence token, a stop token id or a stop string
    LENGTH = "length"  # max_tokens reached, or the model's context is full
    CANCELLED = "cancelled"  # the caller cancelled (client went away)
    REJECTED = "rejected"  # admission control expired it while queued


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to pick each next token, and when to stop.

    ``temperature == 0`` means greedy (argmax; ``top_k``/``top_p``/``seed`` are ignored).
    ``top_k == 0`` and ``top_p == 1.0`` disable those filters. With a ``seed`` the sampled
    tokens depend only on the request, never on what else is batched with it (up to
    floating-point differences in the logits). ``stop`` strings end the output *before* the
    string; the string itself is never returned. ``logprobs`` asks for the chosen token's
    log-probability and the ``logprobs`` most likely alternatives at each step (under the
    model's own distribution, before penalties). ``presence_penalty`` and
    ``frequency_penalty`` follow OpenAI's definition: a token already generated ``c`` times has
    ``c * frequency_penalty + presence_penalty`` subtracted from its logit (prompt tokens do
    not count); requests with penalties never carry speculative drafts.
    ``grammar`` constrains the output to compact JSON matching it (``constrain``): each step
    samples only among tokens that keep the text a valid prefix, and an end token only once
    it is one whole value; such requests never carry drafts and cannot ``ignore_eos``.
    ``logit_bias`` (token id, bias) pairs are added to the logits before the token is picked
    (and before the reported logprobs); a bias of -100 bans the token outright and +100
    restricts the pick to the tokens biased +100. Biased requests never carry drafts and
    cannot have a grammar (a ban could empty the grammar's choices).
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    logprobs: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    grammar: Grammar | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.max_tokens, int) or not 1 <= self.max_tokens <= MAX_TOKENS_LIMIT:
            raise InvalidArgument(f"max_tokens must be an integer in [1, {MAX_TOKENS_LIMIT}]")
        if not 0.0 <= float(self.temperature) <= 100.0:
            raise InvalidArgument("temperature must be in [0, 100]")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise InvalidArgument("top_k must be an integer >= 0")
        if not 0.0 < float(self.top_p) <= 1.0:
            raise InvalidArgument("top_p must be in (0, 1]")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise InvalidArgument("seed must be a non-negative integer")
        if len(self.stop) > MAX_STOP_STRINGS:
            raise InvalidArgument(f"at most {MAX_STOP_STRINGS} stop strings")
        for text in self.stop:
            if not isinstance(text, str) or not 0 < len(text) <= MAX_STOP_STRING_CHARS:
                raise InvalidArgument(
                    f"stop strings must be non-empty and at most {MAX_STOP_STRING_CHARS} chars"
                )
        if len(self.stop_token_ids) > MAX_STOP_TOKEN_IDS:
            raise InvalidArgument(f"at most {MAX_STOP_TOKEN_IDS} stop token ids")
        if any(not isinstance(t, int) or t < 0 for t in self.stop_token_ids):
            raise InvalidArgument("stop_token_ids must be non-negative integers")
        if self.logprobs is not None and (
            not isinstance(self.logprobs, int) or not 0 <= self.logprobs <= MAX_LOGPROBS
        ):
            raise InvalidArgument(f"logprobs must be an integer in [0, {MAX_LOGPROBS}]")
        for penalty in (self.presence_penalty, self.frequency_penalty):
            if not -MAX_PENALTY <= float(penalty) <= MAX_PENALTY:
                raise InvalidArgument(f"penalties must be in [-{MAX_PENALTY}, {MAX_PENALTY}]")
        if self.grammar is not None and self.ignore_eos:
            raise InvalidArgument("a grammar-constrained request cannot ignore_eos")
        self._check_logit_bias()

    def _check_logit_bias(self) -> None:
        if len(self.logit_bias) > MAX_LOGIT_BIAS_ENTRIES:
            raise InvalidArgument(f"logit_bias has more than {MAX_LOGIT_BIAS_ENTRIES} entries")
        for token, bias in self.logit_bias:
            if isinstance(token, bool) or not isinstance(token, int) or token < 0:
                raise InvalidArgument("logit_bias keys must be non-negative token ids")
            if not -MAX_LOGIT_BIAS <= float(bias) <= MAX_LOGIT_BIAS:
                raise InvalidArgument(
                    f"logit_bias values must be in [-{MAX_LOGIT_BIAS}, {MAX_LOGIT_BIAS}]"
                )
        if self.logit_bias and self.grammar is not None:
            raise InvalidArgument("logit_bias cannot be combined with response_format or tools")

    @property
    def penalized(self) -> bool:
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """Log-probability of one generated token under the model, with the top alternatives.

    From a remote OpenAI-compatible server (``adapters.openai``) tokens arrive as text:
    ``token_id`` is -1 there, ``text`` is the token and ``top_text`` the alternatives.
    """

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()
    text: str = ""
    top_text: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class TokenDelta:
    """What one engine step added to one request: new tokens, new text, maybe the end.

    ``text`` is the newly *safe* text: incomplete UTF-8 and a tail that might still become a
    stop string are held back until they resolve. ``finish_reason`` is set on the last delta
    of a request and never before.
    """

    request_id: str
    token_ids: tuple[int, ...]
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0  # total so far, including this delta


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished request, all deltas joined."""

    request_id: str
    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    prompt_tokens: int
    logprobs: tuple[TokenLogprob, ...] = field(default=())

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)
