"""The SentencePiece-style tokenizer of Llama-2-family GGUF files (``tokenizer.ggml.model ==
"llama"``), in pure Python.

Theory of operation: the file stores pieces (``▁the``, ``ing``, ``<0x0A>``, ``<s>``), one
score per piece and one type per piece (1 normal, 2 unknown, 3 control, 6 byte). There is no
merge list: the scores are the merge order.

Encoding: control pieces found in the text (``<s>``, ``[INST]`` where a template writes them)
become their own ids and split the text; every other span has its spaces written as ``▁``,
the first span of the text also gets a ``▁`` in front (``add_space_prefix``), and it is cut
into characters. Then, repeatedly, the adjacent pair whose concatenation is a piece with the
highest score is merged (the leftmost such pair on a tie), until no adjacent pair forms a
piece. A heap of candidate pairs makes that ``O(n log n)``; an entry whose sides have changed
since it was pushed is stale and skipped. Each final symbol is its piece's id, or, when it is
not a piece, one ``<0xNN>`` byte piece per UTF-8 byte (byte fallback), or the unknown id.

Decoding joins the pieces, byte pieces as raw bytes, ``▁`` as a space, decodes UTF-8 (an
incomplete character becomes U+FFFD, which the incremental detokenizer holds back) and drops
the one space the prefix added at the start.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Mapping, Sequence

from blocks.core.errors import InvalidArgument
from blocks.inference.tokenizer import CHATML_TEMPLATE, MAX_TEXT_CHARS, render_chat, special_text

__all__ = ["SentencePieceTokenizer"]

SPACE = "\u2581"  # ▁
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


class SentencePieceTokenizer:
    """Score-ordered merges over pieces with byte fallback; see the module docstring."""

    def __init__(
        self,
        pieces: Sequence[str],
        scores: Sequence[float],
        piece_types: Sequence[int],
        *,
        eos_token_ids: tuple[int, ...] = (),
        bos_token_id: int | None = None,
        unknown_token_id: int | None = None,
        add_bos: bool = False,
        add_space_prefix: bool = True,
        chat_template: str | None = None,
    ) -> None:
        if not len(pieces) == len(scores) == len(piece_types):
            raise InvalidArgument("pieces, scores and types must have the same length")
        self.tokens = list(pieces)
        self._scores = [float(s) for s in scores]
        self._types = list(piece_types)
        self._ids: dict[str, int] = {}
        for index, piece in enumerate(pieces):  # the first of duplicate pieces wins
            self._ids.setdefault(piece, index)
        self._bytes: dict[int, int] = {}
        for index, (piece, kind) in enumerate(zip(pieces, piece_types, strict=True)):
            if kind == BYTE and len(piece) == 6 and piece.startswith("<0x"):
                self._bytes[int(piece[3:5], 16)] = index
        # Pieces matched whole in the text: one alternation, longest first, so the regex
        # engine scans the text once whatever the number of control pieces.
        specials = sorted(
            {
                p
                for p, kind in zip(pieces, piece_types, strict=True)
                if kind in (CONTROL, USER_DEFINED) and p
            },
            key=len,
            reverse=True,
        )
        self._special_pattern = (
            re.compile("|".join(re.escape(p) for p in specials)) if specials else None
        )
        self._eos = eos_token_ids
        self.bos_token_id = bos_token_id
        self._unknown = unknown_token_id
        self._add_bos = add_bos and bos_token_id is not None
        self._space_prefix = add_space_prefix
        self.chat_template = chat_template or CHATML_TEMPLATE

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        return self._eos

    # ------------------------------------------------------------------ encoding

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``; with ``add_bos`` the BOS id first unless the text begins with it."""
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidArgument(f"text longer than {MAX_TEXT_CHARS} characters")
        ids: list[int] = []
        first = True
        for span, special in self._split_specials(text):
            if special is not None:
                ids.append(special)
            else:
                ids += self._encode_span(span, prefix=first and self._space_prefix)
            first = False
        if self._add_bos and (not ids or ids[0] != self.bos_token_id):
            assert self.bos_token_id is not None
            ids.insert(0, self.bos_token_id)
        return ids

    def _split_specials(self, text: str) -> list[tuple[str, int | None]]:
        """``text`` cut into plain spans and control pieces (``(piece, id)``), in order."""
        if self._special_pattern is None:
            return [(text, None)] if text else []
        out: list[tuple[str, int | None]] = []
        plain = 0
        for match in self._special_pattern.finditer(text):
            if plain < match.start():
                out.append((text[plain : match.start()], None))
            out.append((match.group(), self._ids[match.group()]))
            plain = match.end()
        if plain < len(text):
            out.append((text[plain:], None))
        return out

    def _encode_span(self, span: str, *, prefix: bool) -> list[int]:
        normalized = (SPACE if prefix else "") + span.replace(" ", SPACE)
        symbols = self._merge(list(normalized))
        ids: list[int] = []
        for symbol in symbols:
            known = self._ids.get(symbol)
            if known is not None and self._types[known] != CONTROL:
                ids.append(known)
                continue
            for byte in symbol.encode("utf-8"):
                fallback = self._bytes.get(byte, self._unknown)
                if fallback is None:
                    raise InvalidArgument(f"cannot encode {symbol!r}: no byte or unknown piece")
                ids.append(fallback)
        return ids

    def _merge(self, chars: list[str]) -> list[str]:
        """Merge adjacent symbols by piece score, best first; the final symbols in order."""
        text = chars[:]  # text[i]: the symbol starting at character i ("" once merged away)
        following = list(range(1, len(chars) + 1))  # next symbol's start (len = none)
        preceding = list(range(-1, len(chars) - 1))
        heap: list[tuple[float, int, str, str]] = []

        def push(left: int) -> None:
            if left < 0 or following[left] >= len(chars):
                return
            right = following[left]
            index = self._ids.get(text[left] + text[right])
            if index is not None and self._types[index] in (NORMAL, USER_DEFINED, UNUSED):
                heapq.heappush(heap, (-self._scores[index], left, text[left], text[right]))

        for start in range(len(chars) - 1):
            push(start)
        while heap:
            _, left, left_text, right_text = heapq.heappop(heap)
            right = following[left] if text[left] else len(chars)
            if right >= len(chars) or text[left] != left_text or text[right] != right_text:
                continue  # stale: one side was merged since this pair was pushed
            text[left] += text[right]
            text[right] = ""
            following[left] = following[right]
            if following[right] < len(chars):
                preceding[following[right]] = left
            push(preceding[left])
            push(left)
        return [symbol for symbol in text if symbol]

    # ------------------------------------------------------------------ decoding

    def decode(self, token_ids: Sequence[int]) -> str:
        data = bytearray()
        for token in token_ids:
            if not 0 <= token < len(self.tokens):
                continue
            piece, kind = self.tokens[token], self._types[token]
            if kind == BYTE and len(piece) == 6:
                data.append(int(piece[3:5], 16))
            else:
                data += piece.replace(SPACE, " ").encode("utf-8")
        text = data.decode("utf-8", errors="replace")
        if self._space_prefix and text.startswith(" "):
            text = text[1:]
        return text

    def apply_chat_template(self, messages: Sequence[Mapping[str, str]]) -> str:
        return render_chat(
            self.chat_template,
            messages,
            bos_token=special_text(self.tokens, self.bos_token_id),
            eos_token=special_text(self.tokens, self._eos[0] if self._eos else None),
        )
