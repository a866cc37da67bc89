"""Replica applier for subscribers (SPEC §3 "Event-driven replication").

A :class:`ReplicaApplier` consumes a subscriber's queue and keeps tables of
the subscriber's own MySQL database equal to the publishers' entities: each
batch of deliveries is applied in one local transaction together with a
processed-event record per event, then acknowledged with one cumulative ack.

    connect = functools.partial(pymysql.connect, host="127.0.0.1", user="root", database="orders")
    customers = ReplicaTable("customers", "customer", table="customer_replica", columns=("name", "email"))
    with EventClient() as events:
        applier = ReplicaApplier(events, "orders", connect, [customers])
        applier.install()                       # bookkeeping tables, once; subscribes too
        applier.start()                         # consume -> upsert/delete -> ack, on a thread
        ...
        applier.stop()

The replica table is yours (``CREATE TABLE customer_replica (id VARCHAR(255)
PRIMARY KEY, name TEXT, email TEXT, version BIGINT)``): the applier writes
``key_column`` = entity_id, each of ``columns`` from the payload field of
the same name, and ``version_column``.

Guarantees:

- **Idempotent and never backwards**: an event already recorded in
  ``gridmesh_processed_events`` is skipped; otherwise
  :func:`~gridmesh.core.replication.replica_action` decides against the
  version kept per entity in ``gridmesh_replica_versions`` (a DELETE leaves
  its version there as a tombstone): only a strictly newer version is
  applied. Duplicates, redeliveries and re-ordering never corrupt a replica.
- **Atomic with the record**: rows, versions and processed-event records of
  a batch commit in one transaction; the ack is sent only after the commit.
  An applier that dies before acking gets the batch again and skips it.
- A batch that fails (a payload a column refuses) is retried event by
  event; an event that still fails is given back (nack, requeue) and after
  the EventManager's delivery limit lands in the dead-letter queue. An
  event of a type no :class:`ReplicaTable` covers is dead-lettered at once.
- Deadlocks with another instance of the subscriber are retried; a lost
  EventManager stream or MySQL connection is reopened after backed-off
  pauses (:data:`RECONNECT`), logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import pymysql
import pymysql.cursors

from gridmesh.clients import _tracing
from gridmesh.clients.events import EventClient, EventError, payload_dict
from gridmesh.common.backoff import Backoff
from gridmesh.common.names import check_name
from gridmesh.common.replication import Operation, ReplicaAction, replica_action
from gridmesh.v1 import common_pb2, eventmanager_pb2

log = logging.getLogger(__name__)

Connection = pymysql.connections.Connection
Cursor = pymysql.cursors.Cursor
Connect = Callable[[], Connection]
EntityKey = tuple[str, str, str]
"""(publisher, entity_type, entity_id)."""
ChangeHook = Callable[[Cursor, str, ReplicaAction], None]
"""``(cursor, entity_id, action)``, called in the batch's transaction."""

VERSIONS_TABLE = "gridmesh_replica_versions"
PROCESSED_TABLE = "gridmesh_processed_events"
DEFAULT_PREFETCH = 256
"""Deliveries in flight (and so the largest batch applied in one transaction)."""
TRANSACTION_ATTEMPTS = 5
"""Tries of one batch's transaction after deadlocks or lock-wait timeouts."""
RECONNECT = Backoff(initial_s=0.1, max_s=5.0)
"""The pauses before reopening a lost stream or MySQL connection."""

SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {VERSIONS_TABLE} (
        publisher VARCHAR(63) NOT NULL,
        entity_type VARCHAR(63) NOT NULL,
        entity_id VARCHAR(255) NOT NULL,
        version BIGINT NOT NULL,
        deleted TINYINT NOT NULL DEFAULT 0,
        event_id CHAR(36) NOT NULL,
        applied_at DATETIME(6) NOT NULL,
        PRIMARY KEY (publisher, entity_type, entity_id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    f"""CREATE TABLE IF NOT EXISTS {PROCESSED_TABLE} (
        event_id CHAR(36) NOT NULL PRIMARY KEY,
        action VARCHAR(8) NOT NULL,
        processed_at DATETIME(6) NOT NULL,
        KEY processed_at (processed_at)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_CONNECTION_ERRORS = (pymysql.err.OperationalError, pymysql.err.InterfaceError, ConnectionError, OSError)
_RETRYABLE_MYSQL = {1205, 1213}  # lock wait timeout, deadlock


def _identifier(name: str, what: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{what} {name!r} is not a plain SQL identifier (letters, digits, '_')")
    return name


@dataclass(frozen=True)
class ReplicaTable:
    """Where one publisher's entity type is replicated in the subscriber's database."""

    publisher: str
    entity_type: str
    table: str
    """The replica table (yours; the applier only writes rows)."""
    columns: Sequence[str] = ()
    """Payload fields copied into the columns of the same name (missing = NULL;
    dicts and lists as JSON text)."""
    key_column: str = "id"
    """The column that holds entity_id (the table's primary key)."""
    version_column: str | None = "version"
    """A column that receives the event's version (None = none)."""
    payload_column: str | None = None
    """A column that receives the whole payload as JSON text (None = none)."""
    on_change: ChangeHook | None = None
    """Called once per entity a batch changed, after its row was written, in
    the same transaction (e.g. to maintain derived data)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        check_name(self.publisher, "publisher")
        check_name(self.entity_type, "entity_type")
        _identifier(self.table, "table")
        _identifier(self.key_column, "key_column")
        for column in (*self.columns, self.version_column, self.payload_column):
            if column is not None:
                _identifier(column, "column")

    @property
    def source(self) -> tuple[str, str]:
        return (self.publisher, self.entity_type)

    def row(self, entity_id: str, version: int, payload: Mapping[str, Any]) -> tuple[list[str], list[Any]]:
        """Column names and values of the replica row for this payload."""
        names = [self.key_column, *self.columns]
        values: list[Any] = [entity_id, *(_column_value(payload.get(c)) for c in self.columns)]
        if self.version_column:
            names.append(self.version_column)
            values.append(version)
        if self.payload_column:
            names.append(self.payload_column)
            values.append(json.dumps(dict(payload), separators=(",", ":")))
        return names, values


def _column_value(value: Any) -> Any:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, dict | list) else value


# -- the pure part: what a batch does ----------------------------------------------------


@dataclass(frozen=True)
class Change:
    """The final state of one entity after a batch."""

    key: EntityKey
    action: ReplicaAction
    """UPSERT or DELETE."""
    version: int
    event_id: str
    payload: Mapping[str, Any]


@dataclass
class Plan:
    """What applying a batch of events means, given what the replica holds."""

    actions: list[ReplicaAction] = field(default_factory=list)
    """One per event, in order: UPSERT, DELETE or SKIP."""
    changes: dict[EntityKey, Change] = field(default_factory=dict)
    """Per entity, the last applied change (earlier ones in the batch are overwritten)."""


def event_key(event: common_pb2.EntityEvent) -> EntityKey:
    return (event.publisher, event.entity_type, event.entity_id)


def plan_batch(
    events: Sequence[common_pb2.EntityEvent], processed: Iterable[str], versions: Mapping[EntityKey, int]
) -> Plan:
    """Decide each event of a batch in delivery order.

    ``processed`` holds the event ids the replica has recorded already and
    ``versions`` the version it holds per entity (tombstones included). An
    event recorded before (or earlier in this batch) is skipped; otherwise
    :func:`replica_action` decides, against the version as it stands after
    the batch's earlier events.
    """
    seen = set(processed)
    current = dict(versions)
    plan = Plan()
    for event in events:
        if event.event_id in seen:
            plan.actions.append(ReplicaAction.SKIP)
            continue
        seen.add(event.event_id)
        key = event_key(event)
        action = replica_action(Operation(event.operation), event.version, current.get(key))
        plan.actions.append(action)
        if action is not ReplicaAction.SKIP:
            current[key] = event.version
            payload = payload_dict(event) if action is ReplicaAction.UPSERT else {}
            plan.changes[key] = Change(key, action, event.version, event.event_id, payload)
    return plan


class ReplicaStore(Protocol):
    """The subscriber's database as the applier needs it (the port the unit tests fake)."""

    def apply(self, events: Sequence[common_pb2.EntityEvent]) -> list[ReplicaAction]:
        """Apply a batch in one transaction (see :func:`plan_batch`): write
        the changed rows, their versions and a processed record per event;
        answers one action per event. Raises if nothing was committed."""

    def close(self) -> None: ...


class MySQLReplicaStore:
    """:class:`ReplicaStore` over pymysql, one connection (reopened when lost)."""

    def __init__(self, connect: Connect, tables: Iterable[ReplicaTable]) -> None:
        self._connect = connect
        self._tables = {t.source: t for t in tables}
        self._conn: Connection | None = None

    def install(self) -> None:
        with contextlib.closing(self._connect()) as conn, conn.cursor() as cur:
            for statement in SCHEMA:
                cur.execute(statement)
            conn.commit()

    def table_for(self, event: common_pb2.EntityEvent) -> ReplicaTable | None:
        return self._tables.get((event.publisher, event.entity_type))

    def apply(self, events: Sequence[common_pb2.EntityEvent]) -> list[ReplicaAction]:
        for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
            if self._conn is None:
                self._conn = self._connect()
            try:
                with self._conn.cursor() as cur:
                    actions = self._apply(cur, events)
                self._conn.commit()
                return actions
            except pymysql.err.OperationalError as e:
                code = e.args[0] if e.args else 0
                if code in _RETRYABLE_MYSQL and attempt < TRANSACTION_ATTEMPTS:
                    log.info("replica transaction hit MySQL error %s; retrying (%d)", code, attempt)
                    self._rollback()
                    continue
                self.close()
                raise
            except _CONNECTION_ERRORS:
                self.close()
                raise
            except BaseException:
                self._rollback()
                raise
        raise AssertionError("unreachable")

    def _rollback(self) -> None:
        if self._conn is not None:
            try:
                self._conn.rollback()
            except _CONNECTION_ERRORS:
                self.close()

    def _apply(self, cur: Cursor, events: Sequence[common_pb2.EntityEvent]) -> list[ReplicaAction]:
        ids = sorted({e.event_id for e in events})
        cur.execute(f"SELECT event_id FROM {PROCESSED_TABLE} WHERE event_id IN %s", (ids,))
        processed = {str(row[0]) for row in cur.fetchall()}
        keys = sorted({event_key(e) for e in events})
        # Lock the entities' version rows (in key order, to keep deadlocks rare).
        match = " OR ".join(["(publisher = %s AND entity_type = %s AND entity_id = %s)"] * len(keys))
        cur.execute(
            f"SELECT publisher, entity_type, entity_id, version FROM {VERSIONS_TABLE} WHERE {match} FOR UPDATE",
            [part for key in keys for part in key],
        )
        versions = {(str(p), str(t), str(i)): int(v) for p, t, i, v in cur.fetchall()}
        plan = plan_batch(events, processed, versions)
        now = datetime.now(UTC).replace(tzinfo=None)  # a parameter: executemany then sends one multi-row INSERT
        by_table: dict[tuple[ReplicaTable, ReplicaAction], list[Change]] = {}
        for change in plan.changes.values():
            table = self._tables[change.key[:2]]
            by_table.setdefault((table, change.action), []).append(change)
        for (table, action), changes in by_table.items():
            if action is ReplicaAction.UPSERT:
                rows = [table.row(c.key[2], c.version, c.payload) for c in changes]
                names = rows[0][0]
                updates = ", ".join(f"`{n}` = VALUES(`{n}`)" for n in names[1:]) or f"`{names[0]}` = `{names[0]}`"
                cur.executemany(
                    f"INSERT INTO `{table.table}` ({', '.join(f'`{n}`' for n in names)}) "
                    f"VALUES ({', '.join(['%s'] * len(names))}) ON DUPLICATE KEY UPDATE {updates}",
                    [values for _, values in rows],
                )
            else:
                cur.executemany(
                    f"DELETE FROM `{table.table}` WHERE `{table.key_column}` = %s", [(c.key[2],) for c in changes]
                )
        if plan.changes:
            cur.executemany(
                f"INSERT INTO {VERSIONS_TABLE} (publisher, entity_type, entity_id, version, deleted, event_id, "
                "applied_at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE "
                "version = VALUES(version), deleted = VALUES(deleted), event_id = VALUES(event_id), "
                "applied_at = VALUES(applied_at)",
                [
                    (*c.key, c.version, int(c.action is ReplicaAction.DELETE), c.event_id, now)
                    for c in plan.changes.values()
                ],
            )
        for change in plan.changes.values():
            hook = self._tables[change.key[:2]].on_change
            if hook is not None:
                hook(cur, change.key[2], change.action)
        fresh = {e.event_id: a for e, a in zip(events, plan.actions, strict=True) if e.event_id not in processed}
        if fresh:
            cur.executemany(
                f"INSERT IGNORE INTO {PROCESSED_TABLE} (event_id, action, processed_at) VALUES (%s, %s, %s)",
                [(event_id, action.value, now) for event_id, action in fresh.items()],
            )
        return plan.actions

    def prune_processed(self, older_than_s: float, limit: int = 10_000) -> int:
        """Forget up to ``limit`` processed-event records older than
        ``older_than_s`` (versions keep fencing what they covered)."""
        with contextlib.closing(self._connect()) as conn, conn.cursor() as cur:
            deleted = cur.execute(
                f"DELETE FROM {PROCESSED_TABLE} WHERE processed_at < NOW(6) - INTERVAL %s MICROSECOND LIMIT %s",
                (int(older_than_s * 1_000_000), limit),
            )
            conn.commit()
        return int(deleted)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


# -- the applier ---------------------------------------------------------------------------


class Deliveries(Protocol):
    """An open stream of deliveries (:class:`~gridmesh.clients.events.EventStream` is one)."""

    def batches(self) -> Iterator[list[eventmanager_pb2.Delivery]]: ...
    def ack(self, delivery_id: int, *, multiple: bool = False) -> None: ...
    def nack(self, delivery_id: int, *, requeue: bool = True) -> None: ...
    def close(self) -> None: ...


@dataclass
class ApplierStats:
    """Counters of one applier since it was created."""

    applied: int = 0
    """Events that changed the replica (upserts and deletes)."""
    skipped: int = 0
    """Duplicates and stale versions."""
    failed: int = 0
    """Deliveries given back (nack) because they could not be applied."""
    batches: int = 0


class ReplicaApplier:
    """Consumes ``subscriber``'s queue into its own database (see the module doc).

    ``tables`` says where each (publisher, entity_type) goes. :meth:`install`
    creates the bookkeeping tables and subscribes to every table's source
    (idempotent). :meth:`start` consumes on a daemon thread until
    :meth:`stop`; :meth:`apply` applies one batch (tests, custom loops).
    """

    def __init__(
        self,
        events: EventClient,
        subscriber: str,
        connect: Connect,
        tables: Sequence[ReplicaTable],
        *,
        prefetch: int = DEFAULT_PREFETCH,
        store: ReplicaStore | None = None,
        open_stream: Callable[[], Deliveries] | None = None,
    ) -> None:
        self.subscriber = check_name(subscriber, "subscriber")
        self.tables = list(tables)
        self._events = events
        self._mysql = MySQLReplicaStore(connect, self.tables)
        self._store: ReplicaStore = store if store is not None else self._mysql
        self._sources = {t.source for t in self.tables}
        self._open_stream = open_stream or (lambda: events.consume(self.subscriber, prefetch=prefetch))
        self._stream: Deliveries | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = ApplierStats()
        self.connected = threading.Event()
        """Set while a stream is open (cleared when it broke off)."""

    def install(self, *, subscribe: bool = True, snapshot: bool = False) -> None:
        """Create the bookkeeping tables; with ``subscribe``, subscribe to
        every table's (publisher, entity_type) — with ``snapshot``, asking
        for the current state of every entity first (a new replica)."""
        self._mysql.install()
        if subscribe:
            for table in self.tables:
                self._events.subscribe(self.subscriber, table.publisher, table.entity_type, snapshot=snapshot)

    def apply(self, stream: Deliveries, batch: Sequence[eventmanager_pb2.Delivery]) -> None:
        """Apply one batch and settle every delivery of it on ``stream``."""
        if not batch:
            return
        known = [d for d in batch if (d.event.publisher, d.event.entity_type) in self._sources]
        for delivery in batch:
            if (delivery.event.publisher, delivery.event.entity_type) not in self._sources:
                log.error(
                    "no replica table for %s/%s (event %s); dead-lettering it",
                    delivery.event.publisher,
                    delivery.event.entity_type,
                    delivery.event.event_id,
                )
                stream.nack(delivery.delivery_id, requeue=False)
                self.stats.failed += 1
        if not known:
            return
        self.stats.batches += 1
        try:
            with _tracing.applying(
                f"apply to {self.subscriber}", [d.traceparent for d in known], {"gridmesh.events": len(known)}
            ):
                actions = self._store.apply([d.event for d in known])
        except _CONNECTION_ERRORS:
            raise  # nothing was committed: the stream is reopened and the batch redelivered
        except Exception as e:
            log.warning("a batch of %d events failed (%s); applying them one by one", len(known), e)
            self._apply_one_by_one(stream, known)
            return
        self._count(actions)
        if len(known) == len(batch):
            stream.ack(batch[-1].delivery_id, multiple=True)
        else:
            for delivery in known:
                stream.ack(delivery.delivery_id)

    def _apply_one_by_one(self, stream: Deliveries, deliveries: Sequence[eventmanager_pb2.Delivery]) -> None:
        for delivery in deliveries:
            try:
                actions = self._store.apply([delivery.event])
            except _CONNECTION_ERRORS:
                raise
            except Exception as e:
                log.error("cannot apply event %s (%s); giving it back", delivery.event.event_id, e)
                self.stats.failed += 1
                stream.nack(delivery.delivery_id, requeue=True)
                continue
            self._count(actions)
            stream.ack(delivery.delivery_id)

    def _count(self, actions: Sequence[ReplicaAction]) -> None:
        skipped = sum(1 for a in actions if a is ReplicaAction.SKIP)
        self.stats.skipped += skipped
        self.stats.applied += len(actions) - skipped

    def run(self) -> None:
        """Consume and apply until :meth:`stop` (blocking), reopening a lost
        stream or MySQL connection after a backed-off pause."""
        pauses = RECONNECT.pauses()
        while not self._stopping.is_set():
            stream = self._open_stream()
            with self._lock:
                self._stream = stream
            if self._stopping.is_set():
                stream.close()
                break
            try:
                for batch in stream.batches():
                    if not self.connected.is_set():
                        self.connected.set()
                        pauses = RECONNECT.pauses()  # it works again: the next loss waits the shortest
                    self.apply(stream, batch)
                    if self._stopping.is_set():
                        break
            except EventError as e:
                log.warning("%s: the event stream ended (%s); reconnecting", self.subscriber, e)
            except (*_CONNECTION_ERRORS, pymysql.err.MySQLError) as e:
                log.warning("%s: MySQL failed (%s); reconnecting", self.subscriber, e)
            finally:
                self.connected.clear()
                stream.close()  # what is unacknowledged is redelivered
                with self._lock:
                    self._stream = None
            self._stopping.wait(next(pauses))
        self._store.close()

    def start(self) -> ReplicaApplier:
        """Run :meth:`run` on a daemon thread."""
        if self._thread is None:
            self._stopping.clear()
            name = f"replica-applier-{self.subscriber}"
            self._thread = threading.Thread(target=self.run, name=name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """End the stream (a batch being applied finishes first) and the
        thread. Idempotent."""
        self._stopping.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)

    def __enter__(self) -> ReplicaApplier:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


__all__ = [
    "PROCESSED_TABLE",
    "VERSIONS_TABLE",
    "ApplierStats",
    "Change",
    "Deliveries",
    "MySQLReplicaStore",
    "Plan",
    "ReplicaApplier",
    "ReplicaStore",
    "ReplicaTable",
    "plan_batch",
]
