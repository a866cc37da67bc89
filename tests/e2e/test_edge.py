"""Issue 3 / SPEC §2: the API through Envoy as gRPC (grpcurl) and as
HTTP/JSON (curl), with gRPC statuses mapped to HTTP codes."""

from __future__ import annotations

import json
import subprocess
import uuid

import grpc
import pytest

from gridmesh.cli import mesh, procs
from gridmesh.v1 import eventmanager_pb2, eventmanager_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from tests.helpers import admin_key, edge_ca_file, edge_channel, grpcurl, http, http_json, key_metadata

BUILTINS = {"noop", "echo", "sleep", "burn", "word_count", "primes"}


def test_task_types_are_listed_over_http_json_with_their_schemas(edge):
    status, body = http(edge, "GET", "/v1/task-types")
    assert status == 200
    types = {t["name"]: t for t in json.loads(body)["task_types"]}
    assert set(types) >= BUILTINS
    assert types["sleep"]["params_schema"]["required"] == ["ms"]
    assert types["primes"]["description"]


def test_grpcurl_lists_through_envoy_exactly_the_services_it_routes(edge):
    result = grpcurl(edge, "list")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {
        "gridmesh.v1.Scheduler",
        "gridmesh.v1.StoreKeeper",
        "gridmesh.v1.EventManager",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }  # not the worker protocol (WorkQueue) nor a node's Worker service


def test_a_body_over_the_edge_limit_is_413_naming_the_limit_and_queues_nothing(edge, tmp_path):
    _, before = http_json(edge, "GET", "/v1/tasks?page_size=1")
    body = tmp_path / "huge.json"
    body.write_text(json.dumps({"task_type": "echo", "params": {"blob": "x" * 20_000_000}, "result_dir": "big"}))
    # curl, as a user would: Envoy may answer before it has read the whole
    # body. Over HTTP/1.1: Debian 12's curl (7.88) takes the RST_STREAM that
    # follows an early HTTP/2 answer for an error and drops the answer.
    done = subprocess.run(
        ["curl", "-sS", "--http1.1", "--cacert", edge_ca_file(), "-XPOST", f"https://{edge}/v1/tasks",
         "-H", "Content-Type: application/json",
         "-H", f"Authorization: Bearer {admin_key()}",
         "--data-binary", f"@{body}", "-w", "\n%{http_code}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    answer, _, code = done.stdout.rpartition("\n")
    assert code == "413", done
    error = json.loads(answer)
    assert error["code"] == 8 and "limit of 4194304 bytes" in error["message"], error
    _, after = http_json(edge, "GET", "/v1/tasks?page_size=1")
    assert after["tasks"] == before["tasks"]


def test_a_grpc_message_over_the_limit_is_resource_exhausted_naming_the_limit(edge):
    request = scheduler_pb2.SubmitTaskRequest(task_type="echo", result_dir="big")
    request.params.update({"blob": "x" * 20_000_000})
    options = [("grpc.max_send_message_length", 64 * 2**20)]
    with edge_channel(edge, options=options) as channel, pytest.raises(grpc.RpcError) as info:
        scheduler_pb2_grpc.SchedulerStub(channel).SubmitTask(request, timeout=30, metadata=key_metadata())
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "4194304" in (info.value.details() or ""), info.value.details()


INTERNAL_RPCS = [
    "/gridmesh.v1.WorkQueue/RegisterWorker",
    "/gridmesh.v1.WorkQueue/Heartbeat",
    "/gridmesh.v1.WorkQueue/ReportTask",
    "/gridmesh.v1.WorkQueue/DeregisterWorker",
    "/gridmesh.v1.StoreKeeper/StoreResult",
    "/gridmesh.v1.Worker/DrainWorker",
]


@pytest.mark.parametrize("method", INTERNAL_RPCS)
def test_an_internal_rpc_through_the_edge_is_unimplemented_over_grpc_and_404_over_http(edge, method):
    with edge_channel(edge) as channel:
        call = channel.unary_unary(method, request_serializer=bytes, response_deserializer=bytes)
        with pytest.raises(grpc.RpcError) as info:
            call(b"", timeout=10)  # an empty message: every field at its default (e.g. no worker id)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED, info.value.details()
    assert "not served at the edge" in (info.value.details() or "")
    status, body = http_json(edge, "POST", method, {})
    assert status == 404 and body["code"] == 12, body


@pytest.mark.parametrize("method", ["/gridmesh.v1.WorkQueue/PullTasks", "/gridmesh.v1.StoreKeeper/StoreResults"])
def test_the_internal_streams_through_the_edge_are_unimplemented(edge, method):
    with edge_channel(edge) as channel:
        call = channel.stream_stream(method, request_serializer=bytes, response_deserializer=bytes)
        with pytest.raises(grpc.RpcError) as info:
            list(call(iter([b""]), timeout=10))
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED, info.value.details()


def test_the_public_storekeeper_rpcs_are_still_routed(edge):
    status, page = http_json(edge, "GET", "/v1/results?page_size=1")
    assert status == 200 and "results" in page, page


def test_the_result_of_a_task_that_does_not_exist_is_404(edge):
    task = str(uuid.uuid4())  # the StoreKeeper has no entry, and the Scheduler no such task
    for path in (f"/v1/results/{task}", f"/v1/results/{task}/info"):
        status, body = http_json(edge, "GET", path)
        assert status == 404, body
        assert body["message"] == f"no result stored for task {task}", body


def test_scheduler_health_is_serving_through_envoy(edge):
    result = grpcurl("-d", '{"service":"gridmesh.v1.Scheduler"}', edge, "grpc.health.v1.Health/Check")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "SERVING"}


def test_grpcurl_calls_an_rpc_with_a_json_body(edge):
    result = grpcurl("-d", "{}", edge, "gridmesh.v1.Scheduler/ListTaskTypes")
    assert result.returncode == 0, result.stderr
    assert {t["name"] for t in json.loads(result.stdout)["task_types"]} >= BUILTINS


def test_malformed_json_body_is_400_with_a_message(edge):
    status, body = http(edge, "POST", "/v1/tasks", b'{"task_type": ')
    assert status == 400
    assert body  # Envoy says where the JSON broke


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/tasks", b'{"task_type": '),  # malformed JSON
        ("POST", "/v1/tasks", b'{"task_type": "noop", "result_dir": "x", "priority": "high"}'),  # no such enum name
        ("POST", "/v1/tasks", b'{"task_type": 7, "result_dir": []}'),  # wrong types
        ("GET", "/v1/task-types?colour=blue", None),  # unknown query parameter
    ],
)
def test_the_edges_own_errors_have_the_json_shape_of_the_services(edge, method, path, body):
    status, raw = http(edge, method, path, body)
    answer = json.loads(raw)  # refused by Envoy's transcoder: it reached no service
    assert status == 400 and answer["code"] == 3 and answer["message"] and answer["details"] == [], raw


def test_a_bad_param_is_400_naming_the_field_in_its_details(edge):
    status, body = http_json(edge, "POST", "/v1/tasks", {"task_type": "word_count", "params": {}, "result_dir": "x"})
    assert status == 400 and "required" in body["message"], body
    (detail,) = body["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    (violation,) = detail["field_violations"]
    assert violation["field"] == "params.text" and violation["description"] == body["message"]


def test_an_unknown_body_field_is_400_naming_it_and_changes_nothing(edge):
    """Envoy's transcoder would drop it without a word; the edge asks the
    authorizer about every JSON body first (gridmesh.edge.jsonbody)."""
    subscriber = f"unknown-field-{uuid.uuid4().hex[:8]}"
    body = {"subscriber": subscriber, "publisher": "shop", "entity_type": "customer", "snapshots": True}
    status, answer = http_json(edge, "POST", "/v1/subscriptions", body)
    assert status == 400 and answer["code"] == 3 and "snapshots" in answer["message"], answer
    (detail,) = answer["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert [v["field"] for v in detail["field_violations"]] == ["snapshots"]
    status, listed = http_json(edge, "GET", "/v1/subscriptions")
    assert status == 200 and subscriber not in json.dumps(listed)


def test_an_unknown_field_deep_in_a_batch_is_named_by_its_path(edge):
    batch = {"requests": [{"task_type": "noop", "result_dir": "x"}, {"task_type": "noop", "retry": {"tries": 2}}]}
    status, answer = http_json(edge, "POST", "/v1/tasks:batch", batch)
    assert status == 400, answer
    (violation,) = answer["details"][0]["field_violations"]
    assert violation["field"] == "requests[1].retry.tries"


def test_a_caller_without_a_key_is_401_whatever_its_body(edge):
    status, answer = http_json(edge, "POST", "/v1/tasks", {"task_type": "noop", "colour": "blue"}, key="")
    assert status == 401 and "colour" not in json.dumps(answer), answer


def test_known_fields_by_either_name_go_through(edge):
    body = {"taskType": "noop", "result_dir": "either-name", "params": {"free": {"form": [1]}}}
    status, task = http_json(edge, "POST", "/v1/tasks", body)
    assert status == 200 and task["task_type"] == "noop" and task["params"] == {"free": {"form": [1]}}, task


def test_unknown_query_parameter_is_400(edge):
    status, _ = http(edge, "GET", "/v1/task-types?colour=blue")
    assert status == 400


def test_unknown_route_is_404(edge):
    status, _ = http(edge, "GET", "/v1/no-such-thing")
    assert status == 404


def test_a_service_that_is_down_is_503_over_http_and_unavailable_over_grpc(mesh_config, mesh_environment, edge):
    runs, logs = mesh.run_dir(mesh_config), mesh.log_dir(mesh_config)
    eventmanager = next(c for c in mesh.components(mesh_config, 0, mesh_environment) if c.name == "eventmanager")
    assert procs.stop("eventmanager", runs)
    try:
        status, _ = http(edge, "GET", "/v1/subscriptions")
        assert status == 503
        with edge_channel(edge) as channel:
            stub = eventmanager_pb2_grpc.EventManagerStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.ListSubscriptions(eventmanager_pb2.ListSubscriptionsRequest(), timeout=10, metadata=key_metadata())
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        procs.start(eventmanager.spec, runs, logs)
        procs.wait_until(
            lambda: mesh.component_healthy(mesh_config, eventmanager),
            30,
            "eventmanager",
            logs / "eventmanager.log",
        )
