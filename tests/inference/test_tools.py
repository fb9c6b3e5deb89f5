"""Tools: request fields to a forced-call grammar, call texts to OpenAI's tool-call shapes."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.inference import openai_api as oa
from blocks.inference.json_automaton import accepting, advance, initial_state
from blocks.inference.tools import (
    ToolCallStream,
    ToolsError,
    history_content,
    plan_tools,
    tool_call_message,
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {"type": "function", "function": {"name": "now"}}
CALL = '{"name":"get_weather","arguments":{"city":"Paris","unit":"c"}}'


def test_forced_choices_constrain_to_call_texts() -> None:
    named = plan_tools(
        {"tools": [WEATHER, TIME], "tool_choice": {"type": "function", "function": {"name": "now"}}}
    )
    assert named.grammar is not None and "now" in named.instructions
    state = advance(initial_state(named.grammar), b'{"name":"now","arguments":{}}')
    assert state is not None and accepting(state)
    assert advance(initial_state(named.grammar), b'{"name":"get_weather"') is None
    required = plan_tools({"tools": [WEATHER, TIME], "tool_choice": "required"})
    assert required.grammar is not None
    state = advance(initial_state(required.grammar), CALL.encode())
    assert state is not None and accepting(state)
    for choice in (None, "none", "auto"):
        assert not plan_tools({"tools": [WEATHER], "tool_choice": choice}).forced


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": [{"type": "code_interpreter"}], "tool_choice": "auto"}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools"),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": {"type": "string"}},
                    }
                ],
                "tool_choice": "required",
            },
            "tools",
        ),
    ],
)
def test_bad_tool_fields_name_their_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(ToolsError) as info:
        plan_tools(body)
    assert info.value.param == param


def test_parse_chat_adds_instructions_and_accepts_tool_history() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "now", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "12:00"},
    ]
    body = {"messages": messages, "tools": [WEATHER, TIME], "tool_choice": "required"}
    clean, parsed = oa.parse_chat(body)
    assert parsed.tool_call and parsed.params.grammar is not None
    assert clean[0]["role"] == "system" and clean[0]["content"].startswith("Be brief. ")
    assert clean[2]["content"] == '{"name":"now","arguments":{}}'
    assert clean[3] == {"role": "tool", "content": "12:00"}
    _, auto = oa.parse_chat({**body, "tool_choice": "auto"})
    assert not auto.tool_call and auto.params.grammar is None
    with pytest.raises(oa.ApiError) as info:
        oa.parse_chat(
            {
                "messages": messages[:1],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "x"}},
                },
            }
        )
    assert info.value.param == "response_format" and "pattern" in info.value.message
    with pytest.raises(oa.ApiError) as info:
        oa.parse_completion({"prompt": "x", "tools": [WEATHER]})
    assert info.value.param == "tools"


def test_tool_call_message_whole_cut_and_too_short() -> None:
    message, reason = tool_call_message(CALL, "stop", "call_1")
    assert reason == "tool_calls" and message["content"] is None
    assert message["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris","unit":"c"}'},
        }
    ]
    message, reason = tool_call_message(CALL[:-8], "length", "call_1")
    assert (
        reason == "length"
        and message["tool_calls"][0]["function"]["arguments"] == '{"city":"Paris","uni'
    )
    assert tool_call_message('{"name":"get_w', "length", "c") == (
        {"role": "assistant", "content": '{"name":"get_w'},
        "length",
    )
    assert (
        history_content(
            {"content": None, "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}
        )
        == '{"name":"f","arguments":{}}'
    )


@settings(max_examples=50, deadline=None)
@given(cuts=st.lists(st.integers(0, len(CALL)), max_size=8), cut_short=st.booleans())
def test_streamed_call_rejoins_to_the_whole_call(cuts: list[int], cut_short: bool) -> None:
    text = CALL[:-5] if cut_short else CALL
    bounds = sorted({0, *(c for c in cuts if c <= len(text)), len(text)})
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)] or [""]
    stream = ToolCallStream("call_9")
    calls: list[dict[str, Any]] = []
    reason = None
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        delta, reason = stream.push(piece, ("length" if cut_short else "stop") if last else None)
        calls += delta.get("tool_calls", [])
        assert last or reason is None
    assert calls[0]["id"] == "call_9" and calls[0]["function"]["name"] == "get_weather"
    assert all("id" not in c for c in calls[1:])
    arguments = "".join(c["function"]["arguments"] for c in calls)
    whole, _ = tool_call_message(text, "length" if cut_short else "stop", "call_9")
    assert arguments == whole["tool_calls"][0]["function"]["arguments"]
    assert reason == ("length" if cut_short else "tool_calls")
    if not cut_short:
        assert json.loads(arguments) == {"city": "Paris", "unit": "c"}
