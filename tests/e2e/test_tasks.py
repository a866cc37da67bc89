"""SPEC §2/§3 "Tasks" through Envoy only (HTTP/JSON and gRPC), on a real mesh:
submit, watch over NDJSON, download the stored result, list, cancel, and every
bad input refused with a clear status that changes nothing."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import queue
import threading
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import psutil
import pytest

from gridmesh.core.access import PeerRole
from gridmesh.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc, worker_pb2, worker_pb2_grpc
from tests.helpers import edge_channel, grpcurl, http, http_json, key_metadata, mesh_channel, ndjson, wait_for

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


def submit(edge: str, task_type: str, params: dict, result_dir: str = "e2e", **extra) -> dict:
    status, body = http_json(
        edge, "POST", "/v1/tasks", {"task_type": task_type, "params": params, "result_dir": result_dir, **extra}
    )
    assert status == 200, body
    return body


def finished(edge: str, task_id: str) -> dict:
    """The task once it has ended."""

    def ended() -> dict | None:
        task = http_json(edge, "GET", f"/v1/tasks/{task_id}")[1]
        return task if task["state"] in TERMINAL else None

    return wait_for(f"task {task_id} to end", ended)


def test_word_count_over_http_is_watched_to_succeeded_and_its_result_downloads_with_its_sha256(edge, mesh_config):
    task = submit(edge, "word_count", {"text": "the cat and the hat"})
    assert task["state"] == "QUEUED"
    uuid.UUID(task["task_id"])

    events = list(ndjson(edge, f"/v1/tasks/{task['task_id']}:watch"))
    states = [e["task"]["state"] for e in events]
    assert states[-1] == "SUCCEEDED"
    assert set(states) <= {"QUEUED", "RUNNING", "SUCCEEDED"}
    done = events[-1]["task"]
    assert done["result_path"] == f"e2e/{task['task_id']}.json"

    status, body = http(edge, "GET", f"/v1/results/{task['task_id']}")
    assert status == 200
    assert json.loads(body)["counts"] == {"the": 2, "cat": 1, "and": 1, "hat": 1}
    assert hashlib.sha256(body).hexdigest() == done["result_sha256"]
    assert len(body) == int(done["result_size_bytes"])
    # Stored at <storage root>/<result_dir>/<task_id>.json before SUCCEEDED was sent.
    on_disk = mesh_config.storage_root / "e2e" / f"{task['task_id']}.json"
    assert on_disk.read_bytes() == body

    status, info = http_json(edge, "GET", f"/v1/results/{task['task_id']}/info")
    assert status == 200 and info["sha256"] == done["result_sha256"]


def test_a_watcher_that_connects_late_gets_the_current_state_first(edge):
    task = submit(edge, "noop", {})
    wait_for(
        "the task to finish", lambda: http_json(edge, "GET", f"/v1/tasks/{task['task_id']}")[1]["state"] == "SUCCEEDED"
    )
    events = list(ndjson(edge, f"/v1/tasks/{task['task_id']}:watch"))
    assert [e["task"]["state"] for e in events] == ["SUCCEEDED"]


def test_watch_tasks_streams_every_change_of_the_named_tasks_and_terminal_only_filters(edge):
    with edge_channel(edge) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        ids = [submit(edge, "sleep", {"ms": 50})["task_id"] for _ in range(3)]
        seen: dict[str, str] = {}
        for event in stub.WatchTasks(
            scheduler_pb2.WatchTasksRequest(task_ids=ids, terminal_only=True), timeout=60, metadata=key_metadata()
        ):
            assert event.task.state in (3, 4, 5)
            seen[event.task.task_id] = common_pb2.TaskState.Name(event.task.state)
            if len(seen) == len(ids):
                break
        assert seen == dict.fromkeys(ids, "SUCCEEDED")


def test_watch_tasks_of_one_task_type_streams_only_that_types_changes(edge):
    with edge_channel(edge) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        call = stub.WatchTasks(
            scheduler_pb2.WatchTasksRequest(task_type="primes", terminal_only=True), timeout=60, metadata=key_metadata()
        )
        events: queue.Queue[common_pb2.Task] = queue.Queue()

        def read() -> None:
            with contextlib.suppress(grpc.RpcError):  # ends with the cancel below
                for event in call:
                    events.put(event.task)

        threading.Thread(target=read, daemon=True).start()
        # The stream only sees what happens after it opened: submit pairs until ours shows up.
        primes: set[str] = set()
        others: set[str] = set()
        seen: list[common_pb2.Task] = []
        while not primes & {t.task_id for t in seen}:
            assert len(primes) < 20, "no event of the watched type arrived"
            others.add(submit(edge, "noop", {})["task_id"])
            primes.add(submit(edge, "primes", {"n": 100})["task_id"])
            with contextlib.suppress(queue.Empty):
                seen.append(events.get(timeout=2))
        call.cancel()
    assert {t.task_type for t in seen} == {"primes"}
    assert not others & {t.task_id for t in seen}


def test_watch_tasks_of_an_unknown_task_type_is_400_naming_the_known_types(edge):
    status, body = http(edge, "GET", "/v1/tasks:watch?task_type=prime")
    assert status == 400
    assert "task_type 'prime' is unknown; known types:" in body.decode() and "primes" in body.decode()


def test_each_builtin_type_runs_and_returns_its_result(edge):
    cases: dict[str, tuple[dict[str, object], object]] = {
        "noop": ({}, None),
        "echo": ({"a": [1, "b"]}, {"a": [1, "b"]}),
        "sleep": ({"ms": 10}, {"slept_ms": 10}),
        "burn": ({"units": 1}, None),
        "primes": ({"n": 1000}, {"n": 1000, "count": 168}),
    }
    ids = {name: submit(edge, name, params)["task_id"] for name, (params, _) in cases.items()}
    for name, task_id in ids.items():
        final = list(ndjson(edge, f"/v1/tasks/{task_id}:watch"))[-1]["task"]
        assert final["state"] == "SUCCEEDED", final
        _, body = http(edge, "GET", f"/v1/results/{task_id}")
        expected = cases[name][1]
        if expected is not None:
            assert json.loads(body) == expected


def test_the_same_idempotency_key_returns_the_same_task(edge):
    key = f"order-{uuid.uuid4()}"
    first = submit(edge, "noop", {}, idempotency_key=key)
    second = submit(edge, "noop", {}, idempotency_key=key)
    assert first["task_id"] == second["task_id"]


def test_list_tasks_filters_by_type_and_pages(edge):
    ids = {submit(edge, "echo", {"page": i}, result_dir="paging")["task_id"] for i in range(5)}
    seen: list[str] = []
    token = ""
    while True:
        status, page = http_json(edge, "GET", f"/v1/tasks?task_type=echo&page_size=2&page_token={token}")
        assert status == 200, page
        assert all(t["task_type"] == "echo" for t in page["tasks"])
        assert len(page["tasks"]) <= 2
        seen += [t["task_id"] for t in page["tasks"]]
        token = page["next_page_token"]
        if not token:
            break
    assert ids <= set(seen)
    assert len(seen) == len(set(seen))


def test_worker_status_shows_running_tasks_with_their_os_pid_and_cancel_stops_them(edge, mesh_config):
    task = submit(edge, "sleep", {"ms": 60_000})
    worker_address = f"{mesh_config.worker.host}:{mesh_config.worker.base_port}"
    with mesh_channel(mesh_config, worker_address, PeerRole.WORKER) as channel:
        stub = worker_pb2_grpc.WorkerStub(channel)

        def running():
            status = stub.GetWorkerStatus(worker_pb2.GetWorkerStatusRequest(), timeout=5)
            return next((r for r in status.running if r.task_id == task["task_id"]), None)

        entry = wait_for("the sleep task to run", running)
        assert entry.pid > 0 and entry.task_type == "sleep"
        status, cancelled = http_json(edge, "POST", f"/v1/tasks/{task['task_id']}:cancel", {})
        assert status == 200 and cancelled["state"] == "CANCELLED"
        wait_for("the task process to be stopped", lambda: running() is None)
    status, again = http_json(edge, "POST", f"/v1/tasks/{task['task_id']}:cancel", {})
    assert status == 400 and "already CANCELLED" in again["message"]


def test_a_task_that_outlives_its_run_timeout_ends_failed_timeout_and_its_process_is_gone(edge, mesh_config):
    task = submit(edge, "sleep", {"ms": 60_000}, "timeouts", run_timeout="1.5s", max_attempts=1)
    assert task["run_timeout"] == "1.500s"
    worker_address = f"{mesh_config.worker.host}:{mesh_config.worker.base_port}"
    with mesh_channel(mesh_config, worker_address, PeerRole.WORKER) as channel:
        status = worker_pb2_grpc.WorkerStub(channel).GetWorkerStatus

        def running():
            return next((r for r in status(worker_pb2.GetWorkerStatusRequest(), timeout=5).running
                         if r.task_id == task["task_id"]), None)  # fmt: skip

        pid = wait_for("the sleep task to run", running).pid
    final = wait_for(
        "the task to end",
        lambda: (t := http_json(edge, "GET", f"/v1/tasks/{task['task_id']}")[1])["state"] in TERMINAL and t,
    )
    assert final["state"] == "FAILED" and final["failure_reason"] == "TIMEOUT", final
    assert "run_timeout of 1.5 s" in final["error"] and f"pid {pid}" in final["error"]
    assert not psutil.pid_exists(pid)  # killed (and reaped), not left running
    ran = datetime.fromisoformat(final["finished_at"]) - datetime.fromisoformat(final["started_at"])
    assert timedelta(seconds=1.5) <= ran < timedelta(seconds=30)  # ended by the limit, long before the sleep's 60 s
    # the node's slot is free again: a task runs after it
    after = submit(edge, "noop", {}, "timeouts")
    wait_for(
        "a task after it", lambda: http_json(edge, "GET", f"/v1/tasks/{after['task_id']}")[1]["state"] == "SUCCEEDED"
    )


def test_a_task_whose_deadline_passes_while_queued_ends_expired_and_never_runs(edge, mesh_config):
    # Fill the only node: its slots and its prefetch room (HIGH, so nothing is taken back for the LOW task).
    capacity = mesh_config.worker.slots + mesh_config.worker.prefetch_for(mesh_config.worker.slots)
    blockers = [submit(edge, "sleep", {"ms": 20_000}, "deadlines", priority="HIGH") for _ in range(capacity)]
    try:
        states = lambda: {http_json(edge, "GET", f"/v1/tasks/{b['task_id']}")[1]["state"] for b in blockers}  # noqa: E731
        wait_for("the node to be full", lambda: states() == {"RUNNING"})
        deadline = datetime.now(UTC) + timedelta(seconds=2)
        task = submit(edge, "noop", {}, "deadlines", priority="LOW", deadline=deadline.isoformat())
        assert task["state"] == "QUEUED" and datetime.fromisoformat(task["deadline"]) == deadline
        final = finished(edge, task["task_id"])
        assert final["state"] == "FAILED" and final["failure_reason"] == "EXPIRED", final
        assert "never ran" in final["error"] and not final["worker_id"] and "started_at" not in final
        expired_at = datetime.fromisoformat(final["finished_at"])
        assert deadline <= expired_at < deadline + timedelta(seconds=5)
        assert http(edge, "GET", f"/v1/results/{task['task_id']}")[0] == 404  # nothing ran, nothing stored
    finally:
        for b in blockers:
            http_json(edge, "POST", f"/v1/tasks/{b['task_id']}:cancel", {})


def test_a_failing_task_is_retried_after_backoffs_within_its_policy_then_fails_with_its_error(edge):
    policy = {"max_attempts": 3, "initial_backoff": "0.4s", "max_backoff": "5s", "multiplier": 2}
    task = submit(edge, "fail", {"message": "not yet"}, "retries", retry=policy)
    assert task["retry"]["max_attempts"] == 3 and task["retry"]["initial_backoff"] == "0.400s"
    events = [e for e in ndjson(edge, f"/v1/tasks/{task['task_id']}:watch")]
    final = events[-1]["task"]
    assert final["state"] == "FAILED" and final["failure_reason"] == "ERROR" and final["attempt"] == 3
    assert final["error"] == "TaskFailed: not yet"
    retried = {e["task"]["attempt"]: e for e in events if e["task"]["state"] == "QUEUED" and e["task"]["attempt"] > 1}
    started = {e["task"]["attempt"]: e for e in events if e["task"]["state"] == "RUNNING"}
    assert sorted(retried) == [2, 3], [(e["task"]["state"], e["task"]["attempt"]) for e in events]
    for attempt, (low, high) in {2: (0.2, 0.4), 3: (0.4, 0.8)}.items():
        due = datetime.fromisoformat(retried[attempt]["task"]["not_before"])
        waited = (due - datetime.fromisoformat(retried[attempt]["occurred_at"])).total_seconds()
        assert low - 0.01 <= waited <= high + 0.01, (attempt, waited)  # drawn within the policy's range
        if attempt in started:  # the attempt ran only once due
            assert datetime.fromisoformat(started[attempt]["occurred_at"]) >= due


def test_a_failed_task_is_rerun_as_a_new_task_and_an_unfinished_or_succeeded_one_is_refused(edge):
    failed = finished(edge, submit(edge, "fail", {"message": "first time"}, "reruns")["task_id"])
    assert failed["state"] == "FAILED" and failed["failure_reason"] == "ERROR"
    status, again = http_json(edge, "POST", f"/v1/tasks/{failed['task_id']}:rerun", {})
    assert status == 200 and again["rerun_of"] == failed["task_id"] and again["task_id"] != failed["task_id"]
    assert (again["task_type"], again["params"], again["result_dir"]) == ("fail", {"message": "first time"}, "reruns")
    assert finished(edge, again["task_id"])["state"] == "FAILED"  # it ran again
    assert http_json(edge, "GET", f"/v1/tasks/{failed['task_id']}")[1] == failed  # the original is unchanged
    ok = finished(edge, submit(edge, "noop", {}, "reruns")["task_id"])
    status, error = http_json(edge, "POST", f"/v1/tasks/{ok['task_id']}:rerun", {})
    assert status == 400 and "only FAILED or CANCELLED" in error["message"]
    _, before = http_json(edge, "GET", "/v1/tasks?page_size=1")
    status, counted = http_json(
        edge, "POST", "/v1/tasks:rerun", {"task_type": "fail", "failure_reason": "ERROR", "dry_run": True}
    )
    assert status == 200 and counted["matched"] >= 2 and counted["tasks"] == []
    assert http_json(edge, "GET", "/v1/tasks?page_size=1")[1] == before  # a dry run makes nothing


def test_retention_deletes_an_expired_task_and_its_result_file_and_nothing_else(edge, mesh_config):
    short = finished(edge, submit(edge, "word_count", {"text": "gone soon"}, "retention", result_ttl="2s")["task_id"])
    kept = finished(edge, submit(edge, "word_count", {"text": "kept"}, "retention")["task_id"])
    assert short["state"] == kept["state"] == "SUCCEEDED"
    assert datetime.fromisoformat(short["expires_at"]) == datetime.fromisoformat(short["finished_at"]) + timedelta(
        seconds=2
    )
    short_file = mesh_config.storage_root / short["result_path"]
    assert short_file.exists()
    _, error = wait_for(
        "retention to delete the result",
        lambda: r if (r := http_json(edge, "GET", f"/v1/results/{short['task_id']}"))[0] == 404 else None,
    )
    assert "expired" in error["message"], error
    assert not short_file.exists()
    assert wait_for("the task row to go", lambda: http_json(edge, "GET", f"/v1/tasks/{short['task_id']}")[0] == 404)
    # Nothing else: the task kept for the default week is there, with its result.
    assert http_json(edge, "GET", f"/v1/tasks/{kept['task_id']}")[1]["state"] == "SUCCEEDED"
    assert http(edge, "GET", f"/v1/results/{kept['task_id']}")[0] == 200
    assert (mesh_config.storage_root / kept["result_path"]).exists()
    # A watch resumed from before the deleted task's last change would miss it: refused, saying what to do.
    status, error = http_json(edge, "GET", "/v1/tasks:watch?resume_after=1")
    assert status == 400 and error["code"] == 11 and "list the tasks again" in error["message"], error


def test_a_task_that_ends_within_its_run_timeout_succeeds(edge):
    quick = submit(edge, "noop", {}, "timeouts", run_timeout="30s")
    done = wait_for(
        "the task to end",
        lambda: (t := http_json(edge, "GET", f"/v1/tasks/{quick['task_id']}")[1])["state"] in TERMINAL and t,
    )
    assert done["state"] == "SUCCEEDED" and done["failure_reason"] == "FAILURE_REASON_UNSPECIFIED"


def test_workers_are_listed_with_slots_and_state(edge):
    status, body = http_json(edge, "GET", "/v1/workers")
    assert status == 200
    (worker,) = body["workers"]
    assert worker["state"] == "ACTIVE" and worker["slots"] >= 1
    assert set(worker["task_types"]) >= {"noop", "word_count"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task_type": "nope", "params": {}, "result_dir": "x"}, "task_type"),
        ({"task_type": "sleep", "params": {"ms": "ten"}, "result_dir": "x"}, "params.ms"),
        ({"task_type": "sleep", "params": {}, "result_dir": "x"}, "params"),
        ({"task_type": "sleep", "params": {"ms": -1}, "result_dir": "x"}, "params.ms"),
        ({"task_type": "primes", "params": {"n": 10**12}, "result_dir": "x"}, "params.n"),
        ({"task_type": "noop", "params": {}, "result_dir": "/etc"}, "result_dir"),
        ({"task_type": "noop", "params": {}, "result_dir": "a/../../b"}, "result_dir"),
        ({"task_type": "noop", "params": {}, "result_dir": "a b;rm"}, "result_dir"),
        ({"task_type": "noop", "params": {}, "result_dir": "x" * 300}, "result_dir"),
        ({"task_type": "echo", "params": {"blob": "x" * 1_100_000}, "result_dir": "x"}, "params"),
        ({"task_type": "noop", "params": {}, "result_dir": "x", "max_attempts": 1000}, "max_attempts"),
        ({"task_type": "noop", "params": {}, "result_dir": "x", "run_timeout": "-1s"}, "run_timeout"),
        ({"task_type": "noop", "params": {}, "result_dir": "x", "run_timeout": "864000s"}, "run_timeout"),
        ({"task_type": "noop", "params": {}, "result_dir": "x", "deadline": "2020-01-01T00:00:00Z"}, "deadline"),
        ({"task_type": "noop", "params": {}, "result_dir": "x", "delay": "-5s"}, "delay"),
        ({"task_type": "noop", "params": {}, "result_dir": "x", "result_ttl": "0.5s"}, "result_ttl"),
        ({"task_type": "fail", "params": {}, "result_dir": "x", "retry": {"max_attempts": 0}}, "retry.max_attempts"),
        (
            {"task_type": "noop", "params": {}, "result_dir": "x", "delay": "5s", "not_before": "2030-01-01T00:00:00Z"},
            "delay",
        ),
    ],
)
def test_bad_submits_get_400_naming_the_field_and_queue_nothing(edge, body, field):
    _, before = http_json(edge, "GET", "/v1/tasks?page_size=1")
    status, error = http_json(edge, "POST", "/v1/tasks", body)
    assert status == 400, error
    assert error["code"] == 3  # INVALID_ARGUMENT
    assert field in error["message"]
    _, after = http_json(edge, "GET", "/v1/tasks?page_size=1")
    assert [t["task_id"] for t in after["tasks"]] == [t["task_id"] for t in before["tasks"]]


def test_a_batch_over_http_answers_each_item_and_a_bad_item_queues_nothing_while_the_rest_run(edge):
    _, before = http_json(edge, "GET", "/v1/tasks?page_size=1000&task_type=word_count")
    items = [
        {"task_type": "word_count", "params": {"text": "a b a"}, "result_dir": "batch"},
        {"task_type": "sleep", "params": {"ms": -1}, "result_dir": "batch"},
        {"task_type": "word_count", "params": {"text": "c"}, "result_dir": "batch", "priority": "HIGH"},
        {"task_type": "word_count", "params": {"text": "d"}, "result_dir": "../etc"},
    ]
    status, body = http_json(edge, "POST", "/v1/tasks:batch", {"requests": items})
    assert status == 200, body
    first, bad_params, high, bad_dir = body["results"]
    assert first["task"]["state"] == "QUEUED" and high["task"]["priority"] == "HIGH"
    assert bad_params["error"]["code"] == 3 and "params.ms" in bad_params["error"]["message"]
    assert bad_dir["error"]["code"] == 3 and "result_dir" in bad_dir["error"]["message"]
    violation = bad_dir["error"]["details"][0]["field_violations"][0]
    assert violation["field"] == "result_dir"
    for accepted in (first, high):
        task_id = accepted["task"]["task_id"]
        done = wait_for("the task to end", functools.partial(_terminal, edge, task_id))
        assert done["state"] == "SUCCEEDED" and done["result_path"] == f"batch/{task_id}.json"
    _, after = http_json(edge, "GET", "/v1/tasks?page_size=1000&task_type=word_count")
    assert len(after["tasks"]) == len(before["tasks"]) + 2  # the refused word_count was never queued


def test_a_batch_over_the_limit_is_400_and_queues_nothing(edge):
    _, before = http_json(edge, "GET", "/v1/tasks?page_size=1")
    items = [{"task_type": "noop", "result_dir": "batch"}] * 1001
    status, error = http_json(edge, "POST", "/v1/tasks:batch", {"requests": items})
    assert status == 400 and "the limit is 1000" in error["message"], error
    _, after = http_json(edge, "GET", "/v1/tasks?page_size=1")
    assert after["tasks"] == before["tasks"]


def _terminal(edge: str, task_id: str) -> dict | None:
    _, task = http_json(edge, "GET", f"/v1/tasks/{task_id}")
    return task if task["state"] in TERMINAL else None


def test_unknown_task_id_is_404_and_a_malformed_one_400(edge):
    status, error = http_json(edge, "GET", f"/v1/tasks/{uuid.uuid4()}")
    assert status == 404 and "does not exist" in error["message"]
    status, error = http_json(edge, "GET", "/v1/tasks/not-a-uuid")
    assert status == 400 and "task_id" in error["message"]
    status, error = http_json(edge, "GET", f"/v1/results/{uuid.uuid4()}")
    assert status == 404


def test_grpcurl_submits_through_the_edge(edge):
    result = grpcurl(
        "-d",
        '{"task_type":"echo","params":{"k":"v"},"result_dir":"grpcurl"}',
        edge,
        "gridmesh.v1.Scheduler/SubmitTask",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["state"] == "QUEUED"
