"""Compiling JSON Schema: the supported subset, named refusals and the size limits."""

from __future__ import annotations

from typing import Any

import pytest

from blocks.core.errors import InvalidArgument
from blocks.inference.json_automaton import accepting, advance, initial_state
from blocks.inference.jsonschema_grammar import (
    MAX_ENUM_VALUES,
    MAX_SCHEMA_DEPTH,
    MAX_SCHEMA_NODES,
    Grammar,
    SchemaTooLarge,
    UnsupportedSchema,
    compile_schema,
)


def whole(grammar: Grammar, text: str) -> bool:
    state = advance(initial_state(grammar), text.encode())
    return state is not None and accepting(state)


@pytest.mark.parametrize(
    ("keyword", "schema"),
    [
        ("pattern", {"type": "string", "pattern": "a+"}),
        ("minimum", {"type": "integer", "minimum": 3}),
        ("oneOf", {"oneOf": [{"type": "string"}]}),
        ("prefixItems", {"type": "array", "prefixItems": [{"type": "string"}]}),
        ("not", {"not": {"type": "string"}}),
        ("$ref", {"$ref": "https://example.com/schema"}),
        ("$ref", {"$ref": "#/$defs/missing"}),
        ("$ref", {"$defs": {"n": {"$ref": "#/$defs/n"}}, "$ref": "#/$defs/n"}),
        ("allOf", {"allOf": [{"type": "string"}, {"maxLength": 2}]}),
        ("type", {"type": "date"}),
        ("enum", {"enum": []}),
        ("maxLength", {"type": "string", "minLength": 3, "maxLength": 2}),
        ("required", {"type": "object", "properties": {}, "required": ["a"]}),
        ("anyOf", {"anyOf": []}),
    ],
)
def test_unsupported_keywords_are_refused_by_name(keyword: str, schema: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedSchema) as info:
        compile_schema(schema)
    assert info.value.keyword == keyword and keyword in str(info.value)
    assert isinstance(info.value, InvalidArgument)


def test_size_limits_raise_schema_too_large() -> None:
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(MAX_SCHEMA_DEPTH + 1):
        deep = {"type": "array", "items": deep}
    with pytest.raises(SchemaTooLarge):
        compile_schema(deep)
    wide = {"anyOf": [{"type": "string"}] * (MAX_SCHEMA_NODES + 1)}
    with pytest.raises(SchemaTooLarge):
        compile_schema(wide)
    with pytest.raises(SchemaTooLarge):
        compile_schema({"enum": list(range(MAX_ENUM_VALUES + 1))})


def test_what_real_clients_send_compiles() -> None:
    # The shape pydantic's model_json_schema gives a nested model, and OpenAI strict mode.
    schema = {
        "$defs": {
            "Address": {
                "properties": {"city": {"title": "City", "type": "string"}},
                "required": ["city"],
                "title": "Address",
                "type": "object",
                "additionalProperties": False,
            }
        },
        "properties": {
            "name": {"title": "Name", "type": "string", "description": "full name"},
            "age": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
            "home": {"$ref": "#/$defs/Address"},
            "tags": {"items": {"type": "string"}, "type": "array"},
            "kind": {"enum": ["a", "b"], "type": "string"},
            "email": {"type": "string", "format": "email"},
        },
        "required": ["name", "age", "home", "tags", "kind", "email"],
        "title": "Person",
        "type": "object",
        "additionalProperties": False,
    }
    grammar = compile_schema(schema)
    text = '{"name":"Ada","age":null,"home":{"city":"X"},"tags":[],"kind":"b","email":"a@b"}'
    assert whole(grammar, text)
    assert not whole(grammar, text.replace('"age":null,', ""))  # required, never skipped
    assert advance(initial_state(grammar), b'{"age"') is None  # declaration order


def test_optional_properties_may_be_left_out_but_keep_their_order() -> None:
    grammar = compile_schema(
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"}},
            "required": ["b"],
        }
    )
    assert whole(grammar, '{"b":true}') and whole(grammar, '{"a":1,"b":false}')
    assert not whole(grammar, "{}") and not whole(grammar, '{"a":1}')
    assert advance(initial_state(grammar), b'{"b":true,"a"') is None


def test_enum_types_filter_and_strings_count_characters() -> None:
    grammar = compile_schema({"enum": ["x", 1, None], "type": ["string", "null"]})
    assert whole(grammar, '"x"') and whole(grammar, "null") and not whole(grammar, "1")
    bounded = compile_schema({"type": "string", "minLength": 2, "maxLength": 2})
    assert whole(bounded, '"é\\n"') and not whole(bounded, '"é"') and not whole(bounded, '"abc"')
    array = compile_schema({"type": "array", "items": {"type": "integer"}, "maxItems": 2})
    assert whole(array, "[1,2]") and advance(initial_state(array), b"[1,2,") is None
