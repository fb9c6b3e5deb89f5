"""Tools and structured output for the chat API: request fields to grammars, text to calls.

Theory of operation (pure: no I/O):

* ``response_format_grammar`` maps ``response_format`` to a ``Grammar``: ``text`` to none,
  ``json_object`` to any JSON object, ``json_schema`` to its compiled ``schema``.
* ``plan_tools`` reads ``tools`` and ``tool_choice``. When a call is forced (``"required"``
  or a named function) the answer is constrained to one *call text*, the compact JSON
  ``{"name":NAME,"arguments":ARGS}`` where ARGS matches that function's ``parameters``
  (for ``"required"``, any listed function's); the plan also carries instructions naming
  the functions, added to the system message so the model knows what it is filling in.
  ``"auto"`` is answered as ``"none"``: the reply is text, and nothing is parsed out of it
  (the served models' templates have no tool format to detect calls by).
* ``tool_call_message`` turns a finished call text into OpenAI's ``message.tool_calls``;
  ``ToolCallStream`` does the same incrementally for ``delta.tool_calls``: the name once it
  is complete, then the arguments' text as it grows, always holding back one character,
  which is the call text's closing brace when it finishes.
* ``history_content`` writes an assistant message's earlier ``tool_calls`` as call texts, so
  a chat template without a tool format still shows the model what it called.

Limits: ``MAX_TOOLS`` functions, names of ``^[A-Za-z0-9_-]{1,64}$`` (so a name never
contains the ``,"arguments":`` the stream splits on); each ``parameters`` schema is bounded
by ``jsonschema_grammar``'s limits. Errors are ``ToolsError`` (an ``InvalidArgument``)
carrying the request field they are about.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from blocks.core.errors import InvalidArgument
from blocks.inference.jsonschema_grammar import (
    ANY,
    AnyNode,
    Grammar,
    LiteralNode,
    Node,
    ObjectNode,
    UnionNode,
    compile_schema,
    json_object_grammar,
)

__all__ = [
    "MAX_TOOLS",
    "ToolCallStream",
    "ToolPlan",
    "ToolsError",
    "history_content",
    "plan_tools",
    "response_format_grammar",
    "tool_call_message",
]

MAX_TOOLS = 32
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CALL_PREFIX = '{"name":'
ARGUMENTS_MARKER = ',"arguments":'


class ToolsError(InvalidArgument):
    """A ``tools``/``tool_choice``/``response_format`` value that cannot be served."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class ToolPlan:
    grammar: Grammar | None  # set when a call is forced
    instructions: str  # for the system message when a call is forced, else ""

    @property
    def forced(self) -> bool:
        return self.grammar is not None


def response_format_grammar(body: Mapping[str, Any]) -> Grammar | None:
    value = body.get("response_format")
    if value is None or value == {"type": "text"}:
        return None
    kind = value.get("type") if isinstance(value, Mapping) else None
    if kind == "json_object":
        return json_object_grammar()
    if kind != "json_schema":
        raise ToolsError("response_format", "type must be text, json_object or json_schema")
    spec = value.get("json_schema")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise ToolsError("response_format", "json_schema needs a name and a schema")
    return _compiled("response_format", spec.get("schema", {}))


def plan_tools(body: Mapping[str, Any]) -> ToolPlan:
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or len(tools) > MAX_TOOLS:
        raise ToolsError("tools", f"tools must be a list of at most {MAX_TOOLS} functions")
    functions = [_function(tool) for tool in tools]
    names = [f["name"] for f in functions]
    if len(set(names)) != len(names):
        raise ToolsError("tools", "function names must be distinct")
    if choice in (None, "none", "auto"):
        return ToolPlan(None, "")
    if choice == "required":
        chosen = functions
    elif isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
        name = choice["function"].get("name")
        chosen = [f for f in functions if f["name"] == name]
    else:
        raise ToolsError(
            "tool_choice", 'tool_choice must be "none", "auto", "required" or a function'
        )
    if not chosen:
        raise ToolsError("tool_choice", "tool_choice names no function listed in tools")
    calls = tuple(_call_node(f) for f in chosen)
    root: Node = calls[0] if len(calls) == 1 else UnionNode(calls)
    return ToolPlan(Grammar(root, len(calls)), _instructions(chosen))


def _function(tool: Any) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, Mapping) else None
    if not isinstance(function, Mapping) or tool.get("type") != "function":
        raise ToolsError("tools", 'each tool must be {"type": "function", "function": {...}}')
    name = function.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ToolsError("tools", "a function name must match ^[A-Za-z0-9_-]{1,64}$")
    parameters = function.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, Mapping):
        raise ToolsError("tools", f"parameters of {name} must be a JSON schema object")
    return {"name": name, "description": function.get("description", ""), "parameters": parameters}


def _call_node(function: Mapping[str, Any]) -> ObjectNode:
    arguments = _compiled("tools", function["parameters"]).root
    if isinstance(arguments, AnyNode):
        arguments = ObjectNode((), ANY)
    if not isinstance(arguments, ObjectNode):
        raise ToolsError("tools", f"parameters of {function['name']} must describe an object")
    name = LiteralNode((json.dumps(function["name"]).encode(),))
    return ObjectNode(((b'"name"', name, True), (b'"arguments"', arguments, True)), None)


def _compiled(param: str, schema: Any) -> Grammar:
    try:
        return compile_schema(schema)
    except InvalidArgument as error:
        raise ToolsError(param, str(error)) from None


def _instructions(functions: list[dict[str, Any]]) -> str:
    listed = [{k: v for k, v in f.items() if v} for f in functions]  # no empty description
    return (  # one line: some tokenizers (the test one) take no control characters
        f"Functions: {json.dumps(listed, separators=(',', ':'))}. "
        'Reply with one call as JSON: {"name":...,"arguments":{...}}.'
    )


def history_content(message: Mapping[str, Any]) -> str:
    """An assistant message's text, with its ``tool_calls`` written as call texts."""
    content = message.get("content") or ""
    calls = message.get("tool_calls") or []
    if not isinstance(content, str) or not isinstance(calls, list):
        raise ToolsError("messages", "assistant content must be text and tool_calls a list")
    texts = [content] if content else []
    for call in calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise ToolsError("messages", "each tool call needs a function with a name")
        arguments = function.get("arguments", "{}")
        if not isinstance(arguments, str):
            raise ToolsError("messages", "tool call arguments must be a JSON string")
        texts.append(f"{CALL_PREFIX}{json.dumps(function['name'])}{ARGUMENTS_MARKER}{arguments}}}")
    return "\n".join(texts)


def _split(text: str) -> tuple[str, int] | None:
    """The call's name and where its arguments start, once the name is complete."""
    if not text.startswith(CALL_PREFIX):
        return None
    end = text.find(ARGUMENTS_MARKER)
    if end < 0:
        return None
    try:
        name = json.loads(text[len(CALL_PREFIX) : end])
    except ValueError:
        return None
    return (name, end + len(ARGUMENTS_MARKER)) if isinstance(name, str) else None


def _complete(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def tool_call_message(text: str, finish_reason: str, call_id: str) -> tuple[dict[str, Any], str]:
    """The ``message`` and ``finish_reason`` of a choice whose text is a call text.

    A whole call gives ``tool_calls`` and "tool_calls"; a call cut short (max_tokens, a stop
    string) keeps its partial arguments and the reason it stopped; text cut before the name
    is complete comes back as plain content.
    """
    split = _split(text)
    if split is None:
        return {"role": "assistant", "content": text}, finish_reason
    name, start = split
    complete = _complete(text)
    arguments = text[start:-1] if complete else text[start:]
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    return message, "tool_calls" if complete else finish_reason


class ToolCallStream:
    """Turns a streamed call text into ``delta.tool_calls`` entries (one call, index 0)."""

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.text = ""
        self.sent = -1  # how much of ``text`` went out as arguments; -1: name not sent yet

    def push(self, text: str, finish_reason: str | None) -> tuple[dict[str, Any], str | None]:
        """The chunk's ``delta`` for ``text`` and its finish reason (mapped as in
        ``tool_call_message`` on the last one)."""
        self.text += text
        calls: list[dict[str, Any]] = []
        if self.sent < 0:
            split = _split(self.text)
            if split is None:
                if finish_reason is None:
                    return {}, None
                return ({"content": self.text} if self.text else {}), finish_reason
            name, self.sent = split
            function = {"name": name, "arguments": ""}
            calls.append({"index": 0, "id": self.call_id, "type": "function", "function": function})
        complete = finish_reason is not None and _complete(self.text)
        end = len(self.text) - 1 if finish_reason is None or complete else len(self.text)
        if end > self.sent:
            calls.append({"index": 0, "function": {"arguments": self.text[self.sent : end]}})
            self.sent = end
        reason = "tool_calls" if complete else finish_reason
        return ({"tool_calls": calls} if calls else {}), reason
