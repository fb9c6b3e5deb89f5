"""Metadata filters: attributes per vector id, and expressions that select ids by them.

Theory of operation. ``MetadataStore`` keeps, for every id, a small dict of attributes (str,
int, float or bool values). A filter expression is a tree of frozen dataclasses:

* ``Eq(field, value)``: the attribute equals ``value``;
* ``In(field, values)``: the attribute is one of ``values`` (a set);
* ``Range(field, low, high)``: ``low <= attribute <= high`` (either bound may be ``None``;
  ``low_inclusive``/``high_inclusive`` make a bound strict); only numbers are ranged;
* ``And(parts)``, ``Or(parts)``, ``Not(part)``.

An id without the field matches no ``Eq``, ``In`` or ``Range`` on it (and so matches their
``Not``). ``MetadataStore.allowed_ids(expression)`` evaluates the tree to a sorted int64 array
of the ids *with attributes* it selects. ``MetadataStore.filter_for(expression)`` is what a
search node uses: its ``Not`` also selects vectors stored without any attribute (the store
keeps no entry for them), so the tree is evaluated to a set or to the complement of a set,
and a complement becomes a predicate over the index's ids instead of an allow-list. That array is a ``VectorIndex`` *filter*, which every index applies inside its search,
not after it: ``ExactIndex`` masks the corpus before its top-k, ``FaissIndex`` hands faiss an
``IDSelectorBatch`` that its IVF and HNSW scans consult as they go (and
``blocks.search.filtered`` retries an approximate search that came back short). Post-filtering
a plain top-k, the rejected alternative, returns fewer than ``k`` as soon as the filter is
selective.

Evaluation cost: every selection is a sorted numpy array of ids. ``Eq`` reads a posting's
array, cached until the posting changes (no copy per search); ``In`` merges one per value;
``Range`` scans the field's column as numpy arrays, rebuilt lazily after a change (``O(ids
with the field)``); And and Or are numpy intersections, unions and differences; ``Not``
flips a flag (the complement is never built), so ``filter_for`` of a ``Not`` costs what its
part costs. Bounds: ``FIELDS_PER_ID_MAX`` attributes per
id, field names up to ``FIELD_CHARS_MAX`` characters, string values up to ``VALUE_CHARS_MAX``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from blocks.core.errors import Corruption, InvalidArgument
from blocks.search.api import IdArray

__all__ = [
    "FIELDS_PER_ID_MAX",
    "And",
    "Eq",
    "Expression",
    "In",
    "MetadataStore",
    "Not",
    "Or",
    "Range",
    "Value",
    "check_attributes",
]

FIELDS_PER_ID_MAX = 64
FIELD_CHARS_MAX = 128
VALUE_CHARS_MAX = 1024
INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1
_EMPTY = np.zeros(0, dtype=np.int64)
_EMPTY.flags.writeable = False  # what the wire (sint64) and the log carry

Value = str | int | float | bool


def _check_value(value: Any) -> Value:
    if isinstance(value, str):
        if len(value) > VALUE_CHARS_MAX:
            raise InvalidArgument(f"string values are limited to {VALUE_CHARS_MAX} characters")
        return value
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise InvalidArgument(f"integer values are 64-bit, got {value}")
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise InvalidArgument(f"metadata values are str, int, finite float or bool, got {value!r}")


def _check_field(field: Any) -> str:
    if not isinstance(field, str) or not 1 <= len(field) <= FIELD_CHARS_MAX:
        raise InvalidArgument(f"a field name is a string of 1..{FIELD_CHARS_MAX} characters")
    return field


def check_attributes(attributes: Any) -> dict[str, Value]:
    """``attributes`` validated (a mapping of at most ``FIELDS_PER_ID_MAX`` field names to
    values), as a new dict; raises ``InvalidArgument`` naming what is wrong."""
    if not isinstance(attributes, Mapping):
        raise InvalidArgument(f"attributes are a mapping of field to value, got {attributes!r}")
    if len(attributes) > FIELDS_PER_ID_MAX:
        raise InvalidArgument(f"at most {FIELDS_PER_ID_MAX} attributes per id")
    return {_check_field(f): _check_value(v) for f, v in attributes.items()}


def _key(value: Value) -> tuple[str, Value]:
    """Posting key: bool is kept apart from int (``True == 1`` in Python, not here)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", float(value))
    return ("str", value)


@dataclass(frozen=True, slots=True)
class Eq:
    field: str
    value: Value

    def __post_init__(self) -> None:
        _check_field(self.field)
        _check_value(self.value)


@dataclass(frozen=True, slots=True)
class In:
    field: str
    values: frozenset[Value]

    def __post_init__(self) -> None:
        _check_field(self.field)
        object.__setattr__(self, "values", frozenset(_check_value(v) for v in self.values))


@dataclass(frozen=True, slots=True)
class Range:
    field: str
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True

    def __post_init__(self) -> None:
        _check_field(self.field)
        for bound in (self.low, self.high):
            if bound is not None and (
                isinstance(bound, bool) or not isinstance(bound, int | float) or math.isnan(bound)
            ):
                raise InvalidArgument(f"range bounds are numbers, got {bound!r}")


@dataclass(frozen=True, slots=True)
class And:
    parts: tuple[Expression, ...]


@dataclass(frozen=True, slots=True)
class Or:
    parts: tuple[Expression, ...]


@dataclass(frozen=True, slots=True)
class Not:
    part: Expression


Expression = Eq | In | Range | And | Or | Not


class MetadataStore:
    """Attributes per id and filter evaluation; see the module docstring. Not thread-safe
    for writes (callers hold the node's write lock, as for the index)."""

    def __init__(self) -> None:
        self._attributes: dict[int, dict[str, Value]] = {}
        self._postings: dict[str, dict[tuple[str, Value], set[int]]] = {}
        self._columns: dict[str, tuple[IdArray, np.ndarray]] = {}  # lazy numeric columns
        # Lazy sorted arrays of the postings (one per field and value at most), dropped when
        # the posting changes: an Eq costs no copy of its ids per search.
        self._arrays: dict[tuple[str, tuple[str, Value]], IdArray] = {}

    def __len__(self) -> int:
        return len(self._attributes)

    def get(self, item: int) -> dict[str, Value]:
        return dict(self._attributes.get(item, {}))

    def put(self, item: int, attributes: Mapping[str, Any]) -> None:
        """Replace the attributes of ``item`` (validated first; nothing changes on error)."""
        if isinstance(item, bool) or not isinstance(item, int | np.integer) or item < 0:
            raise InvalidArgument(f"ids are non-negative integers, got {item!r}")
        clean = check_attributes(attributes)
        self.delete(int(item))
        self._attributes[int(item)] = clean
        for field, value in clean.items():
            self._postings.setdefault(field, {}).setdefault(_key(value), set()).add(int(item))
            self._columns.pop(field, None)
            self._arrays.pop((field, _key(value)), None)

    def delete(self, item: int) -> bool:
        old = self._attributes.pop(int(item), None)
        if old is None:
            return False
        for field, value in old.items():
            postings = self._postings[field]
            members = postings[_key(value)]
            members.discard(int(item))
            if not members:
                del postings[_key(value)]
            self._columns.pop(field, None)
            self._arrays.pop((field, _key(value)), None)
        return True

    def items(self) -> list[tuple[int, dict[str, Value]]]:
        """Every id with attributes and a copy of them, ascending by id (a snapshot)."""
        return [(item, dict(self._attributes[item])) for item in sorted(self._attributes)]

    def to_json(self) -> bytes:
        """Every id's attributes as JSON (``[[id, {field: value}], ...]``): JSON keeps str,
        int, float and bool apart, so ``restore_json`` restores the same typed values."""
        return json.dumps(self.items(), allow_nan=False).encode("utf-8")

    def restore_json(self, payload: bytes) -> None:
        """Replace everything with what ``to_json`` wrote; raises ``Corruption`` on a bad
        payload, changing nothing."""
        try:
            rows = [(int(item), check_attributes(attrs)) for item, attrs in json.loads(payload)]
        except (ValueError, TypeError, InvalidArgument) as error:
            raise Corruption(f"metadata snapshot: {error}") from None
        self._attributes.clear()
        self._postings.clear()
        self._columns.clear()
        self._arrays.clear()
        for item, attrs in rows:
            self.put(item, attrs)

    def allowed_ids(self, expression: Expression) -> IdArray:
        """The ids with attributes that ``expression`` selects, sorted; a ``VectorIndex``
        filter."""
        found, complement = self._evaluate(expression)
        if complement:
            every = np.fromiter(self._attributes, dtype=np.int64, count=len(self._attributes))
            return np.setdiff1d(every, found)
        return found

    def filter_for(self, expression: Expression) -> IdArray | Callable[[IdArray], Any]:
        """A ``VectorIndex`` filter selecting the ids ``expression`` matches among *all* the
        index's ids: those stored without attributes match every ``Not`` of a leaf. A sorted
        allow-list, or (when the selection is a complement) a predicate."""
        found, complement = self._evaluate(expression)
        if complement:
            return lambda ids: ~np.isin(ids, found)
        return found

    def _evaluate(self, expression: Expression) -> tuple[IdArray, bool]:
        """``(ids, complement)``: the selection is ``ids`` (sorted, unique; not to be written
        to: it may be a cached posting), or every id but them."""
        if isinstance(expression, Eq):
            return self._posting(expression.field, _key(expression.value)), False
        if isinstance(expression, In):
            keys = {_key(value) for value in expression.values}
            return _union([self._posting(expression.field, key) for key in keys]), False
        if isinstance(expression, Range):
            return self._range(expression), False
        if isinstance(expression, Not):
            found, complement = self._evaluate(expression.part)
            return found, not complement
        if isinstance(expression, And | Or):
            selections = [self._evaluate(part) for part in expression.parts]
            return _combine(selections, conjunction=isinstance(expression, And))
        raise InvalidArgument(f"not a filter expression: {expression!r}")

    def _posting(self, field: str, key: tuple[str, Value]) -> IdArray:
        array = self._arrays.get((field, key))
        if array is None:
            members = self._postings.get(field, {}).get(key)
            if not members:
                return _EMPTY
            array = np.fromiter(members, dtype=np.int64, count=len(members))
            array.sort()
            array.flags.writeable = False
            self._arrays[field, key] = array
        return array

    def _range(self, expression: Range) -> IdArray:
        ids, values = self._column(expression.field)
        mask = np.ones(len(ids), dtype=np.bool_)
        if expression.low is not None:
            low = float(expression.low)
            mask &= values >= low if expression.low_inclusive else values > low
        if expression.high is not None:
            high = float(expression.high)
            mask &= values <= high if expression.high_inclusive else values < high
        return np.sort(ids[mask])  # one value per field and id: unique already

    def _column(self, field: str) -> tuple[IdArray, np.ndarray]:
        column = self._columns.get(field)
        if column is None:
            numbers = [
                (self._posting(field, key), float(key[1]))
                for key in self._postings.get(field, {})
                if key[0] == "number"
            ]
            ids = np.concatenate([found for found, _ in numbers]) if numbers else _EMPTY
            values = np.repeat([v for _, v in numbers], [len(f) for f, _ in numbers])
            column = self._columns[field] = (ids, values.astype(np.float64))
        return column


def _union(parts: list[IdArray]) -> IdArray:
    return np.unique(np.concatenate(parts)) if parts else _EMPTY


def _combine(parts: list[tuple[IdArray, bool]], *, conjunction: bool) -> tuple[IdArray, bool]:
    """And (``conjunction``) or Or of ``(ids, complement)`` selections, by De Morgan: an Or
    is the complement of the And of the complements."""
    flip = not conjunction
    positive = [ids for ids, complement in parts if complement == flip]
    # And: intersect the positive sets, then take away every complemented set's ids.
    excluded = _union([ids for ids, complement in parts if complement != flip])
    if positive:
        result = positive[0]
        for ids in positive[1:]:
            result = np.intersect1d(result, ids, assume_unique=True)
        return np.setdiff1d(result, excluded, assume_unique=True), flip
    return excluded, not flip
