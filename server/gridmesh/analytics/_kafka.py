"""Reading the life-cycle topics by explicit offsets (confluent-kafka).

The analytics source never joins a consumer group and never commits to
Kafka: every read is ``assign()`` at an explicit offset, and the offsets read
so far live only in Spark's checkpoint, so a micro-batch can be read again
exactly. (``assign`` also reads at once, where a group join can take seconds.)

Offsets are ``{"<topic>/<partition>": next offset}`` dicts (JSON, as Spark
stores them).

End offsets are found with a ListOffsets request and then checked by fetching
the last record: some Kafka-protocol brokers (Tansu) answer ListOffsets with
the base offset of the last record batch + 1 instead of the end of the log,
while their fetch responses carry the true high watermark. On Apache Kafka
both agree and the check costs one small fetch per partition.

confluent-kafka's exceptions stop here and become
:class:`~gridmesh.core.errors.Unavailable`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, Message, TopicPartition

from gridmesh.core.errors import Unavailable

__all__ = ["KafkaLog", "KafkaRange", "Offsets", "RawRecord", "limit_offsets", "plan_ranges", "tp_key"]

log = logging.getLogger(__name__)

Offsets = dict[str, int]
REQUEST_TIMEOUT_S = 10.0
"""Longest a metadata or offsets request may take."""
READ_STALL_TIMEOUT_S = 30.0
"""A range read that receives nothing for this long fails (the batch is retried)."""
POLL_S = 0.2
GROUP_ID = "gridmesh-analytics"
"""Required by librdkafka; never joined (assign only) and never committed."""


def tp_key(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


def _split(key: str) -> tuple[str, int]:
    topic, _, partition = key.rpartition("/")
    return topic, int(partition)


@dataclass(frozen=True, slots=True)
class KafkaRange:
    """Offsets ``[start, end)`` of one partition."""

    topic: str
    partition: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class RawRecord:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    timestamp_ms: int | None


def plan_ranges(start: Mapping[str, int], end: Mapping[str, int]) -> list[KafkaRange]:
    """What a micro-batch from ``start`` to ``end`` reads, one range per
    partition with new records. A partition missing from ``start`` is new:
    read from its beginning. A partition whose end lies before its start was
    re-created (e.g. a broker with memory storage restarted): read it again
    from its beginning; the sink keeps every event once."""
    ranges = []
    for key in sorted(end):
        topic, partition = _split(key)
        first, last = start.get(key, 0), end[key]
        if last < first:
            log.warning("%s went back from offset %d to %d (re-created?): reading it from 0", key, first, last)
            first = 0
        if last > first:
            ranges.append(KafkaRange(topic, partition, first, last))
    return ranges


def limit_offsets(start: Mapping[str, int], latest: Mapping[str, int], max_records: int | None) -> Offsets:
    """``latest``, cut so that at most ``max_records`` records lie between
    ``start`` and it (partitions in name order; None = no limit)."""
    if max_records is None:
        return dict(latest)
    budget = max_records
    result: Offsets = {}
    for key in sorted(latest):
        first, last = start.get(key, 0), latest[key]
        if last < first:  # re-created: see plan_ranges
            take = min(last, budget)
            result[key] = take
        else:
            take = min(last - first, budget)
            result[key] = first + take
        budget -= take
    return result


class KafkaLog:
    """Offsets and records of some topics of one Kafka cluster."""

    def __init__(self, bootstrap_servers: str, topics: Sequence[str]) -> None:
        self._topics = list(topics)
        self._settings: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "group.id": GROUP_ID,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
            "socket.timeout.ms": int(REQUEST_TIMEOUT_S * 1000),
            "logger": log,
        }
        self._consumer: Consumer | None = None
        self._probed: dict[str, tuple[int, int]] = {}
        """Partition -> (listed end, true end) of its last probe."""

    def _client(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(self._settings)
        return self._consumer

    def close(self) -> None:
        """Idempotent."""
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            consumer.close()

    # -- where the topics end -----------------------------------------------------------

    def latest(self, known: Mapping[str, int]) -> Offsets:
        """The end offset of every partition of the topics (``known``
        partitions that vanished keep their offset)."""
        consumer = self._client()
        try:
            metadata = consumer.list_topics(timeout=REQUEST_TIMEOUT_S)
            result: Offsets = dict(known)
            listed: dict[str, int] = {}
            for topic in self._topics:
                meta = metadata.topics.get(topic)
                if meta is None or meta.error is not None:
                    continue  # not created yet
                for partition in sorted(meta.partitions):
                    tp = TopicPartition(topic, partition)
                    _, high = consumer.get_watermark_offsets(tp, timeout=REQUEST_TIMEOUT_S, cached=False)
                    listed[tp_key(topic, partition)] = max(int(high), 0)
            result.update(listed)
            # Probe only partitions whose listed end moved since the last probe.
            stale = {k: v for k, v in listed.items() if v > 0 and self._probed.get(k, (-1, 0))[0] != v}
            for key, end in self._true_ends(stale).items():
                self._probed[key] = (stale[key], end)
            result.update({k: self._probed[k][1] for k, v in listed.items() if v > 0 and k in self._probed})
            return result
        except KafkaException as e:
            raise Unavailable(f"Kafka is unreachable or refused a request: {e}") from None

    def _true_ends(self, listed: Mapping[str, int]) -> Offsets:
        """Fetch the last record batch of each partition to learn its true end."""
        if not listed:
            return {}
        consumer = self._client()
        consumer.assign([TopicPartition(*_split(key), high - 1) for key, high in listed.items()])
        try:
            ends = dict(listed)
            waiting = set(listed)
            deadline = time.monotonic() + REQUEST_TIMEOUT_S
            while waiting and time.monotonic() < deadline:
                message = consumer.poll(POLL_S)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    _raise_if_fatal(error)
                    continue
                topic, partition, offset = _position(message)
                key = tp_key(topic, partition)
                if key not in waiting:
                    continue
                waiting.discard(key)
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
                ends[key] = max(ends[key], int(high), offset + 1)
            if waiting:
                log.debug("no record fetched from %s; using the listed end offsets", sorted(waiting))
            return ends
        finally:
            consumer.unassign()

    # -- reading --------------------------------------------------------------------------

    def read(self, part: KafkaRange) -> Iterator[RawRecord]:
        """Every record of ``part``, in offset order (offsets the log no longer
        holds, e.g. compacted ones, are skipped)."""
        consumer = self._client()
        tp = TopicPartition(part.topic, part.partition, part.start)
        try:
            consumer.assign([tp])
            stalled_since = time.monotonic()
            while True:
                message = consumer.poll(POLL_S)
                if message is None:
                    position = consumer.position([TopicPartition(part.topic, part.partition)])[0].offset
                    if position != OFFSET_END and position >= part.end:
                        return
                    if time.monotonic() - stalled_since > READ_STALL_TIMEOUT_S:
                        raise Unavailable(
                            f"reading {part.topic}/{part.partition} offsets {part.start}..{part.end} "
                            f"stalled at {position} for {READ_STALL_TIMEOUT_S:g} s"
                        )
                    continue
                error = message.error()
                if error is not None:
                    _raise_if_fatal(error)
                    continue
                stalled_since = time.monotonic()
                topic, partition, offset = _position(message)
                if offset >= part.end:
                    return
                kind, stamp = message.timestamp()
                yield RawRecord(topic, partition, offset, message.value(), stamp if kind else None)
                if offset >= part.end - 1:
                    return
        except KafkaException as e:
            raise Unavailable(f"Kafka is unreachable or refused a request: {e}") from None
        finally:
            consumer.unassign()


def _position(message: Message) -> tuple[str, int, int]:
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:
        raise Unavailable("Kafka returned a record without topic, partition or offset")
    return topic, partition, offset


def _raise_if_fatal(error: KafkaError) -> None:
    if error.code() == KafkaError._PARTITION_EOF:
        return
    if error.fatal() or not error.retriable():
        raise Unavailable(f"Kafka error: {error}")
    log.debug("transient Kafka error: %s", error)
