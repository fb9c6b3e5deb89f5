"""Metadata filters and attributes across process boundaries: protobuf messages and JSON.

Theory of operation. ``blocks.search.metadata`` defines attribute values and filter
expressions as Python objects; a node, a coordinator and a client exchange them as the
``Attributes`` and ``FilterExpression`` messages of ``search.proto``, and a user writes a
filter as JSON (the CLI's ``--where``, or a dict given to ``SearchClient.search``). This
module converts between the three, validating as it goes, so every way in refuses the same
bad input with ``InvalidArgument`` before anything is stored or searched.

The JSON form, after the filters of the vector stores users know:

* ``{"color": "red"}``: equality (``Eq``); several keys in one object must all match (``And``);
* ``{"price": {"$gte": 1, "$lt": 5}}``: a range (``$gt``, ``$gte``, ``$lt``, ``$lte``: one
  ``Range`` over numbers); ``{"$eq": v}``, ``{"$ne": v}`` (``Not(Eq)``),
  ``{"$in": [...]}``, ``{"$nin": [...]}`` (``Not(In)``);
* ``{"$and": [...]}``, ``{"$or": [...]}``, ``{"$not": {...}}``.

``$ne``/``$nin``/``$not`` follow ``Not``: an id without the field matches them. Bounds on any
expression: ``FILTER_NODES_MAX`` nodes, ``FILTER_DEPTH_MAX`` levels, ``FILTER_VALUES_MAX``
values over all its sets.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from blocks.core.errors import InvalidArgument
from blocks.search import search_pb2
from blocks.search.api import Filter
from blocks.search.metadata import And, Eq, Expression, In, Not, Or, Range, Value, check_attributes
from blocks.search.vectors import allowed_mask

__all__ = [
    "FILTER_DEPTH_MAX",
    "FILTER_NODES_MAX",
    "FILTER_VALUES_MAX",
    "as_expression",
    "attributes_from_wire",
    "attributes_to_wire",
    "check_attribute_rows",
    "expression_from_wire",
    "expression_to_wire",
    "fill_search_filter",
    "parse_attribute",
    "parse_where",
]

FILTER_NODES_MAX = 1_024
FILTER_DEPTH_MAX = 32
FILTER_VALUES_MAX = 10_000
_RANGE_OPERATORS = {"$gt", "$gte", "$lt", "$lte"}


def check_attribute_rows(attributes: Sequence[Any] | None, count: int) -> list[dict[str, Value]]:
    """One validated attribute dict per id (``count`` of them), or ``[]`` for none given."""
    if attributes is None or len(attributes) == 0:
        return []
    if isinstance(attributes, Mapping | str) or len(attributes) != count:
        raise InvalidArgument(f"attributes: one mapping per id expected ({count} ids)")
    return [check_attributes(row) for row in attributes]


# -- protobuf ------------------------------------------------------------------------------


def _fill_value(message: Any, value: Value) -> None:
    if isinstance(value, bool):
        message.flag = value
    elif isinstance(value, int):
        message.integer = value
    elif isinstance(value, float):
        message.number = value
    else:
        message.text = value


def _value(message: Any) -> Value:
    kind = message.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument("an attribute value has none of text, integer, number, flag set")
    value: Value = getattr(message, kind)
    return value


def attributes_to_wire(attributes: Mapping[str, Value]) -> Any:
    """An ``Attributes`` message for one id's (validated) attributes."""
    message = search_pb2.Attributes()
    for field, value in attributes.items():
        _fill_value(message.values[field], value)
    return message


def attributes_from_wire(message: Any) -> dict[str, Value]:
    """One id's attributes from an ``Attributes`` message, validated."""
    return check_attributes({field: _value(value) for field, value in message.values.items()})


class _Budget:
    """Counts an expression's nodes and values against the bounds as it is walked."""

    def __init__(self) -> None:
        self.nodes = 0
        self.values = 0

    def enter(self, depth: int, values: int = 0) -> None:
        self.nodes += 1
        self.values += values
        if depth > FILTER_DEPTH_MAX:
            raise InvalidArgument(f"a filter nests at most {FILTER_DEPTH_MAX} levels")
        if self.nodes > FILTER_NODES_MAX:
            raise InvalidArgument(f"a filter has at most {FILTER_NODES_MAX} nodes")
        if self.values > FILTER_VALUES_MAX:
            raise InvalidArgument(f"a filter's sets hold at most {FILTER_VALUES_MAX} values")


def expression_to_wire(expression: Expression, message: Any) -> None:
    """Write ``expression`` into the ``FilterExpression`` ``message`` (in place)."""
    if isinstance(expression, Eq):
        message.eq.field = expression.field
        _fill_value(message.eq.value, expression.value)
    elif isinstance(expression, In):
        message.in_set.field = expression.field
        for value in sorted(expression.values, key=repr):  # stable bytes for equal sets
            _fill_value(message.in_set.values.add(), value)
    elif isinstance(expression, Range):
        wire = message.range
        wire.field = expression.field
        wire.SetInParent()  # an open range is still a range (the ids with a number)
        if expression.low is not None:
            wire.has_low, wire.low = True, float(expression.low)
        if expression.high is not None:
            wire.has_high, wire.high = True, float(expression.high)
        wire.low_exclusive = not expression.low_inclusive  # kept for an open bound too
        wire.high_exclusive = not expression.high_inclusive
    elif isinstance(expression, And | Or):
        parts = message.all_of if isinstance(expression, And) else message.any_of
        parts.SetInParent()
        for part in expression.parts:
            expression_to_wire(part, parts.parts.add())
    elif isinstance(expression, Not):
        expression_to_wire(expression.part, message.negated)
    else:
        raise InvalidArgument(f"not a filter expression: {expression!r}")


def expression_from_wire(message: Any, *, _depth: int = 1, _budget: Any = None) -> Expression:
    """The expression a ``FilterExpression`` message holds, validated and bounded."""
    budget = _budget if _budget is not None else _Budget()
    kind = message.WhichOneof("kind")
    if kind == "eq":
        budget.enter(_depth, 1)
        return Eq(message.eq.field, _value(message.eq.value))
    if kind == "in_set":
        budget.enter(_depth, len(message.in_set.values))
        return In(message.in_set.field, frozenset(_value(v) for v in message.in_set.values))
    if kind == "range":
        budget.enter(_depth)
        wire = message.range
        return Range(
            wire.field,
            wire.low if wire.has_low else None,
            wire.high if wire.has_high else None,
            not wire.low_exclusive,
            not wire.high_exclusive,
        )
    if kind in ("all_of", "any_of"):
        budget.enter(_depth)
        parts = tuple(
            expression_from_wire(part, _depth=_depth + 1, _budget=budget)
            for part in getattr(message, kind).parts
        )
        return And(parts) if kind == "all_of" else Or(parts)
    if kind == "negated":
        budget.enter(_depth)
        return Not(expression_from_wire(message.negated, _depth=_depth + 1, _budget=budget))
    raise InvalidArgument("a filter expression has none of its kinds set")


def fill_search_filter(request: Any, filter: Filter | None, where: Expression | None) -> None:
    """Set a ``SearchVectorsRequest``'s allow-list (``filter``: ids, not a callable, which
    cannot cross a process boundary) and metadata filter (``where``), in place."""
    if filter is not None:
        if callable(filter):
            raise InvalidArgument("a remote index takes an allow-list of ids, not a callable")
        listed = np.asarray(filter, dtype=np.int64).ravel()
        request.has_filter = True
        request.filter_ids.extend(listed[allowed_mask(filter, listed)].tolist())
    if where is not None:
        expression_to_wire(where, request.where)


# -- JSON ----------------------------------------------------------------------------------


def as_expression(where: Any) -> Expression | None:
    """``None``, an ``Expression``, its JSON form (a dict) or that JSON as text, as an
    ``Expression`` (``None`` for none); bounded as on the wire."""
    if where is None:
        return None
    if isinstance(where, Eq | In | Range | And | Or | Not):
        message = search_pb2.FilterExpression()
        expression_to_wire(where, message)
        expression_from_wire(message)  # the same bounds as a filter that came over the wire
        return where
    if isinstance(where, str):
        try:
            where = json.loads(where)
        except ValueError as error:
            raise InvalidArgument(f"a filter is JSON: {error}") from None
    return parse_where(where)


def parse_where(document: Any) -> Expression:
    """The JSON form (module docstring), as parsed by ``json.loads``, as an ``Expression``."""
    return _object(document, 1, _Budget())


def _object(document: Any, depth: int, budget: _Budget) -> Expression:
    if not isinstance(document, Mapping):
        raise InvalidArgument(f"a filter is a JSON object, got {document!r}")
    budget.enter(depth)
    parts = [_clause(key, value, depth + 1, budget) for key, value in document.items()]
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def _clause(key: Any, value: Any, depth: int, budget: _Budget) -> Expression:
    if key in ("$and", "$or"):
        if not isinstance(value, list):
            raise InvalidArgument(f"{key} takes a list of filters")
        parts = tuple(_object(part, depth + 1, budget) for part in value)
        return And(parts) if key == "$and" else Or(parts)
    if key == "$not":
        return Not(_object(value, depth + 1, budget))
    if not isinstance(key, str) or key.startswith("$"):
        raise InvalidArgument(f"unknown filter operator {key!r}")
    if not isinstance(value, Mapping):
        budget.enter(depth, 1)
        return Eq(key, _scalar(value))
    return _operators(key, value, depth, budget)


def _operators(field: str, operators: Mapping[str, Any], depth: int, budget: _Budget) -> Expression:
    if not operators:
        raise InvalidArgument(f"field {field!r}: an empty object is not a condition")
    parts: list[Expression] = []
    bounds = {op: arg for op, arg in operators.items() if op in _RANGE_OPERATORS}
    if bounds:
        budget.enter(depth)
        low = bounds.get("$gte", bounds.get("$gt"))
        high = bounds.get("$lte", bounds.get("$lt"))
        if ("$gt" in bounds and "$gte" in bounds) or ("$lt" in bounds and "$lte" in bounds):
            raise InvalidArgument(f"field {field!r}: one lower and one upper bound at most")
        parts.append(Range(field, low, high, "$gt" not in bounds, "$lt" not in bounds))
    for op, arg in operators.items():
        if op in _RANGE_OPERATORS:
            continue
        if op in ("$eq", "$ne"):
            budget.enter(depth, 1)
            leaf: Expression = Eq(field, _scalar(arg))
        elif op in ("$in", "$nin"):
            if not isinstance(arg, list):
                raise InvalidArgument(f"field {field!r}: {op} takes a list of values")
            budget.enter(depth, len(arg))
            leaf = In(field, frozenset(_scalar(v) for v in arg))
        else:
            raise InvalidArgument(f"field {field!r}: unknown operator {op!r}")
        parts.append(Not(leaf) if op in ("$ne", "$nin") else leaf)
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def _scalar(value: Any) -> Value:
    if isinstance(value, str | bool | int | float):
        return value
    raise InvalidArgument(f"filter values are strings, numbers or booleans, got {value!r}")


def parse_attribute(flag: str) -> tuple[str, Value]:
    """``KEY=VALUE`` (the CLI's ``--attr``): ``VALUE`` as a JSON number, ``true``/``false`` or
    string when it parses as one (``size=3``, ``ok=true``, ``code="007"``), else the text as
    a string (``color=red``)."""
    field, equals, text = flag.partition("=")
    if not equals or not field:
        raise InvalidArgument(f"--attr takes KEY=VALUE, got {flag!r}")
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    if not isinstance(value, str | bool | int | float):
        value = text  # a JSON list, object or null is not a value: keep the text
    return field, check_attributes({field: value})[field]
