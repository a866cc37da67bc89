"""Issue 18: the OpenAPI document of the edge's HTTP/JSON API, built from the
descriptor set's google.api.http annotations as the transcoder maps them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from google.api import annotations_pb2
from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

from gridmesh.config import load_config
from gridmesh.edge.envoy import CA_PATH, OPENAPI_PATH, PUBLIC_STOREKEEPER, build_envoy_config, descriptor_set_path
from gridmesh.edge.openapi import build_openapi, error_code_statuses, render_openapi
from gridmesh.v1 import common_pb2, eventmanager_pb2, scheduler_pb2, storekeeper_pb2

URL = "https://edge.example:8443"
DOC = build_openapi(descriptor_set_path().read_bytes(), URL)
ROUTED = {
    "Scheduler": scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"],
    "StoreKeeper": storekeeper_pb2.DESCRIPTOR.services_by_name["StoreKeeper"],
    "EventManager": eventmanager_pb2.DESCRIPTOR.services_by_name["EventManager"],
}


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in DOC["paths"].items():
        for method, operation in methods.items():
            yield method, path, operation


def operation(operation_id: str) -> dict[str, Any]:
    (found,) = [op for _, _, op in operations() if op["operationId"] == operation_id]
    return found


def schema(name: str) -> dict[str, Any]:
    return DOC["components"]["schemas"][name]


def validator(of: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """Validates against ``of`` with the document's components to resolve references in."""
    return jsonschema.Draft202012Validator({**of, "components": DOC["components"]})


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def test_every_annotated_method_the_edge_routes_is_one_operation():
    expected = {}
    for service_name, service in ROUTED.items():
        for method in service.methods:
            rule = method.GetOptions().Extensions[annotations_pb2.http]
            verb = rule.WhichOneof("pattern")
            if verb is None or (service_name == "StoreKeeper" and method.name not in PUBLIC_STOREKEEPER):
                continue
            expected[method.name] = (verb, getattr(rule, verb))
    got = {op["operationId"]: (verb, path) for verb, path, op in operations() if path not in (OPENAPI_PATH, CA_PATH)}
    assert got == expected
    assert len(got) == 29
    assert got["CancelTask"] == ("post", "/v1/tasks/{task_id}:cancel")
    assert got["Unsubscribe"] == ("delete", "/v1/subscriptions/{subscriber}/{publisher}/{entity_type}")
    # Nothing of the workers' protocol, of storing results, of enrollment or of the demo.
    ids = {op["operationId"] for _, _, op in operations()}
    assert not ids & {"StoreResult", "StoreResults", "ExpireResults", "PullTasks", "Join", "CreateCustomer"}
    assert operation("SubmitTask")["x-grpc-method"] == "/gridmesh.v1.Scheduler/SubmitTask"


def test_the_document_is_openapi_3_1_with_the_edges_url_and_bearer_keys():
    assert DOC["openapi"] == "3.1.0" and DOC["servers"] == [{"url": URL}]
    assert DOC["security"] == [{"bearer": []}]
    assert DOC["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert operation("GetOpenApi")["security"] == [] and operation("GetCaCertificate")["security"] == []
    assert json.loads(render_openapi(descriptor_set_path().read_bytes(), URL)) == DOC


@pytest.mark.parametrize("edge", ["https://0.0.0.0:8080", "https://[::]:8080"])
def test_an_edge_bound_to_every_address_is_served_from_where_the_document_was_read(edge: str) -> None:
    assert build_openapi(descriptor_set_path().read_bytes(), edge)["servers"] == [{"url": "/"}]


def test_path_variables_are_required_path_parameters():
    params = operation("Unsubscribe")["parameters"]
    assert [(p["name"], p["in"], p["required"]) for p in params] == [
        ("subscriber", "path", True),
        ("publisher", "path", True),
        ("entity_type", "path", True),
    ]
    (task_id,) = operation("GetTask")["parameters"]
    assert task_id == {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}


def test_a_get_takes_the_other_fields_as_query_parameters():
    params = {p["name"]: p for p in operation("ListTasks")["parameters"]}
    assert list(params) == ["state", "task_type", "page_size", "page_token"]
    assert all(p["in"] == "query" and not p.get("required") for p in params.values())
    assert params["state"]["schema"] == ref("gridmesh.v1.TaskState-input")
    watch = {p["name"]: p for p in operation("WatchTasks")["parameters"]}
    assert watch["task_ids"]["schema"] == {"type": "array", "items": {"type": "string"}}
    assert watch["task_ids"]["explode"]  # task_ids=a&task_ids=b
    stats = {p["name"]: p["schema"] for p in operation("GetStats")["parameters"]}
    assert stats["start_time"] == {"type": "string", "format": "date-time"}  # a Timestamp is one parameter
    # A query's value as the transcoder reads it: an int64 as digits, a boolean as a word too.
    assert validator(watch["resume_after"]["schema"]).is_valid("+42")
    assert not validator(watch["resume_after"]["schema"]).is_valid("4.2")
    terminal = validator(watch["terminal_only"]["schema"])
    assert all(terminal.is_valid(v) for v in (True, "true", "1", "yes", "F", "no")) and not terminal.is_valid("maybe")
    assert "requestBody" not in operation("ListTasks")


def test_a_star_body_is_the_request_without_the_paths_fields():
    submit = operation("SubmitTask")
    assert "parameters" not in submit and not submit["requestBody"]["required"]  # no body: the empty message
    assert submit["requestBody"]["content"]["application/json"]["schema"] == ref("gridmesh.v1.SubmitTaskRequest-input")
    cancel = operation("CancelTask")["requestBody"]["content"]["application/json"]["schema"]
    assert cancel == {"type": "object", "properties": {}, "additionalProperties": False}  # task_id is in the path


def test_a_field_body_is_that_field():
    create = operation("CreateSchedule")
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"anyOf": [ref("gridmesh.v1.Schedule-input"), {"type": "null"}]}
    assert "parameters" not in create  # the request has no other field


def test_responses_print_int64_as_strings_enums_by_name_and_every_field_without_presence():
    task = schema("gridmesh.v1.Task")
    assert task["properties"]["result_size_bytes"] == {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"}
    assert task["properties"]["attempt"]["type"] == "integer"
    assert task["properties"]["state"] == ref("gridmesh.v1.TaskState")
    assert schema("gridmesh.v1.TaskState") == {
        "type": "string",
        "enum": ["TASK_STATE_UNSPECIFIED", "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"],
    }
    assert task["properties"]["created_at"] == {"type": "string", "format": "date-time"}
    assert task["properties"]["params"] == {"type": "object"}
    assert "task_id" in task["required"] and "error" in task["required"] and "created_at" not in task["required"]
    assert "taskId" not in task["properties"]  # printed with proto field names
    result = schema("gridmesh.v1.SubmitTaskResult")  # a oneof: only the member that is set is printed
    assert "required" not in result and set(result["properties"]) == {"task", "error"}


def test_a_printed_message_matches_its_schema():
    task = common_pb2.Task(
        task_id="t",
        state=common_pb2.SUCCEEDED,
        result_size_bytes=2**40,
        params=struct_pb2.Struct(fields={"a": struct_pb2.Value(number_value=1)}),
        run_timeout=duration_pb2.Duration(seconds=1, nanos=500_000_000),
        created_at=timestamp_pb2.Timestamp(seconds=1_700_000_000),
        retry=common_pb2.RetryPolicy(multiplier=float("inf"), non_retryable_errors=["ValueError"]),
    )
    event = common_pb2.TaskEvent(task=task, position=7)
    printed = json_format.MessageToDict(
        event, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    validator(ref("gridmesh.v1.TaskEvent")).validate(printed)
    printed["task"]["state"] = 3  # an enum as a number is not how the edge prints it
    assert not validator(ref("gridmesh.v1.TaskEvent")).is_valid(printed)


def test_requests_are_read_leniently_as_the_transcoder_does():
    """As Envoy's parser reads them (more than Python's json_format takes: a lone value for a list)."""
    submit = validator(ref("gridmesh.v1.SubmitTaskRequest-input"))
    lenient = {
        "taskType": "echo",  # either name
        "result_dir": None,  # null: the default
        "priority": 3,  # an enum by number
        "max_attempts": "3",  # an integer as a string
        "run_timeout": "1.5s",
        "retry": {"multiplier": "NaN", "non_retryable_errors": "ValueError"},  # a lone value for a list
    }
    submit.validate(lenient)
    wrongs = ({"priority": "URGENT"}, {"max_attempts": 1.5}, {"run_timeout": 5}, {"params": "x"}, {"unknown": 1})
    for wrong in wrongs:
        assert not submit.is_valid(wrong), wrong


def test_request_schemas_forbid_unknown_fields_and_answers_do_not():
    """The edge refuses a JSON body field the message lacks (gridmesh.edge.jsonbody);
    an answer may gain fields as the protos grow."""
    schemas = DOC["components"]["schemas"]
    messages = {name: s for name, s in schemas.items() if s.get("type") == "object" and "properties" in s}
    inputs = {name for name in messages if name.endswith("-input")}
    assert inputs and all(messages[name]["additionalProperties"] is False for name in inputs)
    assert all("additionalProperties" not in messages[name] for name in messages.keys() - inputs)
    submit = schemas["gridmesh.v1.SubmitTaskRequest-input"]
    assert {"task_type", "taskType"} <= set(submit["properties"])  # either name is known
    params = submit["properties"]["params"]
    assert "additionalProperties" not in json.dumps(params)  # a Struct takes any JSON


def test_http_body_and_streams():
    result = operation("GetResult")["responses"]["200"]
    assert result["content"] == {"*/*": {"schema": {}}}  # the stored bytes with their own content type
    watch = operation("WatchTask")["responses"]["200"]
    assert watch["x-newline-delimited"] is True
    assert watch["content"] == {"application/json": {"schema": ref("gridmesh.v1.TaskEvent")}}
    assert "x-newline-delimited" not in operation("GetTask")["responses"]["200"]
    assert operation("DeleteSchedule")["responses"]["200"]["content"]["application/json"]["schema"] == {
        "type": "object"
    }  # Empty


def test_every_operation_documents_the_error_shape():
    statuses = {str(status) for status in error_code_statuses()}
    assert {"400", "401", "403", "404", "409", "413", "429", "500", "503", "504"} <= statuses
    for _, _, op in operations():
        if op["operationId"] not in ("GetOpenApi", "GetCaCertificate"):
            assert set(op["responses"]) == {"200", *statuses}, op["operationId"]
    error = validator(ref("Error"))
    error.validate({"code": 3, "message": "task_id 'x' is not a UUID", "details": [{"@type": "type.x/y"}]})
    assert not error.is_valid({"error": "x"}) and not error.is_valid({"code": "3", "message": "", "details": []})
    assert error_code_statuses()[400] == {3, 9, 11}  # INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE
    assert DOC["components"]["responses"]["401"]["description"].startswith("UNAUTHENTICATED")


@pytest.mark.parametrize("auth", ["true", "false"])
def test_envoy_serves_the_document_itself_to_anyone(auth):
    config = load_config({"GRIDMESH_ENVOY_PORT": "18080", "GRIDMESH_AUTH_ENABLED": auth})
    built = build_envoy_config(config)
    hcm = built["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    route_config = hcm["route_config"]
    (route,) = [r for r in route_config["virtual_hosts"][0]["routes"] if r["match"].get("path") == OPENAPI_PATH]
    body = route["direct_response"]["body"]["inline_string"]
    assert json.loads(body) == build_openapi(descriptor_set_path().read_bytes(), config.edge_url)
    assert len(body) <= route_config["max_direct_response_body_size_bytes"]
    assert route["response_headers_to_add"] == [{"header": {"key": "content-type", "value": "application/json"}}]
    no_key_asked = route.get("typed_per_filter_config", {}).get("envoy.filters.http.ext_authz", {}).get("disabled")
    assert no_key_asked is (True if auth == "true" else None)  # without auth there is no ext_authz to skip


def test_http_json_calls_pass_the_check_for_what_grpc_cannot_carry():
    built = build_envoy_config(load_config({}))
    hcm = built["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["http_filters"][0]["name"] == "envoy.filters.http.lua" and hcm["http_filters"][0]["disabled"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    on = [r["match"] for r in routes if "envoy.filters.http.lua" in r.get("typed_per_filter_config", {})]
    assert on == [{"prefix": "/v1/"}]  # what every HTTP/JSON call matches before the transcoder
