"""Transactional outbox for publishers (SPEC §3 "Event-driven replication").

A service changes its entity row and records the event in the same local
MySQL transaction (:meth:`Outbox.record`), so an event exists exactly when
the change was committed. An :class:`OutboxRelay` then publishes unsent
events through the EventManager and marks them sent.

    connect = functools.partial(pymysql.connect, host="127.0.0.1", user="root", database="customers")
    outbox = Outbox(connect, publisher="customers")
    outbox.install()                                   # the outbox tables, once
    with outbox.transaction() as cur:                  # one local transaction
        version = outbox.claim_version(cur, "customer", "c-1")
        cur.execute("REPLACE INTO customer VALUES (%s, %s, %s)", ("c-1", "Ada", version))
        outbox.record(cur, "customer", "c-1", Operation.CREATE, {"id": "c-1", "name": "Ada"}, version=version)
    with EventClient() as events, OutboxRelay(outbox, events):
        ...                                            # the relay publishes in the background

Guarantees:

- **Atomic**: the outbox row is written by the caller's transaction; a
  rolled-back change publishes nothing.
- **Versions increase per entity**: :meth:`Outbox.claim_version` bumps a
  per-entity counter row (``gridmesh_outbox_versions``) and so locks it
  until commit: two transactions changing one entity are serialized, and
  the later one gets both the higher version and the higher outbox
  sequence number.
- **Ordered per entity, at least once**: the relay reads unsent rows in
  sequence order, publishes them with one ``PublishBatch`` (RabbitMQ keeps
  the order of one channel) and marks them sent only after the
  EventManager confirmed them. A relay that dies between publishing and
  marking publishes the same events (same ``event_id``) again; replicas
  skip them (processed-event record and version fencing). After a partial
  failure a newer version may overtake the retry of an older one, which
  replicas then skip: the whole entity travels in every event, so nothing
  is lost.
- **One active relay per database**: a relay holds the MySQL advisory lock
  ``GET_LOCK('gridmesh-outbox-relay:<db>:<publisher>')`` on its connection;
  other instances wait, and take over when that connection dies.
- An event the EventManager refuses as malformed (``INVALID_ARGUMENT``) is
  parked (``status`` 2, with the error) instead of blocking the rows after it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import grpc
import pymysql
import pymysql.cursors

from gridmesh.clients.events import EventError, Operation, new_event
from gridmesh.common.backoff import Backoff
from gridmesh.common.names import check_name
from gridmesh.v1 import common_pb2, eventmanager_pb2

log = logging.getLogger(__name__)

Connection = pymysql.connections.Connection
Cursor = pymysql.cursors.Cursor
Connect = Callable[[], Connection]
"""Opens a new pymysql connection to the service's own database."""

OUTBOX_TABLE = "gridmesh_outbox"
VERSIONS_TABLE = "gridmesh_outbox_versions"
SNAPSHOTS_TABLE = "gridmesh_outbox_snapshots"
PENDING, SENT, PARKED = 0, 1, 2
"""Values of ``gridmesh_outbox.status``."""

DEFAULT_BATCH_SIZE = 500
"""Events one relay round publishes at most (one PublishBatch)."""
DEFAULT_POLL_INTERVAL_S = 0.1
"""How often an idle relay looks for rows committed by other processes."""
DEFAULT_SNAPSHOT_INTERVAL_S = 1.0
"""How often a relay asks the EventManager for new subscriptions that want a snapshot."""
RETRY = Backoff(initial_s=0.1, max_s=5.0)
"""The pauses after failed rounds (EventManager or MySQL unreachable); a
round with events the EventManager did not confirm waits the shortest."""
MAX_ENTITY_ID_CHARS = 255

SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {OUTBOX_TABLE} (
        seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
        event_id CHAR(36) NOT NULL,
        entity_type VARCHAR(63) NOT NULL,
        entity_id VARCHAR(255) NOT NULL,
        operation TINYINT NOT NULL,
        version BIGINT NOT NULL,
        payload LONGTEXT NOT NULL,
        occurred_at DATETIME(6) NOT NULL,
        status TINYINT NOT NULL DEFAULT 0,
        sent_at DATETIME(6) NULL,
        error TEXT NULL,
        UNIQUE KEY event_id (event_id),
        KEY pending (status, seq),
        KEY entity (entity_type, entity_id, version)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    f"""CREATE TABLE IF NOT EXISTS {VERSIONS_TABLE} (
        entity_type VARCHAR(63) NOT NULL,
        entity_id VARCHAR(255) NOT NULL,
        version BIGINT NOT NULL,
        PRIMARY KEY (entity_type, entity_id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    f"""CREATE TABLE IF NOT EXISTS {SNAPSHOTS_TABLE} (
        subscriber VARCHAR(63) NOT NULL,
        entity_type VARCHAR(63) NOT NULL,
        subscribed_at BIGINT NOT NULL,
        events BIGINT NOT NULL,
        done_at DATETIME(6) NOT NULL,
        PRIMARY KEY (subscriber, entity_type, subscribed_at)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
)

# Errors after which a connection is unusable (and the round may be retried).
_CONNECTION_ERRORS = (pymysql.err.OperationalError, pymysql.err.InterfaceError, ConnectionError, OSError)
_INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]


@dataclass(frozen=True)
class OutboxEntry:
    """One row of the outbox: an event waiting to be (or already) published."""

    seq: int
    """Position in the outbox: rows are published in this order."""
    event_id: str
    entity_type: str
    entity_id: str
    operation: Operation
    version: int
    payload: Mapping[str, Any]
    occurred_at: datetime

    def to_event(self, publisher: str) -> common_pb2.EntityEvent:
        return new_event(
            publisher,
            self.entity_type,
            self.entity_id,
            self.operation,
            self.version,
            self.payload,
            event_id=self.event_id,
            occurred_at=self.occurred_at,
        )


class Outbox:
    """The writing side: records events in the caller's transaction.

    ``connect`` opens a connection to the service's own database (used by
    :meth:`install`, :meth:`transaction` and the relay); ``publisher`` is
    the service's name as subscribers know it.
    """

    def __init__(self, connect: Connect, publisher: str) -> None:
        self.connect = connect
        self.publisher = check_name(publisher, "publisher")
        self._listeners: list[Callable[[], None]] = []

    def install(self) -> None:
        """Create the outbox tables if they do not exist (idempotent)."""
        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            for statement in SCHEMA:
                cur.execute(statement)
            conn.commit()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """A cursor in a new transaction on a new connection: committed when
        the block ends, rolled back if it raises. Relays of this process are
        woken after the commit."""
        with contextlib.closing(self.connect()) as conn:
            conn.begin()
            try:
                with conn.cursor() as cur:
                    yield cur
                conn.commit()
            except BaseException:
                with contextlib.suppress(*_CONNECTION_ERRORS):
                    conn.rollback()
                raise
        self.notify()

    def claim_version(self, cursor: Cursor, entity_type: str, entity_id: str) -> int:
        """The entity's next version (1 for a new entity), reserved in the
        cursor's transaction. Locks the entity's counter until that
        transaction ends, so changes of one entity are serialized."""
        check_name(entity_type, "entity_type")
        _check_entity_id(entity_id)
        cursor.execute(
            f"INSERT INTO {VERSIONS_TABLE} (entity_type, entity_id, version) VALUES (%s, %s, LAST_INSERT_ID(1)) "
            "ON DUPLICATE KEY UPDATE version = LAST_INSERT_ID(version + 1)",
            (entity_type, entity_id),
        )
        return int(cursor.lastrowid)

    def record(
        self,
        cursor: Cursor,
        entity_type: str,
        entity_id: str,
        operation: Operation | int | str,
        payload: Mapping[str, Any] | None = None,
        *,
        version: int | None = None,
    ) -> OutboxEntry:
        """Add the event of a change to the outbox, in the cursor's
        transaction. ``payload`` is the whole entity after the change (JSON-
        like values; empty for DELETE). ``version`` is the one
        :meth:`claim_version` gave in this transaction, or None to claim it
        now. Raises ValueError for a bad name, operation or payload."""
        op = Operation(_operation_value(operation))
        if op is Operation.UNSPECIFIED:
            raise ValueError("operation must be CREATE, UPDATE or DELETE")
        body = dict(payload or {})
        if op is Operation.DELETE and body:
            raise ValueError("a DELETE carries no payload")
        if op is not Operation.DELETE and not body:
            raise ValueError(f"{op.name} needs the whole entity after the change as payload")
        try:
            text = json.dumps(body, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"payload is not JSON-like: {e}") from None
        if version is None:
            version = self.claim_version(cursor, entity_type, entity_id)
        else:
            check_name(entity_type, "entity_type")
            _check_entity_id(entity_id)
            if version <= 0:
                raise ValueError(f"version must be positive, got {version}")
        event_id = str(uuid.uuid4())
        occurred_at = datetime.now(UTC)
        cursor.execute(
            f"INSERT INTO {OUTBOX_TABLE} (event_id, entity_type, entity_id, operation, version, payload, occurred_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (event_id, entity_type, entity_id, int(op), version, text, occurred_at.replace(tzinfo=None)),
        )
        return OutboxEntry(
            seq=int(cursor.lastrowid),
            event_id=event_id,
            entity_type=entity_type,
            entity_id=entity_id,
            operation=op,
            version=version,
            payload=body,
            occurred_at=occurred_at,
        )

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after each :meth:`transaction` commits (relays use it)."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    def notify(self) -> None:
        """Wake this process's relays now (call after committing a
        transaction of your own that recorded events)."""
        for callback in list(self._listeners):
            callback()

    def counts(self) -> dict[str, int]:
        """Rows per status: ``pending``, ``sent``, ``parked``."""
        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT status, COUNT(*) FROM {OUTBOX_TABLE} GROUP BY status")
            found = {int(status): int(n) for status, n in cur.fetchall()}
        return {"pending": found.get(PENDING, 0), "sent": found.get(SENT, 0), "parked": found.get(PARKED, 0)}

    def prune(self, older_than_s: float) -> int:
        """Delete the rows sent more than ``older_than_s`` ago,
        except each entity's latest one (snapshots publish it); answers how
        many went."""
        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            deleted = cur.execute(
                f"DELETE o FROM {OUTBOX_TABLE} o JOIN {VERSIONS_TABLE} v "
                "ON v.entity_type = o.entity_type AND v.entity_id = o.entity_id "
                "WHERE o.status = %s AND o.version < v.version AND o.sent_at < NOW(6) - INTERVAL %s MICROSECOND",
                (SENT, int(older_than_s * 1_000_000)),
            )
            conn.commit()
        return int(deleted)


def _operation_value(value: Operation | int | str) -> int:
    if isinstance(value, str):
        try:
            return int(Operation[value.upper()])
        except KeyError:
            raise ValueError(f"operation {value!r} is not one of CREATE, UPDATE, DELETE") from None
    return int(value)


def _check_entity_id(entity_id: str) -> None:
    if not entity_id or len(entity_id) > MAX_ENTITY_ID_CHARS:
        raise ValueError(f"entity_id must be 1-{MAX_ENTITY_ID_CHARS} characters, got {entity_id!r:.80}")


# -- the relay -------------------------------------------------------------------------


class OutboxStore(Protocol):
    """What the relay needs of the outbox's database (the port the unit tests fake)."""

    def acquire(self) -> bool:
        """Become (or stay) the one active relay; False = another relay is active."""

    def pending(self, limit: int) -> list[OutboxEntry]:
        """Up to ``limit`` unsent rows, in sequence order."""

    def mark_sent(self, seqs: Sequence[int]) -> None:
        """These rows were published (confirmed): never publish them again."""

    def park(self, failures: Sequence[tuple[int, str]]) -> None:
        """These rows were refused as malformed: keep them aside with the reason."""

    def latest(self, entity_type: str, after_seq: int, limit: int) -> list[OutboxEntry]:
        """Each entity's latest row (committed; sent or not), for entities of
        ``entity_type`` whose latest row comes after ``after_seq``, in
        sequence order, at most ``limit``."""

    def snapshot_done(self, key: SnapshotKey) -> bool: ...

    def mark_snapshot(self, key: SnapshotKey, events: int) -> None: ...

    def close(self) -> None: ...


class Publisher(Protocol):
    """What the relay needs of the EventManager (:class:`EventClient` is one)."""

    def publish_batch(self, events: Sequence[common_pb2.EntityEvent]) -> Sequence[Any]:
        """One result per event, with ``code`` (0 = confirmed) and ``error``."""

    def list(self, *, publisher: str = "", subscriber: str = "") -> Sequence[eventmanager_pb2.Subscription]:
        """The subscriptions (to find those that asked for a snapshot)."""


@dataclass(frozen=True)
class SnapshotKey:
    """One subscription's snapshot: done once per subscription (a subscriber
    that unsubscribes and subscribes again gets a new one)."""

    subscriber: str
    entity_type: str
    subscribed_at: int
    """The subscription's creation time, in microseconds since the epoch."""


def _entry(row: Sequence[Any]) -> OutboxEntry:
    seq, event_id, entity_type, entity_id, operation, version, payload, occurred_at = row
    return OutboxEntry(
        seq=int(seq),
        event_id=str(event_id),
        entity_type=str(entity_type),
        entity_id=str(entity_id),
        operation=Operation(int(operation)),
        version=int(version),
        payload=json.loads(payload),
        occurred_at=occurred_at.replace(tzinfo=UTC),
    )


class MySQLOutboxStore:
    """The relay's side of :class:`Outbox`'s tables, on one connection of its
    own that holds the relay lock. A lost connection is reopened on the next
    call (the lock is then taken again)."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox
        self._conn: Connection | None = None
        self._locked = False

    def _cursor(self) -> Cursor:
        if self._conn is None:
            self._conn = self._outbox.connect()
            self._locked = False
        return self._conn.cursor()

    def _run(self, work: Callable[[Cursor], Any]) -> Any:
        try:
            with self._cursor() as cur:
                result = work(cur)
            assert self._conn is not None
            self._conn.commit()
            return result
        except _CONNECTION_ERRORS:
            self.close()
            raise

    def acquire(self) -> bool:
        if self._locked and self._conn is not None:
            return True

        def lock(cur: Cursor) -> bool:
            cur.execute("SELECT DATABASE()")
            row = cur.fetchone()
            name = f"gridmesh-outbox-relay:{row[0] if row else ''}:{self._outbox.publisher}"[:64]
            cur.execute("SELECT GET_LOCK(%s, 0)", (name,))
            got = cur.fetchone()
            return bool(got and got[0] == 1)

        self._locked = bool(self._run(lock))
        return self._locked

    def pending(self, limit: int) -> list[OutboxEntry]:
        def read(cur: Cursor) -> list[OutboxEntry]:
            cur.execute(
                "SELECT seq, event_id, entity_type, entity_id, operation, version, payload, occurred_at "
                f"FROM {OUTBOX_TABLE} WHERE status = %s ORDER BY seq LIMIT %s",
                (PENDING, limit),
            )
            return [_entry(row) for row in cur.fetchall()]

        entries: list[OutboxEntry] = self._run(read)
        return entries

    def mark_sent(self, seqs: Sequence[int]) -> None:
        if seqs:
            self._run(
                lambda cur: cur.execute(
                    f"UPDATE {OUTBOX_TABLE} SET status = %s, sent_at = NOW(6) WHERE seq IN %s", (SENT, tuple(seqs))
                )
            )

    def park(self, failures: Sequence[tuple[int, str]]) -> None:
        if failures:
            self._run(
                lambda cur: cur.executemany(
                    f"UPDATE {OUTBOX_TABLE} SET status = {PARKED}, sent_at = NOW(6), error = %s WHERE seq = %s",
                    [(error[:2000], seq) for seq, error in failures],
                )
            )

    def latest(self, entity_type: str, after_seq: int, limit: int) -> list[OutboxEntry]:
        def read(cur: Cursor) -> list[OutboxEntry]:
            cur.execute(
                "SELECT o.seq, o.event_id, o.entity_type, o.entity_id, o.operation, o.version, o.payload, "
                f"o.occurred_at FROM {OUTBOX_TABLE} o JOIN {VERSIONS_TABLE} v ON v.entity_type = o.entity_type "
                "AND v.entity_id = o.entity_id AND v.version = o.version "
                "WHERE o.entity_type = %s AND o.seq > %s AND o.status <> %s ORDER BY o.seq LIMIT %s",
                (entity_type, after_seq, PARKED, limit),
            )
            return [_entry(row) for row in cur.fetchall()]

        entries: list[OutboxEntry] = self._run(read)
        return entries

    def snapshot_done(self, key: SnapshotKey) -> bool:
        def read(cur: Cursor) -> bool:
            cur.execute(
                f"SELECT 1 FROM {SNAPSHOTS_TABLE} WHERE subscriber = %s AND entity_type = %s AND subscribed_at = %s",
                (key.subscriber, key.entity_type, key.subscribed_at),
            )
            return cur.fetchone() is not None

        return bool(self._run(read))

    def mark_snapshot(self, key: SnapshotKey, events: int) -> None:
        self._run(
            lambda cur: cur.execute(
                f"INSERT IGNORE INTO {SNAPSHOTS_TABLE} (subscriber, entity_type, subscribed_at, events, done_at) "
                "VALUES (%s, %s, %s, %s, NOW(6))",
                (key.subscriber, key.entity_type, key.subscribed_at, events),
            )
        )

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self._locked = False
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


@dataclass(frozen=True)
class RelayRound:
    """What one relay round did."""

    published: int = 0
    """Events confirmed and marked sent."""
    parked: int = 0
    """Events refused as malformed and set aside."""
    retry: int = 0
    """Events that could not be published now (tried again next round)."""


class OutboxRelay:
    """Publishes an outbox's unsent rows through the EventManager.

    :meth:`run_once` does one round (tests, scripts); :meth:`start` runs
    rounds on a thread until :meth:`stop`: after a commit of this process's
    :meth:`Outbox.transaction` at once, else every ``poll_interval_s``; a
    failed round (EventManager or MySQL unreachable) is retried after a
    backed-off pause (:data:`RETRY`),
    logged. Usable as a context manager (start … stop).

    Snapshots: every ``snapshot_interval_s`` (None = never) the running
    relay looks for subscriptions to its publisher made with
    ``snapshot=true`` and not served yet, and publishes, for every entity of
    that type, its latest outbox row (a DELETE too, as a tombstone) with its
    original event id (:meth:`publish_snapshots`). The subscription's queue
    is bound before the relay sees it, so every later change arrives live:
    no gap; version fencing makes the overlap harmless. Topic routing gives
    these events to the publisher's other subscribers too, who skip them as
    already processed.
    """

    def __init__(
        self,
        outbox: Outbox,
        publisher: Publisher,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        snapshot_interval_s: float | None = DEFAULT_SNAPSHOT_INTERVAL_S,
        store: OutboxStore | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.outbox = outbox
        self._publisher = publisher
        self._store: OutboxStore = store if store is not None else MySQLOutboxStore(outbox)
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._snapshot_interval_s = snapshot_interval_s
        self._next_snapshot_check = 0.0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.published = 0
        """Events published and marked sent since this relay was created."""
        self.rounds_failed = 0

    def run_once(self) -> RelayRound:
        """Publish up to ``batch_size`` unsent rows, in order, and mark what
        was confirmed. Raises :class:`EventError` (EventManager) or a pymysql
        error (MySQL) when the round could not run; nothing is marked then.
        Answers an empty round if another relay holds the lock."""
        if not self._store.acquire():
            return RelayRound()
        entries = self._store.pending(self._batch_size)
        if not entries:
            return RelayRound()
        results = self._publisher.publish_batch([e.to_event(self.outbox.publisher) for e in entries])
        if len(results) != len(entries):
            raise EventError("INTERNAL", f"PublishBatch answered {len(results)} results for {len(entries)} events")
        sent: list[int] = []
        parked: list[tuple[int, str]] = []
        retry = 0
        for entry, result in zip(entries, results, strict=True):
            if result.code == 0:
                sent.append(entry.seq)
            elif result.code == _INVALID_ARGUMENT:
                log.error(
                    "the EventManager refused outbox event %s (seq %d): %s", entry.event_id, entry.seq, result.error
                )
                parked.append((entry.seq, str(result.error)))
            else:
                retry += 1
        self._store.mark_sent(sent)
        self._store.park(parked)
        self.published += len(sent)
        if retry:
            log.warning("%d of %d outbox events were not confirmed; publishing them again", retry, len(entries))
        return RelayRound(published=len(sent), parked=len(parked), retry=retry)

    def publish_snapshots(self) -> int:
        """Serve every snapshot subscription not served yet (see the class
        doc); answers how many events it published. Raises like
        :meth:`run_once`; a snapshot is recorded as done only once all of
        its events were confirmed."""
        if not self._store.acquire():
            return 0
        published = 0
        for subscription in self._publisher.list(publisher=self.outbox.publisher):
            if not subscription.snapshot:
                continue
            key = SnapshotKey(
                subscription.subscriber,
                subscription.entity_type,
                subscription.created_at.seconds * 1_000_000 + subscription.created_at.nanos // 1000,
            )
            if self._store.snapshot_done(key):
                continue
            count, after = 0, 0
            while entries := self._store.latest(key.entity_type, after, self._batch_size):
                results = self._publisher.publish_batch([e.to_event(self.outbox.publisher) for e in entries])
                failed = [r for r in results if r.code != 0]
                if failed or len(results) != len(entries):
                    raise EventError(
                        "UNAVAILABLE", f"snapshot for {key.subscriber}: {len(failed)} events not confirmed"
                    )
                count += len(entries)
                after = entries[-1].seq
            self._store.mark_snapshot(key, count)
            log.info("published a snapshot of %d %s entities for %s", count, key.entity_type, key.subscriber)
            published += count
        return published

    def drain(self, timeout_s: float = 30.0) -> int:
        """Run rounds until nothing is pending (or ``timeout_s`` passed, then
        TimeoutError); answers the events published."""
        deadline = time.monotonic() + timeout_s
        total = 0
        while True:
            done = self.run_once()
            total += done.published
            if done.published + done.parked + done.retry == 0:
                return total
            if time.monotonic() > deadline:
                raise TimeoutError(f"the outbox still had events after {timeout_s:.0f} s")

    # -- background thread --------------------------------------------------------

    def start(self) -> OutboxRelay:
        """Run rounds on a daemon thread until :meth:`stop`."""
        if self._thread is None:
            self._stopping.clear()
            self.outbox.add_listener(self._wake.set)
            self._thread = threading.Thread(
                target=self._loop, name=f"outbox-relay-{self.outbox.publisher}", daemon=True
            )
            self._thread.start()
        return self

    def wake(self) -> None:
        """Run a round now (rows were committed)."""
        self._wake.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Finish the current round, stop the thread, close the connection. Idempotent."""
        self._stopping.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)
        self.outbox.remove_listener(self._wake.set)
        self._store.close()

    def __enter__(self) -> OutboxRelay:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _loop(self) -> None:
        pauses = RETRY.pauses()
        while not self._stopping.is_set():
            self._wake.clear()  # a commit from now on wakes the wait below
            try:
                if self._snapshot_interval_s is not None and time.monotonic() >= self._next_snapshot_check:
                    self._next_snapshot_check = time.monotonic() + self._snapshot_interval_s
                    self.publish_snapshots()
                done = self.run_once()
            except (EventError, *_CONNECTION_ERRORS, pymysql.err.MySQLError) as e:
                self.rounds_failed += 1
                pause = next(pauses)
                log.warning("outbox relay round failed (%s); retrying in %.1f s", e, pause)
                self._stopping.wait(pause)
                continue
            except Exception:
                self.rounds_failed += 1
                pause = next(pauses)
                log.exception("outbox relay round failed unexpectedly; retrying in %.1f s", pause)
                self._stopping.wait(pause)
                continue
            pauses = RETRY.pauses()
            if done.published + done.parked == self._batch_size:
                continue  # a full batch: there is probably more
            if done.retry:
                self._stopping.wait(RETRY.pause_s(0))
                continue
            self._wake.wait(self._poll_interval_s)


__all__ = [
    "OUTBOX_TABLE",
    "SNAPSHOTS_TABLE",
    "VERSIONS_TABLE",
    "MySQLOutboxStore",
    "Outbox",
    "OutboxEntry",
    "OutboxRelay",
    "OutboxStore",
    "Publisher",
    "RelayRound",
    "SnapshotKey",
]
