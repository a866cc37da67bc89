"""Issue 18: the edge serves the OpenAPI document of its HTTP/JSON API
(generated from the protos' google.api.http annotations) to anyone, and
schemathesis fuzzes every operation of it against a live mesh of its own:
no 5xx, every error the one JSON shape ``{"code", "message", "details"}``
with the code its HTTP status stands for, every answer as documented, and
nothing accepted that the document forbids.

The fuzzer's calls go to the document :func:`build_openapi` makes of the
shipped descriptor set; the first test shows the edge serves exactly that.
Each operation is one test (``test_fuzz[GET /v1/tasks]``…): schemathesis's
coverage phase (boundary and schema-violating values of every parameter and
property) then its fuzzing phase (random positive and negative cases, at most
:data:`MAX_EXAMPLES`). The last test prints what each operation was sent and
answered, and fails if one was not tried.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gridmesh.config import MeshConfig
from gridmesh.edge.envoy import OPENAPI_PATH, descriptor_set_path
from gridmesh.edge.openapi import build_openapi, error_code_statuses
from tests.conftest import TEST_ADMIN_KEY, RunningMesh, own_mesh
from tests.helpers import edge_ca_file, edge_tls, http_json, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]  # per test: an operation takes seconds

MAX_EXAMPLES = 25
"""Cases per operation of the fuzzing phase (the coverage phase adds its own, one per boundary or violation)."""
REQUEST_TIMEOUT_S = 10
STREAM_DEADLINE = "1S"
"""Sent as ``grpc-timeout`` with the streaming operations (watches): the
service ends the stream after a second (a watch of every task never ends by
itself), so they are fuzzed like the rest, not left out."""

DOCUMENT = build_openapi(descriptor_set_path().read_bytes(), "https://edge.invalid")
"""What the edge serves (but its server: the calls go to the test's mesh)."""
SCHEMA = schemathesis.openapi.from_dict(
    DOCUMENT,
    config=schemathesis.Config.from_dict(
        {
            # The key is sent with every call (test_fuzz), not generated: ignored_auth tries each operation
            # without it, and with a made-up one.
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "database": "none",
                "with-security-parameters": False,
            },
            "phases": {
                "examples": {"enabled": False},  # the document has none
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},  # no links between operations
            },
        }
    ),
)
ERROR_CODES = error_code_statuses()
"""HTTP status → the google.rpc codes an error under it may carry."""


@schemathesis.check
def error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx and 5xx is ``{"code": int, "message": str, "details": [...]}``
    (nothing else), as application/json, its code one the status stands for."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.split(";")[0].strip() == "application/json", f"an error as {content_type!r}"
    body = json.loads(response.content)
    assert isinstance(body, dict) and set(body) == {"code", "message", "details"}, f"not the error shape: {body}"
    assert isinstance(body["code"], int) and isinstance(body["message"], str), body
    assert isinstance(body["details"], list) and all(isinstance(d, dict) for d in body["details"]), body
    allowed = ERROR_CODES.get(response.status_code, set())
    assert body["code"] in allowed, f"HTTP {response.status_code} with code {body['code']} (expected {allowed})"
    return None


@schemathesis.check
def ndjson_conformance(ctx: Any, response: Any, case: Any) -> bool | None:
    """A stream's 200: newline-delimited JSON, each line the documented message."""
    if response.status_code != 200:
        return response_schema_conformance(ctx, response, case)
    schema = case.operation.definition.raw["responses"]["200"]["content"]["application/json"]["schema"]
    validator = jsonschema.Draft202012Validator({**schema, "components": DOCUMENT["components"]})
    for line in response.content.splitlines():
        if line.strip():
            validator.validate(json.loads(line))
    return None


@schemathesis.check
def not_a_server_error_but_the_deadline(ctx: Any, response: Any, case: Any) -> bool | None:
    """:func:`not_a_server_error` for a stream: one that :data:`STREAM_DEADLINE`
    ended before its first message answers 504 DEADLINE_EXCEEDED, as documented."""
    if response.status_code == 504 and json.loads(response.content).get("code") == 4:
        return None
    return not_a_server_error(ctx, response, case)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,  # the same call without a key (and with a made-up one) must be refused
    error_shape,
]
"""Not run: positive_data_acceptance (a call the document allows may still
be refused: the services check more than types, e.g. that a task type
exists, and answer 400); unsupported_method (a method no route maps answers
the edge's JSON 404, not 405); the stateful ones (no links)."""


@dataclass
class Tried:
    """What each operation was sent (by phase and mode) and answered."""

    cases: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def record(self, case: Any, status: int, took: float) -> None:
        label = case.operation.label
        meta = case.meta
        self.cases[label][f"{meta.phase.name.value}/{meta.generation.mode.value}"] += 1
        self.statuses[label][status] += 1
        self.seconds[label] += took


@pytest.fixture(scope="module")
def fuzzed(backing_services: MeshConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    """A mesh of its own (the fuzzer subscribes, publishes, drains and
    submits), with something in it for the list calls to answer: a finished
    task and its result, a schedule, a subscription and its event."""
    with own_mesh(tmp_path_factory.mktemp("fuzzed"), {}) as running:
        edge = running.edge
        echo = {"task_type": "echo", "params": {"a": 1}, "result_dir": "fuzz"}
        status, task = http_json(edge, "POST", "/v1/tasks", echo)
        assert status == 200, task
        hourly = {"interval": "3600s", "task": {"task_type": "noop", "result_dir": "fuzz"}}
        status, schedule = http_json(edge, "POST", "/v1/schedules", hourly)
        assert status == 200, schedule
        thing = {"subscriber": "fuzz-sub", "publisher": "fuzz-pub", "entity_type": "thing"}
        status, subscription = http_json(edge, "POST", "/v1/subscriptions", thing)
        assert status == 200, subscription
        event = {
            "publisher": "fuzz-pub",
            "entity_type": "thing",
            "entity_id": "1",
            "operation": "CREATE",
            "version": 1,
            "payload": {"n": 1},
        }
        status, published = http_json(edge, "POST", "/v1/events", {**event, "event_id": str(uuid.uuid4())})
        assert status == 200, published
        wait_for(
            "the task's result",
            lambda: http_json(edge, "GET", f"/v1/results/{task['task_id']}/info")[0] == 200,
        )
        yield running


@pytest.fixture(scope="module")
def tried() -> Tried:
    return Tried()


def test_the_edge_serves_the_document_to_anyone(fuzzed):
    request = urllib.request.Request(f"https://{fuzzed.edge}{OPENAPI_PATH}")  # no key
    with urllib.request.urlopen(request, timeout=10, context=edge_tls()) as response:
        assert response.status == 200
        assert response.headers["content-type"] == "application/json"
        served = json.loads(response.read())
    assert served == build_openapi(descriptor_set_path().read_bytes(), fuzzed.config.edge_url)
    assert served["servers"] == [{"url": f"https://{fuzzed.edge}"}]


@pytest.mark.parametrize(
    "path, headers",
    [
        ("/v1/tasks/%FF", {}),  # a path parameter that is no UTF-8 (the service could not parse the call)
        ("/v1/tasks?task_type=%C3%28", {}),
        ("/v1/results?result_dir=%ED%A0%80", {}),  # a surrogate
        ("/v1/tasks/%C3%A9", {"x'y": "1", "a|b": "2"}),  # names gRPC metadata cannot carry
        ("/v1/tasks/%C3%A9", {"x-a-bin": "!!!"}),  # not base64
        ("/v1/tasks/%C3%A9", {"grpc-timeout": "soon"}),
        ("/v1/subscriptions?publisher=a&=b", {}),  # a query parameter without a name (the transcoder ignores it)
    ],
)
def test_what_grpc_cannot_carry_is_no_server_error(fuzzed, path, headers):
    """What the transcoder would pass on (or ignore) and gRPC cannot carry: found by hand and by the fuzzer."""
    request = urllib.request.Request(
        f"https://{fuzzed.edge}{path}", headers={**headers, "authorization": f"Bearer {TEST_ADMIN_KEY}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10, context=edge_tls()) as response:
            status, body = response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        status, body = e.code, json.loads(e.read())
    assert status == 400 and set(body) == {"code", "message", "details"} and body["code"] == 3, (status, body)
    expected = "is not a UUID" if headers else "has no name" if "&=" in path else "is not UTF-8"
    assert expected in body["message"], body


@SCHEMA.parametrize()
@settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_fuzz(case, fuzzed, tried):
    """One operation, with the admin key, through the edge's TLS (verified against the mesh's CA)."""
    headers = {"Authorization": f"Bearer {TEST_ADMIN_KEY}"}
    checks = list(CHECKS)
    if case.operation.definition.raw["responses"]["200"].get("x-newline-delimited"):
        headers["grpc-timeout"] = STREAM_DEADLINE
        checks[checks.index(response_schema_conformance)] = ndjson_conformance
        checks[checks.index(not_a_server_error)] = not_a_server_error_but_the_deadline
    base_url, transport = fuzzed.config.edge_url, {"verify": edge_ca_file(), "timeout": REQUEST_TIMEOUT_S}
    started = time.perf_counter()
    response = case.call(base_url=base_url, headers=headers, **transport)
    tried.record(case, response.status_code, time.perf_counter() - started)
    case.validate_response(
        response,
        checks=checks,
        headers=headers,
        transport_kwargs={"base_url": base_url, "headers": headers, **transport},
    )


def test_every_operation_was_fuzzed(tried):
    """Last: what each operation was sent and answered (and that none was left out)."""
    print(f"\nschemathesis {schemathesis.__version__}: at most {MAX_EXAMPLES} fuzzing cases per operation")
    for label in sorted(tried.cases, key=lambda s: s.split(" ", 1)[::-1]):
        cases = ", ".join(f"{kind} {n}" for kind, n in sorted(tried.cases[label].items()))
        answers = " ".join(f"{status}x{n}" for status, n in sorted(tried.statuses[label].items()))
        total = sum(tried.cases[label].values())
        print(f"  {label:<58} {total:>4} cases ({cases}) in {tried.seconds[label]:.1f} s → {answers}")
    print(f"  {'all':<58} {sum(sum(c.values()) for c in tried.cases.values()):>4} cases")
    documented = {f"{method.upper()} {path}" for path, ops in DOCUMENT["paths"].items() for method in ops}
    assert documented == set(tried.cases), documented ^ set(tried.cases)
