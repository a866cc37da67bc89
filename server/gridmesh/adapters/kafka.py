"""Kafka adapter (confluent-kafka). The only module that imports it.

:class:`KafkaLifecycleLog` produces ``TaskLifecycleEvent`` protobufs (key =
task_id) with an idempotent producer, ``acks=all``. ``produce`` only appends
to librdkafka's bounded local buffer, so a Kafka outage never blocks task
processing: events wait in the buffer (``kafka.buffer_messages``) until the
broker is back; past that they are dropped, counted and logged. A daemon
thread serves delivery reports.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from gridmesh.adapters import pki
from gridmesh.common.convert import to_timestamp
from gridmesh.config import KafkaConfig, MeshConfig
from gridmesh.core.access import PeerRole
from gridmesh.core.lifecycle import Acknowledgements, LifecycleEvent, LifecycleKind
from gridmesh.observability.tracing import TRACEPARENT
from gridmesh.v1 import common_pb2

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.2
LINGER_MS = 50
"""How long the producer gathers events into one batch. Nothing waits for a
life-cycle event (the analytics job reads every ``trigger_interval_s``, 2 s
by default), while every batch costs the producer's threads and the broker a
request: at W1's rate 50 ms instead of 5 ms took ~0.2 ms of CPU per task off
the Scheduler, the worker node and the broker together."""
TOPIC_CREATE_TIMEOUT_S = 10.0
_EVENT_TYPES = {
    LifecycleKind.PENDING: common_pb2.TASK_PENDING,
    LifecycleKind.STARTED: common_pb2.TASK_STARTED,
    LifecycleKind.COMPLETED: common_pb2.TASK_COMPLETED,
    LifecycleKind.FAILED: common_pb2.TASK_FAILED,
    LifecycleKind.RETRIED: common_pb2.TASK_RETRIED,
}


def to_proto(event: LifecycleEvent) -> common_pb2.TaskLifecycleEvent:
    return common_pb2.TaskLifecycleEvent(
        task_id=event.task_id,
        task_type=event.task_type,
        worker_id=event.worker_id,
        attempt=event.attempt,
        priority=event.priority,  # type: ignore[arg-type]
        occurred_at=to_timestamp(event.occurred_at),
        event_type=_EVENT_TYPES[event.kind],
        error=event.error,
    )


def client_settings(config: MeshConfig, role: PeerRole) -> dict[str, Any]:
    """librdkafka's settings to reach the mesh's brokers as ``role``: mutual
    TLS with the role's certificate where ``config.kafka_tls``."""
    settings: dict[str, Any] = {"bootstrap.servers": config.kafka.bootstrap_servers, "logger": log}
    return (settings | tls_settings(config.tls_path, role)) if config.kafka_tls else settings


def tls_settings(tls: Path, role: PeerRole) -> dict[str, str]:
    """librdkafka's mutual TLS as ``role``, with the files in ``tls`` (the mesh's TLS directory)."""
    ca, cert, key = pki.role_files(tls, role)
    return {
        "security.protocol": "SSL",
        "ssl.ca.location": str(ca),
        "ssl.certificate.location": str(cert),
        "ssl.key.location": str(key),
    }


def java_tls_settings(tls: Path, role: PeerRole) -> dict[str, str]:
    """The same for Kafka's Java side (a broker, Spark's Kafka source): PEM
    key and trust stores (``ssl.`` settings; a client also needs
    ``security.protocol=SSL``)."""
    return {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(pki.keystore(tls, role)),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(tls / pki.CA_CERT),
    }


class EndOffsets:
    """The end (high watermark) of each partition of some topics: how far a
    reader has to go. One consumer, kept open; never joins a group."""

    def __init__(self, client: dict[str, Any], topics: list[str], timeout_s: float = 2.0) -> None:
        self._topics, self._timeout_s = topics, timeout_s
        self._consumer = Consumer({**client, "group.id": "gridmesh-end-offsets"})

    def read(self) -> dict[str, int] | None:
        """``{"topic/partition": end}``, or None when the broker does not answer."""
        try:
            metadata = self._consumer.list_topics(timeout=self._timeout_s)
            ends = {}
            for topic in self._topics:
                found = metadata.topics.get(topic)
                for partition in found.partitions if found is not None else ():
                    _, high = self._consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), timeout=self._timeout_s, cached=False
                    )
                    ends[f"{topic}/{partition}"] = int(high)
            return ends
        except KafkaException as e:
            log.debug("cannot read the topics' end offsets: %s", e)
            return None

    def close(self) -> None:
        self._consumer.close()


class KafkaLifecycleLog:
    """Produces life-cycle events to ``topic_of(kind)``."""

    def __init__(self, config: KafkaConfig, client: dict[str, Any], topic_of: Callable[[LifecycleKind], str]) -> None:
        """``client``: :func:`client_settings` of the producing process."""
        self._config = config
        self._client = client
        self._topics = {kind: topic_of(kind) for kind in LifecycleKind}
        settings: dict[str, Any] = {
            **client,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": LINGER_MS,
            "queue.buffering.max.messages": config.buffer_messages,
            "message.timeout.ms": 0,  # keep retrying while the broker is away
        }
        self._producer = Producer(settings)
        self._acks = Acknowledgements()
        self.produced = 0
        self.delivered = 0
        self.dropped = 0
        self.failed = 0
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafka-delivery", daemon=True)
        self._poller.start()
        threading.Thread(target=self._ensure_topics, name="kafka-topics", daemon=True).start()

    def _ensure_topics(self) -> None:
        admin = AdminClient(self._client)
        c = self._config
        new = [
            NewTopic(t, num_partitions=c.partitions, replication_factor=c.replication_factor)
            for t in self._topics.values()
        ]
        try:
            futures = admin.create_topics(new, request_timeout=TOPIC_CREATE_TIMEOUT_S)
        except KafkaException as e:
            log.warning("could not create the life-cycle topics: %s", e)
            return
        for topic, future in futures.items():
            try:
                future.result(timeout=TOPIC_CREATE_TIMEOUT_S)
            except KafkaException as e:
                if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    log.warning("could not create topic %s: %s", topic, e)
            except Exception as e:
                log.warning("could not create topic %s: %s", topic, e)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(POLL_INTERVAL_S)

    def _delivered(self, position: int, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self.delivered += 1
        else:
            self.failed += 1
            log.warning("life-cycle event to %s lost: %s", message.topic(), error)
        self._acks.done(position)

    def acknowledged(self) -> int:
        return self._acks.upto()

    def health(self) -> tuple[int, int, int]:
        """(events in the producer's buffer, delivery failures, events dropped)."""
        return len(self._producer), self.failed, self.dropped

    def emit(self, event: LifecycleEvent) -> None:
        self._acks.sent(event.position)
        try:
            self._producer.produce(
                self._topics[event.kind],
                key=event.task_id.encode(),
                value=to_proto(event).SerializeToString(),
                on_delivery=functools.partial(self._delivered, event.position),
                headers=[(TRACEPARENT, event.trace_parent.encode())] if event.trace_parent else None,
            )
            self.produced += 1
        except BufferError:
            self._acks.done(event.position)
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error(
                    "Kafka buffer full (%d events): %d life-cycle events dropped so far",
                    self._config.buffer_messages,
                    self.dropped,
                )
        except KafkaException as e:
            self._acks.done(event.position)
            self.dropped += 1
            log.error("life-cycle event dropped: %s", e)

    def close(self, timeout: float = 5.0) -> None:
        """Flush for up to ``timeout`` seconds, then stop. Idempotent."""
        if self._stop.is_set():
            return
        left = self._producer.flush(timeout)
        if left:
            log.warning("%d life-cycle events were not delivered before shutdown", left)
        self._stop.set()
        self._poller.join(POLL_INTERVAL_S * 5)
