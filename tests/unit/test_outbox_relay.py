"""SPEC §3 "transactional outbox for publishers": the relay publishes unsent
outbox rows in order, marks them sent only once confirmed (at least once,
ordered per entity), parks malformed ones, and only one relay is active.
Fakes stand in for MySQL and the EventManager; tests/integration/
test_eventmanager_clients.py runs the same against real ones."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from gridmesh.clients.events import EventError
from gridmesh.clients.outbox import Outbox, OutboxEntry, OutboxRelay, SnapshotKey
from gridmesh.core.replication import Operation
from gridmesh.v1 import common_pb2, eventmanager_pb2
from tests.helpers import wait_for

UNAVAILABLE, INVALID_ARGUMENT = 14, 3


class FakeStore:
    """The outbox table in memory."""

    def __init__(self, entries: Sequence[OutboxEntry] = (), *, leader: bool = True) -> None:
        self.rows = {e.seq: e for e in entries}
        self.status = {e.seq: "pending" for e in entries}
        self.errors: dict[int, str] = {}
        self.leader = leader
        self.fail_mark_sent = False
        self.closed = False
        self.snapshots: dict[SnapshotKey, int] = {}

    def add(self, entry: OutboxEntry) -> None:
        self.rows[entry.seq] = entry
        self.status[entry.seq] = "pending"

    def acquire(self) -> bool:
        return self.leader

    def pending(self, limit: int) -> list[OutboxEntry]:
        return [self.rows[s] for s in sorted(self.rows) if self.status[s] == "pending"][:limit]

    def mark_sent(self, seqs: Sequence[int]) -> None:
        if self.fail_mark_sent:
            raise ConnectionError("the relay died before marking")
        for seq in seqs:
            self.status[seq] = "sent"

    def park(self, failures: Sequence[tuple[int, str]]) -> None:
        for seq, error in failures:
            self.status[seq] = "parked"
            self.errors[seq] = error

    def latest(self, entity_type: str, after_seq: int, limit: int) -> list[OutboxEntry]:
        newest: dict[str, OutboxEntry] = {}
        for seq in sorted(self.rows):
            entry = self.rows[seq]
            if entry.entity_type == entity_type and self.status[seq] != "parked":
                newest[entry.entity_id] = entry
        return sorted((e for e in newest.values() if e.seq > after_seq), key=lambda e: e.seq)[:limit]

    def snapshot_done(self, key: SnapshotKey) -> bool:
        return key in self.snapshots

    def mark_snapshot(self, key: SnapshotKey, events: int) -> None:
        self.snapshots[key] = events

    def close(self) -> None:
        self.closed = True


@dataclass
class FakePublisher:
    """The EventManager: records what was published; can refuse or fail."""

    def __post_init__(self) -> None:
        self.published: list[common_pb2.EntityEvent] = []
        self.codes: dict[str, int] = {}  # event_id -> status code to answer
        self.down = False
        self.calls = 0
        self.subscriptions: list[eventmanager_pb2.Subscription] = []

    def publish_batch(self, events: Sequence[common_pb2.EntityEvent]) -> list[eventmanager_pb2.PublishResult]:
        self.calls += 1
        if self.down:
            raise EventError("UNAVAILABLE", "the EventManager is unreachable")
        results = []
        for event in events:
            code = self.codes.get(event.event_id, 0)
            if code == 0:
                self.published.append(event)
            results.append(eventmanager_pb2.PublishResult(event_id=event.event_id, code=code, error="refused"))
        return results

    def list(self, *, publisher: str = "", subscriber: str = "") -> builtins.list[eventmanager_pb2.Subscription]:
        return [s for s in self.subscriptions if s.publisher == publisher]


def entry(seq: int, entity_id: str, version: int, operation: Operation = Operation.UPDATE) -> OutboxEntry:
    payload = {} if operation is Operation.DELETE else {"id": entity_id, "v": version}
    return OutboxEntry(
        seq=seq,
        event_id=f"00000000-0000-4000-8000-{seq:012d}",
        entity_type="customer",
        entity_id=entity_id,
        operation=operation,
        version=version,
        payload=payload,
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def never_connect() -> object:
    raise AssertionError("the relay under test must only use its store")


def relay(store: FakeStore, publisher: FakePublisher, batch_size: int = 100) -> OutboxRelay:
    outbox = Outbox(never_connect, publisher="customers")  # type: ignore[arg-type]
    return OutboxRelay(outbox, publisher, batch_size=batch_size, store=store, poll_interval_s=0.01)


HISTORY = [entry(1, "a", 1, Operation.CREATE), entry(2, "b", 1, Operation.CREATE), entry(3, "a", 2), entry(4, "a", 3)]


def test_the_relay_publishes_unsent_rows_in_outbox_order_and_marks_them_sent() -> None:
    store, publisher = FakeStore(HISTORY), FakePublisher()
    done = relay(store, publisher).run_once()
    assert done.published == 4
    assert [(e.entity_id, e.version) for e in publisher.published] == [("a", 1), ("b", 1), ("a", 2), ("a", 3)]
    first = publisher.published[0]
    assert (first.publisher, first.entity_type, first.operation) == ("customers", "customer", common_pb2.CREATE)
    assert first.event_id == HISTORY[0].event_id and first.payload["v"] == 1
    assert set(store.status.values()) == {"sent"}
    assert relay(store, publisher).run_once().published == 0  # nothing is published twice


def test_a_batch_is_at_most_batch_size_and_drain_publishes_everything() -> None:
    store, publisher = FakeStore(HISTORY), FakePublisher()
    r = relay(store, publisher, batch_size=3)
    assert r.run_once().published == 3
    assert r.drain(timeout_s=5) == 1
    assert [e.event_id for e in publisher.published] == [e.event_id for e in HISTORY]


def test_when_the_eventmanager_is_unreachable_nothing_is_marked_and_the_next_round_publishes() -> None:
    store, publisher = FakeStore(HISTORY), FakePublisher()
    publisher.down = True
    with pytest.raises(EventError) as failed:
        relay(store, publisher).run_once()
    assert failed.value.retryable
    assert set(store.status.values()) == {"pending"}
    publisher.down = False
    assert relay(store, publisher).run_once().published == 4


def test_a_relay_that_dies_between_publish_and_mark_sent_publishes_the_same_events_again() -> None:
    """At least once: the restarted relay re-sends with the same event ids,
    which replicas recognise as duplicates."""
    store, publisher = FakeStore(HISTORY), FakePublisher()
    store.fail_mark_sent = True
    with pytest.raises(ConnectionError):
        relay(store, publisher).run_once()
    store.fail_mark_sent = False
    assert relay(store, publisher).run_once().published == 4
    ids = [e.event_id for e in publisher.published]
    assert ids == [e.event_id for e in HISTORY] * 2


def test_unconfirmed_events_stay_pending_and_only_they_are_sent_again() -> None:
    store, publisher = FakeStore(HISTORY), FakePublisher()
    publisher.codes[HISTORY[1].event_id] = UNAVAILABLE
    done = relay(store, publisher).run_once()
    assert (done.published, done.retry) == (3, 1)
    assert [s for s, st in store.status.items() if st == "pending"] == [2]
    publisher.codes.clear()
    assert relay(store, publisher).run_once().published == 1
    assert publisher.published[-1].event_id == HISTORY[1].event_id


def test_an_event_refused_as_malformed_is_parked_and_does_not_block_the_rows_after_it() -> None:
    store, publisher = FakeStore(HISTORY), FakePublisher()
    publisher.codes[HISTORY[0].event_id] = INVALID_ARGUMENT
    done = relay(store, publisher).run_once()
    assert (done.published, done.parked) == (3, 1)
    assert store.status[1] == "parked" and store.errors[1] == "refused"
    assert relay(store, publisher).run_once().published == 0


def test_only_the_relay_that_holds_the_lock_publishes() -> None:
    store, publisher = FakeStore(HISTORY, leader=False), FakePublisher()
    assert relay(store, publisher).run_once().published == 0
    assert publisher.calls == 0 and set(store.status.values()) == {"pending"}


def test_a_started_relay_publishes_after_a_commit_and_survives_a_failed_round() -> None:
    store, publisher = FakeStore(), FakePublisher()
    publisher.down = True
    r = relay(store, publisher)
    with r:
        store.add(HISTORY[0])
        r.outbox.notify()  # what Outbox.transaction() does after its commit
        wait_for("a failed round", lambda: r.rounds_failed >= 1, timeout=5)
        publisher.down = False
        wait_for("the row to be sent", lambda: store.status[1] == "sent", timeout=5)
    assert [e.event_id for e in publisher.published] == [HISTORY[0].event_id]
    assert store.closed  # stop() closed the store


def test_record_refuses_events_that_cannot_be_published() -> None:
    outbox = Outbox(never_connect, publisher="customers")  # type: ignore[arg-type]
    for args, message in [
        (("customer", "c-1", Operation.DELETE, {"id": "c-1"}), "no payload"),
        (("customer", "c-1", Operation.CREATE, {}), "whole entity"),
        (("customer", "c-1", Operation.UNSPECIFIED, {"a": 1}), "CREATE, UPDATE or DELETE"),
        (("customer", "c-1", "MERGE", {"a": 1}), "MERGE"),
        (("customer", "c-1", Operation.CREATE, {"a": object()}), "JSON"),
        (("Customer!", "c-1", Operation.CREATE, {"a": 1}), "entity_type"),
        (("customer", "", Operation.CREATE, {"a": 1}), "entity_id"),
    ]:
        with pytest.raises(Exception, match=message):
            outbox.record(None, *args, version=1)  # type: ignore[arg-type]


def test_a_snapshot_subscription_gets_each_entitys_latest_row_once_including_tombstones() -> None:
    """Subscribe with snapshot=true: the relay publishes the current state of
    every entity of the type (latest version; a delete as a tombstone),
    once per subscription, with the original event ids."""
    history = [*HISTORY, entry(5, "b", 2, Operation.DELETE), entry(6, "c", 1, Operation.CREATE)]
    store, publisher = FakeStore(history), FakePublisher()
    r = relay(store, publisher, batch_size=2)
    r.drain(timeout_s=5)
    publisher.published.clear()
    wants = eventmanager_pb2.Subscription(
        subscriber="late", publisher="customers", entity_type="customer", snapshot=True
    )
    wants.created_at.FromSeconds(1_800_000_000)
    plain = eventmanager_pb2.Subscription(subscriber="plain", publisher="customers", entity_type="customer")
    publisher.subscriptions = [wants, plain]

    assert r.publish_snapshots() == 3
    assert [(e.entity_id, e.version, e.operation) for e in publisher.published] == [
        ("a", 3, common_pb2.UPDATE),
        ("b", 2, common_pb2.DELETE),
        ("c", 1, common_pb2.CREATE),
    ]
    assert [e.event_id for e in publisher.published] == [history[i].event_id for i in (3, 4, 5)]
    assert r.publish_snapshots() == 0  # served once
    assert store.snapshots == {SnapshotKey("late", "customer", 1_800_000_000_000_000): 3}


def test_a_snapshot_is_recorded_only_once_all_its_events_were_confirmed() -> None:
    store, publisher = FakeStore(HISTORY), FakePublisher()
    publisher.subscriptions = [
        eventmanager_pb2.Subscription(subscriber="late", publisher="customers", entity_type="customer", snapshot=True)
    ]
    publisher.codes[HISTORY[3].event_id] = UNAVAILABLE
    with pytest.raises(EventError):
        relay(store, publisher).publish_snapshots()
    assert store.snapshots == {}
    publisher.codes.clear()
    assert relay(store, publisher).publish_snapshots() == 2
