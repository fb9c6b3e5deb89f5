from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataPathReply(_message.Message):
    __slots__ = ("port", "name")
    PORT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    port: int
    name: str
    def __init__(self, port: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NameRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CreateQueueRequest(_message.Message):
    __slots__ = ("name", "visibility_ms", "max_receives", "dead_letter", "fifo", "dedup_window_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_RECEIVES_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_FIELD_NUMBER: _ClassVar[int]
    FIFO_FIELD_NUMBER: _ClassVar[int]
    DEDUP_WINDOW_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    visibility_ms: int
    max_receives: int
    dead_letter: str
    fifo: bool
    dedup_window_ms: int
    def __init__(self, name: _Optional[str] = ..., visibility_ms: _Optional[int] = ..., max_receives: _Optional[int] = ..., dead_letter: _Optional[str] = ..., fifo: _Optional[bool] = ..., dedup_window_ms: _Optional[int] = ...) -> None: ...

class SendRequest(_message.Message):
    __slots__ = ("name", "body", "delay_ms", "group", "dedup_id", "priority")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    DEDUP_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    body: bytes
    delay_ms: int
    group: str
    dedup_id: str
    priority: int
    def __init__(self, name: _Optional[str] = ..., body: _Optional[bytes] = ..., delay_ms: _Optional[int] = ..., group: _Optional[str] = ..., dedup_id: _Optional[str] = ..., priority: _Optional[int] = ...) -> None: ...

class SendReply(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ReceiveRequest(_message.Message):
    __slots__ = ("name", "max_messages", "wait_ms", "visibility_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    max_messages: int
    wait_ms: int
    visibility_ms: int
    def __init__(self, name: _Optional[str] = ..., max_messages: _Optional[int] = ..., wait_ms: _Optional[int] = ..., visibility_ms: _Optional[int] = ...) -> None: ...

class Delivered(_message.Message):
    __slots__ = ("id", "receipt", "body", "receive_count", "group", "priority", "sent_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_COUNT_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    SENT_MS_FIELD_NUMBER: _ClassVar[int]
    id: str
    receipt: str
    body: bytes
    receive_count: int
    group: str
    priority: int
    sent_ms: int
    def __init__(self, id: _Optional[str] = ..., receipt: _Optional[str] = ..., body: _Optional[bytes] = ..., receive_count: _Optional[int] = ..., group: _Optional[str] = ..., priority: _Optional[int] = ..., sent_ms: _Optional[int] = ...) -> None: ...

class ReceiveReply(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Delivered]
    def __init__(self, messages: _Optional[_Iterable[_Union[Delivered, _Mapping]]] = ...) -> None: ...

class ReceiptRequest(_message.Message):
    __slots__ = ("name", "receipt")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    name: str
    receipt: str
    def __init__(self, name: _Optional[str] = ..., receipt: _Optional[str] = ...) -> None: ...

class NackRequest(_message.Message):
    __slots__ = ("name", "receipt", "delay_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    receipt: str
    delay_ms: int
    def __init__(self, name: _Optional[str] = ..., receipt: _Optional[str] = ..., delay_ms: _Optional[int] = ...) -> None: ...

class ExtendRequest(_message.Message):
    __slots__ = ("name", "receipt", "visibility_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    receipt: str
    visibility_ms: int
    def __init__(self, name: _Optional[str] = ..., receipt: _Optional[str] = ..., visibility_ms: _Optional[int] = ...) -> None: ...
