"""The mesh across hosts (network namespaces, tests/hosts/cluster.py): a
ZooKeeper ensemble, a 3-broker Kafka cluster, two Scheduler hosts, worker
hosts and a Spark standalone cluster running the analytics job. Each test
cuts or kills for real; after all of them every accepted task has
SUCCEEDED once and the statistics count each exactly once.

The tests run in file order and share one cluster: each leaves it whole
again (what it cut is healed, what it killed is started again).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gridmesh.clients import CA_FILE_VAR
from gridmesh.core.access import PeerRole
from gridmesh.v1 import worker_pb2, worker_pb2_grpc
from tests.conftest import TEST_ADMIN_KEY
from tests.helpers import http_json, mesh_channel, wait_for
from tests.hosts.cluster import GRIDMESH, SCHEDULER_PORT, Cluster, Layout

pytestmark = [
    pytest.mark.e2e,
    # The shared cluster takes about four minutes to start on a loaded 2-CPU
    # machine; that setup must not eat the first test's 300 s (its own steps
    # carry their own timeouts), so the limit covers each test's body only.
    pytest.mark.timeout(300, func_only=True),
]

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
JOINED_PORT = 50190
"""Where the node that joins with a token listens on w3 (beside w3's own)."""


@dataclass
class Tracked(Cluster):
    """The cluster, and what the tests asked of it."""

    accepted: list[str] = field(default_factory=list)
    """Every task the edge accepted, for the final check."""
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@pytest.fixture(scope="module")
def cluster() -> Iterator[Tracked]:
    """The whole layout, started as an operator starts each machine; the
    test process trusts its CA (and presents the tests' admin key, which its
    edge host registers) for this module only."""
    if os.geteuid() != 0:
        pytest.fail("the multi-host tests need root (network namespaces); CI runs them as root")
    base = Path(tempfile.mkdtemp(prefix="gridmesh-hosts-"))
    c = Tracked(base, Layout(workers=3, slots=4, spark=True), admin_key_given=TEST_ADMIN_KEY)
    ca_before = os.environ.get(CA_FILE_VAR)
    try:
        c.start()
        os.environ[CA_FILE_VAR] = c.ca_file
        c.started_at = datetime.now(UTC)
        yield c
    finally:
        if ca_before is not None:
            os.environ[CA_FILE_VAR] = ca_before
        c.stop()


# -- helpers ------------------------------------------------------------------------------------


def submit(c: Tracked, task_type: str, params: dict[str, Any]) -> str | None:
    """Submit through the edge; the task id, or None when refused with 503
    (a Scheduler failing over). Accepted ids are kept for the final check."""
    status, body = http_json(c.edge, "POST", "/v1/tasks", {"task_type": task_type, "params": params, "result_dir": "h"})
    if status == 503:
        return None
    assert status == 200, body
    c.accepted.append(body["task_id"])
    return str(body["task_id"])


def must_submit(c: Tracked, task_type: str, params: dict[str, Any]) -> str:
    return wait_for("a submit to be accepted", lambda: submit(c, task_type, params), timeout=60)


def task(c: Tracked, task_id: str) -> dict[str, Any] | None:
    status, body = http_json(c.edge, "GET", f"/v1/tasks/{task_id}")
    return dict(body) if status == 200 else None


def wait_terminal(c: Tracked, task_id: str, timeout: float = 120) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        t = task(c, task_id)  # None (503) while a Scheduler fails over: ask again
        return t if t is not None and t["state"] in TERMINAL else None

    return wait_for(f"task {task_id} to end", ended, timeout)


def worker_status(c: Tracked, host: str) -> worker_pb2.WorkerStatus:
    address = f"{c.host(host).address}:{c.config().worker.base_port}"
    with mesh_channel(c.config(), address, PeerRole.WORKER) as channel:
        return worker_pb2_grpc.WorkerStub(channel).GetWorkerStatus(worker_pb2.GetWorkerStatusRequest(), timeout=5)


def serving(c: Tracked, host: str) -> bool | None:
    """Whether the Scheduler on ``host`` answers SERVING (leads); None if unreachable."""
    address = f"{c.host(host).address}:{SCHEDULER_PORT}"
    try:
        with mesh_channel(c.config(), address, PeerRole.SCHEDULER) as channel:
            request = health_pb2.HealthCheckRequest(service="gridmesh.v1.Scheduler")
            answer = health_pb2_grpc.HealthStub(channel).Check(request, timeout=1)
    except grpc.RpcError:
        return None
    return answer.status == health_pb2.HealthCheckResponse.SERVING


def leader(c: Tracked) -> str:
    return wait_for("a leading Scheduler", lambda: next((h for h in ("sched1", "sched2") if serving(c, h)), None), 60)


def stats_totals(c: Tracked) -> Counter[str]:
    start = (c.started_at - timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    end = (datetime.now(UTC) + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    status, body = http_json(c.edge, "GET", f"/v1/stats?start_time={start}&end_time={end}")
    assert status == 200, body
    totals: Counter[str] = Counter()
    for w in body.get("windows", []):
        totals[f"{w['task_type']}.pending"] += int(w.get("pending", 0))
        totals[f"{w['task_type']}.completed"] += int(w.get("completed", 0))
    return totals


def expected_totals(c: Tracked) -> Counter[str]:
    """What the statistics must say: every accepted task once as pending, and
    once as completed when it SUCCEEDED."""
    totals: Counter[str] = Counter()
    for task_id in c.accepted:
        t = wait_terminal(c, task_id)
        totals[f"{t['task_type']}.pending"] += 1
        if t["state"] == "SUCCEEDED":
            totals[f"{t['task_type']}.completed"] += 1
    return totals


def assert_statistics_exact(c: Tracked) -> None:
    expected = expected_totals(c)
    last: list[Counter[str]] = []

    def equal() -> bool:
        last[:] = [stats_totals(c)]
        return last[0] == expected

    try:
        wait_for("the statistics to count every task exactly once", equal, timeout=180, interval=1.0)
    except AssertionError:
        raise AssertionError(f"statistics {dict(last[0]) if last else None} != tasks {dict(expected)}") from None


def run_batch(c: Tracked, n: int, ms: int = 50) -> list[dict[str, Any]]:
    ids = [must_submit(c, "sleep", {"ms": ms}) for _ in range(n)]
    return [wait_terminal(c, t) for t in ids]


# -- tests ----------------------------------------------------------------------------------------


def test_tasks_run_on_every_worker_host_and_the_statistics_count_them(cluster):
    finals = run_batch(cluster, 60, ms=200)
    assert {t["state"] for t in finals} == {"SUCCEEDED"}
    assert {t["worker_id"].split("-")[0] for t in finals} == {"w1", "w2", "w3"}
    assert_statistics_exact(cluster)


def test_a_worker_host_cut_off_has_its_tasks_run_elsewhere_and_its_late_results_refused(cluster):
    """Its leases expire, its tasks run again on the other hosts, and after
    the heal the cut-off node's reports are refused: each task's result is
    the one the rerun stored, and the node rejoins."""
    c = cluster
    ids = [must_submit(c, "sleep", {"ms": 3000}) for _ in range(12)]  # 4 slots on each of 3 hosts
    on_w1 = wait_for("tasks running on w1", lambda: [r.task_id for r in worker_status(c, "w1").running], 30)
    before = worker_status(c, "w1").counters
    cut_at = time.monotonic()
    c.host("w1").cut()
    try:
        finals = {t: wait_terminal(c, t) for t in ids}
        elsewhere_s = time.monotonic() - cut_at
        stored = {t: http_json(c.edge, "GET", f"/v1/results/{t}/info")[1] for t in on_w1}
    finally:
        c.host("w1").heal()
    print(f"w1 cut off: its {len(on_w1)} tasks ended elsewhere {elsewhere_s:.1f} s after the cut")
    assert all(f["state"] == "SUCCEEDED" for f in finals.values())
    for task_id in on_w1:
        assert finals[task_id]["attempt"] >= 2 and not finals[task_id]["worker_id"].startswith("w1-")
    wait_for(
        "w1 to learn its leases are gone",
        lambda: worker_status(c, "w1").counters.lost_leases >= before.lost_leases + len(on_w1),
        timeout=60,
    )
    assert worker_status(c, "w1").counters.succeeded == before.succeeded
    for task_id in on_w1:
        assert task(c, task_id) == finals[task_id]
        assert http_json(c.edge, "GET", f"/v1/results/{task_id}/info")[1] == stored[task_id]
    # Back on the network, w1 takes work again.
    wait_for("a task on w1 again", lambda: any(t["worker_id"].startswith("w1-") for t in run_batch(c, 12)), 120)


class Submitter(threading.Thread):
    """Submits a noop task through the edge every 50 ms and times the refusals."""

    def __init__(self, c: Tracked) -> None:
        super().__init__(daemon=True)
        self.c, self.halt = c, threading.Event()
        self.refused_since: float | None = None
        self.longest_refusal_s = 0.0
        self.refusals = 0

    def run(self) -> None:
        while not self.halt.is_set():
            now = time.monotonic()
            if submit(self.c, "noop", {}) is None:
                self.refusals += 1
                self.refused_since = self.refused_since or now
                self.longest_refusal_s = max(self.longest_refusal_s, time.monotonic() - self.refused_since)
            else:
                self.refused_since = None
            self.halt.wait(0.05)


def test_the_leader_cut_off_from_zookeeper_stops_before_the_standby_leads(cluster):
    """Never two leaders: the old one stops serving before the other starts.
    Clients through the edge see a short 503 at most, and every task
    accepted meanwhile completes."""
    c = cluster
    old = leader(c)
    new = "sched2" if old == "sched1" else "sched1"
    assert serving(c, new) is False  # it stands by
    submitter = Submitter(c)
    submitter.start()
    both, old_stopped, new_started = 0, None, None
    cut_at = time.monotonic()
    c.host(old).cut_from(c.hosts_named("zk"))
    try:
        while new_started is None and time.monotonic() - cut_at < 60:
            old_serves, new_serves = serving(c, old), serving(c, new)
            now = time.monotonic() - cut_at
            both += bool(old_serves and new_serves)
            if old_stopped is None and old_serves is False:
                old_stopped = now
            if new_started is None and new_serves:
                new_started = now
    finally:
        c.host(old).heal()
    submitter.halt.set()
    submitter.join()
    print(
        f"leader {old} cut from ZooKeeper: stopped at {old_stopped} s, {new} led at {new_started} s; "
        f"longest run of 503s {submitter.longest_refusal_s:.1f} s ({submitter.refusals} refused)"
    )
    assert new_started is not None, "the standby never led"
    assert old_stopped is not None and old_stopped < new_started and both == 0
    # Healed, the old leader has lost its session: it stands by.
    wait_for(f"{old} to stand by", lambda: serving(c, old) is False, 60)
    assert serving(c, new)
    assert {t["state"] for t in run_batch(c, 10)} == {"SUCCEEDED"}


def test_a_kafka_broker_host_killed_produce_and_analytics_go_on(cluster):
    c = cluster
    killed = c.host("kafka2").kill()
    assert killed > 0
    try:
        assert {t["state"] for t in run_batch(c, 40)} == {"SUCCEEDED"}
        assert_statistics_exact(c)
    finally:
        c.up(c.host("kafka2"), "kafka")
    assert {t["state"] for t in run_batch(c, 10)} == {"SUCCEEDED"}


def test_a_zookeeper_node_killed_the_ensemble_goes_on(cluster):
    """Leader election, the worker registry and the subscription map live in
    ZooKeeper: with one of three servers dead they all keep working."""
    c = cluster
    assert c.host("zk1").kill() > 0
    try:
        assert {t["state"] for t in run_batch(c, 20)} == {"SUCCEEDED"}
        shop = {"publisher": "hosts-shop", "entity_type": "customer"}
        status, body = http_json(c.edge, "POST", "/v1/subscriptions", {"subscriber": "hosts-billing", **shop})
        assert status == 200, body
        event = {
            "entity_id": "c-1",
            "operation": "CREATE",
            "payload": {"n": 1},
            "event_id": str(uuid.uuid4()),
            "version": 1,
        }
        status, body = http_json(c.edge, "POST", "/v1/events", {**event, **shop})
        assert status == 200 and body["routed_to"] == ["hosts-billing"], body
    finally:
        c.up(c.host("zk1"), "zookeeper")


def test_a_spark_worker_host_killed_the_analytics_job_goes_on(cluster):
    c = cluster
    assert c.host("sparkw1").kill() > 0
    try:
        assert {t["state"] for t in run_batch(c, 30)} == {"SUCCEEDED"}
        assert_statistics_exact(c)
    finally:
        c.start_spark_worker(c.host("sparkw1"))


def test_a_new_worker_host_joins_with_a_token_and_runs_tasks(cluster):
    """A node started on w3 as on a new host: a state, TLS and secrets
    directory of its own (none of the mesh's files), and a join token made
    on the edge host; it reaches the edge across the network for its
    certificate, registers with the leading Scheduler and runs tasks."""
    c = cluster
    edge_host = c.host("edge")
    command = c.gridmesh(edge_host, "worker", "join-token", "--edge", c.edge, "--expires", "10m")
    token = command.split()[-1]
    home = c.base / "w3-joined"
    env = {
        **c.host_env(c.host("w3")),
        "GRIDMESH_STATE_DIR": str(home / "state"),
        "GRIDMESH_TLS_DIR": str(home / "tls"),
        "GRIDMESH_SECRETS_DIR": str(home / "secrets"),
    }
    port = JOINED_PORT
    node = c.host("w3").popen(
        [GRIDMESH, "worker", "start", "--join", token, "--port", str(port), "--slots", "2"], env, home / "node.log"
    )
    try:
        joined = wait_for("the joined node to register", lambda: joined_node(c, port), timeout=60)
        assert (home / "tls" / "worker.crt").is_file() and not (home / "tls" / "ca.key").exists()
        ran_there = wait_for("a task to run on the joined node", lambda: ran_on(c, joined), timeout=90)
        assert ran_there["state"] == "SUCCEEDED"
    finally:
        node.terminate()  # drains and leaves
        node.wait(60)


def joined_node(c: Tracked, port: int) -> str | None:
    status, body = http_json(c.edge, "GET", "/v1/workers")
    assert status == 200, body
    return next((w["worker_id"] for w in body["workers"] if w["worker_id"].endswith(f"-{port}")), None)


def ran_on(c: Tracked, worker_id: str) -> dict[str, Any] | None:
    final = wait_terminal(c, must_submit(c, "sleep", {"ms": 100}))
    return final if final["worker_id"] == worker_id else None


def test_after_every_cut_and_kill_each_accepted_task_succeeded_and_is_counted_once(cluster):
    c = cluster
    finals = [wait_terminal(c, t) for t in c.accepted]
    assert Counter(t["state"] for t in finals) == Counter({"SUCCEEDED": len(finals)})
    assert len({t["task_id"] for t in finals}) == len(finals)
    assert_statistics_exact(c)
