import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from gridmesh.v1 import common_pb2 as _common_pb2
from gridmesh.v1 import scheduler_pb2 as _scheduler_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetWorkerStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DrainWorkerRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RunningTask(_message.Message):
    __slots__ = ("task_id", "task_type", "pid", "attempt", "started_at", "priority")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    task_type: str
    pid: int
    attempt: int
    started_at: _timestamp_pb2.Timestamp
    priority: _common_pb2.Priority
    def __init__(self, task_id: _Optional[str] = ..., task_type: _Optional[str] = ..., pid: _Optional[int] = ..., attempt: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., priority: _Optional[_Union[_common_pb2.Priority, str]] = ...) -> None: ...

class WorkerCounters(_message.Message):
    __slots__ = ("pulled", "succeeded", "failed", "crashed", "lost_leases")
    PULLED_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CRASHED_FIELD_NUMBER: _ClassVar[int]
    LOST_LEASES_FIELD_NUMBER: _ClassVar[int]
    pulled: int
    succeeded: int
    failed: int
    crashed: int
    lost_leases: int
    def __init__(self, pulled: _Optional[int] = ..., succeeded: _Optional[int] = ..., failed: _Optional[int] = ..., crashed: _Optional[int] = ..., lost_leases: _Optional[int] = ...) -> None: ...

class WorkerStatus(_message.Message):
    __slots__ = ("worker_id", "slots", "busy_slots", "state", "running", "counters", "address")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    BUSY_SLOTS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    slots: int
    busy_slots: int
    state: _scheduler_pb2.WorkerState
    running: _containers.RepeatedCompositeFieldContainer[RunningTask]
    counters: WorkerCounters
    address: str
    def __init__(self, worker_id: _Optional[str] = ..., slots: _Optional[int] = ..., busy_slots: _Optional[int] = ..., state: _Optional[_Union[_scheduler_pb2.WorkerState, str]] = ..., running: _Optional[_Iterable[_Union[RunningTask, _Mapping]]] = ..., counters: _Optional[_Union[WorkerCounters, _Mapping]] = ..., address: _Optional[str] = ...) -> None: ...
