"""Publish entity events and consume a subscriber's queue: a thin, typed
client of the ``EventManager`` service (SPEC §2), normally reached through
the edge.

One :class:`EventClient` wraps one gRPC channel (sync ``grpcio``). Unary
methods answer the generated protobuf messages unchanged; every gRPC
failure surfaces as an :class:`EventError` carrying the status code's name
and the server's message (the :class:`grpc.RpcError` is its ``__cause__``).

:meth:`EventClient.consume` opens a ``ConsumeBatches`` stream: iterate an
:class:`EventStream` for deliveries (or :meth:`EventStream.batches` for
what arrived together) and settle them with :meth:`EventStream.ack` /
:meth:`EventStream.nack`; one cumulative ack settles a whole batch.

    with EventClient() as events:                        # the edge, 127.0.0.1:8080
        events.subscribe("orders", "customers", "customer")
        events.publish(new_event("customers", "customer", "c-1", Operation.CREATE, 1, {"name": "Ada"}))
        with events.consume("orders") as stream:
            for delivery in stream:
                print(delivery.event.entity_id, delivery.event.version)
                stream.ack(delivery.delivery_id)
                break
"""

from __future__ import annotations

import builtins
import logging
import queue
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc

from gridmesh.clients._channel import ChannelClient
from gridmesh.clients._errors import ClientError
from gridmesh.common.convert import struct_to_dict
from gridmesh.common.replication import Operation
from gridmesh.v1 import common_pb2, eventmanager_pb2, eventmanager_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_TARGET = "127.0.0.1:8080"
"""The edge (Envoy) of a mesh started by ``gridmesh up`` with default settings."""
DEFAULT_RPC_TIMEOUT_S = 30.0
"""Deadline of each unary RPC unless the constructor says otherwise."""
DEFAULT_PREFETCH = 256
"""Unacknowledged deliveries in flight on a stream opened by :meth:`EventClient.consume`."""
CLOSE_TIMEOUT_S = 2.0
"""Longest :meth:`EventStream.close` waits for the server to end the stream."""
PUBLISH_BATCH_LIMIT = 10_000
"""Most events one PublishBatch call carries (the EventManager's limit)."""

CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
]
"""A restarted EventManager is reached again within about 2 s (gRPC's default
backoff grows to 2 minutes); keepalives notice a vanished one."""

T = TypeVar("T")
EM = eventmanager_pb2


class EventError(ClientError):
    """A call to the EventManager failed (see :class:`ClientError`:
    ``code_name``, ``message`` and the ``violations`` of a bad request).
    :attr:`retryable` says whether the same call may succeed later (the
    server or a backing service was unreachable).
    """

    RETRYABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "CANCELLED"})

    @property
    def retryable(self) -> bool:
        return self.code_name in self.RETRYABLE


def new_event(
    publisher: str,
    entity_type: str,
    entity_id: str,
    operation: Operation | int | str,
    version: int,
    payload: Mapping[str, Any] | None = None,
    *,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
) -> common_pb2.EntityEvent:
    """An :class:`EntityEvent` with a fresh UUID ``event_id`` (unless given).

    ``operation`` is an :class:`Operation`, its value or its name
    (``"CREATE"``); ``payload`` is the whole entity after the change (JSON-
    like values), empty for DELETE.
    """
    event = common_pb2.EntityEvent(
        event_id=event_id or str(uuid.uuid4()),
        publisher=publisher,
        entity_type=entity_type,
        entity_id=entity_id,
        operation=_operation(operation),  # type: ignore[arg-type]
        version=version,
    )
    if payload:
        event.payload.update(dict(payload))
    event.occurred_at.FromDatetime(occurred_at or datetime.now(UTC))
    return event


def _operation(value: Operation | int | str) -> int:
    if isinstance(value, str):
        try:
            return int(Operation[value.upper()])
        except KeyError:
            raise ValueError(f"operation {value!r} is not one of CREATE, UPDATE, DELETE") from None
    return int(Operation(value))


def payload_dict(event: common_pb2.EntityEvent) -> dict[str, Any]:
    """The event's payload as plain Python values (integral numbers as int)."""
    value: dict[str, Any] = struct_to_dict(event.payload)
    return value


class EventStream:
    """One open ``ConsumeBatches`` stream of a subscriber (see
    :meth:`EventClient.consume`). Not thread-safe for iteration; :meth:`ack`,
    :meth:`nack` and :meth:`close` may be called from any thread.

    A reader thread takes the server's batches off the connection as they
    come, so while the caller works on one batch the next one fills up:
    :meth:`batches` hands out everything received since the previous batch
    (at most ``max_batch`` when the stream was opened with one).

    Deliveries not acknowledged when the stream ends go back to the queue
    and are delivered again (``redelivered`` true).
    """

    def __init__(self, stub: eventmanager_pb2_grpc.EventManagerStub, start: eventmanager_pb2.ConsumeStart) -> None:
        self.subscriber = start.subscriber
        self._max_batch = start.max_batch
        self._requests: queue.SimpleQueue[eventmanager_pb2.ConsumeRequest | None] = queue.SimpleQueue()
        self._requests.put(EM.ConsumeRequest(start=start))
        self._call = stub.ConsumeBatches(iter(self._requests.get, None))
        self._received: queue.SimpleQueue[builtins.list[eventmanager_pb2.Delivery] | grpc.RpcError | None] = (
            queue.SimpleQueue()
        )
        self._reader: threading.Thread | None = None
        self._closed = False

    def _read(self) -> None:  # the reader thread
        try:
            for batch in self._call:
                self._received.put(builtins.list(batch.deliveries))
            self._received.put(None)
        except grpc.RpcError as e:
            self._received.put(e)

    def batches(self) -> Iterator[builtins.list[eventmanager_pb2.Delivery]]:
        """Deliveries received together, in delivery order, until the stream
        ends: after :meth:`close` quietly, else with :class:`EventError`
        (e.g. ``UNAVAILABLE`` when the EventManager went away)."""
        if self._reader is None:
            self._reader = threading.Thread(target=self._read, name=f"consume-{self.subscriber}", daemon=True)
            self._reader.start()
        limit = self._max_batch or None
        pending: builtins.list[eventmanager_pb2.Delivery] = []
        end: grpc.RpcError | None = None
        ended = False
        while not ended or pending:
            if not ended and not pending:
                item = self._received.get()
                while True:  # everything received by now
                    if item is None or isinstance(item, grpc.RpcError):
                        ended, end = True, item
                        break
                    pending.extend(item)
                    if limit is not None and len(pending) >= limit:
                        break
                    try:
                        item = self._received.get_nowait()
                    except queue.Empty:
                        break
            if pending:
                cut = len(pending) if limit is None else min(limit, len(pending))
                batch, pending = pending[:cut], pending[cut:]
                yield batch
        if end is not None and not (self._closed and end.code() == grpc.StatusCode.CANCELLED):
            raise EventError.from_rpc_error(end) from end

    def __iter__(self) -> Iterator[eventmanager_pb2.Delivery]:
        for batch in self.batches():
            yield from batch

    def ack(self, delivery_id: int, *, multiple: bool = False) -> None:
        """The delivery is done (applied): it leaves the queue. ``multiple``
        also acknowledges every earlier delivery of this stream."""
        self._send(EM.ConsumeRequest(ack=EM.Ack(delivery_id=delivery_id, multiple=multiple)))

    def nack(self, delivery_id: int, *, requeue: bool = True) -> None:
        """Give the delivery back: ``requeue`` delivers it again (it counts
        towards the dead-letter limit), else it goes to the dead-letter queue."""
        self._send(EM.ConsumeRequest(nack=EM.Nack(delivery_id=delivery_id, requeue=requeue)))

    def _send(self, request: eventmanager_pb2.ConsumeRequest) -> None:
        if self._closed:
            raise EventError("CANCELLED", "the stream is closed; its unacknowledged deliveries are redelivered")
        self._requests.put(request)

    def close(self) -> None:
        """End the stream: the acks and nacks sent so far reach the server
        first (waiting at most :data:`CLOSE_TIMEOUT_S`), then unacknowledged
        deliveries go back to the queue. Idempotent."""
        if not self._closed:
            self._closed = True
            ended = threading.Event()
            self._call.add_done_callback(lambda _: ended.set())
            self._requests.put(None)  # half-close: the server settles what it got, then ends
            ended.wait(CLOSE_TIMEOUT_S)
            self._call.cancel()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EventClient(ChannelClient):
    """Client of one mesh's EventManager.

    ``target`` is ``host:port`` of the edge or of an EventManager. Pass
    ``channel`` to reuse a channel you own (``target`` is then ignored and
    :meth:`close` leaves it open). ``rpc_timeout_s`` is the deadline of each
    unary call; consume streams have none.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        channel: grpc.Channel | None = None,
        rpc_timeout_s: float | None = DEFAULT_RPC_TIMEOUT_S,
        api_key: str | None = None,
        ca_file: str | None = None,
        plaintext: bool = False,
    ) -> None:
        super().__init__(target, channel, rpc_timeout_s, CHANNEL_OPTIONS, api_key, ca_file, plaintext)
        self._stub = eventmanager_pb2_grpc.EventManagerStub(self._channel)

    def _unary(self, method: Callable[..., T], request: Any) -> T:
        try:
            return method(request, timeout=self._timeout)
        except grpc.RpcError as e:
            raise EventError.from_rpc_error(e) from e

    # -- subscriptions ----------------------------------------------------------

    def subscribe(
        self, subscriber: str, publisher: str, entity_type: str, *, snapshot: bool = False
    ) -> eventmanager_pb2.Subscription:
        """Route ``publisher``'s ``entity_type`` events to ``subscriber``'s
        queue. Idempotent: subscribing again answers the same subscription."""
        request = EM.SubscribeRequest(
            subscriber=subscriber, publisher=publisher, entity_type=entity_type, snapshot=snapshot
        )
        return self._unary(self._stub.Subscribe, request)

    def unsubscribe(self, subscriber: str, publisher: str, entity_type: str) -> None:
        """Stop routing (the queue and what it holds stay); ``NOT_FOUND`` if
        there is no such subscription."""
        request = EM.UnsubscribeRequest(subscriber=subscriber, publisher=publisher, entity_type=entity_type)
        self._unary(self._stub.Unsubscribe, request)

    def list(self, *, publisher: str = "", subscriber: str = "") -> builtins.list[eventmanager_pb2.Subscription]:
        """Subscriptions, filtered by publisher and/or subscriber (empty = any)."""
        request = EM.ListSubscriptionsRequest(publisher=publisher, subscriber=subscriber)
        response: eventmanager_pb2.ListSubscriptionsResponse = self._unary(self._stub.ListSubscriptions, request)
        return builtins.list(response.subscriptions)

    def queue_stats(self, subscriber: str) -> eventmanager_pb2.QueueStats:
        """Ready events, consumers and dead letters of ``subscriber``'s queue."""
        return self._unary(self._stub.GetQueueStats, EM.GetQueueStatsRequest(subscriber=subscriber))

    def dead_letters(self, subscriber: str, max_events: int = 0) -> builtins.list[common_pb2.EntityEvent]:
        """The oldest events of ``subscriber``'s dead-letter queue (left there)."""
        request = EM.ListDeadLettersRequest(subscriber=subscriber, max=max_events)
        response: eventmanager_pb2.ListDeadLettersResponse = self._unary(self._stub.ListDeadLetters, request)
        return builtins.list(response.events)

    # -- publishing ---------------------------------------------------------------

    def publish(self, event: common_pb2.EntityEvent) -> eventmanager_pb2.PublishResponse:
        """Publish one event; answers once RabbitMQ confirmed it durable, with
        the subscribers it was routed to. A malformed event raises
        ``INVALID_ARGUMENT`` naming the field."""
        return self._unary(self._stub.Publish, event)

    def publish_batch(self, events: Sequence[common_pb2.EntityEvent]) -> builtins.list[eventmanager_pb2.PublishResult]:
        """Publish events in order, :data:`PUBLISH_BATCH_LIMIT` per call; one
        result per event (``code`` 0 = confirmed, else why not)."""
        results: builtins.list[eventmanager_pb2.PublishResult] = []
        for i in range(0, len(events), PUBLISH_BATCH_LIMIT):
            request = EM.PublishBatchRequest(events=events[i : i + PUBLISH_BATCH_LIMIT])
            response: eventmanager_pb2.PublishBatchResponse = self._unary(self._stub.PublishBatch, request)
            results.extend(response.results)
        return results

    # -- consuming ----------------------------------------------------------------

    def consume(self, subscriber: str, *, prefetch: int = DEFAULT_PREFETCH, max_batch: int = 0) -> EventStream:
        """Open a stream of ``subscriber``'s deliveries, shared with its other
        consumers (each event goes to one of them). At most ``prefetch``
        deliveries are unacknowledged at a time; ``max_batch`` caps a batch
        (0 = up to ``prefetch``). Errors (``NOT_FOUND`` for a subscriber
        that never subscribed) surface when the stream is iterated."""
        start = EM.ConsumeStart(subscriber=subscriber, prefetch=prefetch, max_batch=max_batch)
        return EventStream(self._stub, start)


__all__ = [
    "DEFAULT_PREFETCH",
    "EventClient",
    "EventError",
    "EventStream",
    "Operation",
    "new_event",
    "payload_dict",
]
