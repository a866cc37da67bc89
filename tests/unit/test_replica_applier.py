"""SPEC §3 "Consumers apply events idempotently": the replica applier skips
any event whose version is not newer than what the replica holds (and any
event it processed before), so duplicates and re-ordering never corrupt a
replica; it acknowledges a batch only once applied and gives back what it
cannot apply. Fakes stand in for MySQL and the EventManager stream."""

from __future__ import annotations

import itertools
import random
import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from gridmesh.clients.events import EventError, new_event
from gridmesh.clients.replica import EntityKey, ReplicaApplier, ReplicaTable, plan_batch
from gridmesh.core.replication import Operation, ReplicaAction
from gridmesh.v1 import common_pb2, eventmanager_pb2
from tests.helpers import wait_for

UPSERT, DELETE, SKIP = ReplicaAction.UPSERT, ReplicaAction.DELETE, ReplicaAction.SKIP
TABLE = ReplicaTable("customers", "customer", table="customer_replica", columns=("name",))


def ev(entity_id: str, version: int, operation: Operation = Operation.UPDATE, **payload: Any) -> common_pb2.EntityEvent:
    body = {} if operation is Operation.DELETE else {"id": entity_id, "name": f"v{version}", **payload}
    return new_event("customers", "customer", entity_id, operation, version, body)


def key(entity_id: str) -> EntityKey:
    return ("customers", "customer", entity_id)


# -- plan_batch: the version fencing of one batch ------------------------------------------


def test_only_a_strictly_newer_version_is_applied() -> None:
    events = [ev("a", 3), ev("b", 1, Operation.CREATE), ev("c", 5)]
    plan = plan_batch(events, processed=(), versions={key("a"): 3, key("c"): 4})
    assert plan.actions == [SKIP, UPSERT, UPSERT]
    assert {k: c.version for k, c in plan.changes.items()} == {key("b"): 1, key("c"): 5}


def test_an_event_processed_before_is_skipped_even_if_its_version_is_newer() -> None:
    event = ev("a", 9)
    assert plan_batch([event], processed={event.event_id}, versions={}).actions == [SKIP]


def test_a_duplicate_inside_one_batch_is_applied_once() -> None:
    event = ev("a", 1, Operation.CREATE)
    plan = plan_batch([event, event], processed=(), versions={})
    assert plan.actions == [UPSERT, SKIP]


def test_out_of_order_events_in_a_batch_end_at_the_newest_version() -> None:
    plan = plan_batch([ev("a", 1), ev("a", 3), ev("a", 2)], processed=(), versions={})
    assert plan.actions == [UPSERT, UPSERT, SKIP]
    assert plan.changes[key("a")].version == 3 and plan.changes[key("a")].payload["name"] == "v3"


def test_a_delete_leaves_a_tombstone_that_a_late_update_cannot_resurrect() -> None:
    plan = plan_batch([ev("a", 4, Operation.DELETE), ev("a", 3)], processed=(), versions={key("a"): 2})
    assert plan.actions == [DELETE, SKIP]
    assert plan.changes[key("a")].action is DELETE


# -- the applier over a fake store and a fake stream ---------------------------------------


class FakeReplica:
    """The subscriber's database in memory (rows, versions, processed ids)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.versions: dict[EntityKey, int] = {}
        self.processed: set[str] = set()
        self.fail_entities: set[str] = set()  # applying these raises, like a column refusing a value
        self.transactions = 0
        self.closed = False

    def apply(self, events: Sequence[common_pb2.EntityEvent]) -> list[ReplicaAction]:
        if any(e.entity_id in self.fail_entities for e in events):
            raise ValueError("Data too long for column 'name'")
        plan = plan_batch(events, self.processed, self.versions)
        for k, change in plan.changes.items():
            self.versions[k] = change.version
            if change.action is UPSERT:
                self.rows[k[2]] = dict(change.payload)
            else:
                self.rows.pop(k[2], None)
        self.processed.update(e.event_id for e in events)
        self.transactions += 1
        return plan.actions

    def close(self) -> None:
        self.closed = True


class FakeStream:
    """A Consume stream: hands out batches, records acks and nacks."""

    def __init__(self, batches: Sequence[Sequence[common_pb2.EntityEvent]], *, then_fail: bool = False) -> None:
        ids = itertools.count(1)
        self._batches = [
            [eventmanager_pb2.Delivery(delivery_id=next(ids), event=e) for e in batch] for batch in batches
        ]
        self.then_fail = then_fail
        self.acked: list[tuple[int, bool]] = []
        self.nacked: list[tuple[int, bool]] = []
        self.closed = threading.Event()

    def batches(self) -> Iterator[list[eventmanager_pb2.Delivery]]:
        yield from self._batches
        if self.then_fail:
            raise EventError("UNAVAILABLE", "the EventManager went away")
        self.closed.wait(10)

    def ack(self, delivery_id: int, *, multiple: bool = False) -> None:
        self.acked.append((delivery_id, multiple))

    def nack(self, delivery_id: int, *, requeue: bool = True) -> None:
        self.nacked.append((delivery_id, requeue))

    def close(self) -> None:
        self.closed.set()


def applier(store: FakeReplica, *streams: FakeStream, tables: Sequence[ReplicaTable] = (TABLE,)) -> ReplicaApplier:
    pending = list(streams)
    return ReplicaApplier(
        None,  # type: ignore[arg-type]  # never used: the stream and store are fakes
        "orders",
        lambda: None,  # type: ignore[arg-type,return-value]
        tables,
        store=store,
        open_stream=lambda: pending.pop(0),
    )


def test_a_batch_is_applied_in_one_transaction_then_acknowledged_with_one_cumulative_ack() -> None:
    store, stream = FakeReplica(), FakeStream([])
    batch = [eventmanager_pb2.Delivery(delivery_id=i + 1, event=ev("a", i + 1)) for i in range(5)]
    applier(store).apply(stream, batch)
    assert store.transactions == 1 and store.rows["a"]["name"] == "v5"
    assert stream.acked == [(5, True)] and stream.nacked == []


def test_an_event_that_cannot_be_applied_is_given_back_and_the_others_are_applied() -> None:
    store, stream = FakeReplica(), FakeStream([])
    store.fail_entities = {"bad"}
    batch = [eventmanager_pb2.Delivery(delivery_id=i, event=e) for i, e in enumerate([ev("a", 1), ev("bad", 1)], 1)]
    a = applier(store)
    a.apply(stream, batch)
    assert stream.acked == [(1, False)] and stream.nacked == [(2, True)]
    assert store.rows.keys() == {"a"} and a.stats.failed == 1


def test_an_event_of_a_type_without_a_replica_table_is_dead_lettered() -> None:
    store, stream = FakeReplica(), FakeStream([])
    stranger = new_event("billing", "invoice", "i-1", Operation.CREATE, 1, {"total": 3})
    batch = [
        eventmanager_pb2.Delivery(delivery_id=1, event=stranger),
        eventmanager_pb2.Delivery(delivery_id=2, event=ev("a", 1)),
    ]
    applier(store).apply(stream, batch)
    assert stream.nacked == [(1, False)] and stream.acked == [(2, False)]


def test_events_delivered_twice_and_out_of_order_leave_the_replica_equal_to_the_publisher() -> None:
    """Given the full history of 20 entities, when it arrives shuffled, with
    duplicates, in random batches, then the replica holds each entity's
    latest state and deleted entities are gone."""
    rng = random.Random(6)
    history: list[common_pb2.EntityEvent] = []
    final: dict[str, dict[str, Any] | None] = {}
    for n in range(20):
        entity = f"c-{n}"
        versions = rng.randint(1, 6)
        for v in range(1, versions + 1):
            op = Operation.CREATE if v == 1 else Operation.UPDATE
            if v == versions and n % 5 == 0:
                op = Operation.DELETE
            event = ev(entity, v, op)
            history.append(event)
            final[entity] = None if op is Operation.DELETE else {"id": entity, "name": f"v{v}"}
    deliveries = history + rng.sample(history, len(history) // 3)  # a third delivered twice
    rng.shuffle(deliveries)
    cuts = sorted(rng.sample(range(1, len(deliveries)), 8))
    batches = [deliveries[i:j] for i, j in itertools.pairwise([0, *cuts, len(deliveries)])]

    store = FakeReplica()
    a = applier(store, FakeStream(batches))
    a.start()
    wait_for("every delivery applied", lambda: a.stats.applied + a.stats.skipped == len(deliveries), timeout=10)
    a.stop()
    assert store.rows == {k: v for k, v in final.items() if v is not None}
    assert a.stats.applied < len(history)  # stale versions were skipped, not applied


def test_the_applier_reopens_a_broken_stream_and_the_redelivered_batch_is_skipped() -> None:
    store = FakeReplica()
    first = [ev("a", 1, Operation.CREATE), ev("a", 2)]
    broken = FakeStream([first], then_fail=True)  # applied, then the EventManager went away
    again = FakeStream([first, [ev("a", 3)]])  # the batch comes again (say its ack was lost)
    a = applier(store, broken, again)
    a.start()
    wait_for("the second stream's batches", lambda: len(again.acked) == 2, timeout=10)
    a.stop()
    assert store.rows["a"]["name"] == "v3"
    assert (a.stats.applied, a.stats.skipped) == (3, 2)
    assert broken.closed.is_set() and again.closed.is_set() and store.closed


def test_replica_table_refuses_names_it_would_have_to_quote_into_sql() -> None:
    with pytest.raises(ValueError, match="table"):
        ReplicaTable("customers", "customer", table="x; DROP TABLE y")
    with pytest.raises(ValueError, match="column"):
        ReplicaTable("customers", "customer", table="t", columns=("name`",))
    with pytest.raises(Exception, match="publisher"):
        ReplicaTable("Customers", "customer", table="t")


def test_replica_rows_carry_key_columns_version_and_payload() -> None:
    table = ReplicaTable("customers", "customer", table="t", columns=("name", "tags"), payload_column="doc")
    names, values = table.row("c-1", 7, {"name": "Ada", "tags": ["x"], "email": "a@b"})
    assert names == ["id", "name", "tags", "version", "doc"]
    assert values[:4] == ["c-1", "Ada", '["x"]', 7]
    assert '"email":"a@b"' in values[4]
    assert str(uuid.UUID(ev("a", 1).event_id))  # events carry UUID ids
