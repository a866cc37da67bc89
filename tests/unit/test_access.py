"""The edge's access rules (core.access) and the authorizer's answer to
Envoy (edge.authz.check), without Envoy: keys, roles, bound names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2

from gridmesh.common.errors import InvalidArgument, PermissionDenied, Unauthenticated
from gridmesh.core.access import (
    ALLOWED,
    KEY_ID_HEADER,
    METRICS_QUERY,
    PUBLIC_METHODS,
    ROLE_HEADER,
    TRACES_QUERY,
    KeyRecord,
    Principal,
    Role,
    check_bound,
    check_role,
    decide,
    digest,
    key_from_headers,
    new_key,
    parse_key,
)
from gridmesh.edge.authz import Keys, check
from gridmesh.edge.envoy import PUBLIC_STOREKEEPER, TRANSCODED_SERVICES
from gridmesh.v1 import eventmanager_pb2, scheduler_pb2, storekeeper_pb2

NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)


def test_a_new_key_parses_back_and_only_its_digest_is_stored():
    key_id, key_digest, key = new_key()
    assert key.startswith(f"gmk_{key_id}_")
    parsed_id, secret = parse_key(key)
    assert parsed_id == key_id and digest(secret) == key_digest and secret not in key_digest
    assert new_key()[2] != key
    with pytest.raises(Unauthenticated, match="malformed"):
        parse_key("gmk_short")


def test_every_public_rpc_of_the_protos_is_in_the_table_and_nothing_internal_is():
    public = {
        f"{s.full_name}/{m.name}" for s in (scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"],) for m in s.methods
    }
    public |= {
        f"gridmesh.v1.EventManager/{m.name}"
        for m in eventmanager_pb2.DESCRIPTOR.services_by_name["EventManager"].methods
    }
    public |= {f"gridmesh.v1.StoreKeeper/{m}" for m in PUBLIC_STOREKEEPER}
    public.add("gridmesh.v1.Enrollment/Join")  # gRPC only: a joining worker host's one call
    public |= {METRICS_QUERY, TRACES_QUERY}  # not RPCs: Prometheus's range queries, Jaeger's trace search
    assert set(PUBLIC_METHODS) == public
    assert "gridmesh.v1.StoreKeeper/StoreResults" not in PUBLIC_METHODS
    assert not any(m.startswith("gridmesh.v1.WorkQueue/") for m in PUBLIC_METHODS)
    services = {m.split("/")[0] for m in PUBLIC_METHODS if m not in (METRICS_QUERY, TRACES_QUERY)}
    assert set(TRANSCODED_SERVICES) == services - {"gridmesh.v1.Enrollment"}
    assert storekeeper_pb2.DESCRIPTOR.services_by_name["StoreKeeper"]  # (the table names its read RPCs)


@pytest.mark.parametrize(
    ("role", "may", "may_not"),
    [
        (Role.ADMIN, "gridmesh.v1.Scheduler/DrainNode", None),
        (Role.OPERATOR, "gridmesh.v1.Scheduler/DrainNode", "gridmesh.v1.Scheduler/SubmitTask"),
        (Role.SUBMITTER, "gridmesh.v1.Scheduler/CancelTask", "gridmesh.v1.Scheduler/ListWorkers"),
        (Role.VIEWER, "gridmesh.v1.StoreKeeper/GetResult", "gridmesh.v1.Scheduler/CancelTask"),
        (Role.PUBLISHER, "gridmesh.v1.EventManager/PublishBatch", "gridmesh.v1.EventManager/Consume"),
        (Role.SUBSCRIBER, "gridmesh.v1.EventManager/Consume", "gridmesh.v1.EventManager/Publish"),
        (Role.JOIN, "gridmesh.v1.Enrollment/Join", "gridmesh.v1.Scheduler/ListTasks"),
    ],
)
def test_each_role_may_call_what_the_table_says_and_no_more(role, may, may_not):
    principal = Principal("abc", role, "customers" if role.bound else "")
    decide(principal, "/" + may)
    if may_not is not None:
        with pytest.raises(PermissionDenied, match=f"has the role {role}; .*needs one of: admin"):
            decide(principal, "/" + may_not)


def test_viewer_is_read_only():
    writes = {"SubmitTask", "SubmitTasks", "CancelTask", "DrainNode", "Subscribe", "Unsubscribe", "Publish"}
    assert not {m.split("/")[1] for m in ALLOWED[Role.VIEWER]} & writes


def test_the_key_comes_from_a_bearer_header_or_x_api_key():
    assert key_from_headers("Bearer  k1 ", "") == "k1"
    assert key_from_headers("", "k2") == "k2"
    with pytest.raises(Unauthenticated, match="Bearer"):
        key_from_headers("Basic dXNlcg==", "")
    with pytest.raises(Unauthenticated, match="no credential"):
        key_from_headers("", "")


def test_a_bound_key_acts_only_as_its_name_and_unbound_roles_as_anyone():
    check_bound("publisher:customers", Role.PUBLISHER, "customers")
    with pytest.raises(PermissionDenied, match="acts as publisher 'customers', not 'orders'"):
        check_bound("publisher:customers", Role.PUBLISHER, "orders")
    check_bound("admin", Role.PUBLISHER, "orders")
    check_bound("", Role.SUBSCRIBER, "anyone")  # not through the edge: a process of the mesh


def test_keys_create_checks_the_role_and_its_name():
    assert check_role("publisher", "customers") == (Role.PUBLISHER, "customers")
    with pytest.raises(InvalidArgument, match="unknown role"):
        check_role("root", "")
    with pytest.raises(InvalidArgument, match="names the publisher"):
        check_role("publisher", "")
    with pytest.raises(InvalidArgument, match="only publisher and subscriber"):
        check_role("viewer", "customers")


def _keys(**changes: object) -> tuple[Keys, str]:
    key_id, key_digest, key = new_key()
    fields: dict[str, object] = {
        "key_id": key_id, "digest": key_digest, "role": Role.SUBMITTER, "name": "",
        "created_at": NOW, "expires_at": None, "revoked_at": None,
    }  # fmt: skip
    fields.update(changes)
    keys = Keys()
    keys.replace([KeyRecord(**fields)])  # type: ignore[arg-type]
    return keys, key


def _request(path: str, **headers: str) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    request.attributes.request.http.path = path
    request.attributes.request.http.headers.update(headers)
    return request


def test_an_allowed_call_goes_on_with_the_verified_role_and_without_the_key():
    keys, key = _keys()
    answer = check(keys, _request("/gridmesh.v1.Scheduler/SubmitTask", authorization=f"Bearer {key}"), NOW)
    assert answer.status.code == grpc.StatusCode.OK.value[0]
    headers = {h.header.key: h.header.value for h in answer.ok_response.headers}
    assert headers == {ROLE_HEADER: "submitter", KEY_ID_HEADER: parse_key(key)[0]}
    assert set(answer.ok_response.headers_to_remove) == {"authorization", "x-api-key"}


@pytest.mark.parametrize(
    ("changes", "path", "code", "http", "message"),
    [
        ({}, "/gridmesh.v1.Scheduler/ListWorkers", grpc.StatusCode.PERMISSION_DENIED, 403, "needs one of"),
        ({"revoked_at": NOW - timedelta(seconds=1)}, "/gridmesh.v1.Scheduler/GetTask",
         grpc.StatusCode.UNAUTHENTICATED, 401, "was revoked"),
        ({"expires_at": NOW}, "/gridmesh.v1.Scheduler/GetTask", grpc.StatusCode.UNAUTHENTICATED, 401, "expired"),
        ({"digest": digest("another secret")}, "/gridmesh.v1.Scheduler/GetTask",
         grpc.StatusCode.UNAUTHENTICATED, 401, "unknown API key"),
    ],
)  # fmt: skip
def test_a_refused_call_is_401_or_403_with_the_reason(changes, path, code, http, message):
    keys, key = _keys(**changes)
    answer = check(keys, _request(path, authorization=f"Bearer {key}"), NOW)
    assert answer.status.code == code.value[0] and message in answer.status.message
    assert answer.denied_response.status.code == http
    assert message in answer.denied_response.body


def test_a_join_token_may_only_join_and_no_other_key_may():
    join = Principal("abc", Role.JOIN)
    decide(join, "/gridmesh.v1.Enrollment/Join")
    for other in ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", "/gridmesh.demo.v1.X/Y"):
        with pytest.raises(PermissionDenied):
            decide(join, other)
    for role in (Role.ADMIN, Role.OPERATOR, Role.SUBMITTER):
        with pytest.raises(PermissionDenied, match="needs one of: join"):
            decide(Principal("abc", role), "/gridmesh.v1.Enrollment/Join")
    with pytest.raises(InvalidArgument, match="worker join-token"):
        check_role("join", "")
