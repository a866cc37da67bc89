"""The EventManager servicer: converts protobuf ↔ the service and delegates.

A call through the edge carries the caller's verified role; a publisher key
publishes only as its publisher, a subscriber key subscribes, consumes and
reads queue figures only as its subscriber (the edge decides the methods,
this servicer the fields bound to an identity, before anything changes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf import empty_pb2
from grpc import aio

from gridmesh.adapters.rabbitmq import Consumer, Message
from gridmesh.common.convert import to_timestamp
from gridmesh.common.errors import GridmeshError, InvalidArgument
from gridmesh.core.access import Role, check_bound
from gridmesh.core.replication import Subscription
from gridmesh.eventmanager._service import EventManager, PublishOutcome, decode_event
from gridmesh.grpc_support.errors import status_code
from gridmesh.grpc_support.tls import edge_role
from gridmesh.observability import tracing
from gridmesh.observability.logs import set_log_context
from gridmesh.v1 import common_pb2, eventmanager_pb2, eventmanager_pb2_grpc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _End:
    """The Consume stream is over: ``error`` None = cleanly."""

    error: GridmeshError | None


class EventManagerServicer(eventmanager_pb2_grpc.EventManagerServicer):
    def __init__(self, service: EventManager) -> None:
        self._service = service

    def _subscription(self, subscription: Subscription) -> eventmanager_pb2.Subscription:
        key = subscription.key
        return eventmanager_pb2.Subscription(
            subscriber=key.subscriber,
            publisher=key.publisher,
            entity_type=key.entity_type,
            queue=self._service.topology.queue(key.subscriber),
            created_at=to_timestamp(subscription.created_at),
            snapshot=subscription.snapshot,
        )

    async def Subscribe(
        self, request: eventmanager_pb2.SubscribeRequest, context: aio.ServicerContext
    ) -> eventmanager_pb2.Subscription:
        check_bound(edge_role(context), Role.SUBSCRIBER, request.subscriber)
        subscription = await self._service.subscribe(
            request.publisher, request.entity_type, request.subscriber, snapshot=request.snapshot
        )
        return self._subscription(subscription)

    async def Unsubscribe(
        self, request: eventmanager_pb2.UnsubscribeRequest, context: aio.ServicerContext
    ) -> empty_pb2.Empty:
        check_bound(edge_role(context), Role.SUBSCRIBER, request.subscriber)
        await self._service.unsubscribe(request.publisher, request.entity_type, request.subscriber)
        return empty_pb2.Empty()

    async def ListSubscriptions(
        self, request: eventmanager_pb2.ListSubscriptionsRequest, context: aio.ServicerContext
    ) -> eventmanager_pb2.ListSubscriptionsResponse:
        found = await self._service.list_subscriptions(publisher=request.publisher, subscriber=request.subscriber)
        return eventmanager_pb2.ListSubscriptionsResponse(subscriptions=[self._subscription(s) for s in found])

    async def Publish(
        self, request: common_pb2.EntityEvent, context: aio.ServicerContext
    ) -> eventmanager_pb2.PublishResponse:
        check_bound(edge_role(context), Role.PUBLISHER, request.publisher)
        outcome = await self._service.publish(request)
        return eventmanager_pb2.PublishResponse(event_id=outcome.event_id, routed_to=outcome.routed_to)

    async def PublishBatch(
        self, request: eventmanager_pb2.PublishBatchRequest, context: aio.ServicerContext
    ) -> eventmanager_pb2.PublishBatchResponse:
        role = edge_role(context)
        for event in request.events:  # one event as another publisher refuses the whole call
            check_bound(role, Role.PUBLISHER, event.publisher)
        outcomes = await self._service.publish_batch(request.events)
        return eventmanager_pb2.PublishBatchResponse(results=[_result(o) for o in outcomes])

    async def Consume(
        self, request_iterator: AsyncIterator[eventmanager_pb2.ConsumeRequest], context: aio.ServicerContext
    ) -> AsyncIterator[eventmanager_pb2.Delivery]:
        start = await _first(request_iterator)
        check_bound(edge_role(context), Role.SUBSCRIBER, start.subscriber)
        async for batch in self._deliveries(request_iterator, start, max_batch=1):
            for delivery in batch.deliveries:
                yield delivery

    async def ConsumeBatches(
        self, request_iterator: AsyncIterator[eventmanager_pb2.ConsumeRequest], context: aio.ServicerContext
    ) -> AsyncIterator[eventmanager_pb2.DeliveryBatch]:
        start = await _first(request_iterator)
        check_bound(edge_role(context), Role.SUBSCRIBER, start.subscriber)
        if start.max_batch < 0:
            raise InvalidArgument(f"max_batch must be 0 or more, got {start.max_batch}", field="max_batch")
        async for batch in self._deliveries(request_iterator, start, max_batch=start.max_batch):
            yield batch

    async def _deliveries(
        self,
        requests: AsyncIterator[eventmanager_pb2.ConsumeRequest],
        start: eventmanager_pb2.ConsumeStart,
        *,
        max_batch: int,
    ) -> AsyncIterator[eventmanager_pb2.DeliveryBatch]:
        """The deliveries of one Consume stream, in batches of what was ready
        together (at most ``max_batch``; 0 = the prefetch), while the
        client's acks and nacks are applied alongside."""
        set_log_context(subscriber=start.subscriber)  # this stream's own task: its records name the subscriber
        inbox: asyncio.Queue[Message | _End] = asyncio.Queue()
        consumer = await self._service.consume(
            start.subscriber,
            start.prefetch,
            on_message=inbox.put_nowait,
            on_closed=lambda error: inbox.put_nowait(_End(error)),
        )
        limit = max_batch or consumer.prefetch
        settling = asyncio.create_task(_settle(requests, consumer, inbox))
        try:
            while True:
                batch = eventmanager_pb2.DeliveryBatch()
                item = await inbox.get()
                while True:
                    if isinstance(item, _End):
                        if len(batch.deliveries):
                            yield batch
                        if item.error is not None:
                            raise item.error
                        return
                    delivery = batch.deliveries.add(
                        delivery_id=item.delivery_tag,
                        redelivered=item.redelivered,
                        delivery_count=item.delivery_count,
                    )
                    if not decode_event(item, into=delivery.event):
                        del batch.deliveries[-1]
                        consumer.nack(item.delivery_tag, requeue=False)
                    elif item.trace_parent:
                        delivery.traceparent = _delivered(item, delivery.event, start.subscriber)
                    if len(batch.deliveries) >= limit or inbox.empty():
                        break
                    item = inbox.get_nowait()
                if len(batch.deliveries):
                    yield batch
        finally:
            settling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await settling
            # Whatever is still unacknowledged goes back to the queue.
            await consumer.close()

    async def GetQueueStats(
        self, request: eventmanager_pb2.GetQueueStatsRequest, context: aio.ServicerContext
    ) -> eventmanager_pb2.QueueStats:
        check_bound(edge_role(context), Role.SUBSCRIBER, request.subscriber)
        stats = await self._service.queue_stats(request.subscriber)
        return eventmanager_pb2.QueueStats(
            subscriber=stats.subscriber,
            queue=stats.queue,
            messages=stats.messages,
            consumers=stats.consumers,
            dead_letters=stats.dead_letters,
        )

    async def ListDeadLetters(
        self, request: eventmanager_pb2.ListDeadLettersRequest, context: aio.ServicerContext
    ) -> eventmanager_pb2.ListDeadLettersResponse:
        check_bound(edge_role(context), Role.SUBSCRIBER, request.subscriber)
        events = await self._service.dead_letters(request.subscriber, request.max)
        return eventmanager_pb2.ListDeadLettersResponse(events=events)


def _result(outcome: PublishOutcome) -> eventmanager_pb2.PublishResult:
    if outcome.error is None:
        return eventmanager_pb2.PublishResult(event_id=outcome.event_id, routed_to=outcome.routed_to)
    code = status_code(outcome.error)
    return eventmanager_pb2.PublishResult(event_id=outcome.event_id, code=code.value[0], error=outcome.error.message)


async def _first(requests: AsyncIterator[eventmanager_pb2.ConsumeRequest]) -> eventmanager_pb2.ConsumeStart:
    try:
        first = await anext(requests)
    except StopAsyncIteration:
        raise InvalidArgument("the stream ended before its first message, ConsumeStart", field="start") from None
    if first.WhichOneof("kind") != "start":
        raise InvalidArgument("the first message of a Consume stream must be ConsumeStart", field="start")
    return first.start


async def _settle(
    requests: AsyncIterator[eventmanager_pb2.ConsumeRequest], consumer: Consumer, inbox: asyncio.Queue[Message | _End]
) -> None:
    """Apply the client's acks and nacks; end the stream when the client
    stops sending or sends something wrong."""
    try:
        async for request in requests:
            kind = request.WhichOneof("kind")
            if kind == "ack":
                consumer.ack(request.ack.delivery_id, multiple=request.ack.multiple)
            elif kind == "nack":
                consumer.nack(request.nack.delivery_id, requeue=request.nack.requeue)
            else:
                raise InvalidArgument("ConsumeStart may only be the first message of a stream", field="start")
    except GridmeshError as e:
        inbox.put_nowait(_End(e))
    except Exception as e:  # the client went away: the RPC is ending anyway
        log.debug("Consume request stream ended: %r", e)
        inbox.put_nowait(_End(None))
    else:
        inbox.put_nowait(_End(None))


def _delivered(message: Message, event: common_pb2.EntityEvent, subscriber: str) -> str:
    """The span of ``event`` on its way to ``subscriber``, from when it
    occurred to its delivery (the replication lag of this event), which
    its apply continues; its traceparent."""
    return tracing.record(
        f"deliver to {subscriber}",
        parent=message.trace_parent,
        start=event.occurred_at.ToDatetime(UTC),
        end=datetime.now(UTC),
        kind=tracing.SpanKind.PRODUCER,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.message.id": message.message_id,
            "gridmesh.subscriber": subscriber,
            "gridmesh.delivery_count": message.delivery_count,
        },
    )
