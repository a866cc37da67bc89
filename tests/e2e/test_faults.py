"""SPEC §3 "Nothing accepted is lost": faults made by really killing or
stopping processes of a real mesh — a task process, a whole worker node
(kill -9 and SIGSTOP), the leading Scheduler, the Kafka broker.

This module runs its own mesh: two worker nodes, a standby Scheduler, its
own Kafka broker, and short leases (2 s) so expiries come quickly.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from gridmesh.adapters import kafka as kafka_adapter
from gridmesh.bench.task_types import ensure_exec_log_dir
from gridmesh.cli import backing, mesh, procs
from gridmesh.clients import TaskClient
from gridmesh.config import MeshConfig, load_config
from gridmesh.core.access import PeerRole
from gridmesh.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc, worker_pb2, worker_pb2_grpc
from tests.conftest import WORKER_PORTS, free_port, mesh_env
from tests.e2e.watching import NdjsonNotices, TerminalNotices, submit_noops
from tests.helpers import edge_channel, http_json, key_metadata, mesh_channel, schedule_tasks, wait_for

SUCCEEDED, FAILED = common_pb2.SUCCEEDED, common_pb2.FAILED


@dataclass
class FaultMesh:
    config: MeshConfig
    env: dict[str, str]
    edge: str

    @property
    def runs(self):
        return mesh.run_dir(self.config)

    def component(self, name: str) -> mesh.Component:
        return next(c for c in mesh.components(self.config, 2, self.env) if c.name == name)

    def pid(self, name: str) -> int:
        pid = procs.alive(name, self.runs)
        assert pid, f"{name} is not running"
        return pid

    def restart(self, name: str) -> None:
        """Start ``name`` again if it is down and wait until it is healthy."""
        component = self.component(name)
        procs.stop(name, self.runs)
        procs.start(component.spec, self.runs, mesh.log_dir(self.config))
        procs.wait_until(lambda: mesh.component_healthy(self.config, component), 30, name)

    def worker_status(self, name: str) -> worker_pb2.WorkerStatus:
        with mesh_channel(self.config, self.component(name).address, PeerRole.WORKER) as channel:
            return worker_pb2_grpc.WorkerStub(channel).GetWorkerStatus(worker_pb2.GetWorkerStatusRequest(), timeout=5)

    def leader(self) -> str | None:
        for name in ("scheduler", "scheduler-standby"):
            if mesh.component_health(self.config, self.component(name)) == "healthy":
                return name
        return None


@pytest.fixture(scope="module")
def fault_mesh(backing_services: MeshConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultMesh]:
    env = mesh_env(
        tmp_path_factory.mktemp("faults"),
        GRIDMESH_SCHEDULER_STANDBY_PORT=str(free_port()),
        GRIDMESH_SCHEDULER_LEASE_TTL_S="2",
        GRIDMESH_SCHEDULER_HEARTBEAT_INTERVAL_S="0.4",
        GRIDMESH_ZOOKEEPER_SESSION_TIMEOUT_S="4",
        GRIDMESH_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
        GRIDMESH_ZOOKEEPER_HOSTS=f"127.0.0.1:{free_port()}",  # its own (started by up): killing it disturbs no one
        GRIDMESH_ZOOKEEPER_REQUEST_TIMEOUT_S="2",
        GRIDMESH_WORKER_BASE_PORT=str(free_port(WORKER_PORTS)),
        GRIDMESH_WORKER_SLOTS="2",
    )
    config = load_config(env)
    runs, logs = mesh.run_dir(config), mesh.log_dir(config)
    runs.mkdir(parents=True)
    logs.mkdir(parents=True)
    try:
        # A broker of our own, so that stopping it disturbs no other test.
        kafka = backing.Kafka.from_config(config)
        procs.start(kafka.spec(config), runs, logs)
        procs.wait_until(kafka.probe, 30, "kafka")
        mesh.up(config, workers=2, env=env, progress=lambda *_: None)
        yield FaultMesh(config, env, f"{config.envoy.host}:{config.envoy.port}")
    finally:
        mesh.down(config, lambda *_: None)


def submit(fm: FaultMesh, task_type: str, params: dict, **extra) -> str:
    status, body = http_json(
        fm.edge, "POST", "/v1/tasks", {"task_type": task_type, "params": params, "result_dir": "faults", **extra}
    )
    assert status == 200, body
    return str(body["task_id"])


def get(fm: FaultMesh, task_id: str) -> dict:
    status, body = http_json(fm.edge, "GET", f"/v1/tasks/{task_id}")
    assert status == 200, body
    return dict(body)


def wait_terminal(fm: FaultMesh, task_id: str, timeout: float = 60) -> dict:
    def ended() -> dict | None:
        status, task = http_json(fm.edge, "GET", f"/v1/tasks/{task_id}")
        # A 503 is fine while a Scheduler fails over; keep asking.
        return task if status == 200 and task["state"] in ("SUCCEEDED", "FAILED", "CANCELLED") else None

    return wait_for(f"task {task_id} to end", ended, timeout)


def running_on(fm: FaultMesh, task_id: str) -> tuple[str, worker_pb2.RunningTask] | None:
    for name in ("worker-1", "worker-2"):
        for running in fm.worker_status(name).running:
            if running.task_id == task_id:
                return name, running
    return None


class TerminalWatch:
    """Collects every terminal notice the Scheduler sends for some tasks."""

    def __init__(self, fm: FaultMesh, task_ids: list[str]) -> None:
        self.channel = edge_channel(fm.edge)
        stub = scheduler_pb2_grpc.SchedulerStub(self.channel)
        self.call = stub.WatchTasks(
            scheduler_pb2.WatchTasksRequest(task_ids=task_ids, terminal_only=True), metadata=key_metadata()
        )

    def take(self, count: int) -> list[common_pb2.TaskEvent]:
        events = []
        for event in self.call:
            events.append(event)
            if len(events) == count:
                break
        return events

    def close(self) -> None:
        self.call.cancel()
        self.channel.close()


def test_kill_9_of_a_task_process_retries_it_silently_at_high_priority_and_it_succeeds(fault_mesh):
    fm = fault_mesh
    task_id = submit(fm, "sleep", {"ms": 1500})
    watch = TerminalWatch(fm, [task_id])
    try:
        _, running = wait_for("the task to run", lambda: running_on(fm, task_id))
        os.kill(running.pid, signal.SIGKILL)
        (notice,) = watch.take(1)
    finally:
        watch.close()
    # The only terminal notice is the success of the second attempt: no failure notice.
    assert notice.task.state == SUCCEEDED
    final = get(fm, task_id)
    assert final["attempt"] == 2 and final["priority"] == "HIGH"


def test_a_task_whose_process_always_dies_fails_after_max_attempts(fault_mesh):
    fm = fault_mesh
    task_id = submit(fm, "sleep", {"ms": 60_000}, max_attempts=2)
    killed: set[int] = set()
    for attempt in (1, 2):

        def attempt_runs(n: int = attempt) -> tuple[str, worker_pb2.RunningTask] | None:
            found = running_on(fm, task_id)
            return found if found and found[1].pid not in killed and found[1].attempt == n else None

        _, running = wait_for(f"attempt {attempt} to run", attempt_runs)
        killed.add(running.pid)
        os.kill(running.pid, signal.SIGKILL)
    final = wait_terminal(fm, task_id)
    assert final["state"] == "FAILED"
    assert "each of its 2 attempts" in final["error"] and "SIGKILL" in final["error"]


def test_kill_9_of_a_whole_worker_node_reruns_its_tasks_elsewhere_after_lease_expiry(fault_mesh):
    fm = fault_mesh
    ids = [submit(fm, "sleep", {"ms": 1500}) for _ in range(4)]
    victim = wait_for("tasks on worker-1", lambda: [t for t in ids if (r := running_on(fm, t)) and r[0] == "worker-1"])
    os.killpg(fm.pid("worker-1"), signal.SIGKILL)
    try:
        finals = {t: wait_terminal(fm, t) for t in ids}
        assert all(f["state"] == "SUCCEEDED" for f in finals.values()), finals
        for task_id in victim:
            assert finals[task_id]["attempt"] == 2
            assert finals[task_id]["worker_id"].endswith(str(fm.config.worker.base_port + 1))
    finally:
        fm.restart("worker-1")


def test_a_node_stopped_past_its_leases_has_its_late_reports_refused_and_results_stored_once(fault_mesh):
    fm = fault_mesh
    ids = [submit(fm, "sleep", {"ms": 800}) for _ in range(4)]
    victim = wait_for("tasks on worker-2", lambda: [t for t in ids if (r := running_on(fm, t)) and r[0] == "worker-2"])
    before = fm.worker_status("worker-2").counters
    os.killpg(fm.pid("worker-2"), signal.SIGSTOP)
    try:
        finals = {t: wait_terminal(fm, t) for t in ids}
        stored = {t: http_json(fm.edge, "GET", f"/v1/results/{t}/info")[1] for t in victim}
    finally:
        os.killpg(fm.pid("worker-2"), signal.SIGCONT)
    assert all(f["state"] == "SUCCEEDED" for f in finals.values())
    assert all(finals[t]["attempt"] == 2 for t in victim)
    # Once awake, the old holder learns its leases are gone and drops its results.
    wait_for(
        "worker-2 to notice its lost leases",
        lambda: fm.worker_status("worker-2").counters.lost_leases >= before.lost_leases + len(victim),
    )
    after = fm.worker_status("worker-2").counters
    assert after.succeeded == before.succeeded
    for task_id in victim:
        assert get(fm, task_id) == finals[task_id]
        assert http_json(fm.edge, "GET", f"/v1/results/{task_id}/info")[1] == stored[task_id]


def _assert_stored_as_committed(fm: FaultMesh, finals: dict[str, dict]) -> None:
    """Each task's file holds what its row says (path, size, sha256), the
    StoreKeeper tells the same, and no temporary or stray file is left."""
    root = fm.config.storage_root
    for task_id, task in finals.items():
        content = (root / task["result_path"]).read_bytes()
        assert hashlib.sha256(content).hexdigest() == task["result_sha256"], task_id
        assert len(content) == int(task["result_size_bytes"])
        status, info = http_json(fm.edge, "GET", f"/v1/results/{task_id}/info")
        assert status == 200, info
        assert (info["path"], info["sha256"]) == (task["result_path"], task["result_sha256"])
    strays = [
        p.name for p in (root / "faults").iterdir() if any(t in p.name for t in finals) and p.name.startswith(".")
    ]
    assert strays == []


def test_kill_9_of_the_storekeeper_mid_stream_loses_no_result(fault_mesh):
    fm = fault_mesh
    ids = [submit(fm, "sleep", {"ms": 40}) for _ in range(4)]
    ids += [submit(fm, "echo", {"n": n, "pad": "x" * n}) for n in range(60)]
    watch = TerminalWatch(fm, ids)
    try:
        watch.take(3)  # results are flowing through the StoreKeeper's streams
        os.killpg(fm.pid("storekeeper"), signal.SIGKILL)
    finally:
        watch.close()
    fm.restart("storekeeper")
    finals = {t: wait_terminal(fm, t) for t in ids}
    assert {f["state"] for f in finals.values()} == {"SUCCEEDED"}, finals
    _assert_stored_as_committed(fm, finals)  # each echo's result differs: each file is its own task's


def test_completions_held_up_past_their_leases_are_refused_and_the_rerun_result_is_kept(fault_mesh):
    fm = fault_mesh
    lost_before = sum(fm.worker_status(w).counters.lost_leases for w in ("worker-1", "worker-2"))
    os.killpg(fm.pid("storekeeper"), signal.SIGSTOP)
    try:
        ids = [submit(fm, "echo", {"n": n}, max_attempts=6) for n in range(4)]
        # Each ran and its result waits at the stopped StoreKeeper, unrenewed:
        # its lease (2 s) expires and the task runs again.
        wait_for("every task to run again", lambda: all(get(fm, t)["attempt"] >= 2 for t in ids), timeout=30)
    finally:
        os.killpg(fm.pid("storekeeper"), signal.SIGCONT)
    finals = {t: wait_terminal(fm, t) for t in ids}
    assert {f["state"] for f in finals.values()} == {"SUCCEEDED"}, finals
    # The first attempts' completions reached the Scheduler late: refused, and
    # their workers were told so.
    wait_for(
        "the stale completions to be refused",
        lambda: (
            sum(fm.worker_status(w).counters.lost_leases for w in ("worker-1", "worker-2")) >= lost_before + len(ids)
        ),
    )
    _assert_stored_as_committed(fm, finals)


def _submit_batch(fm: FaultMesh, items: list[tuple[str, dict]]) -> list[str]:
    requests = [{"task_type": t, "params": p, "result_dir": "faults"} for t, p in items]
    status, body = http_json(fm.edge, "POST", "/v1/tasks:batch", {"requests": requests})
    assert status == 200, body
    return [str(r["task"]["task_id"]) for r in body["results"]]


def test_short_tasks_prefetched_behind_long_ones_are_taken_back_by_the_idle_node(fault_mesh):
    fm = fault_mesh
    # One commit, one dispatch round: the nodes' slots alternate (long, short,
    # long, short), so one node runs both long tasks and also holds a short one
    # prefetched, while the other node's short tasks end in milliseconds.
    ids = _submit_batch(fm, [("sleep", {"ms": 3000}), ("noop", {})] * 2 + [("noop", {})] * 4)
    finals = {t: wait_terminal(fm, t) for t in ids}
    assert {f["state"] for f in finals.values()} == {"SUCCEEDED"}
    longs = [finals[ids[0]], finals[ids[2]]]
    shorts = [f for t, f in finals.items() if t not in (ids[0], ids[2])]
    first_long_end = min(f["finished_at"] for f in longs)
    # No short task waited for a long one to end (RFC 3339 UTC strings compare in time order).
    assert all(f["finished_at"] < first_long_end for f in shorts), (longs, shorts)


def test_a_node_stopped_while_holding_prefetched_tasks_loses_none_of_them(fault_mesh):
    fm = fault_mesh
    # Every slot busy for 1.5 s and two tasks waiting in each node's prefetch.
    ids = _submit_batch(fm, [("sleep", {"ms": 1500})] * 4 + [("echo", {"n": n}) for n in range(4)])
    worker_2, worker_1 = str(fm.config.worker.base_port + 1), str(fm.config.worker.base_port)
    held_on_2 = wait_for(
        "worker-2 to hold tasks", lambda: [t for t in ids if get(fm, t).get("worker_id", "").endswith(worker_2)]
    )
    os.killpg(fm.pid("worker-2"), signal.SIGSTOP)
    try:
        finals = {t: wait_terminal(fm, t) for t in ids}
    finally:
        os.killpg(fm.pid("worker-2"), signal.SIGCONT)
    assert {f["state"] for f in finals.values()} == {"SUCCEEDED"}, finals
    for task_id in held_on_2:  # its leases expired (2 s): each ran again on worker-1
        assert finals[task_id]["attempt"] == 2
        assert finals[task_id]["worker_id"].endswith(worker_1)
    _assert_stored_as_committed(fm, finals)


def test_kill_9_of_the_leading_scheduler_the_standby_takes_over_and_every_accepted_task_completes(fault_mesh):
    fm = fault_mesh
    leader = wait_for("a leader", fm.leader)
    ids = [submit(fm, "sleep", {"ms": 300}) for _ in range(12)]
    os.killpg(fm.pid(leader), signal.SIGKILL)
    try:
        standby = "scheduler-standby" if leader == "scheduler" else "scheduler"
        wait_for("the standby to lead", lambda: fm.leader() == standby, timeout=30)
        wait_for("the edge to follow it", lambda: http_json(fm.edge, "GET", "/v1/workers")[0] == 200)
        ids += [submit(fm, "noop", {}) for _ in range(3)]
        finals = {t: wait_terminal(fm, t, timeout=90) for t in ids}
        assert all(f["state"] == "SUCCEEDED" for f in finals.values()), finals
    finally:
        fm.restart(leader)


def test_a_scheduler_restart_with_tasks_queued_and_running_loses_none(fault_mesh):
    fm = fault_mesh
    ids = [submit(fm, "sleep", {"ms": 400}) for _ in range(10)]
    leader = wait_for("a leader", fm.leader)
    other = "scheduler-standby" if leader == "scheduler" else "scheduler"
    # The other one must stand by (a Scheduler restarted by an earlier test may still be starting).
    wait_for(
        "the other Scheduler to stand by", lambda: mesh.component_health(fm.config, fm.component(other)) == "standby"
    )
    procs.stop(leader, fm.runs)  # SIGTERM: a clean restart
    try:
        finals = {t: wait_terminal(fm, t, timeout=90) for t in ids}
        assert all(f["state"] == "SUCCEEDED" for f in finals.values()), finals
    finally:
        fm.restart(leader)


def test_tasks_complete_while_the_kafka_broker_is_down(fault_mesh):
    fm = fault_mesh
    assert procs.stop("kafka", fm.runs)
    try:
        ids = [submit(fm, "noop", {}) for _ in range(5)]
        finals = [wait_terminal(fm, t) for t in ids]
        assert all(f["state"] == "SUCCEEDED" for f in finals)
    finally:
        kafka = backing.Kafka.from_config(fm.config)
        procs.start(kafka.spec(fm.config), fm.runs, mesh.log_dir(fm.config))
        procs.wait_until(kafka.probe, 30, "kafka")


def test_while_zookeeper_is_down_the_leader_steps_down_events_flow_and_all_recovers_after_it(fault_mesh):
    """kill -9 of ZooKeeper: the leading Scheduler steps down within its
    suspension allowance (about a second of a 4 s session here), before
    ZooKeeper could have elected another, so submits answer 503 at once
    instead of hanging; events keep being routed by the broker's bindings,
    and a change of the subscription map answers UNAVAILABLE within the
    request timeout. Once ZooKeeper is back a Scheduler leads again, and
    every task accepted around the kill succeeds."""
    fm = fault_mesh
    shop = {"publisher": "zk-shop", "entity_type": "customer"}
    status, body = http_json(fm.edge, "POST", "/v1/subscriptions", {"subscriber": "zk-billing", **shop})
    assert status == 200, body
    event = {"entity_id": "c-1", "operation": "CREATE", "payload": {"name": "Ada"}, **shop}
    accepted: list[str] = []

    def submit_answer() -> int:
        asked = time.monotonic()
        status, body = http_json(fm.edge, "POST", "/v1/tasks", {"task_type": "noop", "result_dir": "faults"})
        assert status in (200, 503), body
        assert time.monotonic() - asked < 15, "a submit hung while ZooKeeper was down"
        if status == 200:
            accepted.append(str(body["task_id"]))
        return status

    os.kill(procs.alive("zookeeper", fm.runs) or 0, signal.SIGKILL)
    wait_for("ZooKeeper to die", lambda: procs.alive("zookeeper", fm.runs) is None)
    try:
        wait_for("the leader to step down (submits answer 503)", lambda: submit_answer() == 503, timeout=30)
        status, body = http_json(fm.edge, "POST", "/v1/events", {**event, "event_id": str(uuid.uuid4()), "version": 1})
        assert status == 200 and body["routed_to"] == ["zk-billing"], body
        asked = time.monotonic()
        status, body = http_json(fm.edge, "POST", "/v1/subscriptions", {"subscriber": "zk-audit", **shop})
        assert status == 503 and "ZooKeeper" in body["message"], body
        assert time.monotonic() - asked < 15  # the request timeout is 2 s; Envoy may retry twice
    finally:
        backing.ensure_backing(fm.config, fm.runs, mesh.log_dir(fm.config), lambda *_: None)

    def subscribed() -> bool:
        return http_json(fm.edge, "POST", "/v1/subscriptions", {"subscriber": "zk-audit", **shop})[0] == 200

    wait_for("Subscribe to work again", subscribed, timeout=60)
    listed = http_json(fm.edge, "GET", "/v1/subscriptions?publisher=zk-shop")[1]["subscriptions"]
    assert sorted(s["subscriber"] for s in listed) == ["zk-audit", "zk-billing"]
    status, body = http_json(fm.edge, "POST", "/v1/events", {**event, "event_id": str(uuid.uuid4()), "version": 2})
    assert status == 200 and sorted(body["routed_to"]) == ["zk-audit", "zk-billing"], body

    wait_for("a Scheduler to lead again", lambda: submit_answer() == 200, timeout=90)
    assert all(wait_terminal(fm, t, timeout=90)["state"] == "SUCCEEDED" for t in accepted)


@pytest.mark.parametrize("victim", ["envoy", "leader"])
def test_a_watch_resumes_after_a_kill_and_sees_every_terminal_notice_exactly_once(fault_mesh, victim):
    """kill -9 of Envoy (then restarted) or of the leading Scheduler (the
    standby takes over, the killed one is restarted) while 500 tasks finish:
    one TaskClient.watch_all(terminal_only) stream, which resumes by itself,
    and one HTTP/JSON watch, resumed with ?resume_after= the last position
    it got, each miss no terminal notice and repeat none."""
    fm = fault_mesh
    with TerminalNotices(fm.edge) as grpc_notices, NdjsonNotices(fm.edge) as http_notices, TaskClient(fm.edge) as c:
        ids = submit_noops(c, 250, "faults") or []
        if victim == "envoy":
            os.kill(fm.pid("envoy"), signal.SIGKILL)
            fm.restart("envoy")
        else:
            leader = fm.leader()
            assert leader is not None
            os.kill(fm.pid(leader), signal.SIGKILL)
            wait_for("the standby to lead", lambda: fm.leader() not in (None, leader), timeout=60)
            fm.restart(leader)
        ids += wait_for("submits to be accepted again", lambda: submit_noops(c, 250, "faults"), timeout=60)
        grpc_notices.wait_for_all(ids)
        http_notices.wait_for_all(ids)
    what = "kill -9 and restart of Envoy" if victim == "envoy" else "kill -9 of the leader (fail-over)"
    print(
        f"{what}: the latest notice came {grpc_notices.catch_up_s(ids):.2f} s (gRPC), "
        f"{http_notices.catch_up_s(ids):.2f} s (HTTP, {http_notices.reconnects} reconnects) after its task finished"
    )
    assert sorted(grpc_notices.of(ids)) == sorted(ids)  # every notice exactly once: none missed, none repeated
    assert sorted(http_notices.of(ids)) == sorted(ids)
    assert http_notices.reconnects >= 1  # the HTTP watch did break off


def test_after_a_kill_9_of_the_leader_every_succeeded_task_has_its_started_and_completed_events(fault_mesh):
    """Events of changes committed just before the kill may still sit in the
    dead leader's producer buffer: the new leader emits again every event
    after the last position the log acknowledged, so none is missing."""
    fm = fault_mesh
    with TaskClient(fm.edge) as client:
        ids = submit_noops(client, 300, "faults") or []
        leader = fm.leader()
        assert leader is not None
        wait_for("tasks to be finishing", lambda: client.get(ids[20]).state == SUCCEEDED, timeout=60)
        os.kill(fm.pid(leader), signal.SIGKILL)  # while the rest keep finishing
        wait_for("another Scheduler to lead", lambda: fm.leader() not in (None, leader), timeout=60)
        finals = {t: client.wait(t, timeout=120) for t in ids}
    fm.restart(leader)
    succeeded = {t for t, task in finals.items() if task.state == SUCCEEDED}
    assert succeeded == set(ids)
    for kind in ("completed", "started"):  # started: also from the committed state, not only the nodes
        topic = fm.config.topic(f"task.{kind}")
        consumer = Consumer(
            {
                **kafka_adapter.client_settings(fm.config, PeerRole.ADMIN),
                "group.id": f"t-{uuid.uuid4()}",
                "enable.auto.commit": False,
            }
        )
        seen: set[str] = set()
        try:
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(fm.config.kafka.partitions)])

            def all_seen(seen: set[str] = seen, consumer: Consumer = consumer) -> bool:
                while (msg := consumer.poll(0.2)) is not None:
                    assert msg.error() is None, msg.error()
                    seen.add((msg.key() or b"").decode())
                return succeeded <= seen

            wait_for(f"a {kind} event of every succeeded task", all_seen, timeout=60)
        finally:
            consumer.close()


def leading_behind_the_edge(fm: FaultMesh) -> str:
    """The leading Scheduler, once Envoy routes to it (its health checks lag a restart)."""
    leader = wait_for("a leader", fm.leader)
    wait_for("the edge to follow it", lambda: http_json(fm.edge, "GET", "/v1/workers")[0] == 200)
    return leader


def test_a_delayed_task_runs_once_when_due_across_a_kill_9_of_the_leader_during_its_delay(fault_mesh):
    fm = fault_mesh
    leader = leading_behind_the_edge(fm)
    log_name = f"delayed-{uuid.uuid4().hex[:8]}"
    log_path = ensure_exec_log_dir() / log_name
    task_id = submit(fm, "logged_burn", {"units": 0, "tag": 1, "log": log_name}, delay="4s")
    submitted = get(fm, task_id)
    due = datetime.fromisoformat(submitted["not_before"])
    delay = due - datetime.fromisoformat(submitted["created_at"])
    assert submitted["state"] == "QUEUED" and abs(delay - timedelta(seconds=4)) < timedelta(seconds=0.1)
    os.killpg(fm.pid(leader), signal.SIGKILL)  # during the delay
    try:
        standby = "scheduler-standby" if leader == "scheduler" else "scheduler"
        wait_for("the standby to lead", lambda: fm.leader() == standby, timeout=30)
        assert datetime.now(UTC) < due, "the takeover outlasted the delay: the test proves nothing"
        final = wait_terminal(fm, task_id, timeout=60)
        assert final["state"] == "SUCCEEDED" and final["attempt"] == 1, final
        starts = [line.split() for line in log_path.read_text().splitlines() if " start " in line]
        assert len(starts) == 1, starts  # ran once
        started = datetime.fromtimestamp(float(starts[0][-1]), UTC)
        assert started >= due, (started, due)  # not before it was due
    finally:
        fm.restart(leader)
        leading_behind_the_edge(fm)
        log_path.unlink(missing_ok=True)


def test_a_schedule_every_second_across_a_kill_9_of_the_leader_makes_one_task_per_tick(fault_mesh):
    fm = fault_mesh
    leader = leading_behind_the_edge(fm)
    body = {"interval": "1s", "catch_up": "ALL", "task": {"task_type": "noop", "result_dir": "ticks"}}
    status, schedule = http_json(fm.edge, "POST", "/v1/schedules", body)
    assert status == 200, schedule
    schedule_id, created = schedule["schedule_id"], datetime.fromisoformat(schedule["created_at"])

    def ticked_through(seconds: int) -> bool:
        made = schedule_tasks(fm.edge, schedule_id, "noop")
        return bool(made) and made[-1][0] >= created + timedelta(seconds=seconds)

    try:
        wait_for("ticks under the first leader", lambda: ticked_through(4))
        os.killpg(fm.pid(leader), signal.SIGKILL)
        standby = "scheduler-standby" if leader == "scheduler" else "scheduler"
        wait_for("the standby to lead", lambda: fm.leader() == standby, timeout=30)
        wait_for("20 s of ticks", lambda: ticked_through(20), timeout=60)  # 503s while the edge follows
        status, paused = http_json(fm.edge, "POST", f"/v1/schedules/{schedule_id}:pause", {})
        assert status == 200 and paused["paused"] is True
        made = schedule_tasks(fm.edge, schedule_id, "noop")
        ticks = [tick for tick, _ in made]
        assert ticks[0] <= created + timedelta(seconds=1.001)
        # One task per second, none doubled and none missing across the fail-over:
        assert ticks == [ticks[0] + timedelta(seconds=n) for n in range(len(ticks))]
        # Ticks under a live leader are fired as they fall due (the ones the kill missed, later):
        lateness = [(datetime.fromisoformat(t["created_at"]) - tick).total_seconds() for tick, t in made[:3]]
        assert all(0 <= late < 1.0 for late in lateness), lateness
    finally:
        fm.restart(leader)
        leading_behind_the_edge(fm)
        http_json(fm.edge, "DELETE", f"/v1/schedules/{schedule_id}")
