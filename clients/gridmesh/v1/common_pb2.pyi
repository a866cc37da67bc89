import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    QUEUED: _ClassVar[TaskState]
    RUNNING: _ClassVar[TaskState]
    SUCCEEDED: _ClassVar[TaskState]
    FAILED: _ClassVar[TaskState]
    CANCELLED: _ClassVar[TaskState]

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    LOW: _ClassVar[Priority]
    NORMAL: _ClassVar[Priority]
    HIGH: _ClassVar[Priority]

class Operation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATION_UNSPECIFIED: _ClassVar[Operation]
    CREATE: _ClassVar[Operation]
    UPDATE: _ClassVar[Operation]
    DELETE: _ClassVar[Operation]

class LifecycleEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIFECYCLE_EVENT_TYPE_UNSPECIFIED: _ClassVar[LifecycleEventType]
    TASK_PENDING: _ClassVar[LifecycleEventType]
    TASK_STARTED: _ClassVar[LifecycleEventType]
    TASK_COMPLETED: _ClassVar[LifecycleEventType]
    TASK_FAILED: _ClassVar[LifecycleEventType]
    TASK_RETRIED: _ClassVar[LifecycleEventType]
TASK_STATE_UNSPECIFIED: TaskState
QUEUED: TaskState
RUNNING: TaskState
SUCCEEDED: TaskState
FAILED: TaskState
CANCELLED: TaskState
PRIORITY_UNSPECIFIED: Priority
LOW: Priority
NORMAL: Priority
HIGH: Priority
OPERATION_UNSPECIFIED: Operation
CREATE: Operation
UPDATE: Operation
DELETE: Operation
LIFECYCLE_EVENT_TYPE_UNSPECIFIED: LifecycleEventType
TASK_PENDING: LifecycleEventType
TASK_STARTED: LifecycleEventType
TASK_COMPLETED: LifecycleEventType
TASK_FAILED: LifecycleEventType
TASK_RETRIED: LifecycleEventType

class Task(_message.Message):
    __slots__ = ("task_id", "task_type", "params", "result_dir", "state", "priority", "attempt", "max_attempts", "worker_id", "result_path", "result_size_bytes", "result_sha256", "error", "idempotency_key", "created_at", "started_at", "finished_at", "run_timeout", "failure_reason", "deadline", "not_before", "retry", "rerun_of", "result_ttl", "expires_at", "dispatched_at")
    class FailureReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        FAILURE_REASON_UNSPECIFIED: _ClassVar[Task.FailureReason]
        ERROR: _ClassVar[Task.FailureReason]
        TIMEOUT: _ClassVar[Task.FailureReason]
        EXPIRED: _ClassVar[Task.FailureReason]
        CRASHED: _ClassVar[Task.FailureReason]
        CANCELLED: _ClassVar[Task.FailureReason]
    FAILURE_REASON_UNSPECIFIED: Task.FailureReason
    ERROR: Task.FailureReason
    TIMEOUT: Task.FailureReason
    EXPIRED: Task.FailureReason
    CRASHED: Task.FailureReason
    CANCELLED: Task.FailureReason
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    RESULT_DIR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_PATH_FIELD_NUMBER: _ClassVar[int]
    RESULT_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    RESULT_SHA256_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    RUN_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    RERUN_OF_FIELD_NUMBER: _ClassVar[int]
    RESULT_TTL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DISPATCHED_AT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    task_type: str
    params: _struct_pb2.Struct
    result_dir: str
    state: TaskState
    priority: Priority
    attempt: int
    max_attempts: int
    worker_id: str
    result_path: str
    result_size_bytes: int
    result_sha256: str
    error: str
    idempotency_key: str
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    run_timeout: _duration_pb2.Duration
    failure_reason: Task.FailureReason
    deadline: _timestamp_pb2.Timestamp
    not_before: _timestamp_pb2.Timestamp
    retry: RetryPolicy
    rerun_of: str
    result_ttl: _duration_pb2.Duration
    expires_at: _timestamp_pb2.Timestamp
    dispatched_at: _timestamp_pb2.Timestamp
    def __init__(self, task_id: _Optional[str] = ..., task_type: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., result_dir: _Optional[str] = ..., state: _Optional[_Union[TaskState, str]] = ..., priority: _Optional[_Union[Priority, str]] = ..., attempt: _Optional[int] = ..., max_attempts: _Optional[int] = ..., worker_id: _Optional[str] = ..., result_path: _Optional[str] = ..., result_size_bytes: _Optional[int] = ..., result_sha256: _Optional[str] = ..., error: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., run_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., failure_reason: _Optional[_Union[Task.FailureReason, str]] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., not_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., retry: _Optional[_Union[RetryPolicy, _Mapping]] = ..., rerun_of: _Optional[str] = ..., result_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., dispatched_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("max_attempts", "initial_backoff", "max_backoff", "multiplier", "non_retryable_errors")
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    INITIAL_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    MAX_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    NON_RETRYABLE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    max_attempts: int
    initial_backoff: _duration_pb2.Duration
    max_backoff: _duration_pb2.Duration
    multiplier: float
    non_retryable_errors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, max_attempts: _Optional[int] = ..., initial_backoff: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_backoff: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., multiplier: _Optional[float] = ..., non_retryable_errors: _Optional[_Iterable[str]] = ...) -> None: ...

class TaskEvent(_message.Message):
    __slots__ = ("task", "occurred_at", "position")
    TASK_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    task: Task
    occurred_at: _timestamp_pb2.Timestamp
    position: int
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., position: _Optional[int] = ...) -> None: ...

class EntityEvent(_message.Message):
    __slots__ = ("event_id", "publisher", "entity_type", "entity_id", "operation", "version", "payload", "occurred_at")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLISHER_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    publisher: str
    entity_type: str
    entity_id: str
    operation: Operation
    version: int
    payload: _struct_pb2.Struct
    occurred_at: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., publisher: _Optional[str] = ..., entity_type: _Optional[str] = ..., entity_id: _Optional[str] = ..., operation: _Optional[_Union[Operation, str]] = ..., version: _Optional[int] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TaskLifecycleEvent(_message.Message):
    __slots__ = ("task_id", "task_type", "worker_id", "attempt", "priority", "occurred_at", "event_type", "error")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    task_type: str
    worker_id: str
    attempt: int
    priority: Priority
    occurred_at: _timestamp_pb2.Timestamp
    event_type: LifecycleEventType
    error: str
    def __init__(self, task_id: _Optional[str] = ..., task_type: _Optional[str] = ..., worker_id: _Optional[str] = ..., attempt: _Optional[int] = ..., priority: _Optional[_Union[Priority, str]] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event_type: _Optional[_Union[LifecycleEventType, str]] = ..., error: _Optional[str] = ...) -> None: ...
