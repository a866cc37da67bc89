"""The Python client (``gridmesh.clients.TaskClient``) and the task commands
of the ``gridmesh`` CLI (SPEC §2 Scheduler and StoreKeeper, §4) against a
real mesh, through its edge (Envoy): submit, wait, watch, list, cancel, and
fetch results whose bytes match the SHA-256 the task reports."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import hashlib
import itertools
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from gridmesh.clients import TaskClient, TaskError, submit_request
from gridmesh.v1 import common_pb2, scheduler_pb2
from tests.helpers import edge_channel

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

GRIDMESH = str(Path(sys.executable).parent / "gridmesh")
WAIT_S = 60.0
A_B_A = {"words": 3, "unique": 2, "counts": {"a": 2, "b": 1}}


@pytest.fixture
def client(edge: str) -> Iterator[TaskClient]:
    with TaskClient(edge) as c:
        yield c


def gridmesh(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRIDMESH, *args], env=env, capture_output=True, text=True, timeout=120)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the client --------------------------------------------------------------------


def test_word_count_submitted_through_the_edge_succeeds_with_result_bytes_matching_its_sha256(client):
    task = client.submit("word_count", {"text": "a b a"}, "client-tests")
    assert task.state == common_pb2.QUEUED
    assert uuid.UUID(task.task_id)

    done = client.wait(task.task_id, timeout=WAIT_S)

    assert done.state == common_pb2.SUCCEEDED, done.error
    assert done.result_path == f"client-tests/{task.task_id}.json"
    data = client.result(task.task_id)
    assert sha256(data) == done.result_sha256
    assert len(data) == done.result_size_bytes
    assert json.loads(data) == A_B_A


def test_result_to_streams_the_result_into_a_file_and_reports_its_sha256(client, tmp_path):
    task = client.submit("word_count", {"text": "the quick brown fox " * 2000}, "client-tests")
    done = client.wait(task.task_id, timeout=WAIT_S)
    target = tmp_path / "result.json"

    download = client.result_to(task.task_id, target)

    assert download.path == target
    assert download.size_bytes == done.result_size_bytes == target.stat().st_size
    assert download.sha256 == done.result_sha256 == sha256(target.read_bytes())
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no partial file left behind
    info = client.result_info(task.task_id)
    assert (info.path, info.sha256, info.size_bytes) == (done.result_path, done.result_sha256, done.result_size_bytes)


def test_a_failed_download_leaves_an_existing_file_untouched(client, tmp_path):
    target = tmp_path / "keep.json"
    target.write_bytes(b"previous")

    with pytest.raises(TaskError) as error:
        client.result_to(str(uuid.uuid4()), target)

    assert error.value.code_name == "NOT_FOUND"
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.json"]


def test_watch_yields_the_current_state_first_and_ends_after_the_terminal_state(client):
    task = client.submit("sleep", {"ms": 200}, "client-tests")

    events = list(client.watch(task.task_id))

    assert events[0].task.state in (common_pb2.QUEUED, common_pb2.RUNNING)
    assert events[-1].task.state == common_pb2.SUCCEEDED
    assert all(e.task.task_id == task.task_id for e in events)
    assert all(e.task.state not in (common_pb2.SUCCEEDED, common_pb2.FAILED) for e in events[:-1])


def test_watch_all_of_named_tasks_yields_only_their_terminal_events(client):
    ids = [client.submit("noop", {}, "client-tests").task_id for _ in range(2)]

    seen = {}
    with contextlib.closing(client.watch_all(ids, terminal_only=True)) as events:
        for event in events:
            seen[event.task.task_id] = event.task.state
            if len(seen) == len(ids):
                break

    assert seen == dict.fromkeys(ids, common_pb2.SUCCEEDED)


def test_list_pages_through_tasks_newest_first(client):
    result_dir = f"client-tests/list-{uuid.uuid4().hex[:8]}"
    ids = [client.submit("echo", {"i": i}, result_dir).task_id for i in range(3)]

    newest = itertools.islice(client.list(task_type="echo", page_size=1), 10)  # ten pages of one
    listed = [t.task_id for t in newest if t.result_dir == result_dir]

    assert listed == ids[::-1]


def test_list_filters_by_state(client):
    done = client.wait(client.submit("noop", {}, "client-tests").task_id, timeout=WAIT_S)
    succeeded_noops = list(itertools.islice(client.list(state="SUCCEEDED", task_type="noop", page_size=20), 100))
    assert any(t.task_id == done.task_id for t in succeeded_noops)
    assert all(t.state == common_pb2.SUCCEEDED and t.task_type == "noop" for t in succeeded_noops)
    cancelled = list(itertools.islice(client.list(state=common_pb2.CANCELLED, page_size=20), 100))
    assert all(t.state == common_pb2.CANCELLED for t in cancelled)


def test_cancelled_task_ends_cancelled_and_waiting_for_it_answers_it(client):
    task = client.submit("sleep", {"ms": 60_000}, "client-tests", priority="LOW")

    cancelled = client.cancel(task.task_id)
    final = client.wait(task.task_id, timeout=WAIT_S)

    assert cancelled.task_id == task.task_id
    assert final.state == common_pb2.CANCELLED
    with pytest.raises(TaskError) as error:
        client.cancel(task.task_id)
    assert error.value.code_name == "FAILED_PRECONDITION"


def test_wait_gives_up_after_its_timeout_with_deadline_exceeded(client):
    task = client.submit("sleep", {"ms": 60_000}, "client-tests")
    try:
        with pytest.raises(TaskError) as error:
            client.wait(task.task_id, timeout=0.5)
        assert error.value.code_name == "DEADLINE_EXCEEDED"
        assert task.task_id in error.value.message
    finally:
        client.cancel(task.task_id)


def test_same_idempotency_key_answers_the_same_task(client):
    key = f"client-{uuid.uuid4()}"
    first = client.submit("noop", {}, "client-tests", idempotency_key=key, priority="HIGH", max_attempts=2)
    second = client.submit("noop", {}, "client-tests", idempotency_key=key, priority="HIGH", max_attempts=2)
    assert second.task_id == first.task_id
    assert (first.priority, first.max_attempts) == (common_pb2.HIGH, 2)


def test_server_errors_become_task_errors_with_the_status_code_and_message(client):
    with pytest.raises(TaskError) as missing:
        client.get(str(uuid.uuid4()))
    assert missing.value.code_name == "NOT_FOUND"

    with pytest.raises(TaskError) as unknown:
        client.submit("no_such_type", {}, "client-tests")
    assert unknown.value.code_name == "INVALID_ARGUMENT"
    assert "no_such_type" in unknown.value.message

    with pytest.raises(TaskError) as unsafe:
        client.submit("noop", {}, "../escape")
    assert unsafe.value.code_name == "INVALID_ARGUMENT"


class CallCounter(grpc.UnaryUnaryClientInterceptor):
    """Counts the unary calls a channel makes, by method."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def intercept_unary_unary(self, continuation, client_call_details, request):
        with self._lock:
            self.calls[client_call_details.method.rsplit("/", 1)[-1]] += 1
        return continuation(client_call_details, request)


def test_concurrent_submits_share_submit_tasks_calls_and_each_answers_its_own_task(edge):
    counter = CallCounter()
    channel = grpc.intercept_channel(edge_channel(edge), counter)
    with TaskClient(channel=channel) as client, concurrent.futures.ThreadPoolExecutor(32) as pool:
        futures = [
            pool.submit(client.submit, "echo", {"n": n}, "coalesced", idempotency_key=f"co-{uuid.uuid4()}-{n}")
            for n in range(200)
        ]
        bad = pool.submit(client.submit, "sleep", {"ms": -1}, "coalesced")
        tasks = [f.result(timeout=60) for f in futures]
        with pytest.raises(TaskError) as info:
            bad.result(timeout=60)
    channel.close()

    assert info.value.code_name == "INVALID_ARGUMENT" and "params.ms" in info.value.message
    assert [t.params["n"] for t in tasks] == list(range(200))  # each call its own task
    assert len({t.task_id for t in tasks}) == 200 and all(t.state == common_pb2.QUEUED for t in tasks)
    assert counter.calls["SubmitTasks"] >= 1
    assert counter.calls["SubmitTask"] + counter.calls["SubmitTasks"] < 201  # fewer round trips than calls
    with TaskClient(edge) as reader:
        assert reader.wait(tasks[-1].task_id, timeout=60).state == common_pb2.SUCCEEDED


def test_submit_many_answers_each_request_with_its_task_or_its_error(client):
    answers = client.submit_many(
        [
            submit_request("noop", {}, "many"),
            submit_request("noop", {}, "/etc"),
            submit_request("echo", {"x": 1}, "many", priority="HIGH"),
        ]
    )
    ok, refused, high = answers
    assert ok.state == common_pb2.QUEUED and high.priority == common_pb2.HIGH
    assert isinstance(refused, TaskError) and refused.code_name == "INVALID_ARGUMENT"
    assert "result_dir" in refused.message


def test_cli_submit_from_a_file_submits_every_line_and_names_the_refused_ones(mesh_environment, client, tmp_path):
    lines = [
        json.dumps({"task_type": "word_count", "params": {"text": "x y"}}),
        json.dumps({"task_type": "nope"}),
        "not json",
        "",
        json.dumps({"task_type": "echo", "params": {"k": 1}, "result_dir": "elsewhere", "priority": "HIGH"}),
    ]
    source = tmp_path / "tasks.jsonl"
    source.write_text("\n".join(lines) + "\n")

    result = gridmesh(mesh_environment, "submit", "--from", str(source), "--result-dir", "from-file", "--json")

    assert result.returncode == 1, result.stderr
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2
    assert errors[0].startswith("gridmesh: line 3: INVALID_ARGUMENT: not valid JSON")
    assert errors[1].startswith("gridmesh: line 2: INVALID_ARGUMENT:") and "nope" in errors[1]
    first, last = (json.loads(line) for line in result.stdout.splitlines())
    assert (first["task_type"], first["result_dir"], first["state"]) == ("word_count", "from-file", "QUEUED")
    assert (last["task_type"], last["result_dir"], last["priority"]) == ("echo", "elsewhere", "HIGH")
    assert client.wait(first["task_id"], timeout=60).state == common_pb2.SUCCEEDED


def test_a_bad_priority_name_is_refused_before_anything_is_sent(client):
    with pytest.raises(ValueError, match="priority 'URGENT' is not one of LOW, NORMAL, HIGH"):
        client.submit("noop", {}, "client-tests", priority="URGENT")


def test_an_unreachable_edge_is_a_task_error_unavailable(tmp_path):
    with (
        TaskClient(f"unix:{tmp_path / 'nothing-listens-here'}", rpc_timeout_s=5) as client,
        pytest.raises(TaskError) as error,
    ):
        client.task_types()
    assert error.value.code_name == "UNAVAILABLE"


def test_task_types_and_workers_are_listed(client):
    assert {t.name for t in client.task_types()} >= {"noop", "echo", "sleep", "burn", "word_count", "primes"}
    workers = client.workers()
    assert any(w.state == scheduler_pb2.ACTIVE and w.slots >= 1 for w in workers)


# -- the CLI ---------------------------------------------------------------------


def test_cli_submit_wait_json_prints_the_queued_then_the_succeeded_task(mesh_environment, client):
    result = gridmesh(
        mesh_environment,
        *("submit", "word_count", "--params", '{"text":"a b a"}', "--result-dir", "demo", "--wait", "--json"),
    )

    assert result.returncode == 0, result.stderr
    submitted, final = (json.loads(line) for line in result.stdout.splitlines())
    assert submitted["state"] == "QUEUED"
    assert submitted["params"] == {"text": "a b a"}
    assert final["task_id"] == submitted["task_id"]
    assert final["state"] == "SUCCEEDED"
    assert final["result_path"] == f"demo/{final['task_id']}.json"
    assert sha256(client.result(final["task_id"])) == final["result_sha256"]


def test_cli_submit_wait_prints_the_final_state_result_path_and_sha256(mesh_environment, client):
    result = gridmesh(
        mesh_environment, "submit", "word_count", "--params", '{"text":"a b a"}', "--result-dir", "demo", "--wait"
    )

    assert result.returncode == 0, result.stderr
    first, *block = result.stdout.splitlines()
    task_id, state = first.split()
    assert state == "QUEUED"
    done = client.get(task_id)
    assert block == [
        f"task_id:  {task_id}",
        "state:    SUCCEEDED",
        f"result:   demo/{task_id}.json ({done.result_size_bytes} bytes)",
        f"sha256:   {done.result_sha256}",
    ]


def test_cli_submit_wait_exits_1_when_the_task_is_cancelled(mesh_environment, client):
    argv = [GRIDMESH, "submit", "sleep", "--params", '{"ms": 60000}', "--result-dir", "demo", "--wait", "--json"]
    with subprocess.Popen(argv, env=mesh_environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as cli:
        try:
            assert cli.stdout is not None
            submitted = json.loads(cli.stdout.readline())  # printed at once, before waiting
            client.cancel(submitted["task_id"])
            out, err = cli.communicate(timeout=WAIT_S)
        finally:
            if cli.poll() is None:
                cli.kill()

    assert cli.returncode == 1, err
    final = json.loads(out)
    assert (final["task_id"], final["state"]) == (submitted["task_id"], "CANCELLED")


def test_cli_watch_of_a_cancelled_task_ends_with_a_cancelled_line_and_exit_1(mesh_environment, client):
    task = client.submit("sleep", {"ms": 60_000}, "demo")
    cancel = gridmesh(mesh_environment, "cancel", task.task_id)
    assert cancel.returncode == 0, cancel.stderr
    assert cancel.stdout.split()[0] == task.task_id

    watched = gridmesh(mesh_environment, "watch", task.task_id)

    assert watched.returncode == 1
    last = watched.stdout.splitlines()[-1].split()
    assert last[1:4] == [task.task_id, "sleep", "CANCELLED"]


def test_cli_result_writes_the_result_bytes_to_a_file(mesh_environment, client, tmp_path):
    done = client.wait(client.submit("word_count", {"text": "a b a"}, "demo").task_id, timeout=WAIT_S)
    target = tmp_path / "out.json"

    result = gridmesh(mesh_environment, "result", done.task_id, "-o", str(target))

    assert result.returncode == 0, result.stderr
    assert sha256(target.read_bytes()) == done.result_sha256
    assert result.stdout.strip() == (f"wrote {done.result_size_bytes} bytes to {target} (sha256 {done.result_sha256})")
    to_stdout = subprocess.run(
        [GRIDMESH, "result", done.task_id], env=mesh_environment, capture_output=True, timeout=120
    )
    assert to_stdout.returncode == 0
    assert to_stdout.stdout == target.read_bytes()
    assert json.loads(to_stdout.stdout) == A_B_A


def test_cli_watch_follows_a_task_to_its_end_one_line_per_event(mesh_environment, client):
    task = client.submit("sleep", {"ms": 200}, "demo")

    result = gridmesh(mesh_environment, "watch", task.task_id, "--json")

    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert {e["task"]["task_id"] for e in events} == {task.task_id}
    assert events[-1]["task"]["state"] == "SUCCEEDED"
    assert all(e["occurred_at"] for e in events)


def test_cli_get_tasks_task_types_and_workers_print_readable_output(mesh_environment, client):
    done = client.wait(client.submit("noop", {}, "demo").task_id, timeout=WAIT_S)

    got = gridmesh(mesh_environment, "get", done.task_id)
    assert got.returncode == 0, got.stderr
    assert f"task_id:          {done.task_id}" in got.stdout.splitlines()
    assert "state:            SUCCEEDED" in got.stdout.splitlines()

    listed = gridmesh(mesh_environment, "tasks", "--type", "noop", "--state", "succeeded", "--limit", "500")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("task_id ")
    assert any(line.startswith(done.task_id) for line in listed.stdout.splitlines())

    types = gridmesh(mesh_environment, "task-types")
    assert types.returncode == 0, types.stderr
    assert any(line.split()[:3] == ["word_count", "text:", "string"] for line in types.stdout.splitlines())

    workers = gridmesh(mesh_environment, "workers", "--json")
    assert workers.returncode == 0, workers.stderr
    assert any(json.loads(line)["state"] == "ACTIVE" for line in workers.stdout.splitlines())


def test_cli_reports_grpc_errors_on_one_line_with_their_code(mesh_environment):
    missing = str(uuid.uuid4())
    not_found = gridmesh(mesh_environment, "get", missing)
    assert not_found.returncode == 1
    assert not_found.stderr.splitlines() == [f"gridmesh: NOT_FOUND: task {missing} does not exist"]

    invalid = gridmesh(mesh_environment, "submit", "no_such_type", "--result-dir", "demo")
    assert invalid.returncode == 2
    assert len(invalid.stderr.splitlines()) == 1
    assert invalid.stderr.startswith("gridmesh: INVALID_ARGUMENT: ")
    assert invalid.stdout == ""
