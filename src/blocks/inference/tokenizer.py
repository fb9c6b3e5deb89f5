"""Tokenizers: byte-level BPE from a GGUF's vocabulary, a character tokenizer for tests,
incremental detokenization and the chat template.

Theory of operation: a GGUF file of a GPT-2-style model carries its vocabulary
(``tokenizer.ggml.tokens``, already in byte-level form such as ``Ġthe``), its merge list and
token types (type 3 marks control tokens such as ``<|im_end|>``). Those feed the
``tokenizers`` library's BPE model directly; the pre-tokenizer splits digits one by one and
then applies the GPT-2 byte-level regex (``tokenizer.ggml.pre == "smollm"``), and control
tokens are added as special tokens so they are matched whole and never merged.

Streaming text needs care: one token may hold half of a UTF-8 character. The
``IncrementalDetokenizer`` decodes a short window of recent tokens and only emits text once
it no longer ends in a replacement character, so every delta is valid text and the deltas
join to exactly ``decode(all tokens)`` (for tokenizers whose decoding is prefix-stable, which
byte-level BPE is).

The chat template is the Jinja2 template stored in the file, rendered in a sandbox; a model
without one gets ChatML.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from blocks.core.errors import InvalidArgument

__all__ = [
    "CHATML_TEMPLATE",
    "BPETokenizer",
    "CharTokenizer",
    "IncrementalDetokenizer",
    "TokenizerLike",
    "render_chat",
    "special_text",
]

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MAX_MESSAGES = 256
MAX_TEXT_CHARS = 1 << 20
CONTROL_TOKEN_TYPE = 3


class TokenizerLike(Protocol):
    """What the engine needs from a tokenizer."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def eos_token_ids(self) -> tuple[int, ...]: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...

    def apply_chat_template(self, messages: Sequence[Mapping[str, str]]) -> str: ...


def render_chat(
    template: str,
    messages: Sequence[Mapping[str, str]],
    *,
    bos_token: str = "",
    eos_token: str = "",
) -> str:
    """Render ``messages`` (``role``/``content`` dicts) with a Jinja2 chat template.

    Templates see ``messages``, ``add_generation_prompt``, ``bos_token``, ``eos_token`` and
    ``raise_exception(message)``; what a template refuses, or fails to render, is an
    ``InvalidArgument`` carrying its message.
    """
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    if not messages or len(messages) > MAX_MESSAGES:
        raise InvalidArgument(f"messages must hold 1 to {MAX_MESSAGES} entries")
    clean: list[dict[str, str]] = []
    for message in messages:
        role, content = message.get("role"), message.get("content")
        if role not in ("system", "user", "assistant", "tool") or not isinstance(content, str):
            raise InvalidArgument("each message needs a role (system/user/assistant/tool) and text")
        clean.append({"role": role, "content": content})
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message: str) -> None:
        raise InvalidArgument(f"chat template: {message}")

    try:
        return env.from_string(template).render(
            messages=clean,
            add_generation_prompt=True,
            bos_token=bos_token,
            eos_token=eos_token,
            raise_exception=raise_exception,
        )
    except TemplateError as error:
        raise InvalidArgument(f"chat template failed: {error}") from None


def special_text(tokens: Sequence[str], token_id: int | None) -> str:
    """The text of ``tokens[token_id]``, or "" when there is no such token."""
    return tokens[token_id] if token_id is not None and 0 <= token_id < len(tokens) else ""


class BPETokenizer:
    """Byte-level BPE built from a vocabulary and merges (as a GGUF file stores them)."""

    def __init__(
        self,
        tokens: Sequence[str],
        merges: Sequence[str],
        token_types: Sequence[int] = (),
        *,
        eos_token_ids: tuple[int, ...] = (),
        bos_token_id: int | None = None,
        chat_template: str | None = None,
        split_digits: bool = True,
    ) -> None:
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

        vocab = {token: index for index, token in enumerate(tokens)}
        pairs = [tuple(m.split(" ", 1)) for m in merges]
        bpe = models.BPE(vocab=vocab, merges=pairs, fuse_unk=False)  # type: ignore[arg-type]
        tokenizer = Tokenizer(bpe)
        splitters: list[Any] = []
        if split_digits:
            splitters.append(pre_tokenizers.Digits(individual_digits=True))
        splitters.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(splitters)
        tokenizer.decoder = decoders.ByteLevel()
        control = [
            AddedToken(tokens[i], special=True, normalized=False)
            for i, kind in enumerate(token_types)
            if kind == CONTROL_TOKEN_TYPE
        ]
        tokenizer.add_special_tokens(control)
        self._tokenizer = tokenizer
        self._vocab_size = len(tokens)
        self._eos = eos_token_ids
        self.bos_token_id = bos_token_id
        self.chat_template = chat_template or CHATML_TEMPLATE
        self.tokens = list(tokens)

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        return self._eos

    def encode(self, text: str) -> list[int]:
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidArgument(f"text longer than {MAX_TEXT_CHARS} characters")
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(token_ids), skip_special_tokens=False))

    def apply_chat_template(self, messages: Sequence[Mapping[str, str]]) -> str:
        return render_chat(
            self.chat_template,
            messages,
            bos_token=special_text(self.tokens, self.bos_token_id),
            eos_token=special_text(self.tokens, self._eos[0] if self._eos else None),
        )


class CharTokenizer:
    """One token per printable ASCII character; id 0 is end-of-sequence. For tests."""

    def __init__(self) -> None:
        self._first = 32  # ' '

    @property
    def vocab_size(self) -> int:
        return 96

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        return (0,)

    def encode(self, text: str) -> list[int]:
        ids = [ord(ch) - self._first + 1 for ch in text]
        if any(not 1 <= i <= 95 for i in ids):
            raise InvalidArgument("CharTokenizer takes printable ASCII only")
        return ids

    def decode(self, token_ids: Sequence[int]) -> str:
        return "".join(chr(i - 1 + self._first) for i in token_ids if 1 <= i <= 95)

    def apply_chat_template(self, messages: Sequence[Mapping[str, str]]) -> str:
        lines = [f"{m.get('role')}: {m.get('content')}" for m in messages]
        return " | ".join([*lines, "assistant: "])


class IncrementalDetokenizer:
    """Turns a growing token list into text deltas that are always whole characters."""

    WINDOW = 6  # tokens of context re-decoded before the new ones

    def __init__(self, tokenizer: TokenizerLike) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def push(self, token_ids: Sequence[int]) -> str:
        """Add tokens; return the newly complete text (possibly empty)."""
        self._ids.extend(token_ids)
        before = self._tokenizer.decode(self._ids[self._prefix : self._read])
        after = self._tokenizer.decode(self._ids[self._prefix :])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        delta = after[len(before) :]
        self._read = len(self._ids)
        self._prefix = max(0, self._read - self.WINDOW)
        return delta

    def flush(self) -> str:
        """Whatever is still held back (at the end of a request)."""
        before = self._tokenizer.decode(self._ids[self._prefix : self._read])
        after = self._tokenizer.decode(self._ids[self._prefix :])
        self._read = len(self._ids)
        return after[len(before) :] if len(after) > len(before) else ""
