"""``response_format`` and ``tools`` through the official client, against a real
``blocks inference serve --model tiny-random`` process.

The tiny model's weights are random, so whatever it writes is a fair test of the mask: the
grammar alone makes its answers parse. Schemas bound every string and array, so an answer is
always whole within ``max_tokens``; every answer is checked with ``jsonschema``. One shared
client (``max_retries=0``, reused connections) of the session's shared server (``conftest.tiny_served``).
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from tiny_server import TinyServed

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.process

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "age": {"type": "integer"},
        "score": {"anyOf": [{"type": "number"}, {"type": "null"}]},
        "city": {"enum": ["Paris", "Lima"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 2},
        "home": {
            "type": "object",
            "properties": {"zip": {"type": "string", "maxLength": 4}, "main": {"type": "boolean"}},
            "required": ["zip", "main"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "age", "score", "city", "tags", "home"],
    "additionalProperties": False,
}
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 3}, "unit": {"enum": ["c", "f"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "parameters": WEATHER_PARAMETERS},
    },
    {
        "type": "function",
        "function": {
            "name": "add",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    },
]
PARAMETERS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
MESSAGES = [{"role": "user", "content": "Hi"}]
MAX_TOKENS = 320  # above the longest answer PERSON allows (~290 characters, all \u escapes)
CALL_MAX_TOKENS = 80  # the longest call text is 75 characters; the prompt (425) fits with it


Served = TinyServed


@pytest.fixture
def served(tiny_served: TinyServed) -> TinyServed:
    """The session's shared tiny-random server (``conftest.tiny_served``)."""
    return tiny_served


def create(served: Served, **options: Any) -> Any:
    arguments = {"model": "tiny-random", "messages": MESSAGES, "max_tokens": MAX_TOKENS}
    return served.client.chat.completions.create(**{**arguments, **options})


def schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "s", "schema": schema, "strict": True}}


def test_json_schema_answers_parse_and_validate(served: Served) -> None:
    reply = create(served, response_format=schema_format(PERSON), n=3, temperature=1.0, seed=5)
    assert len(reply.choices) == 3
    for choice in reply.choices:
        assert choice.finish_reason == "stop", choice
        jsonschema.validate(json.loads(choice.message.content), PERSON)
    greedy = create(served, response_format=schema_format(PERSON), temperature=0)
    jsonschema.validate(json.loads(greedy.choices[0].message.content), PERSON)


def test_json_schema_streamed_answer_parses_and_validates(served: Served) -> None:
    chunks = list(create(served, response_format=schema_format(PERSON), stream=True, seed=11))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(text), PERSON)


def test_an_answer_cut_by_max_tokens_is_length_and_incomplete(served: Served) -> None:
    reply = create(served, response_format=schema_format(PERSON), max_tokens=5)  # needs > 60
    choice = reply.choices[0]
    assert choice.finish_reason == "length" and choice.message.content == '{"nam'
    with pytest.raises(json.JSONDecodeError):
        json.loads(choice.message.content)
    reply = create(served, response_format={"type": "json_object"}, max_tokens=40, seed=2)
    choice = reply.choices[0]
    assert choice.message.content.startswith("{")
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content), dict)


def test_forced_named_call_arrives_in_openai_shape(served: Served) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    reply = create(served, tools=TOOLS, tool_choice=named, seed=3, max_tokens=CALL_MAX_TOKENS)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id and call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_PARAMETERS)


def test_required_call_streams_as_tool_call_deltas(served: Served) -> None:
    for seed in (1, 2):
        chunks = list(
            create(
                served,
                tools=TOOLS,
                tool_choice="required",
                stream=True,
                seed=seed,
                max_tokens=CALL_MAX_TOKENS,
            )
        )
        deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
        assert deltas[0].id and deltas[0].type == "function" and deltas[0].index == 0
        name = deltas[0].function.name
        arguments = "".join(d.function.arguments or "" for d in deltas)
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
        jsonschema.validate(json.loads(arguments), PARAMETERS[name])


def test_auto_answers_in_text_and_tool_history_is_accepted(served: Served) -> None:
    history = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "add", "arguments": '{"a":1,"b":2}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": "3"},
    ]
    reply = create(served, messages=history, tools=TOOLS, tool_choice="auto", max_tokens=4)
    choice = reply.choices[0]
    assert choice.message.tool_calls is None and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")


def test_unsupported_schema_keyword_is_a_400_naming_it(served: Served) -> None:
    bad = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}}
    with pytest.raises(openai.BadRequestError) as info:
        create(served, response_format=schema_format(bad))
    error = info.value.body
    assert isinstance(error, dict) and error["param"] == "response_format"
    assert "minimum" in error["message"] and error["code"] == "unsupported_schema"
    with pytest.raises(openai.BadRequestError) as info:
        create(served, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "x"}})
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "tool_choice"
