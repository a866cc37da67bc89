"""SPEC §3 "Event-driven replication" through the edge of a real mesh:
subscribing and publishing as HTTP/JSON (the curl a new user would type),
the bad input of issue 6 refused with 4xx and changing nothing, the demo of
the original scenario (a customer created over HTTP/JSON appears in
OrderService's database, orders come back to CustomerService), and
``gridmesh events``.

The module runs its own mesh (no worker nodes) with the demo enabled, under
a fresh namespace whose databases, queues and znodes it deletes at the end.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from gridmesh.cli.main import main
from gridmesh.config import MeshConfig
from tests.e2e.replication_support import DemoMesh, demo_mesh, new_name
from tests.helpers import http_json, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def dm(backing_services: MeshConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoMesh]:
    with demo_mesh(tmp_path_factory.mktemp("replication")) as fixture:
        yield fixture


def subscriber(dm: DemoMesh) -> str:
    name = new_name("sub")
    dm.test_subscribers.add(name)
    return name


def event_json(publisher: str, /, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "publisher": publisher,
        "entity_type": "customer",
        "entity_id": "c-1",
        "operation": "CREATE",
        "version": "1",
        "payload": {"id": "c-1", "name": "Ada"},
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


# -- the EventManager as HTTP/JSON ------------------------------------------------------


def test_subscribe_publish_and_list_with_http_json_through_envoy(dm: DemoMesh) -> None:
    sub, publisher = subscriber(dm), new_name("pub")
    key = {"subscriber": sub, "publisher": publisher, "entity_type": "customer"}
    status, created = http_json(dm.edge, "POST", "/v1/subscriptions", key)
    assert status == 200, created
    assert created["queue"] == dm.config.prefixed(f"gridmesh.replica.{sub}")

    status, published = http_json(dm.edge, "POST", "/v1/events", event_json(publisher))
    assert status == 200, published
    assert published["routed_to"] == [sub]

    status, listed = http_json(dm.edge, "GET", f"/v1/subscriptions?publisher={publisher}")
    assert status == 200 and [s["subscriber"] for s in listed["subscriptions"]] == [sub]
    status, stats = http_json(dm.edge, "GET", f"/v1/subscribers/{sub}/queue")
    assert status == 200 and int(stats["messages"]) == 1

    # ConsumeBatches is gRPC only, and passes through the same edge.
    with dm.events() as events, events.consume(sub) as stream:
        (batch,) = [next(stream.batches())]
        assert [d.event.entity_id for d in batch] == ["c-1"]
        stream.ack(batch[-1].delivery_id, multiple=True)
    wait_for(
        "the queue to drain",
        lambda: http_json(dm.edge, "GET", f"/v1/subscribers/{sub}/queue")[1]["messages"] in ("0", 0),
    )


BAD_EVENTS: list[tuple[str, dict[str, Any], str]] = [
    ("publisher not a name", {"publisher": "Customers!"}, "publisher"),
    ("entity_type not a name", {"entity_type": "cust.omer"}, "entity_type"),
    ("missing event_id", {"event_id": None}, "event_id"),
    ("missing entity_id", {"entity_id": None}, "entity_id"),
    ("operation unspecified", {"operation": "OPERATION_UNSPECIFIED"}, "operation"),
    ("version zero", {"version": "0"}, "version"),
    ("version negative", {"version": "-3"}, "version"),
    ("payload on DELETE", {"operation": "DELETE"}, "payload"),
    ("oversized payload", {"payload": {"blob": "x" * 300_000}}, "payload"),
]


def test_bad_events_are_refused_with_400_naming_the_field_and_publish_nothing(dm: DemoMesh) -> None:
    sub, publisher = subscriber(dm), new_name("pub")
    assert (
        http_json(
            dm.edge, "POST", "/v1/subscriptions", {"subscriber": sub, "publisher": publisher, "entity_type": "customer"}
        )[0]
        == 200
    )
    for what, change, field in BAD_EVENTS:
        status, body = http_json(dm.edge, "POST", "/v1/events", event_json(publisher, **change))
        assert status == 400, (what, status, body)
        assert field in json.dumps(body), (what, body)
        status, batch = http_json(dm.edge, "POST", "/v1/events:batch", {"events": [event_json(publisher, **change)]})
        (result,) = batch["results"]  # a batch refuses the bad event alone
        assert status == 200 and result["code"] == 3 and field in result["error"], what
    status, stats = http_json(dm.edge, "GET", f"/v1/subscribers/{sub}/queue")
    assert status == 200 and int(stats["messages"]) == 0 and int(stats["dead_letters"]) == 0


def test_bad_subscriptions_are_refused_with_4xx_and_a_duplicate_subscribe_is_idempotent(dm: DemoMesh) -> None:
    sub, publisher = subscriber(dm), new_name("pub")
    good = {"subscriber": sub, "publisher": publisher, "entity_type": "customer"}
    for field, value in [
        ("subscriber", "Orders"),
        ("publisher", "9lives"),
        ("entity_type", "c" * 64),
        ("subscriber", ""),
    ]:
        status, body = http_json(dm.edge, "POST", "/v1/subscriptions", {**good, field: value})
        assert status == 400 and field in json.dumps(body), (field, value, status, body)
    status, body = http_json(dm.edge, "DELETE", f"/v1/subscriptions/{sub}/{publisher}/customer")
    assert status == 404 and "no subscription" in json.dumps(body), body
    status, _ = http_json(dm.edge, "GET", f"/v1/subscribers/{sub}/queue")
    assert status == 404  # nothing was created

    first = http_json(dm.edge, "POST", "/v1/subscriptions", good)
    again = http_json(dm.edge, "POST", "/v1/subscriptions", good)
    assert first[0] == again[0] == 200 and first[1] == again[1]
    listed = http_json(dm.edge, "GET", f"/v1/subscriptions?subscriber={sub}")[1]["subscriptions"]
    assert len(listed) == 1
    assert http_json(dm.edge, "DELETE", f"/v1/subscriptions/{sub}/{publisher}/customer")[0] == 200


# -- the demo -----------------------------------------------------------------------------


def test_a_customer_created_over_http_json_appears_in_order_services_database(dm: DemoMesh) -> None:
    """Given the demo, when a customer is created through Envoy as HTTP/JSON,
    then OrderService's own database holds it; updates and deletes follow;
    and the orders OrderService takes come back to CustomerService."""
    cid = new_name("ada")
    status, created = http_json(
        dm.edge, "POST", "/demo/v1/customers", {"customer_id": cid, "name": "Ada", "email": "ada@example.com"}
    )
    assert status == 200, created
    assert (created["customer_id"], created["version"]) == (cid, "1")

    replica = "SELECT id, name, email, version FROM customer_replica WHERE id = %s"
    wait_for(
        "OrderService's replica", lambda: dm.rows("orders", replica, (cid,)) == [(cid, "Ada", "ada@example.com", 1)]
    )
    status, seen = http_json(dm.edge, "GET", f"/demo/v1/replicas/customers/{cid}")
    assert status == 200 and seen["name"] == "Ada"

    status, updated = http_json(dm.edge, "PATCH", f"/demo/v1/customers/{cid}", {"name": "Ada Lovelace"})
    assert status == 200 and updated["version"] == "2" and updated["email"] == "ada@example.com"
    wait_for("the update", lambda: dm.rows("orders", replica, (cid,)) == [(cid, "Ada Lovelace", "ada@example.com", 2)])

    status, order = http_json(
        dm.edge,
        "POST",
        "/demo/v1/orders",
        {"customer_id": cid, "item": "Analytical Engine", "quantity": 1, "amount_cents": 1500},
    )
    assert status == 200, order
    assert order["customer_name"] == "Ada Lovelace" and order["status"] == "PLACED"

    def customer() -> dict[str, Any]:
        return dict(http_json(dm.edge, "GET", f"/demo/v1/customers/{cid}")[1])

    wait_for("the order to reach CustomerService", lambda: customer()["order_count"] == "1")
    assert customer()["order_total_cents"] == "1500"
    status, cancelled = http_json(dm.edge, "POST", f"/demo/v1/orders/{order['order_id']}:cancel", {})
    assert status == 200 and cancelled["status"] == "CANCELLED"
    wait_for("the cancellation to reach CustomerService", lambda: customer()["order_count"] == "0")
    status, listed = http_json(dm.edge, "GET", f"/demo/v1/orders?customer_id={cid}")
    assert status == 200 and [o["order_id"] for o in listed["orders"]] == [order["order_id"]]

    assert http_json(dm.edge, "DELETE", f"/demo/v1/customers/{cid}")[0] == 200
    wait_for("the delete", lambda: dm.rows("orders", replica, (cid,)) == [])
    assert http_json(dm.edge, "GET", f"/demo/v1/replicas/customers/{cid}")[0] == 404
    assert dm.replica_matches_publisher()


def test_the_demo_refuses_bad_requests_with_4xx(dm: DemoMesh) -> None:
    cases = [
        ("POST", "/demo/v1/customers", {"name": "", "email": "a@b.c"}, 400, "name"),
        ("POST", "/demo/v1/customers", {"name": "A", "email": "not-an-email"}, 400, "email"),
        ("POST", "/demo/v1/customers", {"customer_id": "a b", "name": "A", "email": "a@b.c"}, 400, "customer_id"),
        ("GET", f"/demo/v1/customers/{new_name('nobody')}", None, 404, "no customer"),
        ("POST", "/demo/v1/orders", {"customer_id": new_name("nobody"), "item": "x", "quantity": 1}, 400, "not known"),
        ("POST", "/demo/v1/orders", {"customer_id": "c", "item": "x", "quantity": 0}, 400, "quantity"),
        ("GET", "/demo/v1/orders/42", None, 400, "UUID"),
        ("GET", f"/demo/v1/orders/{uuid.uuid4()}", None, 404, "no order"),
    ]
    for method, path, body, code, mention in cases:
        status, answer = http_json(dm.edge, method, path, body)
        assert status == code and mention in json.dumps(answer), (method, path, status, answer)
    status, _ = http_json(dm.edge, "POST", "/demo/v1/customers", {"customer_id": "dup", "name": "A", "email": "a@b.c"})
    assert status == 200
    status, answer = http_json(
        dm.edge, "POST", "/demo/v1/customers", {"customer_id": "dup", "name": "B", "email": "b@b.c"}
    )
    assert status == 409 and "exists" in json.dumps(answer)


# -- gridmesh events --------------------------------------------------------------------


def gridmesh(dm: DemoMesh, capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``gridmesh`` command line (in this process) against this module's mesh."""
    with pytest.raises(SystemExit) as ended:
        main(list(args), env=dm.env)
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, int(ended.value.code or 0), out.out, out.err)


def test_gridmesh_events_subscribes_publishes_lists_and_shows_dead_letters(
    dm: DemoMesh, capsys: pytest.CaptureFixture[str]
) -> None:
    sub, publisher = subscriber(dm), new_name("pub")
    done = gridmesh(dm, capsys, "events", "subscribe", sub, publisher, "customer")
    assert done.returncode == 0 and f"{sub} " in done.stdout, done.stderr
    payload = '{"id": "c-9", "name": "Grace"}'
    create = ["publish", publisher, "customer", "c-9", "--operation", "create", "--version", "1", "--payload", payload]
    done = gridmesh(dm, capsys, "events", *create, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["routed_to"] == [sub]
    done = gridmesh(dm, capsys, "events", "list", "--subscriber", sub)
    assert done.returncode == 0 and publisher in done.stdout
    done = gridmesh(dm, capsys, "events", "stats", sub, "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["messages"] in ("1", 1)

    # A consumer that refuses the event dead-letters it; `events dlq` shows it.
    with dm.events() as events, events.consume(sub) as stream:
        delivery = next(iter(stream))
        stream.nack(delivery.delivery_id, requeue=False)
        wait_for("the dead letter", lambda: events.queue_stats(sub).dead_letters == 1)
    done = gridmesh(dm, capsys, "events", "dlq", sub)
    assert done.returncode == 0 and "c-9" in done.stdout and "Grace" in done.stdout

    done = gridmesh(
        dm, capsys, "events", "publish", publisher, "customer", "c-9", "--operation", "update", "--version", "0"
    )
    assert done.returncode == 2 and "INVALID_ARGUMENT" in done.stderr and "version" in done.stderr
    done = gridmesh(dm, capsys, "events", "unsubscribe", "nobody", publisher, "customer")
    assert done.returncode == 1 and "NOT_FOUND" in done.stderr
    assert gridmesh(dm, capsys, "events", "unsubscribe", sub, publisher, "customer").returncode == 0
