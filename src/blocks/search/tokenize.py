"""The text tokenizer shared by the BM25 index, its shards and typeahead.

Theory of operation: text is NFKC-normalised and case-folded, then split into maximal runs of
Unicode word characters (letters, digits, underscore). Tokens longer than
``TOKEN_CHARS_MAX`` are dropped rather than truncated, so two long distinct strings never
collide into one term. Texts longer than ``TEXT_CHARS_MAX`` are refused: the bound is on
input, so a single document cannot grow the index without limit.
"""

from __future__ import annotations

import re
import unicodedata

from blocks.core.errors import InvalidArgument

__all__ = ["TEXT_CHARS_MAX", "TOKEN_CHARS_MAX", "normalize_text", "tokenize"]

TEXT_CHARS_MAX = 1_000_000
TOKEN_CHARS_MAX = 64

_WORD = re.compile(r"\w+")


def normalize_text(text: str) -> str:
    """NFKC + casefold; raises ``InvalidArgument`` for non-strings and oversize text."""
    if not isinstance(text, str):
        raise InvalidArgument(f"text must be a string, got {type(text).__name__}")
    if len(text) > TEXT_CHARS_MAX:
        raise InvalidArgument(f"text of {len(text)} characters exceeds {TEXT_CHARS_MAX}")
    return unicodedata.normalize("NFKC", text).casefold()


def tokenize(text: str) -> list[str]:
    """Terms of ``text`` in order, repeats kept."""
    return [t for t in _WORD.findall(normalize_text(text)) if len(t) <= TOKEN_CHARS_MAX]
