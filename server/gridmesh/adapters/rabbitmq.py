"""RabbitMQ adapter (pika). The only module that imports pika.

Threading model: pika's :class:`~pika.adapters.asyncio_connection.AsyncioConnection`
runs on the process's asyncio event loop. Every pika call and every pika
callback (confirms, returns, deliveries, channel and connection closes)
happens on that loop, so results are handed to coroutines by resolving
plain :class:`asyncio.Future` objects; no other thread ever touches pika.
All methods of this module must be called on the loop.

One connection per :class:`RabbitMQ`:

- one publisher channel in confirm mode: :meth:`RabbitMQ.publish` writes
  the message and returns a future at once, resolved by the broker's
  ``basic.ack`` (so confirms are pipelined: many publishes are in flight);
- a short-lived channel per topology operation (a 404 or 406 closes the
  channel it happens on, never the publisher's);
- one channel per :class:`Consumer`, so closing a consumer returns exactly
  its unacknowledged messages to the queue.

pika's exceptions stop here: a refused operation becomes
:class:`~gridmesh.common.errors.NotFound` (404) or
:class:`~gridmesh.common.errors.FailedPrecondition` (403, 405, 406); anything
else, and everything while the connection is down, becomes
:class:`~gridmesh.common.errors.Unavailable`. A lost connection is re-opened
in the background with bounded, exponentially backed-off pauses
(:data:`RECONNECT`); while it is
down every call fails fast with Unavailable so callers can retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pika
from pika import spec
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.channel import Channel
from pika.exceptions import AMQPError, ChannelClosedByBroker, ChannelClosedByClient, ConnectionClosedByBroker

from gridmesh.common.backoff import Backoff
from gridmesh.common.errors import FailedPrecondition, GridmeshError, InvalidArgument, NotFound, Unavailable
from gridmesh.config import RabbitMQConfig
from gridmesh.observability.tracing import TRACEPARENT

log = logging.getLogger(__name__)

CONNECT_ATTEMPTS = 5
"""Attempts of :meth:`RabbitMQ.start` before it gives up with Unavailable."""
CONNECT_TIMEOUT_S = 5.0
"""Socket connect + AMQP handshake of one attempt."""
RECONNECT = Backoff(initial_s=0.25, max_s=5.0)
"""The pauses between attempts to open (or re-open) the connection."""
OPERATION_TIMEOUT_S = 10.0
"""Longest wait for the broker's reply to a declare, bind, get or close."""
HEARTBEAT_S = 20
"""AMQP heartbeat: a dead peer is noticed within about two of these."""
ACK_FLUSH_DELAY_S = 0.002
"""Longest a consumer holds back acks to send them together (sooner if half
its prefetch window waits for them)."""

PERSISTENT = 2  # AMQP delivery mode
CONTENT_TYPE = "application/x-protobuf"
_DELIVERY_COUNT_HEADER = "x-delivery-count"  # set by quorum queues: failed deliveries so far
_REFUSED = {403, 405, 406}  # access refused, resource locked, precondition failed


@dataclass(frozen=True)
class Message:
    """One message taken from a queue."""

    delivery_tag: int
    """Identifies the message on its channel (ack/nack)."""
    body: bytes
    message_id: str
    redelivered: bool
    """The broker delivered it before (to this or another consumer)."""
    delivery_count: int
    """Deliveries of this message so far, this one included (1 = first)."""
    trace_parent: str = ""
    """The W3C trace context it was published in (``""``: not traced)."""


@dataclass(frozen=True)
class QueueCounts:
    messages: int
    """Messages ready for delivery (not counting those delivered and unacknowledged)."""
    consumers: int


def _error(reason: BaseException | None, what: str) -> GridmeshError:
    """The gridmesh error for a pika failure of ``what``."""
    if isinstance(reason, GridmeshError):
        return reason
    if isinstance(reason, ChannelClosedByBroker):
        if reason.reply_code == 404:
            return NotFound(f"{what}: {reason.reply_text}")
        if reason.reply_code in _REFUSED:
            return FailedPrecondition(f"{what}: RabbitMQ refused: {reason.reply_text}")
    detail = (str(reason) or repr(reason)) if reason is not None else "connection closed"
    return Unavailable(f"{what}: RabbitMQ is unavailable ({detail}); retry later")


class _Channel:
    """A pika channel and the broker replies awaited on it. When the channel
    closes, every awaited reply fails with the reason mapped to a gridmesh
    error and ``on_closed`` is called (closed by us: None)."""

    def __init__(self, channel: Channel, on_closed: Callable[[GridmeshError | None], None] | None = None) -> None:
        self.pika = channel
        self._loop = asyncio.get_running_loop()
        self._waiters: set[asyncio.Future[Any]] = set()
        self.opened: asyncio.Future[None] = self._loop.create_future()
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self.close_reason: GridmeshError | None = None
        self._on_closed = on_closed
        channel.add_on_close_callback(self._closed)

    def _closed(self, channel: Channel, reason: BaseException) -> None:
        error = None if isinstance(reason, ChannelClosedByClient) else _error(reason, "channel closed")
        self.close_reason = error
        failure = error or Unavailable("the RabbitMQ channel was closed")
        for waiter in (self.opened, *self._waiters):
            if not waiter.done():
                waiter.set_exception(failure)
                waiter.exception()  # retrieved: nobody may be awaiting it any more
        if not self.closed.done():
            self.closed.set_result(None)
        if self._on_closed is not None:
            self._on_closed(error)

    @property
    def is_open(self) -> bool:
        return bool(self.pika.is_open)

    async def call(self, what: str, method: Callable[..., None], *args: Any, **kwargs: Any) -> Any:
        """Send ``method(*args, callback=..., **kwargs)``; return the reply frame."""
        reply: asyncio.Future[Any] = self._loop.create_future()
        self._waiters.add(reply)

        def on_reply(frame: Any) -> None:
            if not reply.done():
                reply.set_result(frame)

        try:
            method(*args, callback=on_reply, **kwargs)
            return await asyncio.wait_for(reply, OPERATION_TIMEOUT_S)
        except TimeoutError:
            raise Unavailable(f"{what}: RabbitMQ did not answer within {OPERATION_TIMEOUT_S:.0f} s") from None
        except AMQPError as e:
            raise _error(e, what) from None
        except GridmeshError as e:
            raise type(e)(f"{what}: {e.message}", field=e.field) from None
        finally:
            self._waiters.discard(reply)

    async def close(self) -> None:
        """Close the channel and wait (bounded) until the broker agreed. Idempotent."""
        if self.pika.is_open:
            with contextlib.suppress(AMQPError):
                self.pika.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), OPERATION_TIMEOUT_S)


class _Publisher:
    """The confirm-mode channel: publish sequence numbers ↔ futures.

    RabbitMQ confirms in any order, possibly many at once (``multiple``); a
    mandatory message it could not route comes back (``basic.return``)
    before its confirm, so a returned message resolves to False.
    """

    def __init__(self, channel: _Channel) -> None:
        self.channel = channel
        self._seq = 0
        self._pending: OrderedDict[int, tuple[asyncio.Future[bool], str]] = OrderedDict()
        self._unconfirmed_by_id: dict[str, deque[int]] = {}
        self._returned: set[int] = set()
        self._loop = asyncio.get_running_loop()

    def publish(
        self, exchange: str, routing_key: str, body: bytes, message_id: str, trace_parent: str
    ) -> asyncio.Future[bool]:
        properties = pika.BasicProperties(
            delivery_mode=PERSISTENT,
            message_id=message_id,
            content_type=CONTENT_TYPE,
            headers={TRACEPARENT: trace_parent} if trace_parent else None,
        )
        try:
            self.channel.pika.basic_publish(exchange, routing_key, body, properties, mandatory=True)
        except AMQPError as e:
            raise _error(e, "publish") from None
        self._seq += 1
        future: asyncio.Future[bool] = self._loop.create_future()
        self._pending[self._seq] = (future, message_id)
        self._unconfirmed_by_id.setdefault(message_id, deque()).append(self._seq)
        return future

    def on_return(self, channel: Channel, method: Any, properties: Any, body: bytes) -> None:
        seqs = self._unconfirmed_by_id.get(properties.message_id or "")
        if seqs:
            for seq in seqs:  # the oldest unconfirmed one not returned yet
                if seq not in self._returned:
                    self._returned.add(seq)
                    return

    def on_confirm(self, frame: Any) -> None:
        method = frame.method
        ok = isinstance(method, spec.Basic.Ack)
        tag = int(method.delivery_tag)
        if method.multiple:
            while self._pending:
                seq = next(iter(self._pending))
                if seq > tag:
                    break
                self._settle(seq, ok)
        elif tag in self._pending:
            self._settle(tag, ok)

    def _settle(self, seq: int, ok: bool) -> None:
        future, message_id = self._pending.pop(seq)
        seqs = self._unconfirmed_by_id[message_id]
        seqs.remove(seq)
        if not seqs:
            del self._unconfirmed_by_id[message_id]
        routed = seq not in self._returned
        self._returned.discard(seq)
        if future.done():
            return
        if ok:
            future.set_result(routed)
        else:
            future.set_exception(Unavailable("RabbitMQ could not store the event (basic.nack); publish it again"))

    def fail_all(self, error: GridmeshError) -> None:
        pending, self._pending = self._pending, OrderedDict()
        self._unconfirmed_by_id.clear()
        self._returned.clear()
        for future, _ in pending.values():
            if not future.done():
                future.set_exception(error)
                future.exception()  # the caller may have given up waiting


class Consumer:
    """Deliveries of one queue on a channel of its own.

    ``on_message`` is called (on the loop) for each delivery and
    ``on_closed(error)`` once when the consumer ends: None after
    :meth:`close`, else why (queue deleted, connection lost). Messages not
    acknowledged when it ends go back to the queue and are redelivered.

    Acks are coalesced: those made within :data:`ACK_FLUSH_DELAY_S` (or
    until half the prefetch window waits for them) go out together, as one
    cumulative ``basic.ack`` (``multiple``) for every tag below the oldest
    still-unsettled delivery, and one frame per other tag.
    """

    def __init__(
        self,
        queue: str,
        prefetch: int,
        on_message: Callable[[Message], None],
        on_closed: Callable[[GridmeshError | None], None],
    ) -> None:
        self.queue = queue
        self.prefetch = prefetch
        """Unacknowledged deliveries the broker sends at most."""
        self._ack_batch = max(prefetch // 2, 1)
        self._flush_timer: asyncio.TimerHandle | None = None
        self._on_message = on_message
        self._on_closed = on_closed
        self._channel: _Channel | None = None
        self._outstanding: set[int] = set()
        self._to_ack: list[int] = []
        self._last_tag = 0
        self._active = False  # consuming started; on_closed is due once it ends
        self._ended = False

    def _attach(self, channel: _Channel) -> None:
        self._channel = channel

    def _deliver(self, channel: Channel, method: Any, properties: Any, body: bytes) -> None:
        tag = int(method.delivery_tag)
        self._outstanding.add(tag)
        self._last_tag = max(self._last_tag, tag)
        headers = properties.headers or {}
        failed = headers.get(_DELIVERY_COUNT_HEADER, 0)
        trace_parent = headers.get(TRACEPARENT, "")
        self._on_message(
            Message(
                delivery_tag=tag,
                body=body,
                message_id=properties.message_id or "",
                redelivered=bool(method.redelivered),
                delivery_count=int(failed) + 1 if isinstance(failed, int) else 1,
                trace_parent=trace_parent.decode() if isinstance(trace_parent, bytes) else str(trace_parent),
            )
        )

    def _cancelled(self, frame: Any) -> None:
        log.warning("RabbitMQ cancelled the consumer of %s (queue deleted?)", self.queue)
        if self._channel is not None and self._channel.is_open:
            self._end(NotFound(f"queue {self.queue} was deleted"))
            with contextlib.suppress(AMQPError):
                self._channel.pika.close()

    def _end(self, error: GridmeshError | None) -> None:
        if self._active and not self._ended:
            self._ended = True
            self._on_closed(error)

    def _settle(self, delivery_tag: int) -> bool:
        if delivery_tag in self._outstanding:
            self._outstanding.discard(delivery_tag)
            return True
        if 0 < delivery_tag <= self._last_tag:
            return False  # settled before: acks and nacks are idempotent
        raise InvalidArgument(f"delivery id {delivery_tag} was not delivered on this stream", field="delivery_id")

    def ack(self, delivery_tag: int, *, multiple: bool = False) -> None:
        """Acknowledge: the message is done and leaves the queue. Acking
        twice is harmless; an id never delivered is InvalidArgument.
        ``multiple`` also acknowledges every earlier unsettled delivery."""
        if multiple:
            if delivery_tag > self._last_tag:
                self._settle(delivery_tag)  # raises: never delivered
            earlier = [t for t in self._outstanding if t <= delivery_tag]
            if not earlier:
                return
            self._require_open()
            self._outstanding.difference_update(earlier)
            self._to_ack.extend(earlier)
            self._flush_acks()
            return
        if self._settle(delivery_tag):
            self._require_open()
            self._to_ack.append(delivery_tag)
            if len(self._to_ack) >= self._ack_batch or not self._outstanding:
                self._flush_acks()  # the broker waits for these before it delivers more
            elif self._flush_timer is None:
                self._flush_timer = asyncio.get_running_loop().call_later(ACK_FLUSH_DELAY_S, self._flush_acks)

    def nack(self, delivery_tag: int, *, requeue: bool) -> None:
        """Give the message back: ``requeue`` = deliver it again (counts
        against the queue's delivery limit), else dead-letter it."""
        if self._settle(delivery_tag):
            self._flush_acks()
            self._send(lambda ch: ch.basic_nack(delivery_tag, requeue=requeue))

    def _flush_acks(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        tags, self._to_ack = sorted(self._to_ack), []
        if not tags or self._channel is None or not self._channel.is_open:
            return  # a closed channel's deliveries are redelivered anyway
        oldest_unsettled = min(self._outstanding, default=self._last_tag + 1)
        cumulative = [t for t in tags if t < oldest_unsettled]
        try:
            if cumulative:
                self._channel.pika.basic_ack(cumulative[-1], multiple=True)
            for tag in tags[len(cumulative) :]:
                self._channel.pika.basic_ack(tag)
        except AMQPError:
            log.warning("could not acknowledge %d deliveries of %s; they will be redelivered", len(tags), self.queue)

    def _require_open(self) -> None:
        if self._channel is None or not self._channel.is_open:
            raise Unavailable(f"the consumer of {self.queue} is closed; its unacknowledged messages are redelivered")

    def _send(self, action: Callable[[Channel], None]) -> None:
        self._require_open()
        assert self._channel is not None
        try:
            action(self._channel.pika)
        except AMQPError as e:
            raise _error(e, f"settle a message of {self.queue}") from None

    @property
    def unacknowledged(self) -> int:
        return len(self._outstanding)

    async def close(self, error: GridmeshError | None = None) -> None:
        """Stop consuming; unacknowledged messages return to the queue.
        ``on_closed`` gets ``error`` (None = closed on purpose). Idempotent."""
        self._flush_acks()
        self._end(error)
        if self._channel is not None:
            await self._channel.close()


class RabbitMQ:
    """One AMQP connection (see the module doc for the threading model)."""

    def __init__(self, config: RabbitMQConfig, password: str, *, connection_name: str = "gridmesh") -> None:
        self._config = config
        self._password = password
        self._name = connection_name
        self._connection: AsyncioConnection | None = None
        self._publisher: _Publisher | None = None
        self._consumers: set[Consumer] = set()
        self._listeners: list[Callable[[bool], None]] = []
        self._reconnect_task: asyncio.Task[None] | None = None
        self._closing = False
        self._established = False  # the current connection was fully set up (losing it means reconnecting)
        self._where = f"{config.host}:{config.port}"

    # -- connection ---------------------------------------------------------

    @property
    def connected(self) -> bool:
        """The connection and the publisher channel are open."""
        return self._connection is not None and self._publisher is not None and self._publisher.channel.is_open

    def add_connection_listener(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(connected)`` (on the loop) whenever the connection
        (with its publisher channel) is established or lost."""
        self._listeners.append(callback)

    def _notify(self, connected: bool) -> None:
        for callback in self._listeners:
            try:
                callback(connected)
            except Exception:
                log.exception("RabbitMQ connection listener failed")

    async def start(self) -> None:
        """Connect, retrying :data:`CONNECT_ATTEMPTS` times with backed-off
        delays; Unavailable if RabbitMQ cannot be reached."""
        self._closing = False
        pauses = RECONNECT.pauses()
        for attempt in range(1, CONNECT_ATTEMPTS + 1):
            try:
                await self._connect()
                return
            except Unavailable as e:
                if attempt == CONNECT_ATTEMPTS:
                    raise Unavailable(f"RabbitMQ at {self._where} is unreachable: {e.message}") from None
                log.warning("RabbitMQ connection attempt %d/%d failed: %s", attempt, CONNECT_ATTEMPTS, e.message)
                await asyncio.sleep(next(pauses))

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[AsyncioConnection] = loop.create_future()

        def on_open(connection: Any) -> None:
            if not opened.done():
                opened.set_result(connection)

        def on_open_error(connection: Any, error: BaseException) -> None:
            if not opened.done():
                opened.set_exception(_error(error, f"connect to {self._where}"))

        parameters = pika.ConnectionParameters(
            host=self._config.host,
            port=self._config.port,
            virtual_host=self._config.vhost,
            credentials=pika.PlainCredentials(self._config.user, self._password),
            heartbeat=HEARTBEAT_S,
            connection_attempts=1,
            socket_timeout=CONNECT_TIMEOUT_S,
            stack_timeout=CONNECT_TIMEOUT_S,
            client_properties={"connection_name": self._name},
        )
        try:
            connection = AsyncioConnection(
                parameters,
                on_open_callback=on_open,
                on_open_error_callback=on_open_error,
                on_close_callback=self._on_connection_closed,
                custom_ioloop=loop,
            )
        except AMQPError as e:
            raise _error(e, f"connect to {self._where}") from None
        try:
            await asyncio.wait_for(opened, CONNECT_TIMEOUT_S * 2)
        except TimeoutError:
            with contextlib.suppress(AMQPError):
                connection.close()
            raise Unavailable(
                f"RabbitMQ at {self._where} did not answer within {2 * CONNECT_TIMEOUT_S:.0f} s"
            ) from None
        self._connection = connection
        try:
            await self._open_publisher()
        except GridmeshError:
            self._connection = None
            with contextlib.suppress(AMQPError):
                connection.close()
            raise
        self._established = True
        log.info("connected to RabbitMQ at %s", self._where)
        self._notify(True)

    async def _open_publisher(self) -> None:
        channel = await self._open_channel(on_closed=self._on_publisher_closed)
        publisher = _Publisher(channel)
        try:
            channel.pika.add_on_return_callback(publisher.on_return)
            await channel.call("confirm mode", channel.pika.confirm_delivery, publisher.on_confirm)
        except GridmeshError:
            await channel.close()
            raise
        self._publisher = publisher

    def _on_publisher_closed(self, error: GridmeshError | None) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is None:
            return  # closed while being set up: the code setting it up gets the error
        publisher.fail_all(error or Unavailable("the RabbitMQ publisher channel was closed; publish again"))
        if self._closing or self._connection is None or not self._connection.is_open:
            return  # the connection handler takes over
        log.warning("RabbitMQ closed the publisher channel (%s); re-opening it", error)
        self._notify(False)
        self._schedule_reconnect(publisher_only=True)

    def _on_connection_closed(self, connection: Any, reason: BaseException) -> None:
        if connection is not self._connection:
            return
        self._connection = None
        was_established, self._established = self._established, False
        if self._publisher is not None:
            self._publisher.fail_all(_error(reason, "publish"))
            self._publisher = None
        for consumer in list(self._consumers):
            consumer._end(_error(reason, f"consume {consumer.queue}"))
        self._consumers.clear()
        if self._closing or not was_established:
            return  # closing on purpose, or lost while connecting: the connecting code retries
        level = logging.WARNING if isinstance(reason, ConnectionClosedByBroker) else logging.ERROR
        log.log(level, "lost the RabbitMQ connection to %s: %s; reconnecting", self._where, reason)
        self._notify(False)
        self._schedule_reconnect(publisher_only=False)

    def _schedule_reconnect(self, *, publisher_only: bool) -> None:
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect(publisher_only))

    async def _reconnect(self, publisher_only: bool) -> None:
        for attempt, pause in enumerate(RECONNECT.pauses(), 1):
            if self._closing or self.connected:
                return
            await asyncio.sleep(pause)
            try:
                if publisher_only and self._connection is not None and self._connection.is_open:
                    await self._open_publisher()
                    self._notify(True)
                else:
                    await self._connect()
            except GridmeshError as e:
                log.warning("RabbitMQ reconnection attempt %d failed: %s", attempt, e.message)

    async def close(self) -> None:
        """Close consumers, then the connection. Idempotent."""
        self._closing = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect_task
        for consumer in list(self._consumers):
            await consumer.close(Unavailable("the EventManager is shutting down; reconnect"))
        self._consumers.clear()
        if self._publisher is not None:
            self._publisher.fail_all(Unavailable("the EventManager is shutting down; publish again"))
        connection, self._connection = self._connection, None
        self._publisher = None
        if connection is not None and connection.is_open:
            closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def on_close(_: Any, __: BaseException) -> None:
                if not closed.done():
                    closed.set_result(None)

            connection.add_on_close_callback(on_close)
            with contextlib.suppress(AMQPError):
                connection.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closed, OPERATION_TIMEOUT_S)

    def _require_connection(self, what: str) -> AsyncioConnection:
        if self._connection is None or not self._connection.is_open:
            raise Unavailable(f"{what}: RabbitMQ at {self._where} is not connected (reconnecting); retry later")
        return self._connection

    async def _open_channel(self, on_closed: Callable[[GridmeshError | None], None] | None = None) -> _Channel:
        connection = self._require_connection("open a channel")
        channel: _Channel | None = None

        def on_open(_: Channel) -> None:  # called later, on the loop
            if channel is not None and not channel.opened.done():
                channel.opened.set_result(None)

        try:
            channel = _Channel(connection.channel(on_open_callback=on_open), on_closed)
        except AMQPError as e:
            raise _error(e, "open a channel") from None
        try:
            await asyncio.wait_for(channel.opened, OPERATION_TIMEOUT_S)
        except TimeoutError:
            raise Unavailable("open a channel: RabbitMQ did not answer") from None
        return channel

    @contextlib.asynccontextmanager
    async def _temporary_channel(self) -> AsyncIterator[_Channel]:
        channel = await self._open_channel()
        try:
            yield channel
        finally:
            await channel.close()

    # -- topology -----------------------------------------------------------

    async def declare_exchange(self, name: str, kind: str = "topic") -> None:
        """A durable exchange (idempotent)."""
        async with self._temporary_channel() as ch:
            await ch.call(f"declare exchange {name}", ch.pika.exchange_declare, name, exchange_type=kind, durable=True)

    async def declare_work_queue(self, name: str, *, dead_letter_queue: str, delivery_limit: int) -> None:
        """A durable work queue whose messages are dead-lettered to
        ``dead_letter_queue`` (declared too) after ``delivery_limit`` failed
        deliveries (a nack with requeue, or a consumer that went away with
        the message unacknowledged) or at once on a nack without requeue.

        RabbitMQ does this natively for quorum queues (``x-delivery-limit``,
        which also gives each delivery its ``x-delivery-count``), so the
        work queue is a quorum queue. Idempotent; FailedPrecondition if the
        queue exists with other settings.
        """
        arguments: Mapping[str, Any] = {
            "x-queue-type": "quorum",
            "x-delivery-limit": delivery_limit,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dead_letter_queue,
        }
        async with self._temporary_channel() as ch:
            await ch.call(f"declare queue {dead_letter_queue}", ch.pika.queue_declare, dead_letter_queue, durable=True)
        async with self._temporary_channel() as ch:
            await ch.call(f"declare queue {name}", ch.pika.queue_declare, name, durable=True, arguments=dict(arguments))

    async def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        async with self._temporary_channel() as ch:
            await ch.call(
                f"bind {queue} to {exchange} with {routing_key}",
                ch.pika.queue_bind,
                queue,
                exchange,
                routing_key=routing_key,
            )

    async def unbind(self, queue: str, exchange: str, routing_key: str) -> None:
        """Remove a binding; nothing happens if it (or the queue) does not exist."""
        try:
            async with self._temporary_channel() as ch:
                await ch.call(
                    f"unbind {queue} from {exchange}",
                    ch.pika.queue_unbind,
                    queue,
                    exchange,
                    routing_key=routing_key,
                )
        except NotFound:
            pass

    async def delete_queue(self, name: str) -> None:
        """Delete a queue with its messages; nothing happens if it does not exist."""
        try:
            async with self._temporary_channel() as ch:
                await ch.call(f"delete queue {name}", ch.pika.queue_delete, name)
        except NotFound:
            pass

    async def delete_exchange(self, name: str) -> None:
        try:
            async with self._temporary_channel() as ch:
                await ch.call(f"delete exchange {name}", ch.pika.exchange_delete, name)
        except NotFound:
            pass

    async def queue_counts(self, name: str) -> QueueCounts:
        """Ready messages and consumers of a queue; NotFound if it does not exist."""
        async with self._temporary_channel() as ch:
            frame = await ch.call(f"inspect queue {name}", ch.pika.queue_declare, name, passive=True)
        return QueueCounts(messages=int(frame.method.message_count), consumers=int(frame.method.consumer_count))

    async def peek(self, queue: str, limit: int) -> list[Message]:
        """Up to ``limit`` messages from the head of ``queue``, left in place
        (taken unacknowledged, then given back by closing the channel).
        NotFound if the queue does not exist."""
        messages: list[Message] = []
        async with self._temporary_channel() as ch:
            frame = await ch.call(f"inspect queue {queue}", ch.pika.queue_declare, queue, passive=True)
            waiting: list[asyncio.Future[Message | None]] = []

            def on_empty(frame: Any) -> None:
                if waiting and not waiting[-1].done():
                    waiting[-1].set_result(None)

            ch.pika.add_callback(on_empty, [spec.Basic.GetEmpty], one_shot=False)
            for _ in range(min(limit, int(frame.method.message_count))):
                got: asyncio.Future[Message | None] = asyncio.get_running_loop().create_future()
                waiting.append(got)

                def on_get(channel: Channel, method: Any, properties: Any, body: bytes, got: Any = got) -> None:
                    if not got.done():
                        got.set_result(
                            Message(
                                delivery_tag=int(method.delivery_tag),
                                body=body,
                                message_id=properties.message_id or "",
                                redelivered=bool(method.redelivered),
                                delivery_count=1,
                            )
                        )

                try:
                    ch.pika.basic_get(queue, on_get, auto_ack=False)
                    message = await asyncio.wait_for(got, OPERATION_TIMEOUT_S)
                except TimeoutError:
                    raise Unavailable(f"peek {queue}: RabbitMQ did not answer") from None
                except AMQPError as e:
                    raise _error(e, f"peek {queue}") from None
                if message is None:
                    break
                messages.append(message)
        return messages

    # -- publishing ---------------------------------------------------------

    def publish(
        self, exchange: str, routing_key: str, body: bytes, *, message_id: str, trace_parent: str = ""
    ) -> asyncio.Future[bool]:
        """Send a persistent, mandatory message and return at once a future
        that resolves when RabbitMQ confirmed it: True if it was routed to
        at least one queue, False if no binding matched. The future fails
        with Unavailable if the broker refuses the message or the
        connection is lost before the confirm; this call raises Unavailable
        if RabbitMQ is not connected."""
        publisher = self._publisher
        if publisher is None or not publisher.channel.is_open:
            raise Unavailable(f"publish: RabbitMQ at {self._where} is not connected (reconnecting); retry later")
        return publisher.publish(exchange, routing_key, body, message_id, trace_parent)

    # -- consuming ----------------------------------------------------------

    async def consume(
        self,
        queue: str,
        *,
        prefetch: int,
        on_message: Callable[[Message], None],
        on_closed: Callable[[GridmeshError | None], None],
    ) -> Consumer:
        """Start consuming ``queue`` with at most ``prefetch`` unacknowledged
        deliveries in flight (see :class:`Consumer`). NotFound if the queue
        does not exist."""
        consumer = Consumer(queue, prefetch, on_message, on_closed)

        def channel_closed(error: GridmeshError | None) -> None:
            self._consumers.discard(consumer)
            consumer._end(error)

        channel = await self._open_channel(on_closed=channel_closed)
        consumer._attach(channel)
        try:
            await channel.call(f"set prefetch on {queue}", channel.pika.basic_qos, prefetch_count=prefetch)
            channel.pika.add_on_cancel_callback(consumer._cancelled)
            await channel.call(f"consume {queue}", channel.pika.basic_consume, queue, consumer._deliver, auto_ack=False)
        except GridmeshError:
            await channel.close()  # never started: the caller gets the exception instead
            raise
        consumer._active = True
        if not channel.is_open:  # closed between the broker's consume-ok and now
            consumer._end(channel.close_reason or Unavailable(f"consume {queue}: the channel closed"))
        else:
            self._consumers.add(consumer)
        return consumer


__all__ = ["Consumer", "Message", "QueueCounts", "RabbitMQ"]
