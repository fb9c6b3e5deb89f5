from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class AcquireRequest(_message.Message):
    __slots__ = ("key", "cost")
    KEY_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    key: str
    cost: int
    def __init__(self, key: _Optional[str] = ..., cost: _Optional[int] = ...) -> None: ...

class DecisionReply(_message.Message):
    __slots__ = ("allowed", "remaining", "retry_after_ms", "reset_ms")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    RESET_MS_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    remaining: int
    retry_after_ms: int
    reset_ms: int
    def __init__(self, allowed: _Optional[bool] = ..., remaining: _Optional[int] = ..., retry_after_ms: _Optional[int] = ..., reset_ms: _Optional[int] = ...) -> None: ...

class AddWindowRequest(_message.Message):
    __slots__ = ("key", "window", "delta")
    KEY_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    key: str
    window: int
    delta: int
    def __init__(self, key: _Optional[str] = ..., window: _Optional[int] = ..., delta: _Optional[int] = ...) -> None: ...

class AddWindowReply(_message.Message):
    __slots__ = ("count", "previous")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    count: int
    previous: int
    def __init__(self, count: _Optional[int] = ..., previous: _Optional[int] = ...) -> None: ...
