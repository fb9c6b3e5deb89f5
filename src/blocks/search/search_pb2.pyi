from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VectorBatch(_message.Message):
    __slots__ = ("rows", "dim", "values")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    rows: int
    dim: int
    values: bytes
    def __init__(self, rows: _Optional[int] = ..., dim: _Optional[int] = ..., values: _Optional[bytes] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InfoReply(_message.Message):
    __slots__ = ("dim", "metric", "kind", "vectors", "documents", "embeds", "nlist", "data_port")
    DIM_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    EMBEDS_FIELD_NUMBER: _ClassVar[int]
    NLIST_FIELD_NUMBER: _ClassVar[int]
    DATA_PORT_FIELD_NUMBER: _ClassVar[int]
    dim: int
    metric: str
    kind: str
    vectors: int
    documents: int
    embeds: bool
    nlist: int
    data_port: int
    def __init__(self, dim: _Optional[int] = ..., metric: _Optional[str] = ..., kind: _Optional[str] = ..., vectors: _Optional[int] = ..., documents: _Optional[int] = ..., embeds: _Optional[bool] = ..., nlist: _Optional[int] = ..., data_port: _Optional[int] = ...) -> None: ...

class TrainReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AddVectorsRequest(_message.Message):
    __slots__ = ("ids", "vectors", "attributes")
    IDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    vectors: VectorBatch
    attributes: _containers.RepeatedCompositeFieldContainer[Attributes]
    def __init__(self, ids: _Optional[_Iterable[int]] = ..., vectors: _Optional[_Union[VectorBatch, _Mapping]] = ..., attributes: _Optional[_Iterable[_Union[Attributes, _Mapping]]] = ...) -> None: ...

class AttributeValue(_message.Message):
    __slots__ = ("text", "integer", "number", "flag")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    text: str
    integer: int
    number: float
    flag: bool
    def __init__(self, text: _Optional[str] = ..., integer: _Optional[int] = ..., number: _Optional[float] = ..., flag: _Optional[bool] = ...) -> None: ...

class Attributes(_message.Message):
    __slots__ = ("values",)
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: AttributeValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[AttributeValue, _Mapping]] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.MessageMap[str, AttributeValue]
    def __init__(self, values: _Optional[_Mapping[str, AttributeValue]] = ...) -> None: ...

class FilterExpression(_message.Message):
    __slots__ = ("eq", "in_set", "range", "all_of", "any_of", "negated")
    EQ_FIELD_NUMBER: _ClassVar[int]
    IN_SET_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    ALL_OF_FIELD_NUMBER: _ClassVar[int]
    ANY_OF_FIELD_NUMBER: _ClassVar[int]
    NEGATED_FIELD_NUMBER: _ClassVar[int]
    eq: FilterEq
    in_set: FilterIn
    range: FilterRange
    all_of: FilterList
    any_of: FilterList
    negated: FilterExpression
    def __init__(self, eq: _Optional[_Union[FilterEq, _Mapping]] = ..., in_set: _Optional[_Union[FilterIn, _Mapping]] = ..., range: _Optional[_Union[FilterRange, _Mapping]] = ..., all_of: _Optional[_Union[FilterList, _Mapping]] = ..., any_of: _Optional[_Union[FilterList, _Mapping]] = ..., negated: _Optional[_Union[FilterExpression, _Mapping]] = ...) -> None: ...

class FilterEq(_message.Message):
    __slots__ = ("field", "value")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    field: str
    value: AttributeValue
    def __init__(self, field: _Optional[str] = ..., value: _Optional[_Union[AttributeValue, _Mapping]] = ...) -> None: ...

class FilterIn(_message.Message):
    __slots__ = ("field", "values")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    field: str
    values: _containers.RepeatedCompositeFieldContainer[AttributeValue]
    def __init__(self, field: _Optional[str] = ..., values: _Optional[_Iterable[_Union[AttributeValue, _Mapping]]] = ...) -> None: ...

class FilterRange(_message.Message):
    __slots__ = ("field", "has_low", "low", "has_high", "high", "low_exclusive", "high_exclusive")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    HAS_LOW_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HAS_HIGH_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    LOW_EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    HIGH_EXCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    field: str
    has_low: bool
    low: float
    has_high: bool
    high: float
    low_exclusive: bool
    high_exclusive: bool
    def __init__(self, field: _Optional[str] = ..., has_low: _Optional[bool] = ..., low: _Optional[float] = ..., has_high: _Optional[bool] = ..., high: _Optional[float] = ..., low_exclusive: _Optional[bool] = ..., high_exclusive: _Optional[bool] = ...) -> None: ...

class FilterList(_message.Message):
    __slots__ = ("parts",)
    PARTS_FIELD_NUMBER: _ClassVar[int]
    parts: _containers.RepeatedCompositeFieldContainer[FilterExpression]
    def __init__(self, parts: _Optional[_Iterable[_Union[FilterExpression, _Mapping]]] = ...) -> None: ...

class AddVectorsReply(_message.Message):
    __slots__ = ("size",)
    SIZE_FIELD_NUMBER: _ClassVar[int]
    size: int
    def __init__(self, size: _Optional[int] = ...) -> None: ...

class RemoveVectorsRequest(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class RemoveVectorsReply(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...

class SearchVectorsRequest(_message.Message):
    __slots__ = ("queries", "k", "has_filter", "filter_ids", "nprobe", "ef_search", "allow_partial", "packed_reply", "probe_lists", "probes", "where")
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    HAS_FILTER_FIELD_NUMBER: _ClassVar[int]
    FILTER_IDS_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    EF_SEARCH_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    PACKED_REPLY_FIELD_NUMBER: _ClassVar[int]
    PROBE_LISTS_FIELD_NUMBER: _ClassVar[int]
    PROBES_FIELD_NUMBER: _ClassVar[int]
    WHERE_FIELD_NUMBER: _ClassVar[int]
    queries: VectorBatch
    k: int
    has_filter: bool
    filter_ids: _containers.RepeatedScalarFieldContainer[int]
    nprobe: int
    ef_search: int
    allow_partial: bool
    packed_reply: bool
    probe_lists: bytes
    probes: int
    where: FilterExpression
    def __init__(self, queries: _Optional[_Union[VectorBatch, _Mapping]] = ..., k: _Optional[int] = ..., has_filter: _Optional[bool] = ..., filter_ids: _Optional[_Iterable[int]] = ..., nprobe: _Optional[int] = ..., ef_search: _Optional[int] = ..., allow_partial: _Optional[bool] = ..., packed_reply: _Optional[bool] = ..., probe_lists: _Optional[bytes] = ..., probes: _Optional[int] = ..., where: _Optional[_Union[FilterExpression, _Mapping]] = ...) -> None: ...

class SearchVectorsReply(_message.Message):
    __slots__ = ("rows", "k", "ids", "distances", "partial", "missing_shards", "missing_shard_names", "ids_le", "distances_le")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    DISTANCES_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    MISSING_SHARDS_FIELD_NUMBER: _ClassVar[int]
    MISSING_SHARD_NAMES_FIELD_NUMBER: _ClassVar[int]
    IDS_LE_FIELD_NUMBER: _ClassVar[int]
    DISTANCES_LE_FIELD_NUMBER: _ClassVar[int]
    rows: int
    k: int
    ids: _containers.RepeatedScalarFieldContainer[int]
    distances: _containers.RepeatedScalarFieldContainer[float]
    partial: bool
    missing_shards: _containers.RepeatedScalarFieldContainer[int]
    missing_shard_names: _containers.RepeatedScalarFieldContainer[str]
    ids_le: bytes
    distances_le: bytes
    def __init__(self, rows: _Optional[int] = ..., k: _Optional[int] = ..., ids: _Optional[_Iterable[int]] = ..., distances: _Optional[_Iterable[float]] = ..., partial: _Optional[bool] = ..., missing_shards: _Optional[_Iterable[int]] = ..., missing_shard_names: _Optional[_Iterable[str]] = ..., ids_le: _Optional[bytes] = ..., distances_le: _Optional[bytes] = ...) -> None: ...

class Document(_message.Message):
    __slots__ = ("id", "text")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class IndexDocumentsRequest(_message.Message):
    __slots__ = ("documents",)
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    def __init__(self, documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ...) -> None: ...

class IndexDocumentsReply(_message.Message):
    __slots__ = ("documents",)
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    documents: int
    def __init__(self, documents: _Optional[int] = ...) -> None: ...

class DeleteDocumentsRequest(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteDocumentsReply(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class SearchTextRequest(_message.Message):
    __slots__ = ("query", "k", "mode", "has_stats", "num_docs", "total_length", "doc_freq", "internal", "allow_partial")
    class DocFreqEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    QUERY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    HAS_STATS_FIELD_NUMBER: _ClassVar[int]
    NUM_DOCS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_LENGTH_FIELD_NUMBER: _ClassVar[int]
    DOC_FREQ_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    query: str
    k: int
    mode: str
    has_stats: bool
    num_docs: int
    total_length: int
    doc_freq: _containers.ScalarMap[str, int]
    internal: bool
    allow_partial: bool
    def __init__(self, query: _Optional[str] = ..., k: _Optional[int] = ..., mode: _Optional[str] = ..., has_stats: _Optional[bool] = ..., num_docs: _Optional[int] = ..., total_length: _Optional[int] = ..., doc_freq: _Optional[_Mapping[str, int]] = ..., internal: _Optional[bool] = ..., allow_partial: _Optional[bool] = ...) -> None: ...

class TextStatsRequest(_message.Message):
    __slots__ = ("query",)
    QUERY_FIELD_NUMBER: _ClassVar[int]
    query: str
    def __init__(self, query: _Optional[str] = ...) -> None: ...

class TextStatsReply(_message.Message):
    __slots__ = ("num_docs", "total_length", "doc_freq")
    class DocFreqEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NUM_DOCS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_LENGTH_FIELD_NUMBER: _ClassVar[int]
    DOC_FREQ_FIELD_NUMBER: _ClassVar[int]
    num_docs: int
    total_length: int
    doc_freq: _containers.ScalarMap[str, int]
    def __init__(self, num_docs: _Optional[int] = ..., total_length: _Optional[int] = ..., doc_freq: _Optional[_Mapping[str, int]] = ...) -> None: ...

class TextHit(_message.Message):
    __slots__ = ("id", "score", "text")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    text: str
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., text: _Optional[str] = ...) -> None: ...

class SearchTextReply(_message.Message):
    __slots__ = ("hits", "partial", "missing_shards", "missing_shard_names")
    HITS_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    MISSING_SHARDS_FIELD_NUMBER: _ClassVar[int]
    MISSING_SHARD_NAMES_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[TextHit]
    partial: bool
    missing_shards: _containers.RepeatedScalarFieldContainer[int]
    missing_shard_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, hits: _Optional[_Iterable[_Union[TextHit, _Mapping]]] = ..., partial: _Optional[bool] = ..., missing_shards: _Optional[_Iterable[int]] = ..., missing_shard_names: _Optional[_Iterable[str]] = ...) -> None: ...

class SuggestRequest(_message.Message):
    __slots__ = ("prefix", "k")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    k: int
    def __init__(self, prefix: _Optional[str] = ..., k: _Optional[int] = ...) -> None: ...

class Completion(_message.Message):
    __slots__ = ("phrase", "count")
    PHRASE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    phrase: str
    count: int
    def __init__(self, phrase: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class SuggestReply(_message.Message):
    __slots__ = ("completions",)
    COMPLETIONS_FIELD_NUMBER: _ClassVar[int]
    completions: _containers.RepeatedCompositeFieldContainer[Completion]
    def __init__(self, completions: _Optional[_Iterable[_Union[Completion, _Mapping]]] = ...) -> None: ...

class SaveRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SaveReply(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class ExportRequest(_message.Message):
    __slots__ = ("ring_names", "owner", "by_ids", "ids", "doc_ids", "has_after", "after_id", "after_doc", "limit")
    RING_NAMES_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    BY_IDS_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    DOC_IDS_FIELD_NUMBER: _ClassVar[int]
    HAS_AFTER_FIELD_NUMBER: _ClassVar[int]
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_DOC_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    ring_names: _containers.RepeatedScalarFieldContainer[str]
    owner: str
    by_ids: bool
    ids: _containers.RepeatedScalarFieldContainer[int]
    doc_ids: _containers.RepeatedScalarFieldContainer[str]
    has_after: bool
    after_id: int
    after_doc: str
    limit: int
    def __init__(self, ring_names: _Optional[_Iterable[str]] = ..., owner: _Optional[str] = ..., by_ids: _Optional[bool] = ..., ids: _Optional[_Iterable[int]] = ..., doc_ids: _Optional[_Iterable[str]] = ..., has_after: _Optional[bool] = ..., after_id: _Optional[int] = ..., after_doc: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ExportVectorsReply(_message.Message):
    __slots__ = ("ids", "vectors", "next_after_id", "done", "attributes")
    IDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    vectors: VectorBatch
    next_after_id: int
    done: bool
    attributes: _containers.RepeatedCompositeFieldContainer[Attributes]
    def __init__(self, ids: _Optional[_Iterable[int]] = ..., vectors: _Optional[_Union[VectorBatch, _Mapping]] = ..., next_after_id: _Optional[int] = ..., done: _Optional[bool] = ..., attributes: _Optional[_Iterable[_Union[Attributes, _Mapping]]] = ...) -> None: ...

class ExportDocumentsReply(_message.Message):
    __slots__ = ("documents", "next_after_doc", "done")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_DOC_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    next_after_doc: str
    done: bool
    def __init__(self, documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ..., next_after_doc: _Optional[str] = ..., done: _Optional[bool] = ...) -> None: ...
