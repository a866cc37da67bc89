"""Issue 6 "Faults": each test really kills or restarts something while
events flow, and ends by comparing the publisher's rows (CustomerService's
``customer`` table) with the replica (OrderService's ``customer_replica``):
they must be identical — ids, names, e-mails and versions.

Faults: kill -9 of the subscriber (OrderService, its applier) mid-stream;
kill -9 of the EventManager mid-batch; RabbitMQ restarted while events flow
(``rabbitmqctl stop_app`` / ``start_app``: every connection drops, durable
queues survive) and RabbitMQ dropping the EventManager's connection; the
outbox relay killed between publish and mark-sent; events delivered twice and
out of order.

The module runs its own mesh (no worker nodes) with the demo enabled; its
databases, queues and znodes are deleted at the end.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridmesh.clients import Operation, Outbox, new_event
from gridmesh.config import MeshConfig
from gridmesh.demo.v1 import customers_pb2
from tests.cleanup import close_rabbitmq_connections
from tests.e2e.replication_support import DemoMesh, demo_mesh, new_name, rabbitmq_stopped
from tests.helpers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
SETTLE_S = 60.0
"""Longest wait for the replica to catch up after a fault."""


@pytest.fixture(scope="module")
def fm(backing_services: MeshConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoMesh]:
    with demo_mesh(tmp_path_factory.mktemp("replication-faults")) as fixture:
        yield fixture


def outbox(fm: DemoMesh) -> Outbox:
    return Outbox(functools.partial(fm.connect, "customers"), publisher="customers")


def bulk_customers(fm: DemoMesh, count: int) -> str:
    """Commit ``count`` new customers in CustomerService's database the way
    the service does (row + outbox event in one transaction), in one go, so
    that a burst of events flows. Answers their id prefix."""
    prefix = new_name("bulk")
    box = outbox(fm)
    with box.transaction() as cur:
        for i in range(count):
            cid = f"{prefix}-{i}"
            version = box.claim_version(cur, "customer", cid)
            cur.execute(
                "INSERT INTO customer (id, name, email, version, created_at, updated_at) "
                "VALUES (%s, %s, %s, %s, NOW(6), NOW(6))",
                (cid, f"Bulk {i}", f"b{i}@example.com", version),
            )
            payload = {"id": cid, "name": f"Bulk {i}", "email": f"b{i}@example.com"}
            box.record(cur, "customer", cid, Operation.CREATE, payload, version=version)
    return prefix


def replicated(fm: DemoMesh, prefix: str) -> int:
    return int(fm.rows("orders", "SELECT COUNT(*) FROM customer_replica WHERE id LIKE %s", (f"{prefix}-%",))[0][0])


def update_some(fm: DemoMesh, prefix: str, count: int, name: str) -> None:
    stub = fm.customers()
    for i in range(count):
        stub.UpdateCustomer(customers_pb2.UpdateCustomerRequest(customer_id=f"{prefix}-{i}", name=name), timeout=10)


def assert_replica_identical(fm: DemoMesh) -> None:
    wait_for("the replica to equal the publisher's rows", fm.replica_matches_publisher, timeout=SETTLE_S, interval=0.2)
    assert outbox(fm).counts()["pending"] == 0


def test_kill_9_of_the_subscriber_mid_stream_and_a_restart_leave_its_replica_identical(fm: DemoMesh) -> None:
    prefix = bulk_customers(fm, 3000)
    wait_for("the applier to be mid-stream", lambda: replicated(fm, prefix) > 0, timeout=SETTLE_S, interval=0.01)
    fm.kill9("demo-orders")
    assert replicated(fm, prefix) < 3000, "the subscriber had already applied everything: not mid-stream"
    update_some(fm, prefix, 20, "changed while the subscriber was dead")
    fm.start("demo-orders")
    assert_replica_identical(fm)


def test_kill_9_of_the_eventmanager_mid_batch_publishers_retry_and_replicas_end_identical(fm: DemoMesh) -> None:
    prefix = bulk_customers(fm, 3000)
    wait_for("events to flow", lambda: replicated(fm, prefix) > 0, timeout=SETTLE_S, interval=0.01)
    fm.kill9("eventmanager")
    assert replicated(fm, prefix) < 3000, "everything was replicated already: not mid-batch"
    # CustomerService keeps taking changes: they wait in its outbox.
    update_some(fm, prefix, 20, "changed while the EventManager was dead")
    assert outbox(fm).counts()["pending"] > 0
    fm.start("eventmanager")
    assert_replica_identical(fm)


def test_rabbitmq_dropping_the_eventmanagers_connection_while_events_flow_loses_nothing(fm: DemoMesh) -> None:
    prefix = bulk_customers(fm, 3000)
    wait_for("events to flow", lambda: replicated(fm, prefix) > 0, timeout=SETTLE_S, interval=0.01)
    assert close_rabbitmq_connections(fm.config.prefixed("gridmesh-eventmanager", "-")) >= 1
    update_some(fm, prefix, 20, "changed around the broker's hiccup")
    assert_replica_identical(fm)


def test_rabbitmq_restarted_while_events_flow_loses_nothing(fm: DemoMesh) -> None:
    prefix = bulk_customers(fm, 10_000)  # stopping RabbitMQ takes a second or two: keep events flowing that long
    wait_for("events to flow", lambda: replicated(fm, prefix) > 0, timeout=SETTLE_S, interval=0.01)
    with rabbitmq_stopped(fm.config):
        assert replicated(fm, prefix) < 10_000, "everything was replicated already: not while events flow"
        # CustomerService keeps taking changes while the broker is down: they wait in its outbox.
        update_some(fm, prefix, 20, "changed while RabbitMQ was down")
    assert_replica_identical(fm)


def test_an_outbox_relay_killed_between_publish_and_mark_sent_publishes_again_and_replicas_end_identical(
    fm: DemoMesh,
) -> None:
    fm.kill9("demo-customers")  # its relay dies with it; the crashing one below takes the lock
    try:
        prefix = bulk_customers(fm, 600)
        relay = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.crashing_relay", "200"],
            cwd=ROOT,
            env=fm.env,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            assert relay.stdout is not None
            assert relay.stdout.readline().strip() == "published 200"
        finally:
            os.killpg(relay.pid, signal.SIGKILL)
            relay.wait(10)
        # Published and delivered, but never marked sent: all 600 are still pending.
        wait_for("the published batch to be applied", lambda: replicated(fm, prefix) == 200, timeout=SETTLE_S)
        assert outbox(fm).counts()["pending"] >= 600
    finally:
        fm.start("demo-customers")  # its relay publishes all 600 again: 200 duplicates
    assert_replica_identical(fm)
    assert replicated(fm, prefix) == 600


def test_events_delivered_twice_and_out_of_order_never_move_the_replica_backwards(fm: DemoMesh) -> None:
    prefix = bulk_customers(fm, 50)
    update_some(fm, prefix, 50, "second version")
    assert_replica_identical(fm)

    def processed() -> int:
        return int(fm.rows("orders", "SELECT COUNT(*) FROM gridmesh_processed_events")[0][0])

    before = processed()
    with contextlib.closing(fm.connect("customers")) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT event_id, entity_id, operation, version, payload FROM gridmesh_outbox "
            "WHERE entity_id LIKE %s ORDER BY seq DESC",
            (f"{prefix}-%",),
        )
        sent = cur.fetchall()
    again = [
        new_event("customers", "customer", entity_id, op, version, json.loads(payload), event_id=event_id)
        for event_id, entity_id, op, version, payload in sent
    ]  # the same events again, newest first
    stale = [
        new_event(
            "customers", "customer", f"{prefix}-{i}", Operation.UPDATE, 1, {"id": f"{prefix}-{i}", "name": "STALE"}
        )
        for i in range(50)
    ]  # new ids, old versions
    with fm.events() as events:
        results = events.publish_batch(again + stale)
    assert all(r.code == 0 and list(r.routed_to) == ["orders"] for r in results)
    wait_for("the stale events to be processed", lambda: processed() == before + len(stale), timeout=SETTLE_S)
    assert fm.replica_matches_publisher()
    assert fm.rows("orders", "SELECT COUNT(*) FROM customer_replica WHERE name = 'STALE'") == [(0,)]
