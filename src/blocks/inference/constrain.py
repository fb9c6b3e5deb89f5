"""Token masks from a JSON grammar: which tokens keep the output a valid prefix (no I/O).

Theory of operation: ``Vocabulary`` is built once per tokenizer: the bytes each token adds to
the text (``token_bytes``), the usable tokens sorted by their bytes with the common-prefix
length of each with the one before (a trie laid flat), and, for the common case of being
inside an unconstrained string, the *string-safe* tokens (no quote, backslash or control
byte, whole UTF-8) with their length in characters. ``Constraint`` follows one sequence:

* ``mask()`` walks the sorted tokens with the automaton, reusing the state reached on the
  shared prefix of consecutive tokens and, when a byte is rejected, jumping (bisect) past
  every token that starts with the rejected prefix, so structural positions (after ``{``,
  ``:``, inside a number or an enum) cost a few hundred automaton steps, not one per token.
  Inside a string the string-safe tokens are taken by one tensor comparison (their length
  against ``maxLength``) and only the other tokens are walked. End tokens are allowed
  exactly when the text is one whole value. Masks are cached per state
  (``MAX_CACHED_MASKS``, least recently used out), since states repeat (every value start
  under the same parent looks the same).
* ``advance(token)`` moves the state by the token's bytes; a token the mask did not allow is
  our bug (``assert``).

Tokens whose bytes are unknown (a piece that alone decodes to no whole character, with a
tokenizer that is not byte-level BPE) and empty tokens are never allowed under a grammar.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Sequence

import torch

from blocks.inference.json_automaton import (
    State,
    StringFrame,
    accepting,
    advance,
    advance_byte,
    initial_state,
)
from blocks.inference.jsonschema_grammar import Grammar
from blocks.inference.tokenizer import BPETokenizer, TokenizerLike

__all__ = [
    "MASKED_LOGIT",
    "MAX_CACHED_MASKS",
    "Constraint",
    "Vocabulary",
    "apply_masks",
    "token_bytes_of",
]

MAX_CACHED_MASKS = 256
# Finite, so logprobs of masked tokens stay JSON numbers; exp() of it is exactly 0.
MASKED_LOGIT = -1e30
STRING_UNSAFE = frozenset(b'"\\') | frozenset(range(0x20))


class Vocabulary:
    """A tokenizer's tokens as bytes, indexed for mask walks; built once, then read-only
    except for the mask cache (one engine thread uses it)."""

    def __init__(self, token_bytes: Sequence[bytes | None], size: int) -> None:
        assert size >= len(token_bytes)
        self.size = size
        self.token_bytes = list(token_bytes)
        usable = sorted((b, i) for i, b in enumerate(token_bytes) if b)
        self.all = _Sorted(usable)
        safe_chars = torch.full((size,), float("nan"))  # NaN compares false: never safe
        unsafe: list[tuple[bytes, int]] = []
        for data, token in usable:
            chars = _safe_chars(data)
            if chars is None:
                unsafe.append((data, token))
            else:
                safe_chars[token] = chars
        self.unsafe = _Sorted(unsafe)
        self.safe_chars = safe_chars
        self._cache: OrderedDict[State, torch.Tensor] = OrderedDict()

    def allowed(self, state: State) -> torch.Tensor:
        """Bool mask ``(size,)`` of tokens after which the text is still a valid prefix
        (end tokens not included)."""
        cached = self._cache.get(state)
        if cached is not None:
            self._cache.move_to_end(state)
            return cached
        top = state[0][-1] if len(state) == 1 and state[0] else None
        if isinstance(top, StringFrame) and not top.escape and not top.utf8_left:
            high = top.node.max_length
            room = float("inf") if high is None else high - top.count
            mask = self.safe_chars <= room
            ids = self.unsafe.walk(state)
        else:
            mask = torch.zeros(self.size, dtype=torch.bool)
            ids = self.all.walk(state)
        if ids:
            mask[torch.tensor(ids, dtype=torch.long)] = True
        self._cache[state] = mask
        if len(self._cache) > MAX_CACHED_MASKS:
            self._cache.popitem(last=False)
        return mask


class _Sorted:
    """Tokens sorted by bytes, with each one's common-prefix length with its predecessor."""

    def __init__(self, items: Sequence[tuple[bytes, int]]) -> None:
        items = sorted(items)
        self.tokens = [data for data, _ in items]
        self.ids = [token for _, token in items]
        self.lcp = [0] * len(items)
        for i in range(1, len(items)):
            self.lcp[i] = _common_prefix(self.tokens[i - 1], self.tokens[i])

    def walk(self, start: State) -> list[int]:
        """Ids of the tokens whose bytes the automaton accepts from ``start``."""
        tokens, lcp = self.tokens, self.lcp
        allowed: list[int] = []
        states: list[State] = [start]  # states[k]: after k bytes of the previous token
        previous = b""
        i, n = 0, len(tokens)
        while i < n:
            data = tokens[i]
            shared = lcp[i] if i and tokens[i - 1] is previous else _common_prefix(previous, data)
            k = min(shared, len(states) - 1)
            del states[k + 1 :]
            while k < len(data):
                after = advance_byte(states[k], data[k])
                if after is None:
                    break
                states.append(after)
                k += 1
            previous = data
            if k == len(data):
                allowed.append(self.ids[i])
                i += 1
            else:  # every token starting with data[:k + 1] is rejected too
                bound = _successor(data[: k + 1])
                i = n if bound is None else bisect.bisect_left(tokens, bound, i + 1)
        return allowed


class Constraint:
    """One sequence's position in its grammar; see the module docstring."""

    def __init__(self, grammar: Grammar, vocabulary: Vocabulary, end_ids: frozenset[int]) -> None:
        self.vocabulary = vocabulary
        self.state: State = initial_state(grammar)
        self.end_ids = torch.tensor(sorted(t for t in end_ids if t < vocabulary.size))
        self.finished = False

    def mask(self) -> torch.Tensor:
        """Tokens allowed next (never empty while not finished)."""
        assert not self.finished
        mask = self.vocabulary.allowed(self.state)
        if len(self.end_ids):  # an end token ends the text, whatever its bytes would say
            mask = mask.clone()
            mask[self.end_ids] = accepting(self.state)
        assert bool(mask.any()), "a live grammar state always allows some token"
        return mask

    def advance(self, token: int) -> None:
        if token in self.end_ids.tolist():
            assert accepting(self.state)
            self.finished = True
            return
        data = self.vocabulary.token_bytes[token]
        assert data, f"token {token} was not allowed"
        after = advance(self.state, data)
        assert after is not None, f"token {token} was not allowed"
        self.state = after


def apply_masks(rows: torch.Tensor, constraints: Sequence[Constraint | None]) -> torch.Tensor:
    """``rows`` (on the CPU, one per constraint) with disallowed tokens at ``MASKED_LOGIT``; the same
    tensor when no row is constrained."""
    if all(c is None for c in constraints):
        return rows
    out = rows.detach().cpu().clone()
    for index, constraint in enumerate(constraints):
        if constraint is not None:
            mask = constraint.mask()
            out[index, : mask.shape[0]].masked_fill_(~mask, MASKED_LOGIT)
            out[index, mask.shape[0] :] = MASKED_LOGIT
    return out


def token_bytes_of(tokenizer: TokenizerLike) -> list[bytes | None]:
    """The bytes each token adds to decoded text (None: unknown, never allowed)."""
    if isinstance(tokenizer, BPETokenizer):
        return [_byte_level(token) for token in tokenizer.tokens]
    anchor = tokenizer.encode("a")[-1:]
    base = tokenizer.decode(anchor)
    out: list[bytes | None] = []
    for token in range(tokenizer.vocab_size):
        text = tokenizer.decode([*anchor, token])
        piece = text[len(base) :] if text.startswith(base) else tokenizer.decode([token])
        out.append(None if not piece or "\ufffd" in piece else piece.encode())
    return out


def _byte_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable character standing for each byte."""
    kept = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = {byte: byte for byte in kept}
    extra = 0
    for byte in range(256):
        if byte not in chars:
            chars[byte] = 256 + extra
            extra += 1
    return {chr(char): byte for byte, char in chars.items()}


_ALPHABET = _byte_alphabet()


def _byte_level(token: str) -> bytes | None:
    if not token or any(ch not in _ALPHABET for ch in token):
        return token.encode() if token else None  # an added token decodes to its own text
    return bytes(_ALPHABET[ch] for ch in token)


def _safe_chars(data: bytes) -> int | None:
    """Characters in ``data`` when it can sit anywhere inside a JSON string, else None."""
    if any(byte in STRING_UNSAFE for byte in data):
        return None
    try:
        return len(data.decode("utf-8"))
    except UnicodeDecodeError:
        return None


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _successor(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with ``prefix``."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes((trimmed[-1] + 1,))
