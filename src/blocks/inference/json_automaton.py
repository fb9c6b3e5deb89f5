"""A byte-level pushdown automaton for compact JSON values of a grammar (pure, no I/O).

Theory of operation: a ``State`` is a tuple of alternative *stacks* (more than one only while
an ``anyOf`` or a type list is undecided); a stack is a tuple of immutable frames, innermost
last. ``advance(state, data)`` feeds bytes one at a time: each frame takes a byte, passes it
to its parent once it is complete (a number or a literal ends where the next byte does not
fit), or rejects it; a stack that rejects is dropped, and ``None`` means no stack is left,
i.e. ``data`` does not keep the text a prefix of any value the grammar accepts. Because every
node of a ``Grammar`` accepts some value and frames only accept bytes after which they can
still finish, every accepted prefix can be completed (the liveness the sampler relies on:
the mask is never empty). ``accepting(state)`` says the text so far is one whole value.

Output is compact: no whitespace between tokens, object keys in declaration order. Strings
are checked as UTF-8 (lead and continuation bytes), with JSON's escapes and no raw control
characters; ``minLength``/``maxLength`` count characters (an escape is one). Number parts are
bounded (``MAX_INT_DIGITS``, ``MAX_FRACTION_DIGITS``, ``MAX_EXPONENT_DIGITS``), containers
nest at most ``MAX_STACK`` frames deep, and at most ``MAX_ALTERNATIVES`` stacks are kept (a
dropped alternative only narrows what is accepted; every kept one stays live).

Frames are hashable values, so a state can key a cache of token masks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from blocks.inference.jsonschema_grammar import (
    ANY,
    AnyNode,
    ArrayNode,
    Grammar,
    LiteralNode,
    Node,
    NumberNode,
    ObjectNode,
    StringNode,
    UnionNode,
)

__all__ = [
    "MAX_ALTERNATIVES",
    "MAX_STACK",
    "State",
    "StringFrame",
    "accepting",
    "advance",
    "advance_byte",
    "initial_state",
]

MAX_STACK = 40  # frames: bounds nesting of free-form values
MAX_ALTERNATIVES = 64
MAX_INT_DIGITS = 15
MAX_FRACTION_DIGITS = 15
MAX_EXPONENT_DIGITS = 3

QUOTE, BACKSLASH, COMMA, COLON = 0x22, 0x5C, 0x2C, 0x3A
ESCAPABLE = frozenset(b'"\\/bfnrt')
HEX = frozenset(b"0123456789abcdefABCDEF")
DIGITS = frozenset(b"0123456789")

# Number phases; the complete ones may end the number.
SIGN, ZERO, INT, DOT, FRACTION, EXP, EXP_SIGN, EXP_DIGITS = range(8)
NUMBER_COMPLETE = frozenset({ZERO, INT, FRACTION, EXP_DIGITS})
# Container phases.
OPEN, KEY_COLON, VALUE, AFTER, NEXT = range(5)

FREE_KEY = StringNode()
ANY_OBJECT = ObjectNode((), ANY)
ANY_ARRAY = ArrayNode(ANY)
ANY_STRING = StringNode()
ANY_NUMBER = NumberNode(False)
ANY_LITERALS = LiteralNode((b"true", b"false", b"null"))


@dataclass(frozen=True, slots=True)
class ValueFrame:
    node: Node


@dataclass(frozen=True, slots=True)
class LiteralFrame:
    node: LiteralNode
    matched: bytes


@dataclass(frozen=True, slots=True)
class StringFrame:
    node: StringNode
    count: int  # characters so far
    escape: int  # 0 none, 1 after a backslash, 2..5: hex digits of \uXXXX still due, plus 1
    utf8_left: int  # continuation bytes still due
    first_range: int = 0  # the next continuation byte's range (_CONTINUATION), 0: 80..BF


@dataclass(frozen=True, slots=True)
class NumberFrame:
    integer: bool
    phase: int
    digits: int  # digits in the current part


@dataclass(frozen=True, slots=True)
class ObjectFrame:
    node: ObjectNode
    phase: int
    index: int  # last declared property written (-1: none); free objects keep -1


@dataclass(frozen=True, slots=True)
class KeyFrame:
    node: ObjectNode
    index: int  # last declared property written before this key
    matched: bytes


@dataclass(frozen=True, slots=True)
class ArrayFrame:
    node: ArrayNode
    phase: int
    count: int  # items started


Frame = ValueFrame | LiteralFrame | StringFrame | NumberFrame | ObjectFrame | KeyFrame | ArrayFrame
Stack = tuple[Frame, ...]
State = tuple[Stack, ...]


def initial_state(grammar: Grammar) -> State:
    return ((ValueFrame(grammar.root),),)


def accepting(state: State) -> bool:
    """True when the bytes fed so far are one whole value."""
    for stack in state:
        if not stack:
            return True
        if len(stack) == 1 and _complete(stack[0]):
            return True
    return False


def advance(state: State, data: bytes) -> State | None:
    """The state after ``data``, or None if ``data`` leaves the grammar."""
    current: State | None = state
    for byte in data:
        assert current is not None
        current = advance_byte(current, byte)
        if current is None:
            return None
    return current


def advance_byte(state: State, byte: int) -> State | None:
    out: list[Stack] = []
    for stack in state:
        _feed(stack, byte, out)
    if not out:
        return None
    if len(out) > 1:
        out = list(dict.fromkeys(out))[:MAX_ALTERNATIVES]
    return tuple(out)


def _complete(frame: Frame) -> bool:
    if isinstance(frame, NumberFrame):
        return frame.phase in NUMBER_COMPLETE
    if isinstance(frame, LiteralFrame):
        return frame.matched in frame.node.texts
    return False


def _feed(stack: Stack, byte: int, out: list[Stack]) -> None:
    if stack:
        _FEEDERS[type(stack[-1])](stack[-1], stack[:-1], byte, out)


def _start(rest: Stack, node: Node, byte: int, out: list[Stack]) -> None:
    """``byte`` opens a value of ``node`` whose frame goes on top of ``rest``."""
    if isinstance(node, UnionNode):
        for option in node.options:
            _start(rest, option, byte, out)
    elif isinstance(node, AnyNode):
        _start(rest, _ANY_BY_FIRST_BYTE.get(byte, ANY_LITERALS), byte, out)
    elif isinstance(node, LiteralNode):
        _feed_literal(LiteralFrame(node, b""), rest, byte, out)
    elif isinstance(node, StringNode):
        if byte == QUOTE:
            out.append((*rest, StringFrame(node, 0, 0, 0)))
    elif isinstance(node, NumberNode):
        if byte == 0x2D:
            out.append((*rest, NumberFrame(node.integer, SIGN, 0)))
        elif byte == 0x30:
            out.append((*rest, NumberFrame(node.integer, ZERO, 1)))
        elif byte in DIGITS:
            out.append((*rest, NumberFrame(node.integer, INT, 1)))
    elif isinstance(node, ObjectNode):
        if byte == 0x7B and len(rest) < MAX_STACK:
            out.append((*rest, ObjectFrame(node, OPEN, -1)))
    elif byte == 0x5B and len(rest) < MAX_STACK:
        out.append((*rest, ArrayFrame(node, OPEN, 0)))


_ANY_BY_FIRST_BYTE: dict[int, Node] = {
    QUOTE: ANY_STRING,
    0x7B: ANY_OBJECT,
    0x5B: ANY_ARRAY,
    **{b: ANY_NUMBER for b in b"-0123456789"},
}


def _feed_value(frame: ValueFrame, rest: Stack, byte: int, out: list[Stack]) -> None:
    _start(rest, frame.node, byte, out)


def _feed_literal(frame: LiteralFrame, rest: Stack, byte: int, out: list[Stack]) -> None:
    matched = frame.matched + bytes((byte,))
    if any(text.startswith(matched) for text in frame.node.texts):
        out.append((*rest, LiteralFrame(frame.node, matched)))
    if frame.matched in frame.node.texts:  # complete: the byte is the parent's
        _feed(rest, byte, out)


def _feed_string(frame: StringFrame, rest: Stack, byte: int, out: list[Stack]) -> None:
    node, count, escape, utf8_left = frame.node, frame.count, frame.escape, frame.utf8_left
    room = node.max_length is None or count < node.max_length
    if escape == 1:
        if byte in ESCAPABLE:
            out.append((*rest, StringFrame(node, count, 0, 0)))
        elif byte == 0x75:  # \u: four hex digits follow
            out.append((*rest, StringFrame(node, count, 5, 0)))
    elif escape:
        if byte in HEX and not (escape == 5 and byte in b"dD"):  # no surrogate halves
            out.append((*rest, StringFrame(node, count, 0 if escape == 2 else escape - 1, 0)))
    elif utf8_left:
        low, high = _CONTINUATION[frame.first_range] if frame.first_range else (0x80, 0xBF)
        if low <= byte <= high:
            out.append((*rest, StringFrame(node, count, 0, utf8_left - 1)))
    elif byte == QUOTE:
        if count >= node.min_length:
            out.append(rest)
    elif byte == BACKSLASH:
        if room:
            out.append((*rest, StringFrame(node, count + 1, 1, 0)))
    elif 0x20 <= byte < 0x80:
        if room:
            out.append((*rest, StringFrame(node, count + 1, 0, 0)))
    elif room and 0xC2 <= byte <= 0xF4:
        due = 1 if byte <= 0xDF else 2 if byte <= 0xEF else 3
        out.append((*rest, StringFrame(node, count + 1, 0, due, _FIRST_RANGE.get(byte, 0))))


# Well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF): these lead
# bytes narrow the range of the byte that follows them.
_CONTINUATION = {1: (0xA0, 0xBF), 2: (0x80, 0x9F), 3: (0x90, 0xBF), 4: (0x80, 0x8F)}
_FIRST_RANGE = {0xE0: 1, 0xED: 2, 0xF0: 3, 0xF4: 4}


def _feed_number(frame: NumberFrame, rest: Stack, byte: int, out: list[Stack]) -> None:
    phase, digits, integer = frame.phase, frame.digits, frame.integer
    digit = byte in DIGITS
    new: tuple[int, int] | None = None
    if phase == SIGN:
        new = (ZERO, 1) if byte == 0x30 else (INT, 1) if digit else None
    elif phase in (ZERO, INT) and digit:
        new = (INT, digits + 1) if phase == INT and digits < MAX_INT_DIGITS else None
    elif phase in (ZERO, INT, FRACTION) and not integer and byte in b"eE":
        new = (EXP, 0)
    elif phase in (ZERO, INT) and not integer and byte == 0x2E:
        new = (DOT, 0)
    elif phase in (DOT, FRACTION) and digit:
        new = (FRACTION, digits + 1) if digits < MAX_FRACTION_DIGITS else None
    elif phase == EXP and byte in b"+-":
        new = (EXP_SIGN, 0)
    elif phase in (EXP, EXP_SIGN, EXP_DIGITS) and digit:
        new = (EXP_DIGITS, digits + 1) if digits < MAX_EXPONENT_DIGITS else None
    if new is not None:
        out.append((*rest, NumberFrame(integer, *new)))
    elif phase in NUMBER_COMPLETE and not digit:
        _feed(rest, byte, out)


def _feed_object(frame: ObjectFrame, rest: Stack, byte: int, out: list[Stack]) -> None:
    node, phase, index = frame.node, frame.phase, frame.index
    if phase == VALUE:
        value = node.properties[index][1] if node.properties else node.additional
        assert value is not None
        _start((*rest, ObjectFrame(node, AFTER, index)), value, byte, out)
    elif phase == KEY_COLON:
        if byte == COLON:
            out.append((*rest, ObjectFrame(node, VALUE, index)))
    elif byte == 0x7D and phase in (OPEN, AFTER):
        if not any(required for _, _, required in node.properties[index + 1 :]):
            out.append(rest)
    elif byte == COMMA and phase == AFTER:
        if _has_next_key(node, index):
            out.append((*rest, ObjectFrame(node, NEXT, index)))
    elif byte == QUOTE and phase in (OPEN, NEXT) and _has_next_key(node, index):
        if node.properties:
            out.append((*rest, KeyFrame(node, index, b'"')))
        else:
            out.append((*rest, ObjectFrame(node, KEY_COLON, -1), StringFrame(FREE_KEY, 0, 0, 0)))


def _has_next_key(node: ObjectNode, index: int) -> bool:
    if node.properties:
        return index + 1 < len(node.properties)
    return node.additional is not None


def _feed_key(frame: KeyFrame, rest: Stack, byte: int, out: list[Stack]) -> None:
    matched = frame.matched + bytes((byte,))
    partial = False
    for j in range(frame.index + 1, len(frame.node.properties)):
        text, _, required = frame.node.properties[j]
        if text == matched:
            out.append((*rest, ObjectFrame(frame.node, KEY_COLON, j)))
            return
        partial = partial or text.startswith(matched)
        if required:  # a required property is never skipped
            break
    if partial:
        out.append((*rest, KeyFrame(frame.node, frame.index, matched)))


def _feed_array(frame: ArrayFrame, rest: Stack, byte: int, out: list[Stack]) -> None:
    node, phase, count = frame.node, frame.phase, frame.count
    if phase in (OPEN, NEXT):
        if phase == OPEN and byte == 0x5D:
            if node.min_items == 0:
                out.append(rest)
        elif node.max_items is None or count < node.max_items:
            _start((*rest, ArrayFrame(node, AFTER, count + 1)), node.items, byte, out)
    elif byte == COMMA:
        if node.max_items is None or count < node.max_items:
            out.append((*rest, ArrayFrame(node, NEXT, count)))
    elif byte == 0x5D and count >= node.min_items:
        out.append(rest)


_FEEDERS: dict[type, Callable[..., None]] = {
    ValueFrame: _feed_value,
    LiteralFrame: _feed_literal,
    StringFrame: _feed_string,
    NumberFrame: _feed_number,
    ObjectFrame: _feed_object,
    KeyFrame: _feed_key,
    ArrayFrame: _feed_array,
}
