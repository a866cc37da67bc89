"""Issue 14: one trace per task and per replicated event, stored in a real
Jaeger (built from the Go module proxy) that ``gridmesh up --tracing``'s
code runs.

A traced client (a process of its own) submits a task and publishes an
event inside spans of its own; the test then reads each trace back from
Jaeger's query API and checks its spans, their processes and who is whose
parent. A call without trace context starts its trace at Envoy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from playwright.sync_api import Browser, expect

from gridmesh.adapters import kafka
from gridmesh.config import MeshConfig
from gridmesh.core.access import PeerRole
from gridmesh.core.lifecycle import LifecycleKind
from gridmesh.observability import jaeger
from tests.conftest import RunningMesh, free_port, own_mesh
from tests.e2e.browser import chromium, screenshot
from tests.helpers import admin_key, http_json, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def traced(backing_services: MeshConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    """A mesh of its own with tracing on, and the Jaeger ``up`` runs for it."""
    tracing = {
        "GRIDMESH_TRACING_ENABLED": "true",
        "GRIDMESH_TRACING_OTLP_PORT": str(free_port()),
        "GRIDMESH_TRACING_UI_PORT": str(free_port()),
    }
    with own_mesh(tmp_path_factory.mktemp("traced"), tracing) as running:
        yield running


class Trace:
    """One trace as Jaeger's query API returns it."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.processes = {pid: p["serviceName"] for pid, p in data["processes"].items()}
        self.spans = {s["spanID"]: s for s in data["spans"]}

    def named(self, prefix: str) -> list[dict[str, Any]]:
        return [s for s in self.spans.values() if s["operationName"].startswith(prefix)]

    def one(self, prefix: str) -> dict[str, Any]:
        found = self.named(prefix)
        assert len(found) == 1, (prefix, [s["operationName"] for s in self.spans.values()])
        return found[0]

    def service(self, span: dict[str, Any]) -> str:
        return self.processes[span["processID"]]

    def parent(self, span: dict[str, Any]) -> dict[str, Any] | None:
        refs = [r for r in span["references"] if r["refType"] == "CHILD_OF"]
        return self.spans.get(refs[0]["spanID"]) if refs else None

    def ancestors(self, span: dict[str, Any]) -> list[str]:
        """The operation names from ``span``'s parent up to the root."""
        names = []
        while (span := self.parent(span)) is not None:  # type: ignore[assignment]
            names.append(span["operationName"])
        return names

    def summary(self) -> list[tuple[str, str, str]]:
        return sorted(
            (self.service(s), s["operationName"], (self.parent(s) or {}).get("operationName", "-"))
            for s in self.spans.values()
        )


def _get(config: MeshConfig, path: str) -> Any:
    with urllib.request.urlopen(f"{jaeger.url(config)}{path}", timeout=10) as response:
        return json.loads(response.read())


def _trace(config: MeshConfig, trace_id: str, *, having: tuple[str, ...]) -> Trace:
    """The trace, once every span named in ``having`` has reached Jaeger
    (each process sends its spans in batches of its own)."""

    seen: list[Trace] = []

    def complete() -> Trace | None:
        try:
            data = _get(config, f"/api/traces/{trace_id}")["data"]
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise
        if data:
            seen[:] = [Trace(data[0])]
        return seen[0] if seen and all(seen[0].named(name) for name in having) else None

    try:
        return wait_for(f"trace {trace_id} with {having}", complete, timeout=30, interval=0.3)
    except AssertionError as e:
        raise AssertionError(f"{e}; it has {seen[0].summary() if seen else 'no spans'}") from None


def _traced_client(run: RunningMesh, subscriber: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.e2e.traced_client", subscriber],
        env={**run.env, "PYTHONPATH": ROOT},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


TASK_SPANS = (
    "client submits",
    "ingress",  # Envoy's span of the call
    "/gridmesh.v1.Scheduler/SubmitTask",
    "dispatch word_count",
    "run word_count",
    "execute word_count",
    "store result",
    "report success",
    "notify",
)


@pytest.fixture(scope="module")
def client_run(traced: RunningMesh) -> dict[str, Any]:
    return _traced_client(traced, f"traced-{uuid.uuid4().hex[:8]}")


def test_a_task_is_one_trace_from_the_client_through_five_processes(traced, client_run):
    config = traced.config
    task = client_run["task"]
    trace = _trace(config, task["trace_id"], having=TASK_SPANS)
    summary = trace.summary()

    client = trace.one("client submits")
    assert trace.parent(client) is None, summary  # the root: the client's own span
    envoy = trace.one("ingress")
    assert trace.parent(envoy) is client and trace.service(envoy) == "gridmesh-envoy", summary
    submit = trace.one("/gridmesh.v1.Scheduler/SubmitTask")
    assert trace.parent(submit) is envoy and trace.service(submit) == "gridmesh-scheduler", summary
    # The task's life continues the submit, across the processes that carry it out.
    expected = {
        "dispatch word_count": ("gridmesh-scheduler", submit),
        "run word_count": ("gridmesh-worker", trace.one("dispatch word_count")),
        "execute word_count": ("gridmesh-task", trace.one("run word_count")),
        "store result": ("gridmesh-storekeeper", trace.one("run word_count")),
        "report success": ("gridmesh-scheduler", trace.one("store result")),
        "notify": ("gridmesh-scheduler", submit),
    }
    for name, (service, parent) in expected.items():
        span = trace.one(name)
        assert trace.service(span) == service, (name, summary)
        assert trace.parent(span) is parent, (name, summary)
    tagged = {t["key"]: t["value"] for t in trace.one("dispatch word_count")["tags"]}
    assert tagged["gridmesh.task_id"] == task["task_id"]
    processes = {trace.service(s) for s in trace.spans.values()}
    assert {"gridmesh-test-client", "gridmesh-envoy", "gridmesh-scheduler", "gridmesh-worker"} <= processes
    assert {"gridmesh-task", "gridmesh-storekeeper"} <= processes


def test_the_kafka_life_cycle_events_of_a_task_carry_its_trace(traced, client_run):
    config, task = traced.config, client_run["task"]
    consumer = Consumer({**kafka.client_settings(config, PeerRole.ADMIN), "group.id": "t", "enable.auto.commit": False})
    kinds = (LifecycleKind.PENDING, LifecycleKind.STARTED, LifecycleKind.COMPLETED)
    topics = {config.topic(kind.value): kind for kind in kinds}
    seen: dict[LifecycleKind, str] = {}
    try:
        partitions = []
        for topic in topics:
            metadata = consumer.list_topics(topic, timeout=10).topics[topic]
            partitions += [TopicPartition(topic, p, 0) for p in metadata.partitions]
        consumer.assign(partitions)

        def poll() -> bool:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None and message.key() == task["task_id"].encode():
                headers = dict(message.headers() or [])
                value = headers.get("traceparent") or b""
                seen[topics[message.topic()]] = value.decode() if isinstance(value, bytes) else value
            return len(seen) == len(kinds)

        wait_for("the task's pending, started and completed events", poll, timeout=60, interval=0)
    finally:
        consumer.close()
    assert {traceparent.split("-")[1] for traceparent in seen.values()} == {task["trace_id"]}, seen


def test_a_replicated_event_is_one_trace_from_publish_to_apply(traced, client_run):
    event = client_run["event"]
    trace = _trace(traced.config, event["trace_id"], having=("client publishes", "ingress", "deliver to", "apply to"))
    summary = trace.summary()
    publish = trace.one("/gridmesh.v1.EventManager/Publish")
    assert trace.service(publish) == "gridmesh-eventmanager", summary
    assert trace.ancestors(publish) == ["ingress", "client publishes"], summary
    delivered = trace.one("deliver to")
    assert trace.parent(delivered) is publish and trace.service(delivered) == "gridmesh-eventmanager", summary
    assert event["delivered_in"].split("-")[2] == delivered["spanID"]  # what the Delivery carried
    applied = trace.one("apply to")
    assert trace.parent(applied) is delivered and trace.service(applied) == "gridmesh-test-client", summary


def test_a_call_without_trace_context_starts_its_trace_at_envoy(traced):
    config, edge = traced.config, traced.edge
    status, task = http_json(
        edge, "POST", "/v1/tasks", {"task_type": "sleep", "params": {"ms": 5}, "result_dir": "traced"}
    )
    assert status == 200, task
    tags = urllib.parse.quote(json.dumps({"gridmesh.task_id": task["task_id"]}))

    def found() -> str | None:
        data = _get(config, f"/api/traces?service=gridmesh-scheduler&tags={tags}&limit=5")["data"]
        return data[0]["traceID"] if data else None

    trace_id = wait_for("the task's trace", found, timeout=30, interval=0.3)
    trace = _trace(config, trace_id, having=("ingress", "run sleep", "store result"))
    roots = [s for s in trace.spans.values() if trace.parent(s) is None]
    assert [trace.service(r) for r in roots] == ["gridmesh-envoy"], trace.summary()
    assert trace.ancestors(trace.one("execute sleep"))[-1] == roots[0]["operationName"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def test_the_console_shows_a_tasks_trace_read_through_the_edge(traced, client_run, browser):
    task = client_run["task"]
    _trace(traced.config, task["trace_id"], having=TASK_SPANS)  # all of it stored
    context = browser.new_context(viewport={"width": 1366, "height": 900}, base_url=f"https://{traced.edge}")
    context.add_init_script(f"sessionStorage.setItem('gridmesh.apiKey', {json.dumps(admin_key())})")
    try:
        page = context.new_page()
        page.goto(f"/#/tasks/{task['task_id']}")
        panel = page.locator(f".trace[data-trace-id='{task['trace_id']}']")
        expect(panel.locator("tr[data-span='execute word_count']")).to_be_visible(timeout=30_000)
        spans = [row.get_attribute("data-span") for row in panel.locator("tbody tr").all()]
        assert spans[0] == "client submits" and set(TASK_SPANS) <= set(spans), spans
        screenshot(page, "task-trace")
    finally:
        context.close()
    # What the panel reads is Jaeger's trace search at the edge, for keys that may read the mesh only.
    status, body = http_json(traced.edge, "GET", "/v1/traces?service=gridmesh-scheduler", key="")
    assert status == 401 and body["code"] == 16, body
