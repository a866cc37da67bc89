"""What the EventManager does, over its ZooKeeper and RabbitMQ adapters.

- The subscription map lives in ZooKeeper (``<zk_root>/eventmanager/
  subscriptions/<publisher>/<entity_type>/<subscriber>``). Every instance
  watches the whole subtree and keeps an in-memory
  :class:`~gridmesh.core.replication.SubscriptionMap` that says where an
  event goes; ``Subscribe``/``Unsubscribe`` return once this instance's map
  shows the change. On start (and after RabbitMQ came back) an instance
  re-declares the queues and bindings of every subscription it reads there.
- Events are published to the topic exchange as persistent, mandatory
  messages; a publish is answered when RabbitMQ confirmed it. Publishes are
  pipelined: a batch writes every event, then waits for all the confirms.
- Each Consume stream is one RabbitMQ consumer on a channel of its own.

Threading: everything runs on the event loop except kazoo's blocking calls,
which run in the default executor (``asyncio.to_thread``); kazoo's watch
and state callbacks hand their results to the loop with
``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gridmesh.adapters.rabbitmq import Consumer, Message, RabbitMQ
from gridmesh.adapters.zookeeper import TreeWatch, ZooKeeper
from gridmesh.common.errors import GridmeshError, NotFound, Unavailable
from gridmesh.common.names import check_name
from gridmesh.config import MeshConfig
from gridmesh.core.replication import (
    SUBSCRIPTIONS_ZNODE,
    Subscription,
    SubscriptionKey,
    SubscriptionMap,
    Topology,
    check_batch_size,
    check_dead_letter_count,
    check_event,
    check_prefetch,
    routing_key,
)
from gridmesh.observability import metrics, tracing
from gridmesh.v1 import common_pb2

log = logging.getLogger(__name__)

MAP_SYNC_TIMEOUT_S = 5.0
"""Longest wait of Subscribe/Unsubscribe for the watch to show the change."""
CONFIRM_TIMEOUT_S = 30.0
"""Longest wait for RabbitMQ's confirm of a published event."""
_YIELD_EVERY = 256  # events written between two yields to the loop in a batch


@dataclass(frozen=True)
class PublishOutcome:
    """What became of one event."""

    event_id: str
    routed_to: tuple[str, ...] = ()
    """Subscribers whose queues received it (empty: nobody subscribes)."""
    error: GridmeshError | None = None
    """Why it was not published (None = published and confirmed)."""


@dataclass(frozen=True)
class QueueStats:
    subscriber: str
    queue: str
    messages: int
    """Events ready for delivery (not counting delivered, unacknowledged ones)."""
    consumers: int
    dead_letters: int


@dataclass
class _Sync:
    """The latest map and a way to wait until it satisfies a condition."""

    current: SubscriptionMap = field(default_factory=SubscriptionMap)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def replace(self, new: SubscriptionMap) -> None:
        self.current = new
        self.changed.set()
        self.changed = asyncio.Event()

    async def wait_until(self, condition: Callable[[SubscriptionMap], bool], timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition(self.current):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)
        return True


class EventManager:
    """The EventManager's behaviour. Call :meth:`start` (on the loop) first."""

    def __init__(self, config: MeshConfig, zookeeper: ZooKeeper, rabbitmq: RabbitMQ) -> None:
        self._zk = zookeeper
        self._mq = rabbitmq
        self.topology = Topology(prefix=config.prefixed, max_deliveries=config.eventmanager.max_redeliveries)
        self._max_payload_bytes = config.eventmanager.max_payload_bytes
        self._map = _Sync()
        self._watch: TreeWatch | None = None
        self._consumers: set[Consumer] = set()
        self._state_listeners: list[Callable[[], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._closed = False
        self._rebuild_task: asyncio.Task[None] | None = None
        self._metered: set[str] = set()
        """Subscribers whose queue gauges are set."""

    # -- life cycle -------------------------------------------------------

    async def start(self) -> None:
        """Connect, declare the exchange, rebuild every subscription's queue
        and binding from ZooKeeper and start watching the map. Unavailable
        if ZooKeeper or RabbitMQ cannot be reached."""
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._zk.start)
        self._zk.add_connection_listener(self._on_zk_state)
        try:
            await self._mq.start()
        except GridmeshError:
            await asyncio.to_thread(self._zk.stop)
            raise
        self._mq.add_connection_listener(self._on_mq_state)
        await self.rebuild()
        self._watch = await asyncio.to_thread(self._zk.watch_tree, SUBSCRIPTIONS_ZNODE, self._on_tree)
        self._started = True
        log.info("EventManager started with %d subscriptions", len(self._map.current))
        self._state_changed()

    async def rebuild(self) -> int:
        """Declare the exchange and every subscription's queues and binding,
        as recorded in ZooKeeper; returns how many subscriptions there are."""
        await self._mq.declare_exchange(self.topology.exchange)
        nodes = await asyncio.to_thread(self._zk.read_tree, SUBSCRIPTIONS_ZNODE)
        subscriptions = SubscriptionMap.from_znodes(nodes)
        if not self._started:
            self._map.replace(subscriptions)
        for subscription in subscriptions:
            try:
                await self._declare(subscription.key)
            except GridmeshError as e:
                if isinstance(e, Unavailable):
                    raise
                log.error("cannot restore the queue or binding of %s: %s", subscription.key, e.message)
        return len(subscriptions)

    async def stop_consumers(self) -> None:
        """End every Consume stream (their unacknowledged events are redelivered)."""
        consumers, self._consumers = self._consumers, set()
        for consumer in consumers:
            await consumer.close(Unavailable("the EventManager is shutting down; reconnect to consume"))

    async def close(self) -> None:
        """Stop watching, close RabbitMQ then ZooKeeper. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._started = False
        if self._rebuild_task is not None:
            self._rebuild_task.cancel()
        await self.stop_consumers()
        if self._watch is not None:
            await asyncio.to_thread(self._watch.close)
            self._watch = None
        await self._mq.close()
        await asyncio.to_thread(self._zk.stop)
        self._state_changed()

    @property
    def healthy(self) -> bool:
        """Started, and both ZooKeeper and RabbitMQ are connected."""
        return self._started and self._zk.connected and self._mq.connected

    def add_state_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (on the loop) whenever :attr:`healthy` may have changed."""
        self._state_listeners.append(callback)

    def _state_changed(self) -> None:
        for callback in self._state_listeners:
            callback()

    def _on_zk_state(self, connected: bool) -> None:  # kazoo thread
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._state_changed)

    def _on_mq_state(self, connected: bool) -> None:  # loop
        self._state_changed()
        if connected and self._started:
            # RabbitMQ may have come back without our (non-durable by
            # mistake, deleted, reset) topology: assert it again.
            self._rebuild_task = asyncio.get_running_loop().create_task(self._rebuild_quietly())

    async def _rebuild_quietly(self) -> None:
        try:
            await self.rebuild()
        except GridmeshError as e:
            log.warning("could not restore the RabbitMQ topology after reconnecting: %s", e.message)

    def _on_tree(self, nodes: dict[str, bytes]) -> None:  # kazoo thread
        new = SubscriptionMap.from_znodes(nodes)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._map.replace, new)

    def _require_started(self) -> None:
        if not self._started:
            raise Unavailable("the EventManager is starting or stopping; retry later")

    # -- subscriptions ------------------------------------------------------

    @property
    def subscriptions(self) -> SubscriptionMap:
        """This instance's view of the map (kept current by the watch)."""
        return self._map.current

    async def _declare(self, key: SubscriptionKey) -> None:
        queue = self.topology.queue(key.subscriber)
        await self._mq.declare_work_queue(
            queue,
            dead_letter_queue=self.topology.dead_letter_queue(key.subscriber),
            delivery_limit=self.topology.delivery_limit,
        )
        await self._mq.bind(queue, self.topology.exchange, key.binding_key)

    async def subscribe(self, publisher: str, entity_type: str, subscriber: str, *, snapshot: bool) -> Subscription:
        """Record the subscription and route ``publisher``'s ``entity_type``
        events to ``subscriber``'s queue. Idempotent: subscribing again
        returns the existing subscription unchanged."""
        key = SubscriptionKey.checked(publisher, entity_type, subscriber)
        self._require_started()
        await self._declare(key)
        candidate = Subscription(key=key, snapshot=snapshot, created_at=datetime.now(UTC))
        data = await asyncio.to_thread(self._create_or_get, key, candidate.encode())
        await self._await_map(lambda m: key in m, f"subscribe {key}")
        return Subscription.decode(key, data)

    def _create_or_get(self, key: SubscriptionKey, data: bytes) -> bytes:  # worker thread
        path = f"{SUBSCRIPTIONS_ZNODE}/{key.znode}"
        for _ in range(3):  # an Unsubscribe may prune the parents under our feet
            self._zk.ensure(path, data)
            try:
                return self._zk.get(path)
            except NotFound:
                continue
        raise Unavailable(f"subscription {key} changed concurrently; retry")

    async def unsubscribe(self, publisher: str, entity_type: str, subscriber: str) -> None:
        """Stop routing to ``subscriber``'s queue (the queue and what it holds
        stay). NotFound if there is no such subscription."""
        key = SubscriptionKey.checked(publisher, entity_type, subscriber)
        self._require_started()
        path = f"{SUBSCRIPTIONS_ZNODE}/{key.znode}"
        if not await asyncio.to_thread(self._zk.exists, path):
            raise NotFound(f"there is no subscription {key}")
        await self._mq.unbind(self.topology.queue(subscriber), self.topology.exchange, key.binding_key)
        try:
            await asyncio.to_thread(self._zk.delete, path, prune_empty_parents_up_to=SUBSCRIPTIONS_ZNODE)
        except NotFound:
            raise NotFound(f"there is no subscription {key}") from None
        await self._await_map(lambda m: key not in m, f"unsubscribe {key}")

    async def _await_map(self, condition: Callable[[SubscriptionMap], bool], what: str) -> None:
        if not await self._map.wait_until(condition, MAP_SYNC_TIMEOUT_S):
            log.warning("%s: the ZooKeeper watch did not show the change within %.0f s", what, MAP_SYNC_TIMEOUT_S)

    async def list_subscriptions(self, *, publisher: str = "", subscriber: str = "") -> list[Subscription]:
        """Subscriptions as ZooKeeper has them now, filtered (empty = any)."""
        if publisher:
            check_name(publisher, "publisher")
        if subscriber:
            check_name(subscriber, "subscriber")
        self._require_started()
        nodes = await asyncio.to_thread(self._zk.read_tree, SUBSCRIPTIONS_ZNODE)
        return SubscriptionMap.from_znodes(nodes).select(publisher=publisher, subscriber=subscriber)

    # -- publishing ---------------------------------------------------------

    async def publish(self, event: common_pb2.EntityEvent) -> PublishOutcome:
        """Publish one event; raises what is wrong with it or with the broker."""
        (outcome,) = await self.publish_batch([event])
        if outcome.error is not None:
            raise outcome.error
        return outcome

    async def publish_batch(self, events: Sequence[common_pb2.EntityEvent]) -> list[PublishOutcome]:
        """Publish every valid event and wait for all their confirms; one
        outcome per event, in order. An invalid event is refused (its
        outcome carries the error) and changes nothing; the others go."""
        check_batch_size(len(events))
        self._require_started()
        began = time.monotonic()
        routes = self._map.current  # the map these events are routed with
        trace_parent = tracing.current()  # the call's: each event's delivery and apply continue it
        outcomes: list[PublishOutcome | None] = [None] * len(events)
        pending: list[tuple[int, str, tuple[str, ...], asyncio.Future[bool]]] = []
        now = datetime.now(UTC)
        for i, event in enumerate(events):
            if i % _YIELD_EVERY == _YIELD_EVERY - 1:
                await asyncio.sleep(0)  # let confirms and other calls in
            try:
                event_id, operation = check_event(
                    event_id=event.event_id,
                    publisher=event.publisher,
                    entity_type=event.entity_type,
                    entity_id=event.entity_id,
                    operation=event.operation,
                    version=event.version,
                    payload_fields=len(event.payload.fields),
                    payload_bytes=event.payload.ByteSize(),
                    max_payload_bytes=self._max_payload_bytes,
                )
                if event.event_id != event_id or not event.HasField("occurred_at"):
                    event = common_pb2.EntityEvent()  # never change the caller's message
                    event.CopyFrom(events[i])
                    event.event_id = event_id
                    if not event.HasField("occurred_at"):
                        event.occurred_at.FromDatetime(now)
                confirmed = self._mq.publish(
                    self.topology.exchange,
                    routing_key(event.publisher, event.entity_type, operation),
                    event.SerializeToString(),
                    message_id=event_id,
                    trace_parent=trace_parent,
                )
            except GridmeshError as e:
                outcomes[i] = PublishOutcome(event_id=events[i].event_id, error=e)
                continue
            pending.append((i, event_id, routes.subscribers_of(event.publisher, event.entity_type), confirmed))
        if pending:
            await asyncio.wait([p[3] for p in pending], timeout=CONFIRM_TIMEOUT_S)
        for i, event_id, subscribers, confirmed in pending:
            if not confirmed.done():
                confirmed.cancel()
                error: GridmeshError = Unavailable(
                    f"RabbitMQ did not confirm event {event_id} within {CONFIRM_TIMEOUT_S:.0f} s; publish it again"
                )
                outcomes[i] = PublishOutcome(event_id=event_id, error=error)
            elif (exc := confirmed.exception()) is not None:
                error = exc if isinstance(exc, GridmeshError) else Unavailable(f"publish failed: {exc}")
                outcomes[i] = PublishOutcome(event_id=event_id, error=error)
            else:
                outcomes[i] = PublishOutcome(event_id=event_id, routed_to=subscribers if confirmed.result() else ())
        if pending:
            metrics.PUBLISH_CONFIRM.observe(time.monotonic() - began)
        done = [o for o in outcomes if o is not None]
        for event, outcome in zip(events, done, strict=True):
            metrics.EVENTS_PUBLISHED.labels(event.publisher or "-", _outcome(outcome)).inc()
        return done

    async def refresh_queue_metrics(self) -> None:
        """Set the per-subscriber queue gauges from RabbitMQ (and drop those
        of subscribers that left)."""
        subscribers = {s.key.subscriber for s in await self.list_subscriptions()}
        for subscriber in sorted(subscribers):
            try:
                stats = await self.queue_stats(subscriber)
            except GridmeshError:
                continue
            metrics.SUBSCRIBER_MESSAGES.labels(subscriber).set(stats.messages)
            metrics.SUBSCRIBER_CONSUMERS.labels(subscriber).set(stats.consumers)
            metrics.SUBSCRIBER_DEAD_LETTERS.labels(subscriber).set(stats.dead_letters)
        for gone in self._metered - subscribers:
            for gauge in (metrics.SUBSCRIBER_MESSAGES, metrics.SUBSCRIBER_CONSUMERS, metrics.SUBSCRIBER_DEAD_LETTERS):
                with contextlib.suppress(KeyError):
                    gauge.remove(gone)
        self._metered = subscribers

    # -- consuming ----------------------------------------------------------

    async def consume(
        self,
        subscriber: str,
        prefetch: int,
        *,
        on_message: Callable[[Message], None],
        on_closed: Callable[[GridmeshError | None], None],
    ) -> Consumer:
        """Start delivering ``subscriber``'s queue (shared with its other
        consumers: each event goes to one of them). ``prefetch`` 0 means the
        default. NotFound if the subscriber never subscribed."""
        check_name(subscriber, "subscriber")
        prefetch = check_prefetch(prefetch)
        self._require_started()

        consumer: Consumer | None = None

        def closed(error: GridmeshError | None) -> None:
            if consumer is not None:
                self._consumers.discard(consumer)
            on_closed(error)

        queue = self.topology.queue(subscriber)
        try:
            consumer = await self._mq.consume(queue, prefetch=prefetch, on_message=on_message, on_closed=closed)
        except NotFound:
            raise NotFound(f"subscriber {subscriber!r} has no queue {queue}: subscribe it first") from None
        self._consumers.add(consumer)
        return consumer

    async def queue_stats(self, subscriber: str) -> QueueStats:
        """Depth, consumers and dead letters of ``subscriber``'s queue."""
        check_name(subscriber, "subscriber")
        self._require_started()
        queue = self.topology.queue(subscriber)
        try:
            counts = await self._mq.queue_counts(queue)
        except NotFound:
            raise NotFound(f"subscriber {subscriber!r} has no queue {queue}: subscribe it first") from None
        try:
            dead = (await self._mq.queue_counts(self.topology.dead_letter_queue(subscriber))).messages
        except NotFound:
            dead = 0
        return QueueStats(
            subscriber=subscriber,
            queue=queue,
            messages=counts.messages,
            consumers=counts.consumers,
            dead_letters=dead,
        )

    async def dead_letters(self, subscriber: str, limit: int) -> list[common_pb2.EntityEvent]:
        """The oldest events of ``subscriber``'s dead-letter queue, left there."""
        check_name(subscriber, "subscriber")
        limit = check_dead_letter_count(limit)
        self._require_started()
        queue = self.topology.dead_letter_queue(subscriber)
        try:
            messages = await self._mq.peek(queue, limit)
        except NotFound:
            raise NotFound(f"subscriber {subscriber!r} has no dead-letter queue {queue}: subscribe it first") from None
        events = []
        for message in messages:
            event = decode_event(message)
            if event is not None:
                events.append(event)
        return events


def _outcome(outcome: PublishOutcome) -> str:
    """How the publish metrics name ``outcome``."""
    if outcome.error is None:
        return "routed" if outcome.routed_to else "unroutable"
    return "failed" if isinstance(outcome.error, Unavailable) else "refused"


def decode_event(message: Message, into: common_pb2.EntityEvent | None = None) -> common_pb2.EntityEvent | None:
    """The EntityEvent a message carries (parsed into ``into`` if given), or
    None (logged) if it is not one."""
    event = into if into is not None else common_pb2.EntityEvent()
    try:
        event.ParseFromString(message.body)
    except Exception:  # protobuf's DecodeError, or anything a foreign body makes it raise
        log.error("message %r is not an EntityEvent; dead-lettering it", message.message_id)
        return None
    return event


__all__ = ["EventManager", "PublishOutcome", "QueueStats", "decode_event"]
