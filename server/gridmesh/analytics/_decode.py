"""Kafka record of a micro-batch → one :class:`Record` for the sink.

Every record becomes a Record: a valid ``TaskLifecycleEvent`` with its
fields, or one with ``valid = False`` and the reason, so that malformed and
foreign records are counted (never dropped silently) and never stop the job.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from google.protobuf.message import DecodeError

from gridmesh.core.lifecycle import LifecycleKind
from gridmesh.core.stats import EARLIEST, LATEST, kind_name
from gridmesh.v1 import common_pb2

__all__ = ["Record", "decode", "kind_of_topic", "occurred_at"]

MAX_TASK_ID_CHARS = 64
MAX_TASK_TYPE_CHARS = 128
MAX_WORKER_ID_CHARS = 255
MAX_CLOCK_SKEW = timedelta(hours=1)
"""An event may claim to have occurred this long after Kafka received it, no more."""

_EVENT_TYPES = {
    common_pb2.TASK_PENDING: LifecycleKind.PENDING,
    common_pb2.TASK_STARTED: LifecycleKind.STARTED,
    common_pb2.TASK_COMPLETED: LifecycleKind.COMPLETED,
    common_pb2.TASK_FAILED: LifecycleKind.FAILED,
    common_pb2.TASK_RETRIED: LifecycleKind.RETRIED,
}
_TOPIC_SUFFIXES = {f"gridmesh.{kind.value}": kind for kind in LifecycleKind}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EARLIEST_S = int((EARLIEST - _EPOCH).total_seconds())
_LATEST_S = int((LATEST - _EPOCH).total_seconds())


class Record(NamedTuple):
    """One Kafka record of a life-cycle topic, decoded."""

    topic: str
    kafka_partition: int
    kafka_offset: int
    valid: bool
    reason: str
    """Why the record is not a usable event ('' when valid)."""
    task_id: str = ""
    task_type: str = ""
    worker_id: str = ""
    attempt: int = 0
    priority: int = 0
    kind: str = ""
    """``pending``, ``started``, ``completed``, ``failed`` or ``retried``."""
    occurred_us: int = 0
    """``occurred_at`` in microseconds since the Unix epoch."""


def occurred_at(record: Record) -> datetime:
    return _EPOCH + timedelta(microseconds=record.occurred_us)


def kind_of_topic(topic: str) -> LifecycleKind | None:
    """The kind of event a ``[<namespace>.]gridmesh.task.<kind>`` topic carries."""
    for suffix, kind in _TOPIC_SUFFIXES.items():
        if topic == suffix or topic.endswith("." + suffix):
            return kind
    return None


def decode(topic: str, partition: int, offset: int, value: bytes | None, timestamp_ms: int | None) -> Record:
    """Decode one record; ``timestamp_ms`` is Kafka's timestamp of it, if any."""

    def bad(reason: str) -> Record:
        return Record(topic, partition, offset, False, reason[:255])

    kind = kind_of_topic(topic)
    if kind is None:
        return bad(f"{topic} is not a life-cycle topic")
    if not value:
        return bad("empty value")
    event = common_pb2.TaskLifecycleEvent()
    try:
        event.ParseFromString(value)
    except DecodeError:
        return bad(f"not a TaskLifecycleEvent ({len(value)} bytes that do not parse)")
    claimed = _EVENT_TYPES.get(event.event_type)
    if claimed is None:
        return bad(f"event_type {event.event_type} is not a life-cycle event type")
    if claimed is not kind:
        return bad(f"a {kind_name(claimed)} event on the {kind_name(kind)} topic")
    if not event.task_id or len(event.task_id) > MAX_TASK_ID_CHARS:
        return bad(f"task_id must be 1-{MAX_TASK_ID_CHARS} characters")
    if not event.task_type or len(event.task_type) > MAX_TASK_TYPE_CHARS:
        return bad(f"task_type must be 1-{MAX_TASK_TYPE_CHARS} characters")
    if len(event.worker_id) > MAX_WORKER_ID_CHARS:
        return bad(f"worker_id is longer than {MAX_WORKER_ID_CHARS} characters")
    if event.attempt < 1:
        return bad(f"attempt {event.attempt} is not 1 or more")
    if event.priority not in common_pb2.Priority.values():
        return bad(f"priority {event.priority} is not a Priority")
    if not event.HasField("occurred_at"):
        return bad("occurred_at is not set")
    seconds, nanos = event.occurred_at.seconds, event.occurred_at.nanos
    if not (_EARLIEST_S <= seconds < _LATEST_S and 0 <= nanos < 1_000_000_000):
        return bad(f"occurred_at ({seconds} s, {nanos} ns) is not a time in the years 2000-2100")
    occurred_us = seconds * 1_000_000 + nanos // 1000
    at = _EPOCH + timedelta(microseconds=occurred_us)
    if timestamp_ms and timestamp_ms > 0:
        received = _EPOCH + timedelta(milliseconds=timestamp_ms)
        if at > received + MAX_CLOCK_SKEW:
            return bad(f"occurred_at {at.isoformat()} is after Kafka received it ({received.isoformat()})")
    return Record(
        topic,
        partition,
        offset,
        True,
        "",
        event.task_id,
        event.task_type,
        event.worker_id,
        event.attempt,
        int(event.priority),
        kind_name(kind),
        occurred_us,
    )
