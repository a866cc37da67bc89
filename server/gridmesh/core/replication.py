"""Event-driven replication rules (SPEC §3 "Event-driven replication").

The pure domain of the EventManager and of the replica appliers: the
publisher→subscriber map, the RabbitMQ names and routing keys it implies,
what makes an :class:`EntityEvent <gridmesh.v1.common_pb2.EntityEvent>`
acceptable, and the version-fencing rule every replica applies. Nothing
here talks to ZooKeeper, RabbitMQ or gRPC; the EventManager feeds it plain
values.

Topology (every name under the mesh's namespace)::

    publisher --Publish--> exchange gridmesh.db-events (topic, durable)
        routing key <publisher>.<entity_type>.<operation>
        bound with   <publisher>.<entity_type>.*  per subscription
    --> queue gridmesh.replica.<subscriber>   (durable, one per subscriber,
        shared by all its instances; after a bounded number of deliveries
        an event is dead-lettered to)
    --> queue gridmesh.replica.<subscriber>.dlq
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from gridmesh.common.errors import InvalidArgument
from gridmesh.common.names import check_name, check_uuid
from gridmesh.common.replication import Operation, ReplicaAction, replica_action

EXCHANGE = "gridmesh.db-events"
"""The topic exchange every event is published to (before the namespace)."""
QUEUE_PREFIX = "gridmesh.replica."
DEAD_LETTER_SUFFIX = ".dlq"
SUBSCRIPTIONS_ZNODE = "eventmanager/subscriptions"
"""ZooKeeper path of the map, relative to the mesh's root (``zk_root``)."""

MAX_ENTITY_ID_CHARS = 255
"""Longest entity_id: replicas keep it in an indexed column."""
MAX_BATCH_EVENTS = 10_000
"""Most events one PublishBatch may carry."""
DEFAULT_PREFETCH = 32
"""Unacknowledged deliveries in flight per Consume stream when it says 0."""
MAX_PREFETCH = 10_000
DEFAULT_DEAD_LETTERS = 100
"""Events ListDeadLetters shows when it is not told how many."""
MAX_DEAD_LETTERS = 1_000


# -- the subscription map ----------------------------------------------------


@dataclass(frozen=True, order=True)
class SubscriptionKey:
    """One edge of the map: ``subscriber`` replicates ``publisher``'s ``entity_type``."""

    publisher: str
    entity_type: str
    subscriber: str

    @classmethod
    def checked(cls, publisher: str, entity_type: str, subscriber: str) -> SubscriptionKey:
        """The key, if every name is valid (InvalidArgument naming the field otherwise)."""
        return cls(
            publisher=check_name(publisher, "publisher"),
            entity_type=check_name(entity_type, "entity_type"),
            subscriber=check_name(subscriber, "subscriber"),
        )

    @property
    def znode(self) -> str:
        """Path of this subscription below :data:`SUBSCRIPTIONS_ZNODE`."""
        return f"{self.publisher}/{self.entity_type}/{self.subscriber}"

    @classmethod
    def from_znode(cls, path: str) -> SubscriptionKey | None:
        """The key of a ``<publisher>/<entity_type>/<subscriber>`` path, or
        None for the intermediate nodes and anything that is not a valid key."""
        parts = path.strip("/").split("/")
        if len(parts) != 3:
            return None
        try:
            return cls.checked(*parts)
        except InvalidArgument:
            return None

    @property
    def binding_key(self) -> str:
        return binding_key(self.publisher, self.entity_type)

    def __str__(self) -> str:
        return f"{self.subscriber} <- {self.publisher}/{self.entity_type}"


@dataclass(frozen=True)
class Subscription:
    """A subscription as stored in ZooKeeper."""

    key: SubscriptionKey
    snapshot: bool
    """The subscriber asked to first receive the current state of every entity."""
    created_at: datetime

    def encode(self) -> bytes:
        """The znode data (JSON, so ``zkCli get`` is readable)."""
        return json.dumps(
            {"snapshot": self.snapshot, "created_at": self.created_at.isoformat()}, separators=(",", ":")
        ).encode()

    @classmethod
    def decode(cls, key: SubscriptionKey, data: bytes | None) -> Subscription:
        """Read znode data; anything unreadable becomes the defaults (the
        node's existence is what subscribes, its data only annotates)."""
        snapshot, created_at = False, datetime.fromtimestamp(0, UTC)
        try:
            value = json.loads(data or b"{}")
            if isinstance(value, dict):
                snapshot = bool(value.get("snapshot", False))
                if isinstance(value.get("created_at"), str):
                    created_at = datetime.fromisoformat(value["created_at"])
        except ValueError:
            pass
        return cls(key=key, snapshot=snapshot, created_at=created_at)


class SubscriptionMap:
    """An immutable snapshot of the publisher→subscriber map."""

    def __init__(self, subscriptions: Iterable[Subscription] = ()) -> None:
        self._by_key = {s.key: s for s in subscriptions}
        routes: dict[tuple[str, str], list[str]] = {}
        for key in sorted(self._by_key):
            routes.setdefault((key.publisher, key.entity_type), []).append(key.subscriber)
        self._routes = {k: tuple(v) for k, v in routes.items()}

    @classmethod
    def from_znodes(cls, nodes: Mapping[str, bytes | None]) -> SubscriptionMap:
        """Build from ``{relative path: data}`` of the nodes below
        :data:`SUBSCRIPTIONS_ZNODE`; intermediate nodes are ignored."""
        subscriptions = []
        for path, data in nodes.items():
            key = SubscriptionKey.from_znode(path)
            if key is not None:
                subscriptions.append(Subscription.decode(key, data))
        return cls(subscriptions)

    def subscribers_of(self, publisher: str, entity_type: str) -> tuple[str, ...]:
        """Who receives ``publisher``'s ``entity_type`` events, sorted."""
        return self._routes.get((publisher, entity_type), ())

    def get(self, key: SubscriptionKey) -> Subscription | None:
        return self._by_key.get(key)

    def select(self, *, publisher: str = "", subscriber: str = "") -> list[Subscription]:
        """Subscriptions matching the filters (empty = any), in key order."""
        return [
            self._by_key[k]
            for k in sorted(self._by_key)
            if (not publisher or k.publisher == publisher) and (not subscriber or k.subscriber == subscriber)
        ]

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __iter__(self) -> Iterator[Subscription]:
        return iter(self.select())

    def __len__(self) -> int:
        return len(self._by_key)


# -- broker names --------------------------------------------------------------


@dataclass(frozen=True)
class Topology:
    """The RabbitMQ names of one mesh: :data:`EXCHANGE` and the queues of
    each subscriber, passed through the mesh's namespace ``prefix``."""

    prefix: Callable[[str], str]
    max_deliveries: int
    """Deliveries of one event before it is dead-lettered (>= 1)."""

    @property
    def exchange(self) -> str:
        return self.prefix(EXCHANGE)

    def queue(self, subscriber: str) -> str:
        return self.prefix(QUEUE_PREFIX + subscriber)

    def dead_letter_queue(self, subscriber: str) -> str:
        return self.queue(subscriber) + DEAD_LETTER_SUFFIX

    @property
    def delivery_limit(self) -> int:
        """RabbitMQ's ``x-delivery-limit``: the failed deliveries allowed
        before dead-lettering, so the event is delivered ``max_deliveries``
        times in all."""
        return max(self.max_deliveries - 1, 0)


def binding_key(publisher: str, entity_type: str) -> str:
    """The topic pattern a subscription binds: every operation on the type."""
    return f"{publisher}.{entity_type}.*"


def routing_key(publisher: str, entity_type: str, operation: Operation) -> str:
    """``<publisher>.<entity_type>.<operation>``, the operation lower-case."""
    return f"{publisher}.{entity_type}.{operation.name.lower()}"


# -- events --------------------------------------------------------------------


def check_event(
    *,
    event_id: str,
    publisher: str,
    entity_type: str,
    entity_id: str,
    operation: int,
    version: int,
    payload_fields: int,
    payload_bytes: int,
    max_payload_bytes: int,
) -> tuple[str, Operation]:
    """Refuse a malformed event with InvalidArgument naming the field.

    Returns the canonical (lower-case) event_id and the operation. The
    payload is the whole entity after the change, so CREATE and UPDATE need
    one and DELETE must not carry any.
    """
    event_id = check_uuid(event_id, "event_id")
    check_name(publisher, "publisher")
    check_name(entity_type, "entity_type")
    if not entity_id:
        raise InvalidArgument("entity_id is required", field="entity_id")
    if len(entity_id) > MAX_ENTITY_ID_CHARS:
        raise InvalidArgument(
            f"entity_id is {len(entity_id)} characters long; the limit is {MAX_ENTITY_ID_CHARS}", field="entity_id"
        )
    try:
        op = Operation(operation)
    except ValueError:
        raise InvalidArgument(
            f"operation {operation} is unknown: use CREATE, UPDATE or DELETE", field="operation"
        ) from None
    if op is Operation.UNSPECIFIED:
        raise InvalidArgument("operation is required: CREATE, UPDATE or DELETE", field="operation")
    if version <= 0:
        raise InvalidArgument(
            f"version must be positive (it increases with every change of the entity), got {version}",
            field="version",
        )
    if op is Operation.DELETE and payload_fields:
        raise InvalidArgument("payload must be empty for DELETE", field="payload")
    if op is not Operation.DELETE and not payload_fields:
        raise InvalidArgument(f"payload is required for {op.name}: the whole entity after the change", field="payload")
    if payload_bytes > max_payload_bytes:
        raise InvalidArgument(f"payload is {payload_bytes} bytes; the limit is {max_payload_bytes}", field="payload")
    return event_id, op


def check_batch_size(count: int) -> None:
    if count > MAX_BATCH_EVENTS:
        raise InvalidArgument(
            f"a batch carries at most {MAX_BATCH_EVENTS} events, got {count}; split it", field="events"
        )


def check_prefetch(prefetch: int) -> int:
    """The prefetch of a Consume stream: 0 means :data:`DEFAULT_PREFETCH`."""
    if prefetch == 0:
        return DEFAULT_PREFETCH
    if not 0 < prefetch <= MAX_PREFETCH:
        raise InvalidArgument(f"prefetch must be between 0 and {MAX_PREFETCH}, got {prefetch}", field="prefetch")
    return prefetch


def check_dead_letter_count(count: int) -> int:
    """How many dead letters to show: 0 means :data:`DEFAULT_DEAD_LETTERS`."""
    if count == 0:
        return DEFAULT_DEAD_LETTERS
    if not 0 < count <= MAX_DEAD_LETTERS:
        raise InvalidArgument(f"max must be between 0 and {MAX_DEAD_LETTERS}, got {count}", field="max")
    return count


__all__ = [
    "DEFAULT_PREFETCH",
    "EXCHANGE",
    "MAX_BATCH_EVENTS",
    "SUBSCRIPTIONS_ZNODE",
    "Operation",
    "ReplicaAction",
    "Subscription",
    "SubscriptionKey",
    "SubscriptionMap",
    "Topology",
    "binding_key",
    "check_batch_size",
    "check_dead_letter_count",
    "check_event",
    "check_prefetch",
    "replica_action",
    "routing_key",
]
