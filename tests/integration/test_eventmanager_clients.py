"""SPEC §3 "Event-driven replication", the client side, against the real
MySQL, RabbitMQ and ZooKeeper: ``ConsumeBatches`` with cumulative acks, the
transactional outbox and its relay, and the replica applier.

The EventManager runs in-process (its own event loop on a thread, port 0)
and is driven with the synchronous :class:`EventClient`. Everything lives
under a fresh namespace; its queues, exchange, znodes and databases are
deleted at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pymysql
import pytest

from gridmesh.clients import (
    EventClient,
    EventError,
    Operation,
    Outbox,
    OutboxRelay,
    ReplicaApplier,
    ReplicaTable,
    new_event,
)
from gridmesh.clients.replica import ReplicaAction
from gridmesh.config import MeshConfig, MySQLLogin, load_config
from gridmesh.core.access import PeerRole
from gridmesh.eventmanager import EventManagerProcess, build_server
from tests.cleanup import delete_topology, delete_znodes
from tests.conftest import session_backing
from tests.helpers import certificates, mesh_channel, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

WAIT_S = 20.0
_counter = itertools.count(1)


class Env:
    """The module's namespace and what it created (deleted at the end)."""

    def __init__(self, config: MeshConfig, mysql: MySQLLogin) -> None:
        self.config = config
        self.mysql = mysql
        self.subscribers: set[str] = set()
        self.databases: set[str] = set()

    def name(self, prefix: str) -> str:
        return f"{prefix}{next(_counter)}"

    def subscriber(self, prefix: str = "replica") -> str:
        name = self.name(prefix)
        self.subscribers.add(name)
        return name

    def database(self, prefix: str) -> Callable[[], pymysql.connections.Connection]:
        """A fresh database; answers a connect() for it."""
        name = self.config.database(self.name(prefix))
        self.databases.add(name)
        with contextlib.closing(self.connect(None)) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        return functools.partial(self.connect, name)

    def connect(self, database: str | None) -> pymysql.connections.Connection:
        return pymysql.connect(**dataclasses.asdict(self.mysql), database=database, autocommit=False)


class EventManagerThread:
    """An EventManager on an event loop of its own thread."""

    def __init__(self, config: MeshConfig) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="eventmanager", daemon=True)
        self._thread.start()
        self.process: EventManagerProcess = self._call(self._start(config))
        self.config = config
        self.target = f"127.0.0.1:{self.process.port}"

    async def _start(self, config: MeshConfig) -> EventManagerProcess:
        process = build_server(config)
        await process.start()
        return process

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(60)

    def stop(self) -> None:
        self._call(self.process.stop(grace_s=1))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture(scope="module")
def env(
    backing_services: MeshConfig, tests_mysql: MySQLLogin, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    namespace = f"t{uuid.uuid4().hex[:10]}"
    config = load_config(
        {
            "GRIDMESH_NAMESPACE": namespace,
            "GRIDMESH_STATE_DIR": str(tmp_path_factory.mktemp("clients")),
            **session_backing(),
            "GRIDMESH_EVENTMANAGER_PORT": "0",
            "GRIDMESH_EVENTMANAGER_MAX_REDELIVERIES": "3",
        }
    )
    certificates(config)
    e = Env(config, tests_mysql)
    try:
        yield e
    finally:
        delete_topology(config, e.subscribers)
        for name in e.databases:
            with contextlib.closing(e.connect(None)) as conn, conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        delete_znodes(config)


@pytest.fixture(scope="module")
def eventmanager(env: Env) -> Iterator[EventManagerThread]:
    em = EventManagerThread(env.config)
    try:
        yield em
    finally:
        em.stop()


@pytest.fixture
def events(eventmanager: EventManagerThread) -> Iterator[EventClient]:
    channel = mesh_channel(eventmanager.config, eventmanager.target, PeerRole.EVENTMANAGER)
    with channel, EventClient(eventmanager.target, channel=channel, rpc_timeout_s=WAIT_S) as client:
        yield client


def customer(entity_id: str, version: int, name: str = "Ada") -> Any:
    return new_event("customers", "customer", entity_id, Operation.UPDATE, version, {"id": entity_id, "name": name})


# -- ConsumeBatches and cumulative acks --------------------------------------------------


def test_consume_batches_sends_what_is_ready_together_and_one_cumulative_ack_settles_a_batch(
    env: Env, events: EventClient
) -> None:
    subscriber = env.subscriber()
    events.subscribe(subscriber, "customers", "customer")
    results = events.publish_batch([customer(f"c-{i}", 1) for i in range(300)])
    assert all(r.code == 0 and list(r.routed_to) == [subscriber] for r in results)

    seen: list[str] = []
    sizes: list[int] = []
    with events.consume(subscriber, prefetch=100, max_batch=64) as stream:
        for batch in stream.batches():
            sizes.append(len(batch))
            seen += [d.event.entity_id for d in batch]
            stream.ack(batch[-1].delivery_id, multiple=True)
            if len(seen) == 300:
                break
    assert seen == [f"c-{i}" for i in range(300)]  # one queue, one consumer: publish order
    assert max(sizes) <= 64 and max(sizes) > 1 and len(sizes) < 300
    wait_for("the queue to drain", lambda: events.queue_stats(subscriber).messages == 0, WAIT_S)


def test_a_cumulative_ack_settles_only_earlier_deliveries_and_the_rest_are_redelivered(
    env: Env, events: EventClient
) -> None:
    subscriber = env.subscriber()
    events.subscribe(subscriber, "customers", "customer")
    events.publish_batch([customer(f"c-{i}", 1) for i in range(10)])
    with events.consume(subscriber, prefetch=10) as stream:
        got = []
        for delivery in stream:
            got.append(delivery)
            if len(got) == 10:
                break
        stream.ack(got[5].delivery_id, multiple=True)  # the first six are done
    with events.consume(subscriber, prefetch=10) as stream:
        again = []
        for delivery in stream:
            again.append(delivery)
            if len(again) == 4:
                break
        assert [d.event.entity_id for d in again] == [f"c-{i}" for i in range(6, 10)]
        assert all(d.redelivered for d in again)
        stream.ack(again[-1].delivery_id, multiple=True)
    wait_for("the queue to drain", lambda: events.queue_stats(subscriber).messages == 0, WAIT_S)


def test_a_cumulative_ack_of_an_id_never_delivered_ends_the_stream_with_invalid_argument(
    env: Env, events: EventClient
) -> None:
    subscriber = env.subscriber()
    events.subscribe(subscriber, "customers", "customer")
    events.publish(customer("c-1", 1))
    with events.consume(subscriber) as stream, pytest.raises(EventError) as ended:
        for delivery in stream:
            stream.ack(delivery.delivery_id + 1000, multiple=True)
    assert ended.value.code_name == "INVALID_ARGUMENT" and "1001" in ended.value.message


# -- the outbox and its relay ------------------------------------------------------------


def test_an_outbox_event_exists_exactly_when_its_change_was_committed(env: Env) -> None:
    connect = env.database("pub")
    outbox = Outbox(connect, publisher="customers")
    outbox.install()
    outbox.install()  # idempotent
    with outbox.transaction() as cur:
        cur.execute("CREATE TABLE customer (id VARCHAR(255) PRIMARY KEY, name TEXT, version BIGINT)")
    with pytest.raises(RuntimeError), outbox.transaction() as cur:
        version = outbox.claim_version(cur, "customer", "c-1")
        cur.execute("INSERT INTO customer VALUES ('c-1', 'Ada', %s)", (version,))
        outbox.record(cur, "customer", "c-1", Operation.CREATE, {"id": "c-1", "name": "Ada"}, version=version)
        raise RuntimeError("the service failed before committing")
    assert outbox.counts() == {"pending": 0, "sent": 0, "parked": 0}
    with outbox.transaction() as cur:
        entry = outbox.record(cur, "customer", "c-1", Operation.CREATE, {"id": "c-1", "name": "Ada"})
    assert entry.version == 1  # the rolled-back claim did not use up a version
    assert outbox.counts()["pending"] == 1


def test_versions_increase_per_entity_and_outbox_order_follows_them_under_concurrent_writers(env: Env) -> None:
    connect = env.database("pub")
    outbox = Outbox(connect, publisher="customers")
    outbox.install()

    def change(i: int) -> int:
        entity = f"c-{i % 3}"
        with outbox.transaction() as cur:
            return outbox.record(cur, "customer", entity, Operation.UPDATE, {"id": entity, "n": i}).version

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(change, range(60)))
    with contextlib.closing(connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT entity_id, version FROM gridmesh_outbox ORDER BY seq")
        rows = cur.fetchall()
    for entity in ("c-0", "c-1", "c-2"):
        versions = [v for e, v in rows if e == entity]
        assert versions == list(range(1, 21)), entity


def test_only_one_relay_per_outbox_publishes_and_the_other_takes_over_when_it_goes(
    env: Env, events: EventClient
) -> None:
    connect = env.database("pub")
    outbox = Outbox(connect, publisher="customers")
    outbox.install()
    with outbox.transaction() as cur:
        outbox.record(cur, "customer", "c-1", Operation.CREATE, {"id": "c-1"})
    first, second = OutboxRelay(outbox, events), OutboxRelay(outbox, events)
    assert first.run_once().published == 1
    with outbox.transaction() as cur:
        outbox.record(cur, "customer", "c-1", Operation.UPDATE, {"id": "c-1", "name": "B"})
    assert second.run_once().published == 0  # the first holds the lock
    first.stop()  # closes its connection: the lock is free
    assert second.run_once().published == 1
    second.stop()


# -- outbox -> EventManager -> applier -----------------------------------------------------


def _tables(connect: Callable[[], pymysql.connections.Connection], *statements: str) -> None:
    with contextlib.closing(connect()) as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
        conn.commit()


def _rows(connect: Callable[[], pymysql.connections.Connection], query: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(connect()) as conn, conn.cursor() as cur:
        cur.execute(query)
        return list(cur.fetchall())


CUSTOMER_TABLE = "CREATE TABLE customer (id VARCHAR(255) PRIMARY KEY, name TEXT NOT NULL, version BIGINT NOT NULL)"
REPLICA_TABLE = "CREATE TABLE customer_replica (id VARCHAR(255) PRIMARY KEY, name VARCHAR(50), version BIGINT)"


def test_changes_committed_through_the_outbox_reach_the_subscribers_database(env: Env, events: EventClient) -> None:
    """Given a publisher with an outbox and a subscriber with an applier, when
    the publisher creates, updates and deletes rows, then the subscriber's
    table ends identical to the publisher's (ids, names, versions)."""
    publisher = env.name("customers")
    pub, sub = env.database("pub"), env.database("sub")
    _tables(pub, CUSTOMER_TABLE)
    _tables(sub, REPLICA_TABLE)
    outbox = Outbox(pub, publisher=publisher)
    outbox.install()
    changed: list[tuple[str, str]] = []

    def remember(cur: Any, entity_id: str, action: ReplicaAction) -> None:
        changed.append((entity_id, action.value))

    table = ReplicaTable(publisher, "customer", table="customer_replica", columns=("name",), on_change=remember)
    applier = ReplicaApplier(events, env.subscriber(), sub, [table], prefetch=64)
    applier.install()

    def save(entity_id: str, name: str | None) -> None:
        with outbox.transaction() as cur:
            version = outbox.claim_version(cur, "customer", entity_id)
            if name is None:
                cur.execute("DELETE FROM customer WHERE id = %s", (entity_id,))
                outbox.record(cur, "customer", entity_id, Operation.DELETE, version=version)
            else:
                cur.execute("REPLACE INTO customer VALUES (%s, %s, %s)", (entity_id, name, version))
                payload = {"id": entity_id, "name": name, "version": version}
                outbox.record(cur, "customer", entity_id, Operation.UPDATE, payload, version=version)

    with OutboxRelay(outbox, events, batch_size=50), applier:
        for i in range(120):
            save(f"c-{i % 40}", f"name {i}")
        for i in range(0, 40, 4):
            save(f"c-{i}", None)
        expected = sorted(_rows(pub, "SELECT id, name, version FROM customer"))
        wait_for(
            "the replica to equal the publisher's table",
            lambda: sorted(_rows(sub, "SELECT id, name, version FROM customer_replica")) == expected,
            WAIT_S,
        )
    assert len(expected) == 30
    assert outbox.counts() == {"pending": 0, "sent": 130, "parked": 0}
    assert ("c-0", "delete") in changed and ("c-1", "upsert") in changed
    assert _rows(sub, "SELECT COUNT(*) FROM gridmesh_processed_events") == [(130,)]


def test_the_applier_skips_duplicates_and_stale_versions_and_dead_letters_what_it_cannot_apply(
    env: Env, events: EventClient
) -> None:
    sub = env.database("sub")
    _tables(sub, REPLICA_TABLE)
    subscriber = env.subscriber()
    applier = ReplicaApplier(
        events, subscriber, sub, [ReplicaTable("customers", "customer", "customer_replica", ["name"])]
    )
    applier.install()
    v2 = customer("c-1", 2, "second")
    events.publish_batch([v2, v2, customer("c-1", 1, "first"), customer("c-2", 1, "x" * 80)])
    with applier:
        wait_for(
            "the poison event to be dead-lettered",
            lambda: events.queue_stats(subscriber).dead_letters == 1,
            WAIT_S,
        )
        wait_for("the rest applied", lambda: applier.stats.applied + applier.stats.skipped == 3, WAIT_S)
    assert _rows(sub, "SELECT id, name, version FROM customer_replica") == [("c-1", "second", 2)]
    assert (applier.stats.applied, applier.stats.skipped) == (1, 2)
    (dead,) = events.dead_letters(subscriber)
    assert dead.entity_id == "c-2"  # its name is too long for the column: never applied


def test_a_subscriber_asking_for_a_snapshot_gets_every_entitys_current_state_then_live_changes(
    env: Env, events: EventClient
) -> None:
    """Given a publisher whose changes were published before anyone
    subscribed, when a new subscriber subscribes with snapshot=true, then
    its replica receives the current state of every entity (deleted ones
    stay absent) and, after that, live changes."""
    publisher = env.name("customers")
    pub, sub = env.database("pub"), env.database("sub")
    _tables(pub, CUSTOMER_TABLE)
    _tables(sub, REPLICA_TABLE)
    outbox = Outbox(pub, publisher=publisher)
    outbox.install()

    def save(entity_id: str, name: str | None) -> None:
        with outbox.transaction() as cur:
            version = outbox.claim_version(cur, "customer", entity_id)
            if name is None:
                cur.execute("DELETE FROM customer WHERE id = %s", (entity_id,))
                outbox.record(cur, "customer", entity_id, Operation.DELETE, version=version)
            else:
                cur.execute("REPLACE INTO customer VALUES (%s, %s, %s)", (entity_id, name, version))
                outbox.record(
                    cur, "customer", entity_id, Operation.UPDATE, {"id": entity_id, "name": name}, version=version
                )

    for i in range(60):
        save(f"c-{i % 20}", f"before {i}")
    save("c-3", None)
    relay = OutboxRelay(outbox, events, snapshot_interval_s=0.05)
    assert relay.drain() == 61  # published to nobody: there is no subscriber yet
    assert outbox.prune(0) == 41  # 61 rows of 20 entities: all but the latest of each go

    table = ReplicaTable(publisher, "customer", table="customer_replica", columns=("name",))
    applier = ReplicaApplier(events, env.subscriber(), sub, [table])
    applier.install(snapshot=True)
    with relay, applier:
        save("c-5", "live")
        save("c-25", "new")
        expected = sorted(_rows(pub, "SELECT id, name, version FROM customer"))
        wait_for(
            "the replica to hold every entity's current state",
            lambda: sorted(_rows(sub, "SELECT id, name, version FROM customer_replica")) == expected,
            WAIT_S,
        )
    assert len(expected) == 20 and ("c-5", "live", 4) in expected
    assert _rows(pub, "SELECT COUNT(*) FROM gridmesh_outbox_snapshots") == [(1,)]
