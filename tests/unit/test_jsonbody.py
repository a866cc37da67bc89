"""The edge's check of HTTP/JSON bodies for fields the request message does
not have (gridmesh.edge.jsonbody, asked through edge.authz.check_json_body),
on the shipped descriptor set, without Envoy."""

from __future__ import annotations

import json

import pytest

from gridmesh.edge.authz import check_json_body
from gridmesh.edge.envoy import DEMO_SERVICES, descriptor_set_path
from gridmesh.edge.jsonbody import MAX_REPORTED, JsonBodies
from tests.unit.test_access import NOW, _keys, _request

BODIES = JsonBodies(descriptor_set_path().read_bytes())


def unknown(verb: str, path: str, body: object) -> list[str]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return [v.field for v in BODIES.violations(verb, path, raw)]


def test_a_body_of_known_fields_by_either_name_passes():
    assert unknown("POST", "/v1/tasks", {"task_type": "noop", "resultDir": "x", "priority": "HIGH"}) == []


def test_an_unknown_field_is_named_at_any_depth():
    assert unknown("POST", "/v1/tasks", {"task_type": "noop", "colour": "blue"}) == ["colour"]
    batch = {"requests": [{"task_type": "noop"}, {"task_type": "noop", "colour": 1}]}
    assert unknown("POST", "/v1/tasks:batch", batch) == ["requests[1].colour"]
    # a lone value stands for a list of one, and lists in the list are flattened, as the transcoder reads them
    assert unknown("POST", "/v1/tasks:batch", {"requests": {"colour": 1}}) == ["requests[0].colour"]
    assert unknown("POST", "/v1/tasks:batch", {"requests": [[{"a": 1}], {"b": 2}]}) == [
        "requests[0].a",
        "requests[1].b",
    ]


def test_a_duration_or_timestamp_written_as_an_object_is_refused():
    """The transcoder would read {"seconds": 5} as the Duration's own fields (and {} as zero)."""
    assert unknown("POST", "/v1/tasks", {"task_type": "noop", "result_ttl": {}}) == ["result_ttl"]
    assert unknown("POST", "/v1/tasks:rerun", {"createdBefore": {"seconds": 1}}) == ["created_before"]
    assert unknown("POST", "/v1/tasks", {"task_type": "noop", "result_ttl": "5s", "deadline": None}) == []


def test_an_enum_number_the_enum_does_not_define_is_refused():
    assert unknown("POST", "/v1/tasks", {"task_type": "noop", "priority": -58800}) == ["priority"]
    assert unknown("POST", "/v1/tasks:batch", {"requests": {"priority": "7"}}) == ["requests[0].priority"]
    assert unknown("POST", "/v1/events", {"operation": 99}) == ["operation"]
    # a defined number, a name (an unknown name is the transcoder's 400) and null pass
    for priority in (2, "2", "HIGH", "NOPE", None, True):
        assert unknown("POST", "/v1/tasks", {"task_type": "noop", "priority": priority}) == [], priority


def test_free_form_json_and_what_the_transcoder_refuses_itself_pass():
    assert unknown("POST", "/v1/tasks", {"task_type": "echo", "params": {"anything": {"at": ["all"]}}}) == []
    event = {"publisher": "p", "entity_type": "t", "payload": {"free": 1}, "occurred_at": "2026-01-01T00:00:00Z"}
    assert unknown("POST", "/v1/events", event) == []
    assert unknown("POST", "/v1/tasks", b'{"task_type": ') == []  # malformed: the transcoder's 400
    assert unknown("POST", "/v1/tasks", {"task_type": "noop", "params": 5}) == []  # a wrong type: likewise
    assert unknown("POST", "/v1/tasks", b"") == []


def test_a_body_field_binding_and_a_path_bound_field():
    # POST /v1/schedules has body "schedule": the body is that message
    assert unknown("POST", "/v1/schedules", {"interval": "60s", "colour": 1}) == ["schedule.colour"]
    # body "*" with {task_id} in the path: task_id does not belong in the body
    assert unknown("POST", "/v1/tasks/abc:cancel", {"task_id": "def"}) == ["task_id"]
    assert unknown("POST", "/v1/tasks/abc:cancel", {}) == []


def test_calls_without_a_body_binding_are_not_checked():
    assert unknown("GET", "/v1/tasks", {"colour": 1}) == []  # no body in the rule
    assert unknown("POST", "/v1/no-such-thing", {"colour": 1}) == []  # the edge's 404
    assert unknown("POST", "/v1/tasks/abc:nope", {"colour": 1}) == []  # an unknown custom verb
    assert unknown("PUT", "/v1/tasks", {"colour": 1}) == []


def test_the_demo_services_are_checked_when_the_edge_routes_them():
    demo = JsonBodies(descriptor_set_path().read_bytes(), also=DEMO_SERVICES)
    bindings = [b for b in demo._bindings if b.service in DEMO_SERVICES]
    assert bindings, "the demo services have body bindings"
    binding = bindings[0]
    path = binding.path.replace("{", "").replace("}", "")
    assert [v.field for v in demo.violations(binding.verb, path, b'{"colour": 1}')][-1].endswith("colour")
    assert BODIES.violations(binding.verb, path, b'{"colour": 1}') == []


def test_many_unknown_fields_are_reported_up_to_a_limit():
    body = {"task_type": "noop", **{f"x{i}": i for i in range(MAX_REPORTED + 5)}}
    assert len(unknown("POST", "/v1/tasks", body)) == MAX_REPORTED


def _body_check(body: bytes, **headers: str):
    request = _request("/v1/tasks", **headers)
    request.attributes.request.http.method = "POST"
    request.attributes.request.http.raw_body = body
    return request


def test_the_authorizer_refuses_an_unknown_field_with_a_bad_request_naming_it():
    keys, key = _keys()
    answer = check_json_body(
        keys, BODIES, _body_check(b'{"task_type": "noop", "colour": 1}', authorization=f"Bearer {key}"), NOW
    )
    assert answer.denied_response.status.code == 400
    body = json.loads(answer.denied_response.body)
    assert body["code"] == 3 and "colour" in body["message"]
    (detail,) = body["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert detail["field_violations"] == [{"field": "colour", "description": body["message"]}]
    headers = {h.header.key: h.header.value for h in answer.denied_response.headers}
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize("authorization", [None, "Bearer gmk_nope_nope"])
def test_a_caller_without_a_usable_key_is_401_before_its_body_is_read(authorization):
    keys, _ = _keys()
    headers = {"authorization": authorization} if authorization else {}
    answer = check_json_body(keys, BODIES, _body_check(b'{"colour": 1}', **headers), NOW)
    assert answer.denied_response.status.code == 401 and "colour" not in answer.denied_response.body


def test_a_body_of_known_fields_goes_on_unchanged():
    keys, key = _keys()
    answer = check_json_body(keys, BODIES, _body_check(b'{"task_type": "noop"}', authorization=f"Bearer {key}"), NOW)
    assert answer.status.code == 0 and not answer.HasField("denied_response")
    assert not answer.ok_response.headers and not answer.ok_response.headers_to_remove
