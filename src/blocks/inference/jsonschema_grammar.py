"""JSON Schema to a grammar of compact JSON values (pure: no torch, no I/O).

Theory of operation: ``compile_schema`` turns the subset of JSON Schema that real clients send
(OpenAI structured outputs, pydantic's ``model_json_schema``) into a small graph of immutable
nodes that ``json_automaton`` walks byte by byte:

* ``LiteralNode``: a fixed set of JSON texts (``enum``, ``const``, ``true``/``false``, ``null``),
  each the compact ``json.dumps`` of a value;
* ``StringNode`` (``minLength``/``maxLength``), ``NumberNode`` (``integer`` or ``number``);
* ``ObjectNode``: declared ``properties`` written in declaration order, a required one never
  skipped; or, without properties, free keys whose values follow ``additionalProperties``;
* ``ArrayNode`` (``items``, ``minItems``, ``maxItems``), ``UnionNode`` (``anyOf``, a list of
  ``type``\\ s), and ``ANY`` (any JSON value: ``{}``, ``{"type": "object"}`` values).

Every node accepts at least one value (an empty ``enum``, ``minLength > maxLength`` and the like
are refused), so a prefix the automaton accepts can always be completed. Local ``$ref`` into
``$defs``/``definitions`` is resolved; a reference cycle is refused, so the graph of a schema is
a DAG whose depth is bounded. Annotations (``title``, ``description``, ``default``,
``examples``, ``format``, ...) are ignored; any other keyword raises ``UnsupportedSchema``
naming it. Sizes are bounded: ``MAX_SCHEMA_NODES``, ``MAX_SCHEMA_DEPTH``, ``MAX_ENUM_VALUES``,
``MAX_LITERAL_BYTES``, ``MAX_PROPERTIES``; a breach raises ``SchemaTooLarge``.

With ``properties`` declared and ``additionalProperties`` absent or true, only the declared
keys are generated (still valid: the schema allows them, and extra keys would be guesses).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from blocks.core.errors import InvalidArgument

__all__ = [
    "ANY",
    "MAX_ENUM_VALUES",
    "MAX_LITERAL_BYTES",
    "MAX_PROPERTIES",
    "MAX_SCHEMA_DEPTH",
    "MAX_SCHEMA_NODES",
    "AnyNode",
    "ArrayNode",
    "Grammar",
    "LiteralNode",
    "Node",
    "NumberNode",
    "ObjectNode",
    "SchemaTooLarge",
    "StringNode",
    "UnionNode",
    "UnsupportedSchema",
    "compile_schema",
    "json_object_grammar",
]

MAX_SCHEMA_NODES = 512  # compiled nodes per schema
MAX_SCHEMA_DEPTH = 12  # nested objects/arrays/unions in a schema
MAX_ENUM_VALUES = 256
MAX_LITERAL_BYTES = 1024  # one enum/const value, as compact JSON
MAX_PROPERTIES = 64  # declared properties of one object

ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "format",
        "$schema",
        "$id",
        "$comment",
        "deprecated",
        "readOnly",
        "writeOnly",
        "$defs",
        "definitions",
        "strict",
    }
)
TYPES = ("string", "number", "integer", "boolean", "null", "object", "array")


class UnsupportedSchema(InvalidArgument):
    """The schema uses a keyword (or a form of one) the grammar cannot enforce."""

    def __init__(self, keyword: str, detail: str = "is not supported") -> None:
        super().__init__(f"JSON schema keyword {keyword!r} {detail}")
        self.keyword = keyword


class SchemaTooLarge(InvalidArgument):
    """The schema is past one of the named size limits."""


@dataclass(frozen=True, slots=True, eq=False)
class LiteralNode:
    texts: tuple[bytes, ...]  # compact JSON texts, distinct, non-empty


@dataclass(frozen=True, slots=True, eq=False)
class StringNode:
    min_length: int = 0
    max_length: int | None = None


@dataclass(frozen=True, slots=True, eq=False)
class NumberNode:
    integer: bool


@dataclass(frozen=True, slots=True, eq=False)
class ObjectNode:
    # Declared (key text as compact JSON string, value node, required), in order. When empty,
    # ``additional`` (if not None) is the node of every value under free string keys.
    properties: tuple[tuple[bytes, Node, bool], ...]
    additional: Node | None


@dataclass(frozen=True, slots=True, eq=False)
class ArrayNode:
    items: Node
    min_items: int = 0
    max_items: int | None = None


@dataclass(frozen=True, slots=True, eq=False)
class UnionNode:
    options: tuple[Node, ...]  # at least one


@dataclass(frozen=True, slots=True, eq=False)
class AnyNode:
    """Any JSON value (containers nest up to the automaton's stack limit)."""


Node = LiteralNode | StringNode | NumberNode | ObjectNode | ArrayNode | UnionNode | AnyNode
ANY = AnyNode()


@dataclass(frozen=True, slots=True, eq=False)
class Grammar:
    """A compiled schema: the root node, and the number of nodes it took."""

    root: Node
    num_nodes: int


def json_object_grammar() -> Grammar:
    """``response_format: {"type": "json_object"}``: any JSON object."""
    return Grammar(ObjectNode((), ANY), 1)


def compile_schema(schema: Any) -> Grammar:
    """Compile ``schema``; raises ``UnsupportedSchema`` or ``SchemaTooLarge`` (both
    ``InvalidArgument``) for what cannot be enforced or is too big."""
    if not isinstance(schema, Mapping):
        raise UnsupportedSchema("schema", "must be an object")
    compiler = _Compiler(schema)
    root = compiler.node(schema, 0)
    return Grammar(root, compiler.count)


class _Compiler:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.count = 0
        self.resolving: list[str] = []

    def node(self, schema: Any, depth: int) -> Node:
        self.count += 1
        if self.count > MAX_SCHEMA_NODES:
            raise SchemaTooLarge(f"JSON schema has more than {MAX_SCHEMA_NODES} nodes")
        if depth > MAX_SCHEMA_DEPTH:
            raise SchemaTooLarge(f"JSON schema nests deeper than {MAX_SCHEMA_DEPTH}")
        if schema is True:
            return ANY
        if not isinstance(schema, Mapping):
            raise UnsupportedSchema("schema", "must be an object (or true)")
        keys = set(schema) - ANNOTATIONS
        if "$ref" in keys:
            if keys != {"$ref"}:
                raise UnsupportedSchema(sorted(keys - {"$ref"})[0], "next to $ref")
            return self._ref(schema["$ref"], depth)
        if "allOf" in keys:
            parts = schema["allOf"]
            if not isinstance(parts, list) or len(parts) != 1 or keys != {"allOf"}:
                raise UnsupportedSchema("allOf", "is supported only with one entry, alone")
            return self.node(parts[0], depth + 1)
        if "anyOf" in keys:
            return self._any_of(schema, keys, depth)
        if "enum" in keys or "const" in keys:
            return self._literal(schema, keys)
        return self._typed(schema, keys, depth)

    def _ref(self, ref: Any, depth: int) -> Node:
        for prefix, section in (("#/$defs/", "$defs"), ("#/definitions/", "definitions")):
            if isinstance(ref, str) and ref.startswith(prefix):
                target = self.root.get(section, {}).get(ref[len(prefix) :])
                break
        else:
            raise UnsupportedSchema("$ref", "must point into #/$defs or #/definitions")
        if target is None:
            raise UnsupportedSchema("$ref", f"{ref!r} names nothing")
        if ref in self.resolving:
            raise UnsupportedSchema("$ref", "cycles (recursive schemas) are not supported")
        self.resolving.append(ref)
        try:
            return self.node(target, depth + 1)
        finally:
            self.resolving.pop()

    def _any_of(self, schema: Mapping[str, Any], keys: set[str], depth: int) -> Node:
        if keys != {"anyOf"}:
            raise UnsupportedSchema(sorted(keys - {"anyOf"})[0], "next to anyOf")
        options = schema["anyOf"]
        if not isinstance(options, list) or not options:
            raise UnsupportedSchema("anyOf", "must be a non-empty list")
        return UnionNode(tuple(self.node(option, depth + 1) for option in options))

    def _literal(self, schema: Mapping[str, Any], keys: set[str]) -> Node:
        extra = keys - {"enum", "const", "type"}
        if extra:
            raise UnsupportedSchema(sorted(extra)[0], "next to enum/const")
        values = [schema["const"]] if "const" in keys else schema["enum"]
        if not isinstance(values, list) or not values:
            raise UnsupportedSchema("enum", "must be a non-empty list")
        if len(values) > MAX_ENUM_VALUES:
            raise SchemaTooLarge(f"enum has more than {MAX_ENUM_VALUES} values")
        allowed = _type_list(schema)
        texts: list[bytes] = []
        for value in values:
            if allowed is not None and not any(_has_type(value, t) for t in allowed):
                continue
            text = _compact(value)
            if len(text) > MAX_LITERAL_BYTES:
                raise SchemaTooLarge(f"an enum/const value is over {MAX_LITERAL_BYTES} bytes")
            if text not in texts:
                texts.append(text)
        if not texts:
            raise UnsupportedSchema("enum", "has no value of the schema's type")
        return LiteralNode(tuple(texts))

    def _typed(self, schema: Mapping[str, Any], keys: set[str], depth: int) -> Node:
        allowed = _type_list(schema)
        if allowed is None:
            if keys:
                raise UnsupportedSchema(sorted(keys)[0], "needs a type")
            return ANY
        options = [self._one_type(t, schema, keys, depth) for t in allowed]
        return options[0] if len(options) == 1 else UnionNode(tuple(options))

    def _one_type(self, kind: str, schema: Mapping[str, Any], keys: set[str], depth: int) -> Node:
        per_type = {
            "string": {"minLength", "maxLength"},
            "object": {"properties", "required", "additionalProperties"},
            "array": {"items", "minItems", "maxItems"},
        }
        known = {"type"} | set().union(*per_type.values())
        extra = keys - known
        if extra:
            raise UnsupportedSchema(sorted(extra)[0])
        if kind == "string":
            low = _count(schema, "minLength") or 0
            high = _count(schema, "maxLength")
            if high is not None and high < low:
                raise UnsupportedSchema("maxLength", "is below minLength")
            return StringNode(low, high)
        if kind in ("number", "integer"):
            return NumberNode(kind == "integer")
        if kind == "boolean":
            return LiteralNode((b"true", b"false"))
        if kind == "null":
            return LiteralNode((b"null",))
        if kind == "array":
            return self._array(schema, depth)
        return self._object(schema, depth)

    def _array(self, schema: Mapping[str, Any], depth: int) -> Node:
        items = schema.get("items", True)
        low = _count(schema, "minItems") or 0
        high = _count(schema, "maxItems")
        if high is not None and high < low:
            raise UnsupportedSchema("maxItems", "is below minItems")
        if not isinstance(items, Mapping | bool) or items is False:
            raise UnsupportedSchema("items", "must be one schema")
        return ArrayNode(self.node(items, depth + 1), low, high)

    def _object(self, schema: Mapping[str, Any], depth: int) -> Node:
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        additional = schema.get("additionalProperties", True)
        if not isinstance(properties, Mapping) or len(properties) > MAX_PROPERTIES:
            raise SchemaTooLarge(f"properties must be an object of at most {MAX_PROPERTIES}")
        if not isinstance(required, list) or not set(required) <= set(properties):
            raise UnsupportedSchema("required", "must list declared properties")
        declared = tuple(
            (_compact(str(name)), self.node(sub, depth + 1), name in required)
            for name, sub in properties.items()
        )
        if declared:
            return ObjectNode(declared, None)
        if additional is False:
            return ObjectNode((), None)
        free = ANY if additional is True else self.node(additional, depth + 1)
        return ObjectNode((), free)


def _type_list(schema: Mapping[str, Any]) -> list[str] | None:
    kind = schema.get("type")
    if kind is None:
        return None
    kinds = [kind] if isinstance(kind, str) else kind
    if not isinstance(kinds, list) or not kinds or any(k not in TYPES for k in kinds):
        raise UnsupportedSchema("type", f"must be one or a list of {', '.join(TYPES)}")
    return list(dict.fromkeys(kinds))


def _has_type(value: Any, kind: str) -> bool:
    checks: dict[str, Any] = {
        "string": lambda v: isinstance(v, str),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
    }
    return bool(checks[kind](value))


def _count(schema: Mapping[str, Any], name: str) -> int | None:
    """A non-negative integer keyword's value, None when absent."""
    value = schema.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UnsupportedSchema(name, "must be a non-negative integer")
    return int(value)


def _compact(value: Any) -> bytes:
    try:
        return json.dumps(
            value, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except (TypeError, ValueError):
        raise UnsupportedSchema("enum", "values must be JSON") from None
