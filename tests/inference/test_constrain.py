"""Grammar-constrained sampling: every text the masked sampler can write is a valid prefix.

The property: under random logits, at every step the mask (trie walk, string shortcut, cache)
equals the brute-force answer (each token's bytes fed to the automaton), the text so far can
still be completed into a document that ``jsonschema`` (an independent validator) accepts,
and a text the sampler ends parses and validates. Schemas are drawn from the supported
subset; the vocabulary mixes single characters, multi-character tokens that cross JSON
structure (``":``, ``"}``, ``,"``), escapes and split UTF-8 pieces.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blocks.inference.constrain import (
    MASKED_LOGIT,
    Constraint,
    Vocabulary,
    apply_masks,
    token_bytes_of,
)
from blocks.inference.json_automaton import State, accepting, advance, initial_state
from blocks.inference.jsonschema_grammar import compile_schema, json_object_grammar
from blocks.inference.tokenizer import CharTokenizer

END = 0
PIECES: list[bytes] = [
    *(bytes((b,)) for b in range(0x20, 0x7F)),
    *(
        s.encode()
        for s in ['{"', '":', '",', '"}', ',"', '"]', "}}", "]]", "[{", "[]", "{}", '""', "true"]
    ),
    *(s.encode() for s in ["false", "null", "12", "-0", ".5", "e+", "E-", "\\n", "\\u00e9"]),
    *(s.encode() for s in ["\\ud800", "ab", 'ab"', '"a', "é", "ü€", "00", "\t", "\n"]),
    b"\xc3",
    b"\xa9",
    b"\xe2\x82",
    b"\xac",
    b"\xed\xa0",
    b"\xf0\x9f",
    b"\x98\x80",
]
VOCAB_BYTES: list[bytes | None] = [None, *PIECES]  # id 0 is the end token
VOCAB = Vocabulary(VOCAB_BYTES, len(VOCAB_BYTES) + 3)  # the model's rows may be wider


def leaf_schemas() -> st.SearchStrategy[dict[str, Any]]:
    short = st.integers(0, 3)
    return st.one_of(
        st.builds(lambda: {"type": "string"}),
        st.builds(
            lambda lo, extra: {"type": "string", "minLength": lo, "maxLength": lo + extra},
            short,
            short,
        ),
        st.sampled_from([{"type": "integer"}, {"type": "number"}, {"type": "boolean"}]),
        st.just({"type": "null"}),
        st.just({"type": ["string", "null"]}),
        st.lists(
            st.one_of(st.text('ab"é', max_size=3), st.integers(-20, 20)),
            min_size=1,
            max_size=4,
            unique=True,
        ).map(lambda values: {"enum": values}),
        st.sampled_from([{"const": "x"}, {"const": 3}, {"const": [1, {"a": None}]}]),
    )


def schemas() -> st.SearchStrategy[dict[str, Any]]:
    def containers(
        children: st.SearchStrategy[dict[str, Any]],
    ) -> st.SearchStrategy[dict[str, Any]]:
        names = st.sampled_from(["a", "bb", "a b", 'q"', "é"])
        objects = st.dictionaries(names, children, max_size=3).flatmap(
            lambda props: st.builds(
                lambda required: {
                    "type": "object",
                    "properties": props,
                    "required": [n for n in props if n in required],
                    "additionalProperties": False,
                },
                st.sets(st.sampled_from(sorted(props) or ["-"])),
            )
        )
        arrays = st.builds(
            lambda items, lo, extra: {
                "type": "array",
                "items": items,
                "minItems": lo,
                "maxItems": lo + extra,
            },
            children,
            st.integers(0, 2),
            st.integers(0, 2),
        )
        unions = st.lists(children, min_size=2, max_size=3).map(lambda options: {"anyOf": options})
        free = st.just({"type": "object"})
        return st.one_of(objects, arrays, unions, free)

    return st.recursive(leaf_schemas(), containers, max_leaves=6)


CLOSING_FIRST = b'"}]0nultrefas:,{[' + bytes(
    b for b in range(0x20, 0x100) if b not in b'"}]0nultrefas:,{['
)


def completion_exists(state: State, limit: int = 2_000) -> bytes | None:
    """A continuation to a whole value, or None: greedy, each step taking the first byte of
    ``CLOSING_FIRST`` the automaton accepts (closers first, so it heads for the end)."""
    suffix = b""
    while not accepting(state) and len(suffix) < limit:
        for byte in CLOSING_FIRST:
            after = advance(state, bytes((byte,)))
            if after is not None:
                state, suffix = after, suffix + bytes((byte,))
                break
        else:
            return None
    return suffix if accepting(state) else None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=schemas(), seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 40))
def test_every_sampled_text_is_a_valid_prefix_and_a_finished_one_validates(
    schema: dict[str, Any], seed: int, steps: int
) -> None:
    grammar = compile_schema(schema)
    constraint = Constraint(grammar, VOCAB, frozenset({END}))
    generator = torch.Generator().manual_seed(seed)
    text = b""
    for _ in range(steps):
        mask = constraint.mask()
        brute = [bool(data) and advance(constraint.state, data) is not None for data in VOCAB_BYTES]
        brute[END] = accepting(constraint.state)
        assert mask[: len(brute)].tolist() == brute
        assert not mask[len(brute) :].any()
        logits = torch.randn(1, VOCAB.size, generator=generator) * 3
        row = apply_masks(logits, [constraint])[0]
        token = int(torch.multinomial(torch.softmax(row, -1), 1, generator=generator))
        constraint.advance(token)
        if constraint.finished:
            document = json.loads(text.decode())
            jsonschema.validate(document, schema)
            return
        data = VOCAB_BYTES[token]
        assert data is not None
        text += data
    completion = completion_exists(constraint.state)
    assert completion is not None, (text, schema)
    jsonschema.validate(json.loads((text + completion).decode()), schema)


def test_masked_logits_stay_finite_and_unconstrained_rows_are_untouched() -> None:
    rows = torch.zeros(2, VOCAB.size)
    constraint = Constraint(json_object_grammar(), VOCAB, frozenset({END}))
    out = apply_masks(rows, [constraint, None])
    assert torch.isfinite(out).all()
    allowed = {VOCAB_BYTES[i] for i in (out[0] == 0).nonzero().flatten().tolist()}
    assert allowed == {b"{", b'{"', b"{}"}
    assert (out[0][out[0] != 0] == MASKED_LOGIT).all() and (out[1] == 0).all()
    assert apply_masks(rows, [None, None]) is rows


def test_end_token_only_once_the_value_is_whole() -> None:
    constraint = Constraint(compile_schema({"type": "integer"}), VOCAB, frozenset({END}))
    assert not constraint.mask()[END]
    constraint.advance(VOCAB_BYTES.index(b"12"))
    mask = constraint.mask()
    assert mask[END] and mask[VOCAB_BYTES.index(b"00")] and not mask[VOCAB_BYTES.index(b".5")]
    constraint.advance(END)
    assert constraint.finished


def test_char_tokenizer_vocabulary_is_its_characters() -> None:
    data = token_bytes_of(CharTokenizer())
    assert data[0] is None and data[1] == b" " and data[95] == b"~" and len(data) == 96


@pytest.mark.parametrize(
    ("text", "whole"),
    [
        (b'{"a":[1,-0.5e+3,true,null,"x\\u00e9\\n"],"b":{}}', True),
        (b"{}", True),
        (b'{"a":1}x', None),  # trailing data
        (b'{"a":01}', None),
        (b'{"a":1,}', None),
        (b'{"a" :1}', None),  # compact only
        (b'{"a":"\x01"}', None),
        (b'{"a":"\xc3\xa9"}', True),
        (b'{"a":"\xc3"}', None),  # a split character cannot end a string
        (b'{"a":"\xed\xa0\x80"}', None),  # a surrogate in UTF-8
        (b"[1]", None),  # json_object: the top level is an object
        (b'{"a":1', False),
    ],
)
def test_json_object_grammar_byte_by_byte(text: bytes, whole: bool | None) -> None:
    state: State | None = initial_state(json_object_grammar())
    for i in range(len(text)):
        if state is None:
            break
        state = advance(state, text[i : i + 1])
    if whole is None:
        assert state is None
    else:
        assert state is not None and accepting(state) is whole
