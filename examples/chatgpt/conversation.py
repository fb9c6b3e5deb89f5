"""Conversations: messages, the prompt window, cache keys and token estimates (pure).

Theory of operation. A conversation is stored in kv as one record: its messages, each with an
id (``<at_ms>-<author>-<n>``) so that two devices appending to the same conversation at once
produce siblings whose union (sorted by time, then id) is the merged history: nothing said is
lost, and every replica orders it the same way.

The model sees a *window* of the history: the newest turns that fit ``window_chars_max``,
always starting on a user turn, plus the new message. The response cache is keyed by an
xxh3-128 digest of the model name, the exact window and the sampling settings, and is used
only for greedy decoding (temperature 0), where the same key always means the same answer.
Token counts for budgets are estimated before the call (``estimate_tokens``); the server's
reported usage is what the usage counters record.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import xxhash

from blocks.core.codec import pack, unpack
from blocks.core.errors import Corruption, InvalidArgument

__all__ = [
    "MESSAGES_MAX",
    "MESSAGE_CHARS_MAX",
    "Message",
    "cache_key",
    "decode",
    "encode",
    "estimate_tokens",
    "merge",
    "window",
]

MESSAGE_CHARS_MAX = 8_000
MESSAGES_MAX = 200
"""A conversation keeps its newest ``MESSAGES_MAX`` messages; older ones are dropped."""
CHARS_PER_TOKEN = 4
RECORD_BYTES_MAX = 2 * 1024 * 1024
ROLES = ("user", "assistant")


@dataclass(frozen=True, slots=True)
class Message:
    message_id: str
    role: str
    content: str
    at_ms: int

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise InvalidArgument(f"role must be one of {ROLES}")
        if len(self.content) > MESSAGE_CHARS_MAX:
            raise InvalidArgument(f"messages are at most {MESSAGE_CHARS_MAX} characters")
        if not self.message_id:
            raise InvalidArgument("a message needs an id")

    def as_openai(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


def merge(versions: Iterable[Sequence[Message]]) -> list[Message]:
    """The union of concurrent histories, by (time, id), newest ``MESSAGES_MAX`` kept."""
    seen: dict[str, Message] = {}
    for history in versions:
        for message in history:
            seen.setdefault(message.message_id, message)
    ordered = sorted(seen.values(), key=lambda m: (m.at_ms, m.message_id))
    return ordered[-MESSAGES_MAX:]


def window(history: Sequence[Message], new: Message, chars_max: int) -> list[Message]:
    """The newest turns that fit ``chars_max`` with ``new``, starting on a user turn."""
    if chars_max < len(new.content):
        raise InvalidArgument("the new message alone is longer than the window")
    budget = chars_max - len(new.content)
    kept: list[Message] = []
    for message in reversed(history):
        if len(message.content) > budget:
            break
        budget -= len(message.content)
        kept.append(message)
    kept.reverse()
    while kept and kept[0].role != "user":
        kept.pop(0)
    return [*kept, new]


def estimate_tokens(messages: Sequence[Message]) -> int:
    """A tokenizer-free upper-ish estimate: characters / 4, plus a few per message."""
    return sum(len(m.content) // CHARS_PER_TOKEN + 4 for m in messages)


def cache_key(model: str, messages: Sequence[Message], max_tokens: int) -> str:
    """Digest of what determines a greedy answer (message ids and times excluded)."""
    material = pack([model, max_tokens, [[m.role, m.content] for m in messages]])
    return "reply:" + xxhash.xxh3_128_hexdigest(material)


def encode(history: Sequence[Message]) -> bytes:
    return pack(
        [[m.message_id, m.role, m.content, m.at_ms] for m in history], size_max=RECORD_BYTES_MAX
    )


def decode(data: bytes) -> list[Message]:
    """A history from kv; anything malformed is ``Corruption`` (we wrote it)."""
    try:
        raw = unpack(data, size_max=RECORD_BYTES_MAX)
        return [Message(str(i), str(r), str(c), int(t)) for i, r, c, t in raw]
    except (InvalidArgument, TypeError, ValueError) as error:
        raise Corruption(f"bad conversation record: {error}") from error
