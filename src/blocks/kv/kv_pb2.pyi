from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PutRequest(_message.Message):
    __slots__ = ("key", "value", "context", "w", "timeout_s")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    W_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    value: bytes
    context: bytes
    w: int
    timeout_s: float
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., context: _Optional[bytes] = ..., w: _Optional[int] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class PutReply(_message.Message):
    __slots__ = ("context", "siblings")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    SIBLINGS_FIELD_NUMBER: _ClassVar[int]
    context: bytes
    siblings: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, context: _Optional[bytes] = ..., siblings: _Optional[_Iterable[bytes]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("key", "r", "timeout_s")
    KEY_FIELD_NUMBER: _ClassVar[int]
    R_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    r: int
    timeout_s: float
    def __init__(self, key: _Optional[bytes] = ..., r: _Optional[int] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class GetReply(_message.Message):
    __slots__ = ("found", "value", "siblings", "context")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SIBLINGS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    found: bool
    value: bytes
    siblings: _containers.RepeatedScalarFieldContainer[bytes]
    context: bytes
    def __init__(self, found: _Optional[bool] = ..., value: _Optional[bytes] = ..., siblings: _Optional[_Iterable[bytes]] = ..., context: _Optional[bytes] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("key", "context", "w", "timeout_s")
    KEY_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    W_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    context: bytes
    w: int
    timeout_s: float
    def __init__(self, key: _Optional[bytes] = ..., context: _Optional[bytes] = ..., w: _Optional[int] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class DeleteReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Member(_message.Message):
    __slots__ = ("node", "address", "healthy")
    NODE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    node: str
    address: str
    healthy: bool
    def __init__(self, node: _Optional[str] = ..., address: _Optional[str] = ..., healthy: _Optional[bool] = ...) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("node", "members", "keys", "hints_pending", "replicas")
    NODE_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    HINTS_PENDING_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    node: str
    members: _containers.RepeatedCompositeFieldContainer[Member]
    keys: int
    hints_pending: int
    replicas: int
    def __init__(self, node: _Optional[str] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ..., keys: _Optional[int] = ..., hints_pending: _Optional[int] = ..., replicas: _Optional[int] = ...) -> None: ...
