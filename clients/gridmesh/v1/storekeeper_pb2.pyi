import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StoreResultRequest(_message.Message):
    __slots__ = ("task_id", "result_dir", "content", "content_type", "worker_id", "fencing_token", "started_at", "traceparent")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_DIR_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    result_dir: str
    content: bytes
    content_type: str
    worker_id: str
    fencing_token: int
    started_at: _timestamp_pb2.Timestamp
    traceparent: str
    def __init__(self, task_id: _Optional[str] = ..., result_dir: _Optional[str] = ..., content: _Optional[bytes] = ..., content_type: _Optional[str] = ..., worker_id: _Optional[str] = ..., fencing_token: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., traceparent: _Optional[str] = ...) -> None: ...

class ExpireResultsRequest(_message.Message):
    __slots__ = ("task_ids",)
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    task_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, task_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ExpireResultsResponse(_message.Message):
    __slots__ = ("deleted", "freed_bytes")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    FREED_BYTES_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    freed_bytes: int
    def __init__(self, deleted: _Optional[int] = ..., freed_bytes: _Optional[int] = ...) -> None: ...

class StoreResultResponse(_message.Message):
    __slots__ = ("path", "size_bytes", "sha256")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    path: str
    size_bytes: int
    sha256: str
    def __init__(self, path: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class StoreResultsRequest(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[StoreResultRequest]
    def __init__(self, results: _Optional[_Iterable[_Union[StoreResultRequest, _Mapping]]] = ...) -> None: ...

class StoreResultsResponse(_message.Message):
    __slots__ = ("answers",)
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    answers: _containers.RepeatedCompositeFieldContainer[StoreResultAnswer]
    def __init__(self, answers: _Optional[_Iterable[_Union[StoreResultAnswer, _Mapping]]] = ...) -> None: ...

class StoreResultAnswer(_message.Message):
    __slots__ = ("task_id", "stored", "code", "error", "fencing_token")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    stored: StoreResultResponse
    code: int
    error: str
    fencing_token: int
    def __init__(self, task_id: _Optional[str] = ..., stored: _Optional[_Union[StoreResultResponse, _Mapping]] = ..., code: _Optional[int] = ..., error: _Optional[str] = ..., fencing_token: _Optional[int] = ...) -> None: ...

class GetResultRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class GetResultInfoRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class ResultInfo(_message.Message):
    __slots__ = ("task_id", "path", "size_bytes", "sha256", "content_type", "stored_at", "result_dir")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    STORED_AT_FIELD_NUMBER: _ClassVar[int]
    RESULT_DIR_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    path: str
    size_bytes: int
    sha256: str
    content_type: str
    stored_at: _timestamp_pb2.Timestamp
    result_dir: str
    def __init__(self, task_id: _Optional[str] = ..., path: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., content_type: _Optional[str] = ..., stored_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., result_dir: _Optional[str] = ...) -> None: ...

class ListResultsRequest(_message.Message):
    __slots__ = ("result_dir", "page_size", "page_token")
    RESULT_DIR_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    result_dir: str
    page_size: int
    page_token: str
    def __init__(self, result_dir: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListResultsResponse(_message.Message):
    __slots__ = ("results", "next_page_token")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ResultInfo]
    next_page_token: str
    def __init__(self, results: _Optional[_Iterable[_Union[ResultInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
