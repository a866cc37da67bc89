"""Issue 14: the Prometheus server `gridmesh up` runs (Debian's) scrapes
every gridmesh process through the file_sd targets they publish, and Envoy;
the mesh's own metrics move with the work; the shipped alert rules load and
`promtool` accepts them."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from gridmesh.cli import mesh, procs
from gridmesh.config import MeshConfig, load_config
from gridmesh.core.access import PeerRole
from gridmesh.observability import server as prometheus_server
from gridmesh.v1 import worker_pb2, worker_pb2_grpc
from tests.conftest import RunningMesh, _progress, free_port, mesh_env, own_mesh
from tests.helpers import http_json, mesh_channel, wait_for


@pytest.fixture(scope="module")
def observed(backing_services: MeshConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    """A mesh of its own with its Prometheus server and two worker nodes."""
    prometheus = {"GRIDMESH_METRICS_PROMETHEUS": "true", "GRIDMESH_METRICS_PROMETHEUS_PORT": str(free_port())}
    with own_mesh(tmp_path_factory.mktemp("observed"), prometheus, workers=2) as running:
        yield running


def _api(config: MeshConfig, path: str, **params: str) -> Any:
    url = f"{prometheus_server.url(config)}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


def _value(config: MeshConfig, query: str) -> float | None:
    result = _api(config, "query", query=query)["result"]
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_every_process_of_the_mesh_and_envoy(observed):
    config = observed.config
    expected = ["authz", "envoy", "eventmanager", "scheduler", "storekeeper", "worker", "worker"]
    seen: list[dict[str, Any]] = []

    def all_up() -> bool:
        # Prometheus hands discovered targets to its scrapers in batches (every
        # 5 s): a process that published its target late joins a later one.
        seen[:] = _api(config, "targets")["activeTargets"]
        components = sorted(t["labels"].get("component", "") for t in seen)
        return components == expected and all(t["health"] == "up" for t in seen)

    try:
        wait_for("every process and Envoy to be scraped", all_up, timeout=60)
    except AssertionError as e:
        raise AssertionError(f"{e}; the targets: {seen}") from None


def test_the_mesh_metrics_follow_the_work(observed):
    config, edge = observed.config, observed.edge
    ids = []
    for _ in range(5):
        status, task = http_json(
            edge, "POST", "/v1/tasks", {"task_type": "sleep", "params": {"ms": 20}, "result_dir": "obs"}
        )
        assert status == 200, task
        ids.append(task["task_id"])
    wait_for(
        "the tasks to succeed",
        lambda: all(http_json(edge, "GET", f"/v1/tasks/{t}")[1]["state"] == "SUCCEEDED" for t in ids),
    )
    checks = {
        'sum(gridmesh_task_events_total{kind="pending",task_type="sleep"})': 5,
        'sum(gridmesh_task_events_total{kind="completed",task_type="sleep"})': 5,
        'sum(gridmesh_task_events_total{kind="started",task_type="sleep"})': 5,
        'sum(gridmesh_worker_tasks_total{task_type="sleep",outcome="succeeded"})': 5,
        'sum(gridmesh_task_run_seconds_count{task_type="sleep"})': 5,
        "sum(gridmesh_result_write_seconds_count)": 5,
        "sum(gridmesh_worker_slots)": 4,
        "sum(gridmesh_scheduler_leader)": 1,
    }

    def caught_up() -> dict[str, float | None] | None:
        seen = {query: _value(config, query) for query in checks}
        return seen if all((seen[q] or 0) >= want for q, want in checks.items()) else None

    seen = wait_for("Prometheus to scrape the work", caught_up, timeout=60)
    assert seen == checks, seen  # exactly: a mesh of its own, nothing else ran the type
    assert _value(config, "sum(gridmesh_queue_tasks)") == 0
    assert _value(config, "sum(gridmesh_queue_depth)") is None  # by kind: no series while nothing is queued
    # Every producer of life-cycle events (the Scheduler and both nodes) got each one to the broker.
    assert _value(config, "count(gridmesh_lifecycle_buffered_events)") == 3
    assert _value(config, "sum(gridmesh_lifecycle_delivery_failures_total)") == 0
    assert _value(config, "sum(gridmesh_lifecycle_dropped_events_total)") == 0
    # At least the 20 ms the task slept, seen from the node.
    assert (_value(config, 'sum(gridmesh_task_run_seconds_sum{task_type="sleep"})') or 0) >= 5 * 0.02
    assert (_value(config, "min(gridmesh_storage_free_bytes)") or 0) > 0
    assert (_value(config, 'sum(grpc_server_msg_received_total{grpc_method="PullTasks"})') or 0) > 0


def test_the_shipped_alert_rules_load_and_promtool_accepts_them(observed):
    checked = subprocess.run(
        [prometheus_server.PROMTOOL, "check", "rules", str(prometheus_server.alert_rules_path())],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rendered = prometheus_server.data_dir(observed.config) / "prometheus.yml"
    checked = subprocess.run(
        [prometheus_server.PROMTOOL, "check", "config", str(rendered)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    groups = _api(observed.config, "rules")["groups"]
    names = {rule["name"] for group in groups for rule in group["rules"]}
    assert {"GridmeshComponentDown", "GridmeshNoSchedulerLeader", "GridmeshWorkQueuedButNoWorker"} <= names

    def alerting() -> list[str]:
        groups = _api(observed.config, "rules")["groups"]
        return [r["name"] for g in groups for r in g["rules"] if r.get("state") in ("pending", "firing")]

    # A healthy mesh raises none, not even pending, once every process has
    # been scraped and the rules evaluated since (an alert about a metric not
    # yet scraped is pending until then; its `for` keeps it from firing).
    wait_for("no alert pending or firing", lambda: alerting() == [], timeout=60)


def test_every_query_of_the_grafana_dashboard_runs_on_the_real_prometheus(observed):
    dashboard = json.loads((Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json").read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(queries) >= 14
    for query in queries:
        _api(observed.config, "query", query=query)  # a PromQL error would answer status "error"
    # …and one has the data it should: the two nodes' slots.
    slots = 2 * observed.config.worker.slots
    wait_for("the nodes' slots", lambda: _value(observed.config, "sum(gridmesh_worker_slots)") == slots)


def test_the_eventmanager_counts_publishes_and_reports_each_subscribers_queue(observed):
    config, edge = observed.config, observed.edge
    body = {"subscriber": "audit", "publisher": "customers", "entity_type": "customer"}
    assert http_json(edge, "POST", "/v1/subscriptions", body)[0] == 200
    for version in (1, 2):
        event = {
            "event_id": str(uuid.uuid4()), "publisher": "customers", "entity_type": "customer",
            "entity_id": "c-1", "operation": "CREATE" if version == 1 else "UPDATE", "version": version,
            "payload": {"name": "Ada"},
        }  # fmt: skip
        status, answer = http_json(edge, "POST", "/v1/events", event)
        assert status == 200 and answer["routed_to"] == ["audit"], answer
    unroutable = {**event, "event_id": str(uuid.uuid4()), "entity_type": "invoice"}
    assert http_json(edge, "POST", "/v1/events", unroutable)[1]["routed_to"] == []
    checks = {
        'sum(gridmesh_events_published_total{publisher="customers",outcome="routed"})': 2,
        'sum(gridmesh_events_published_total{publisher="customers",outcome="unroutable"})': 1,
        "sum(gridmesh_publish_confirm_seconds_count)": 3,
        'max(gridmesh_subscriber_queue_messages{subscriber="audit"})': 2,  # nothing consumes them
    }

    def caught_up() -> dict[str, float | None] | None:
        seen = {query: _value(config, query) for query in checks}
        return seen if all((seen[q] or 0) >= want for q, want in checks.items()) else None

    wait_for("Prometheus to see the publishes and the queue", caught_up, timeout=60)
    assert _value(config, 'max(gridmesh_subscriber_consumers{subscriber="audit"})') == 0
    assert _value(config, 'max(gridmesh_subscriber_dead_letters{subscriber="audit"})') == 0


def test_the_no_worker_alert_fires_when_the_only_node_is_stopped_with_work_queued(
    backing_services: MeshConfig, tmp_path_factory: pytest.TempPathFactory
):
    state = tmp_path_factory.mktemp("stopped")
    env = _alerting_mesh_env(state, "GridmeshWorkQueuedButNoWorker", "2m", "2s")
    config = load_config(env)
    node: psutil.Process | None = None
    try:
        mesh.up(config, workers=1, env=env, progress=_progress)
        edge = f"{config.envoy.host}:{config.envoy.port}"
        pid = procs.alive("worker-1", mesh.run_dir(config))
        assert pid is not None
        node = psutil.Process(pid)
        wait_for("the node to be scraped", lambda: _value(config, "sum(gridmesh_worker_slots)") == 2, timeout=60)
        node.suspend()  # SIGSTOP: alive to the OS, silent to the mesh
        # The Scheduler passes over a node not heard from for two heartbeat
        # intervals: after that, submitted work stays queued.
        wait_for("the node to go silent", lambda: not _node_heard_from(edge), timeout=30)
        status, task = http_json(edge, "POST", "/v1/tasks", {"task_type": "noop", "result_dir": "stopped"})
        assert status == 200, task

        alert = wait_for("the no-worker alert to fire", lambda: _firing(config, "GridmeshWorkQueuedButNoWorker"), 60)
        assert "1 tasks are queued" in alert["annotations"]["summary"], alert
        node.resume()
        wait_for("the task to run once the node is back", lambda: _state(edge, task["task_id"]) == "SUCCEEDED")
    finally:
        if node is not None and node.is_running():
            node.resume()
        mesh.down(config, _progress)


def _alerting_mesh_env(state: Path, alert: str, shipped_for: str, short_for: str, **overrides: str) -> dict[str, str]:
    """A mesh of its own with its Prometheus, evaluating the shipped rules
    with ``alert``'s ``for:`` cut from ``shipped_for`` to ``short_for``."""
    head, rule, tail = prometheus_server.alert_rules_path().read_text().partition(f"alert: {alert}")
    assert f"for: {shipped_for}" in tail.split("- alert:")[0]
    rules = state / "alerts.yml"
    rules.write_text(head + rule + tail.replace(f"for: {shipped_for}", f"for: {short_for}", 1))
    return mesh_env(
        state,
        GRIDMESH_METRICS_PROMETHEUS="true",
        GRIDMESH_METRICS_PROMETHEUS_PORT=str(free_port()),
        GRIDMESH_METRICS_ALERT_RULES=str(rules),
        **overrides,
    )


def _firing(config: MeshConfig, alert: str) -> dict[str, Any] | None:
    """``alert`` once Prometheus says it fires."""
    found = [a for a in _api(config, "alerts")["alerts"] if a["labels"]["alertname"] == alert]
    return found[0] if found and found[0]["state"] == "firing" else None


def _node_heard_from(edge: str) -> bool:
    workers = http_json(edge, "GET", "/v1/workers")[1]["workers"]
    return any(w["state"] == "ACTIVE" for w in workers)


def _state(edge: str, task_id: str) -> str:
    return str(http_json(edge, "GET", f"/v1/tasks/{task_id}")[1]["state"])


def test_a_node_whose_task_processes_are_stopped_reports_not_serving_and_the_stall_alert_fires(
    backing_services: MeshConfig, tmp_path_factory: pytest.TempPathFactory
):
    """celery#10205's worker that looks alive but consumes nothing: the node's
    task processes are SIGSTOPped while tasks wait in its prefetch. The node
    itself still heartbeats, but within worker.stall_after_s (2 s here) it
    answers NOT_SERVING, gridmesh status says stalled, and
    GridmeshWorkerStalled fires (its for: cut to 1 s), and its JSON log
    (log_format = json) says why, naming the node; resumed, every task
    succeeds and the node serves again."""
    state = tmp_path_factory.mktemp("stalled")
    env = _alerting_mesh_env(
        state, "GridmeshWorkerStalled", "1m", "1s", GRIDMESH_WORKER_STALL_AFTER_S="2", GRIDMESH_LOG_FORMAT="json"
    )
    config = load_config(env)
    stopped: list[psutil.Process] = []
    try:
        mesh.up(config, workers=1, env=env, progress=_progress)
        edge = f"{config.envoy.host}:{config.envoy.port}"
        (node,) = [c for c in mesh.components(config, 1, env) if c.name == "worker-1"]
        assert mesh.component_health(config, node) == "healthy"
        ids = []
        sleeper = {"task_type": "sleep", "params": {"ms": 4000}, "result_dir": "s"}
        for _ in range(4):  # 2 slots and 2 prefetched
            status, task = http_json(edge, "POST", "/v1/tasks", sleeper)
            assert status == 200, task
            ids.append(task["task_id"])

        def running() -> int:
            with mesh_channel(config, node.address, PeerRole.WORKER) as channel:
                status = worker_pb2_grpc.WorkerStub(channel).GetWorkerStatus(worker_pb2.GetWorkerStatusRequest())
            return len(status.running)

        wait_for("both slots busy", lambda: running() == 2, timeout=60)
        pid = procs.alive("worker-1", mesh.run_dir(config))
        assert pid is not None
        stopped = psutil.Process(pid).children(recursive=True)  # the forkserver and the task processes
        for process in stopped:
            process.suspend()
        wait_for("the node to say it is stalled", lambda: "stalled" in mesh.component_health(config, node), timeout=30)

        alert = wait_for("the stall alert to fire", lambda: _firing(config, "GridmeshWorkerStalled"), 60)
        assert "makes no progress" in alert["annotations"]["summary"], alert
        # The node said why in its log: a JSON line naming itself, shown by gridmesh logs.
        shown = subprocess.run(
            [str(Path(sys.executable).parent / "gridmesh"), "logs", "worker-1", "-n", "500"],
            env=env, capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        said = [json.loads(line) for line in shown.splitlines() if line.startswith("{") and "stalled" in line]
        assert said and said[0]["level"] == "WARNING" and said[0]["component"] == "worker", shown[-2000:]
        assert said[0]["worker_id"].endswith(f"-{config.worker.base_port}")
        assert all(_state(edge, t) in ("QUEUED", "RUNNING") for t in ids)  # nothing lost meanwhile
        for process in stopped:
            process.resume()
        wait_for("every task to succeed", lambda: all(_state(edge, t) == "SUCCEEDED" for t in ids), timeout=60)
        wait_for("the node to serve again", lambda: mesh.component_health(config, node) == "healthy", timeout=30)
    finally:
        for process in stopped:
            if process.is_running():
                process.resume()
        mesh.down(config, _progress)
