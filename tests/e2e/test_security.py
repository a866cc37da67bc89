"""Authentication and roles at the edge (issue 12), against the real mesh:
Envoy's ext_authz asking gridmesh's authorizer, keys in MariaDB; and mutual
TLS between the mesh's processes, with the certificates `gridmesh up` made.

Every routed public RPC is called with no credential, with a key whose role
may not call it, and with one whose role may: 401 / 403 / the service's
answer over HTTP, UNAUTHENTICATED / PERMISSION_DENIED / OK over gRPC, and a
refused call changes nothing."""

from __future__ import annotations

import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from http.client import HTTPException
from typing import Any

import grpc
import pytest

from gridmesh.adapters import pki
from gridmesh.config import MeshConfig
from gridmesh.core.access import PeerRole
from gridmesh.edge.keys import KeyStore
from gridmesh.grpc_support.probe import grpc_health, to_component
from gridmesh.grpc_support.tls import MeshTls
from gridmesh.v1 import (
    common_pb2,
    eventmanager_pb2,
    eventmanager_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
    storekeeper_pb2,
    storekeeper_pb2_grpc,
)
from tests.helpers import ANONYMOUS, edge_channel, http, http_json, key_metadata, mesh_channel, wait_for

ROLES = ("admin", "operator", "submitter", "viewer", "publisher:customers", "subscriber:audit")
ANY_KEY = "gmk_000000000000_" + "A" * 43


@pytest.fixture(scope="module")
def keys(mesh_config: MeshConfig, edge: str) -> dict[str, str]:
    """A key of each role, made as `gridmesh keys create` makes them, once
    the edge knows them (it reads the key table every auth.refresh_s)."""
    store = KeyStore.open(mesh_config)
    try:
        made = {}
        for role in ROLES:
            kind, _, name = role.partition(":")
            made[role] = store.create(kind, name, note="tests/e2e/test_security.py")[1]
    finally:
        store.close()
    wait_for(
        "the new keys to reach the edge",
        lambda: all(http_json(edge, "GET", "/v1/task-types", key=key)[0] != 401 for key in made.values()),
    )
    return made


@pytest.fixture(scope="module", autouse=True)
def audit_subscription(edge: str) -> None:
    """The subscriber ``audit`` exists (its queue can be read)."""
    body = {"subscriber": "audit", "publisher": "customers", "entity_type": "customer"}
    status, answer = http_json(edge, "POST", "/v1/subscriptions", body)
    assert status == 200, answer


@pytest.fixture(scope="module")
def done_task(edge: str) -> str:
    """A task that succeeded, with its result stored."""
    status, task = http_json(edge, "POST", "/v1/tasks", {"task_type": "noop", "result_dir": "security"})
    assert status == 200, task
    wait_for(
        "the task to succeed", lambda: http_json(edge, "GET", f"/v1/tasks/{task['task_id']}")[1]["state"] == "SUCCEEDED"
    )
    return str(task["task_id"])


def _event(publisher: str) -> dict[str, object]:
    return {
        "event_id": str(uuid.uuid4()),
        "publisher": publisher,
        "entity_type": "customer",
        "entity_id": "c-1",
        "operation": "CREATE",
        "version": 1,
        "payload": {"name": "Ada"},
    }


# (what, HTTP method, path template, body, a role that may, a role that may not)
CALLS = [
    ("SubmitTask", "POST", "/v1/tasks", {"task_type": "noop", "result_dir": "security"}, "submitter", "viewer"),
    ("SubmitTasks", "POST", "/v1/tasks:batch", {"requests": [{"task_type": "noop", "result_dir": "security"}]},
     "submitter", "operator"),
    ("GetTask", "GET", "/v1/tasks/{task}", None, "viewer", "publisher:customers"),
    ("ListTasks", "GET", "/v1/tasks?page_size=1", None, "submitter", "operator"),
    ("WatchTask", "GET", "/v1/tasks/{task}:watch", None, "viewer", "subscriber:audit"),
    ("ListTaskTypes", "GET", "/v1/task-types", None, "operator", "publisher:customers"),
    ("ListWorkers", "GET", "/v1/workers", None, "operator", "submitter"),
    ("GetStats", "GET", "/v1/stats", None, "viewer", "submitter"),
    ("GetResult", "GET", "/v1/results/{task}", None, "submitter", "operator"),
    ("GetResultInfo", "GET", "/v1/results/{task}/info", None, "viewer", "publisher:customers"),
    ("ListResults", "GET", "/v1/results?page_size=1", None, "viewer", "subscriber:audit"),
    ("Subscribe", "POST", "/v1/subscriptions",
     {"subscriber": "audit", "publisher": "customers", "entity_type": "customer"}, "subscriber:audit", "viewer"),
    ("ListSubscriptions", "GET", "/v1/subscriptions", None, "viewer", "publisher:customers"),
    ("Publish", "POST", "/v1/events", "event", "publisher:customers", "submitter"),
    ("PublishBatch", "POST", "/v1/events:batch", "events", "publisher:customers", "subscriber:audit"),
    ("GetQueueStats", "GET", "/v1/subscribers/audit/queue", None, "subscriber:audit", "submitter"),
    ("ListDeadLetters", "GET", "/v1/subscribers/audit/dead-letters", None, "operator", "publisher:customers"),
    ("CancelTask", "POST", "/v1/tasks/{task}:cancel", {}, "submitter", "viewer"),
    ("RerunTask", "POST", "/v1/tasks/{task}:rerun", {}, "submitter", "operator"),
    ("RerunTasks", "POST", "/v1/tasks:rerun", {"dry_run": True}, "submitter", "viewer"),
    ("CreateSchedule", "POST", "/v1/schedules",
     {"cron": "0 0 1 1 *", "task": {"task_type": "noop", "result_dir": "security"}}, "submitter", "viewer"),
    ("ListSchedules", "GET", "/v1/schedules", None, "viewer", "publisher:customers"),
    ("DrainNode", "POST", "/v1/workers/no-such-node:drain", {}, "operator", "viewer"),
]  # fmt: skip


def _body(body: object) -> dict[str, object] | None:
    if body == "event":
        return _event("customers")
    if body == "events":
        return {"events": [_event("customers")]}
    return body  # type: ignore[return-value]


def _state(edge: str) -> tuple[object, ...]:
    """What a refused call must not change: the newest task, the subscriptions, the audit queue."""
    tasks = http_json(edge, "GET", "/v1/tasks?page_size=1")[1]["tasks"]
    subscriptions = http_json(edge, "GET", "/v1/subscriptions")[1].get("subscriptions", [])
    return tuple(t["task_id"] for t in tasks), len(subscriptions)


@pytest.mark.parametrize(("what", "method", "path", "body", "right", "wrong"), CALLS, ids=[c[0] for c in CALLS])
def test_every_public_rpc_needs_a_key_whose_role_may_call_it(
    edge, keys, done_task, what, method, path, body, right, wrong
):
    path = path.format(task=done_task)
    before = _state(edge)
    status, error = http_json(edge, method, path, _body(body), key=ANONYMOUS)
    assert status == 401 and error["code"] == 16, (what, status, error)  # UNAUTHENTICATED
    assert "no credential" in error["message"], error
    status, error = http_json(edge, method, path, _body(body), key=keys[wrong])
    assert status == 403 and error["code"] == 7, (what, status, error)  # PERMISSION_DENIED
    assert what in error["message"] and f"has the role {wrong.split(':')[0]}" in error["message"], error
    assert _state(edge) == before, f"a refused {what} changed something"

    if what == "WatchTask":  # a stream: its first notice is the task's current state
        status, raw = http(edge, method, path, key=keys[right])
        assert status == 200 and b"SUCCEEDED" in raw, raw[:300]
        return
    status, answer = http_json(edge, method, path, _body(body), key=keys[right])
    if what == "DrainNode":  # reached the Scheduler, which knows no such node
        assert status == 404 and "no worker 'no-such-node'" in answer["message"], answer
    elif what == "CancelTask":  # reached the Scheduler: the task is finished
        assert status == 400 and "already SUCCEEDED" in answer["message"], answer
    elif what == "RerunTask":  # reached the Scheduler: the task succeeded
        assert status == 400 and "only FAILED or CANCELLED" in answer["message"], answer
    else:
        assert status == 200, (what, status, answer)


def test_admin_may_call_everything_and_a_malformed_or_unknown_key_is_401(edge, keys):
    assert http_json(edge, "GET", "/v1/workers", key=keys["admin"])[0] == 200
    status, error = http_json(edge, "GET", "/v1/workers", key="not-a-key")
    assert status == 401 and "malformed" in error["message"], error
    status, error = http_json(edge, "GET", "/v1/workers", key=ANY_KEY)
    assert status == 401 and "unknown API key 000000000000" in error["message"], error


def test_over_grpc_no_key_is_unauthenticated_a_wrong_role_permission_denied(edge, keys):
    request = scheduler_pb2.SubmitTaskRequest(task_type="noop", result_dir="security")
    with edge_channel(edge) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        for key, code in (
            (ANONYMOUS, grpc.StatusCode.UNAUTHENTICATED),
            (keys["viewer"], grpc.StatusCode.PERMISSION_DENIED),
        ):
            with pytest.raises(grpc.RpcError) as info:
                stub.SubmitTask(request, timeout=10, metadata=key_metadata(key))
            assert info.value.code() == code, info.value.details()
        assert "SubmitTask needs one of: admin, submitter" in (info.value.details() or "")
        task = stub.SubmitTask(request, timeout=10, metadata=key_metadata(keys["submitter"]))
        assert task.state == common_pb2.QUEUED
        workers = stub.ListWorkers(
            scheduler_pb2.ListWorkersRequest(), timeout=10, metadata=key_metadata(keys["operator"])
        )
        assert workers.workers


def test_a_publisher_key_publishes_only_as_its_publisher_whatever_headers_it_sends(edge, keys):
    status, error = http_json(edge, "POST", "/v1/events", _event("orders"), key=keys["publisher:customers"])
    assert status == 403 and "acts as publisher 'customers', not 'orders'" in error["message"], error
    status, error = http_json(
        edge,
        "POST",
        "/v1/events:batch",
        {"events": [_event("customers"), _event("orders")]},
        key=keys["publisher:customers"],
    )
    assert status == 403, error  # one event as another publisher refuses the whole batch
    # The role the services read is the edge's: a client cannot claim one.
    with edge_channel(edge) as channel:
        stub = eventmanager_pb2_grpc.EventManagerStub(channel)
        event = common_pb2.EntityEvent(
            event_id=str(uuid.uuid4()), publisher="orders", entity_type="order", entity_id="o-1",
            operation=common_pb2.CREATE, version=1,
        )  # fmt: skip
        forged = (*key_metadata(keys["publisher:customers"]), ("x-gridmesh-role", "admin"))
        with pytest.raises(grpc.RpcError) as info:
            stub.Publish(event, timeout=10, metadata=forged)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, info.value.details()


def test_a_subscriber_key_consumes_only_its_own_queue(edge, keys):
    status, error = http_json(edge, "GET", "/v1/subscribers/billing/queue", key=keys["subscriber:audit"])
    assert status == 403 and "acts as subscriber 'audit', not 'billing'" in error["message"], error
    with edge_channel(edge) as channel:
        stub = eventmanager_pb2_grpc.EventManagerStub(channel)
        start = eventmanager_pb2.ConsumeRequest(start=eventmanager_pb2.ConsumeStart(subscriber="billing"))
        call = stub.Consume(iter([start]), timeout=10, metadata=key_metadata(keys["subscriber:audit"]))
        with pytest.raises(grpc.RpcError) as info:
            next(call)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, info.value.details()


def test_a_revoked_key_is_refused_within_seconds_and_an_expired_one_too(edge, mesh_config):
    store = KeyStore.open(mesh_config)
    try:
        record, key = store.create("viewer", note="to revoke")
        short, short_key = store.create("viewer", expires_at=datetime.now(UTC) + timedelta(seconds=2))
        assert wait_for("the new key to work", lambda: http_json(edge, "GET", "/v1/workers", key=key)[0] == 200)
        store.revoke(record.key_id)
    finally:
        store.close()

    def refusal(key: str) -> dict[str, Any] | None:
        status, answer = http_json(edge, "GET", "/v1/workers", key=key)
        return answer if status == 401 else None

    error = wait_for("the revocation to reach the edge", lambda: refusal(key), timeout=10)
    assert f"the API key {record.key_id} was revoked" in error["message"], error
    error = wait_for("the short key to expire", lambda: refusal(short_key), timeout=10)
    assert f"the API key {short.key_id} expired" in error["message"], error


def test_health_needs_no_key_and_internal_rpcs_stay_unrouted_for_any_key(edge, keys):
    with edge_channel(edge) as channel:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        call = channel.unary_unary(
            "/gridmesh.v1.WorkQueue/Heartbeat", request_serializer=bytes, response_deserializer=bytes
        )
        with pytest.raises(grpc.RpcError) as info:
            call(b"", timeout=10, metadata=key_metadata(keys["admin"]))
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


# -- mutual TLS inside the mesh ------------------------------------------------------------------


def _internal_ports(config: MeshConfig) -> dict[str, tuple[str, PeerRole]]:
    """Every gRPC port of the mesh's own processes, and the role its certificate names."""
    return {
        "scheduler": (f"{config.scheduler.host}:{config.scheduler.port}", PeerRole.SCHEDULER),
        "storekeeper": (f"{config.storekeeper.host}:{config.storekeeper.port}", PeerRole.STOREKEEPER),
        "eventmanager": (f"{config.eventmanager.host}:{config.eventmanager.port}", PeerRole.EVENTMANAGER),
        "worker": (f"{config.worker.host}:{config.worker.base_port}", PeerRole.WORKER),
        "authz": (f"{config.auth.host}:{config.auth.port}", PeerRole.AUTHZ),
    }


def test_every_internal_port_refuses_plaintext_and_a_foreign_ca_at_the_handshake(mesh_config, tmp_path):
    stranger = tmp_path / "stranger-ca"
    pki.ensure(stranger, list(PeerRole))  # the same role names, signed by another CA
    foreign = MeshTls.from_dir(stranger, PeerRole.ADMIN)
    own = MeshTls.load(mesh_config, PeerRole.ADMIN)
    answers = {}
    for name, (address, peer) in _internal_ports(mesh_config).items():
        answers[name] = (
            grpc_health(address),  # plaintext
            grpc_health(address, connect=to_component(foreign, peer)),
            grpc_health(address, connect=to_component(own, peer)),
        )
    # UNREACHABLE: the channel never got past the handshake; the mesh's own admin certificate is answered.
    assert answers == {name: ("UNREACHABLE", "UNREACHABLE", "SERVING") for name in answers}


def test_a_worker_certificate_cannot_call_client_rpcs_and_changes_nothing(mesh_config, edge):
    before = _state(edge)
    address, _ = _internal_ports(mesh_config)["scheduler"]
    with mesh_channel(mesh_config, address, PeerRole.SCHEDULER, own=PeerRole.WORKER) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.SubmitTask(scheduler_pb2.SubmitTaskRequest(task_type="noop", result_dir="forged"), timeout=10)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "worker" in (info.value.details() or "") and "edge" in (info.value.details() or "")
    # …nor write a result, which only a worker may, as the edge:
    sk_address, _ = _internal_ports(mesh_config)["storekeeper"]
    with mesh_channel(mesh_config, sk_address, PeerRole.STOREKEEPER, own=PeerRole.EDGE) as channel:
        request = storekeeper_pb2.StoreResultRequest(task_id=str(uuid.uuid4()), result_dir="forged", content=b"x")
        with pytest.raises(grpc.RpcError) as info:
            storekeeper_pb2_grpc.StoreKeeperStub(channel).StoreResult(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _state(edge) == before


def test_a_worker_certificate_cannot_reach_the_eventmanager_whatever_role_header_it_sends(mesh_config):
    """The role header counts only from the edge's certificate."""
    address, _ = _internal_ports(mesh_config)["eventmanager"]
    with mesh_channel(mesh_config, address, PeerRole.EVENTMANAGER, own=PeerRole.WORKER) as channel:
        stub = eventmanager_pb2_grpc.EventManagerStub(channel)
        forged = (("x-gridmesh-role", "admin"),)
        with pytest.raises(grpc.RpcError) as info:
            stub.ListSubscriptions(eventmanager_pb2.ListSubscriptionsRequest(), timeout=10, metadata=forged)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_edge_serves_only_tls_and_its_certificate_is_the_meshs(edge):
    status, _ = http_json(edge, "GET", "/v1/task-types")  # https, checked against the mesh's CA
    assert status == 200
    with pytest.raises((OSError, HTTPException)):  # plain HTTP on the TLS port: no HTTP answer
        urllib.request.urlopen(f"http://{edge}/v1/task-types", timeout=10)
    with grpc.insecure_channel(edge) as channel, pytest.raises(grpc.RpcError) as info:
        scheduler_pb2_grpc.SchedulerStub(channel).ListTaskTypes(
            scheduler_pb2.ListTaskTypesRequest(), timeout=10, metadata=key_metadata()
        )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
