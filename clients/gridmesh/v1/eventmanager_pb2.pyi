import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from gridmesh.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubscribeRequest(_message.Message):
    __slots__ = ("subscriber", "publisher", "entity_type", "snapshot")
    SUBSCRIBER_FIELD_NUMBER: _ClassVar[int]
    PUBLISHER_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    subscriber: str
    publisher: str
    entity_type: str
    snapshot: bool
    def __init__(self, subscriber: _Optional[str] = ..., publisher: _Optional[str] = ..., entity_type: _Optional[str] = ..., snapshot: _Optional[bool] = ...) -> None: ...

class Subscription(_message.Message):
    __slots__ = ("subscriber", "publisher", "entity_type", "queue", "created_at", "snapshot")
    SUBSCRIBER_FIELD_NUMBER: _ClassVar[int]
    PUBLISHER_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    subscriber: str
    publisher: str
    entity_type: str
    queue: str
    created_at: _timestamp_pb2.Timestamp
    snapshot: bool
    def __init__(self, subscriber: _Optional[str] = ..., publisher: _Optional[str] = ..., entity_type: _Optional[str] = ..., queue: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., snapshot: _Optional[bool] = ...) -> None: ...

class UnsubscribeRequest(_message.Message):
    __slots__ = ("subscriber", "publisher", "entity_type")
    SUBSCRIBER_FIELD_NUMBER: _ClassVar[int]
    PUBLISHER_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    subscriber: str
    publisher: str
    entity_type: str
    def __init__(self, subscriber: _Optional[str] = ..., publisher: _Optional[str] = ..., entity_type: _Optional[str] = ...) -> None: ...

class ListSubscriptionsRequest(_message.Message):
    __slots__ = ("publisher", "subscriber")
    PUBLISHER_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBER_FIELD_NUMBER: _ClassVar[int]
    publisher: str
    subscriber: str
    def __init__(self, publisher: _Optional[str] = ..., subscriber: _Optional[str] = ...) -> None: ...

class ListSubscriptionsResponse(_message.Message):
    __slots__ = ("subscriptions",)
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    subscriptions: _containers.RepeatedCompositeFieldContainer[Subscription]
    def __init__(self, subscriptions: _Optional[_Iterable[_Union[Subscription, _Mapping]]] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("event_id", "routed_to")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUTED_TO_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    routed_to: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, event_id: _Optional[str] = ..., routed_to: _Optional[_Iterable[str]] = ...) -> None: ...

class PublishBatchRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_common_pb2.EntityEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[_common_pb2.EntityEvent, _Mapping]]] = ...) -> None: ...

class PublishResult(_message.Message):
    __slots__ = ("event_id", "routed_to", "code", "error")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUTED_TO_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    routed_to: _containers.RepeatedScalarFieldContainer[str]
    code: int
    error: str
    def __init__(self, event_id: _Optional[str] = ..., routed_to: _Optional[_Iterable[str]] = ..., code: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class PublishBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[PublishResult]
    def __init__(self, results: _Optional[_Iterable[_Union[PublishResult, _Mapping]]] = ...) -> None: ...

class ConsumeStart(_message.Message):
    __slots__ = ("subscriber", "prefetch", "max_batch")
    SUBSCRIBER_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    subscriber: str
    prefetch: int
    max_batch: int
    def __init__(self, subscriber: _Optional[str] = ..., prefetch: _Optional[int] = ..., max_batch: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("delivery_id", "multiple")
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    MULTIPLE_FIELD_NUMBER: _ClassVar[int]
    delivery_id: int
    multiple: bool
    def __init__(self, delivery_id: _Optional[int] = ..., multiple: _Optional[bool] = ...) -> None: ...

class Nack(_message.Message):
    __slots__ = ("delivery_id", "requeue")
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEUE_FIELD_NUMBER: _ClassVar[int]
    delivery_id: int
    requeue: bool
    def __init__(self, delivery_id: _Optional[int] = ..., requeue: _Optional[bool] = ...) -> None: ...

class ConsumeRequest(_message.Message):
    __slots__ = ("start", "ack", "nack")
    START_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    NACK_FIELD_NUMBER: _ClassVar[int]
    start: ConsumeStart
    ack: Ack
    nack: Nack
    def __init__(self, start: _Optional[_Union[ConsumeStart, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., nack: _Optional[_Union[Nack, _Mapping]] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("delivery_id", "redelivered", "event", "delivery_count", "traceparent")
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    REDELIVERED_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_COUNT_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    delivery_id: int
    redelivered: bool
    event: _common_pb2.EntityEvent
    delivery_count: int
    traceparent: str
    def __init__(self, delivery_id: _Optional[int] = ..., redelivered: _Optional[bool] = ..., event: _Optional[_Union[_common_pb2.EntityEvent, _Mapping]] = ..., delivery_count: _Optional[int] = ..., traceparent: _Optional[str] = ...) -> None: ...

class DeliveryBatch(_message.Message):
    __slots__ = ("deliveries",)
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    deliveries: _containers.RepeatedCompositeFieldContainer[Delivery]
    def __init__(self, deliveries: _Optional[_Iterable[_Union[Delivery, _Mapping]]] = ...) -> None: ...

class GetQueueStatsRequest(_message.Message):
    __slots__ = ("subscriber",)
    SUBSCRIBER_FIELD_NUMBER: _ClassVar[int]
    subscriber: str
    def __init__(self, subscriber: _Optional[str] = ...) -> None: ...

class QueueStats(_message.Message):
    __slots__ = ("subscriber", "queue", "messages", "consumers", "dead_letters")
    SUBSCRIBER_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    CONSUMERS_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    subscriber: str
    queue: str
    messages: int
    consumers: int
    dead_letters: int
    def __init__(self, subscriber: _Optional[str] = ..., queue: _Optional[str] = ..., messages: _Optional[int] = ..., consumers: _Optional[int] = ..., dead_letters: _Optional[int] = ...) -> None: ...

class ListDeadLettersRequest(_message.Message):
    __slots__ = ("subscriber", "max")
    SUBSCRIBER_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    subscriber: str
    max: int
    def __init__(self, subscriber: _Optional[str] = ..., max: _Optional[int] = ...) -> None: ...

class ListDeadLettersResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_common_pb2.EntityEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[_common_pb2.EntityEvent, _Mapping]]] = ...) -> None: ...
