"""SPEC §4, the task commands (`gridmesh submit`, `get`, `watch`, `result`,
`cancel`, `tasks`, `task-types`, `workers`): how their arguments are parsed
and what they print, as pure functions of protobuf messages. No mesh needed."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from google.protobuf import struct_pb2, timestamp_pb2

from gridmesh.cli import tasks
from gridmesh.cli.main import build_parser, main, parse_args
from gridmesh.clients import TaskError
from gridmesh.common.errors import InvalidArgument
from gridmesh.v1 import common_pb2, scheduler_pb2, storekeeper_pb2

TASK_ID = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
SHA = "a37fa7becfcdd19e73eff68764f63290675e2167d927789cedb9b1088c092fde"


def ts(text: str) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.fromisoformat(text))
    return stamp


def struct(value: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


def succeeded_task() -> common_pb2.Task:
    return common_pb2.Task(
        task_id=TASK_ID,
        task_type="word_count",
        params=struct({"text": "a b a"}),
        result_dir="demo",
        state=common_pb2.SUCCEEDED,
        priority=common_pb2.HIGH,
        attempt=1,
        max_attempts=3,
        worker_id="node-1",
        result_path=f"demo/{TASK_ID}.json",
        result_size_bytes=45,
        result_sha256=SHA,
        created_at=ts("2026-03-01T12:00:00.000+00:00"),
        started_at=ts("2026-03-01T12:00:00.250+00:00"),
        finished_at=ts("2026-03-01T12:00:01.500+00:00"),
    )


def queued_task() -> common_pb2.Task:
    return common_pb2.Task(
        task_id=TASK_ID,
        task_type="sleep",
        params=struct({"ms": 1500}),
        result_dir="demo",
        state=common_pb2.QUEUED,
        attempt=1,
        max_attempts=3,
        created_at=ts("2026-03-01T12:00:00+00:00"),
    )


# -- parsing ------------------------------------------------------------------------


def test_submit_parses_every_option():
    args = build_parser().parse_args(
        [
            "submit",
            "word_count",
            "--params",
            '{"text": "a b a"}',
            "--result-dir",
            "demo",
            "--priority",
            "high",
            "--idempotency-key",
            "k1",
            "--max-attempts",
            "2",
            "--wait",
            "--timeout",
            "30",
            "--json",
        ]
    )
    assert (args.task_type, args.params, args.result_dir) == ("word_count", '{"text": "a b a"}', "demo")
    assert (args.priority, args.idempotency_key, args.max_attempts) == ("HIGH", "k1", 2)
    assert args.wait and args.json and args.timeout == 30.0


def test_submit_defaults_to_empty_params_normal_priority_and_no_wait():
    args = build_parser().parse_args(["submit", "noop", "--result-dir", "demo"])
    assert (args.params, args.priority, args.idempotency_key, args.max_attempts) == ("{}", "NORMAL", "", 0)
    assert not args.wait and not args.json and args.timeout is None


@pytest.mark.parametrize(
    "argv",
    [
        ["submit", "noop"],  # --result-dir is required
        ["submit", "--result-dir", "d"],  # TYPE or --from is required
        ["submit", "noop", "--from", "tasks.jsonl"],  # not both
        ["submit", "noop", "--result-dir", "d", "--priority", "URGENT"],
        ["submit", "noop", "--result-dir", "d", "--max-attempts", "0"],
        ["tasks", "--limit", "0"],
        ["tasks", "--state", "DONE"],
        ["get"],
        ["cancel"],
        ["result"],
    ],
)
def test_malformed_task_command_lines_are_refused_with_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_watch_without_id_follows_every_task():
    args = build_parser().parse_args(["watch", "--terminal-only"])
    assert args.task_id == "" and args.terminal_only
    assert build_parser().parse_args(["watch", "--type", "primes"]).type == "primes"


def test_watch_of_one_task_with_a_type_filter_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["watch", TASK_ID, "--type", "primes"], env={})
    assert exit_info.value.code == 2
    assert "--type filters the watch of every task" in capsys.readouterr().err


def test_tasks_filters_are_case_insensitive_and_limit_defaults_to_50():
    args = build_parser().parse_args(["tasks", "--state", "succeeded", "--type", "noop"])
    assert (args.state, args.type, args.limit) == ("SUCCEEDED", "noop", 50)


def test_result_writes_to_stdout_unless_given_a_file():
    assert build_parser().parse_args(["result", TASK_ID]).output is None
    assert build_parser().parse_args(["result", TASK_ID, "-o", "out.json"]).output == "out.json"


@pytest.mark.parametrize("command", ["task-types", "workers", "get", "cancel", "watch", "result", "tasks"])
def test_every_task_command_takes_json(command):
    argv = [command, TASK_ID, "--json"] if command in ("get", "cancel", "result") else [command, "--json"]
    assert build_parser().parse_args(argv).json


def test_mesh_commands_still_parse_as_before():
    parser = build_parser()
    assert parser.parse_args(["up", "--workers", "3"]).workers == 3
    assert parser.parse_args(["worker", "start", "--slots", "4"]).slots == 4
    assert parser.parse_args(["down"]).command == "down"
    assert parser.parse_args(["status"]).command == "status"


def test_params_must_be_a_json_object():
    assert tasks.parse_params('{"text": "a b a", "n": 3}') == {"text": "a b a", "n": 3}
    with pytest.raises(InvalidArgument, match=r"^--params is not valid JSON: Expecting value: line 1 column 9"):
        tasks.parse_params('{"text":')
    with pytest.raises(InvalidArgument, match=r"--params must be a JSON object .* got an array$"):
        tasks.parse_params("[1, 2]")


def test_bad_params_json_is_one_line_on_stderr_and_exit_2_before_any_connection(capsys):
    # Given no mesh at all (port 9 = discard): the params are checked first.
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["submit", "word_count", "--params", "{text: 1}", "--result-dir", "demo"], env={"GRIDMESH_ENVOY_PORT": "9"}
        )
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "gridmesh: --params is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 "
        "(char 1)"
    ]


# -- errors and exit codes ---------------------------------------------------------------


def test_grpc_errors_are_one_line_with_their_code_and_invalid_argument_exits_2():
    not_found = TaskError("NOT_FOUND", f"task {TASK_ID} does not exist")
    assert tasks.error_line(not_found) == f"gridmesh: NOT_FOUND: task {TASK_ID} does not exist"
    assert tasks.error_exit_code(not_found) == 1
    assert tasks.error_exit_code(TaskError("INVALID_ARGUMENT", "task_id 'x' is not a UUID")) == 2
    assert tasks.error_exit_code(TaskError("UNAVAILABLE", "failed to connect")) == 1
    assert str(not_found) == f"NOT_FOUND: task {TASK_ID} does not exist"


@pytest.mark.parametrize(
    ("state", "code"),
    [(common_pb2.SUCCEEDED, 0), (common_pb2.FAILED, 1), (common_pb2.CANCELLED, 1), (common_pb2.RUNNING, 1)],
)
def test_waiting_exits_0_only_for_a_succeeded_task(state, code):
    assert tasks.outcome_exit_code(common_pb2.Task(state=state)) == code


# -- machine-readable output -------------------------------------------------------------


def test_json_line_is_one_object_with_proto_field_names_and_every_field():
    line = tasks.json_line(queued_task())
    assert "\n" not in line
    value = json.loads(line)
    assert value["task_id"] == TASK_ID
    assert value["state"] == "QUEUED"
    assert value["params"] == {"ms": 1500}  # not 1500.0
    assert value["worker_id"] == "" and value["result_sha256"] == "" and value["result_size_bytes"] == "0"
    assert value["created_at"] == "2026-03-01T12:00:00Z"
    assert "startedAt" not in value and "started_at" not in value  # unset timestamps stay out


def test_json_line_of_an_event_nests_the_task():
    event = common_pb2.TaskEvent(task=succeeded_task(), occurred_at=ts("2026-03-01T12:00:01.500+00:00"))
    value = json.loads(tasks.json_line(event))
    assert value["task"]["state"] == "SUCCEEDED"
    assert value["task"]["result_sha256"] == SHA
    assert value["occurred_at"] == "2026-03-01T12:00:01.500Z"


# -- readable output -----------------------------------------------------------------------


def test_times_are_utc_with_milliseconds_and_unset_is_a_dash():
    assert tasks.format_time(ts("2026-03-01T13:00:00.123456+01:00")) == "2026-03-01T12:00:00.123Z"
    assert tasks.format_time(timestamp_pb2.Timestamp()) == "-"


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.44, "0.4 s ago"), (59.9, "59.9 s ago"), (750, "12 min ago"), (7300, "2 h ago")]
)
def test_ages_are_rounded_to_a_readable_unit(seconds, text):
    assert tasks.format_age(seconds) == text


def test_get_shows_every_field_as_an_aligned_key_value_block():
    assert tasks.task_block(succeeded_task()) == "\n".join(
        [
            f"task_id:          {TASK_ID}",
            "type:             word_count",
            "state:            SUCCEEDED",
            "priority:         HIGH",
            "attempt:          1 of 3",
            "worker:           node-1",
            'params:           {"text": "a b a"}',
            "result_dir:       demo",
            f"result:           demo/{TASK_ID}.json (45 bytes)",
            f"sha256:           {SHA}",
            "error:            -",
            "failure_reason:   -",
            "run_timeout:      -",
            "deadline:         -",
            "not_before:       -",
            "idempotency_key:  -",
            "created:          2026-03-01T12:00:00.000Z",
            "started:          2026-03-01T12:00:00.250Z",
            "finished:         2026-03-01T12:00:01.500Z",
        ]
    )


def test_get_of_a_queued_task_shows_a_dash_for_what_is_not_set_and_unspecified_priority_as_normal():
    block = tasks.task_block(queued_task()).splitlines()
    assert "priority:         NORMAL" in block
    assert 'params:           {"ms": 1500}' in block
    for key in ("worker", "result", "sha256", "started", "finished"):
        assert f"{key + ':':<17} -" in block


def test_submit_prints_the_task_id_then_its_state():
    assert tasks.submitted_line(queued_task()) == f"{TASK_ID}  QUEUED"


def test_waiting_for_a_succeeded_task_prints_its_result_path_and_sha256():
    assert tasks.outcome_block(succeeded_task()) == "\n".join(
        [
            f"task_id:  {TASK_ID}",
            "state:    SUCCEEDED",
            f"result:   demo/{TASK_ID}.json (45 bytes)",
            f"sha256:   {SHA}",
        ]
    )


def test_waiting_for_a_failed_task_prints_its_error():
    failed = common_pb2.Task(task_id=TASK_ID, state=common_pb2.FAILED, error="ZeroDivisionError: division by zero")
    assert tasks.outcome_block(failed).splitlines()[1:] == [
        "state:    FAILED",
        "error:    ZeroDivisionError: division by zero",
    ]


def test_watch_prints_one_line_per_event_with_time_id_state_attempt_and_worker():
    running = common_pb2.Task(
        task_id=TASK_ID, task_type="sleep", state=common_pb2.RUNNING, attempt=2, worker_id="node-1"
    )
    line = tasks.event_line(common_pb2.TaskEvent(task=running, occurred_at=ts("2026-03-01T12:00:00.250+00:00")))
    assert line == f"2026-03-01T12:00:00.250Z  {TASK_ID}  sleep       RUNNING    attempt 2  worker node-1"


def test_watch_line_of_a_queued_task_has_no_worker_and_a_failed_one_its_error():
    queued = tasks.event_line(common_pb2.TaskEvent(task=queued_task(), occurred_at=ts("2026-03-01T12:00:00+00:00")))
    assert queued.endswith("QUEUED     attempt 1  worker -")
    failed = common_pb2.Task(task_id=TASK_ID, task_type="burn", state=common_pb2.FAILED, attempt=3, error="boom")
    assert tasks.event_line(common_pb2.TaskEvent(task=failed)).endswith("worker -  error: boom")


def test_tasks_table_has_a_header_and_aligned_columns():
    assert tasks.tasks_table([succeeded_task(), queued_task()]).splitlines() == [
        "task_id                               type        state      priority  attempt  worker  created",
        f"{TASK_ID}  word_count  SUCCEEDED  HIGH      1 of 3   node-1  2026-03-01T12:00:00.000Z",
        f"{TASK_ID}  sleep       QUEUED     NORMAL    1 of 3   -       2026-03-01T12:00:00.000Z",
    ]


def test_an_empty_table_is_just_its_header():
    assert tasks.tasks_table([]) == "task_id  type  state  priority  attempt  worker  created"


def test_task_types_table_summarises_each_params_schema():
    types = [
        scheduler_pb2.TaskTypeInfo(
            name="word_count",
            description="Counts the words of text.",
            params_schema=struct({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
        ),
        scheduler_pb2.TaskTypeInfo(
            name="burn",
            description="Burns CPU.",
            params_schema=struct(
                {"type": "object", "properties": {"ms": {"type": "integer"}, "units": {"type": "integer"}}}
            ),
        ),
        scheduler_pb2.TaskTypeInfo(name="noop", description="Returns at once.", params_schema=struct({})),
    ]
    assert tasks.task_types_table(types).splitlines() == [
        "name        params                         description",
        "word_count  text: string                   Counts the words of text.",
        "burn        ms?: integer, units?: integer  Burns CPU.",
        "noop        -                              Returns at once.",
    ]


def test_workers_table_shows_slots_busy_state_and_how_old_the_last_heartbeat_is():
    workers = [
        scheduler_pb2.WorkerInfo(
            worker_id="node-1",
            address="127.0.0.1:50061",
            slots=4,
            busy_slots=1,
            state=scheduler_pb2.ACTIVE,
            last_heartbeat=ts("2026-03-01T12:00:00+00:00"),
        ),
        scheduler_pb2.WorkerInfo(worker_id="node-2", slots=2, state=scheduler_pb2.DRAINING),
    ]
    now = datetime(2026, 3, 1, 12, 0, 2, 500000, tzinfo=UTC)
    assert tasks.workers_table(workers, now).splitlines() == [
        "worker_id  address          slots  busy  state     last_heartbeat",
        "node-1     127.0.0.1:50061  4      1     ACTIVE    2026-03-01T12:00:00.000Z (2.5 s ago)",
        "node-2     -                2      0     DRAINING  -",
    ]


def test_result_info_block_says_where_and_what_the_result_is():
    info = storekeeper_pb2.ResultInfo(
        task_id=TASK_ID,
        path=f"demo/{TASK_ID}.json",
        size_bytes=45,
        sha256=SHA,
        content_type="application/json",
        stored_at=ts("2026-03-01T12:00:01.400+00:00"),
    )
    assert tasks.result_info_block(info).splitlines() == [
        f"task_id:       {TASK_ID}",
        f"path:          demo/{TASK_ID}.json",
        "size:          45 bytes",
        f"sha256:        {SHA}",
        "content_type:  application/json",
        "stored:        2026-03-01T12:00:01.400Z",
    ]


def test_a_timed_out_task_shows_its_failure_reason_and_run_timeout():
    task = common_pb2.Task(
        task_id=TASK_ID, task_type="sleep", state=common_pb2.FAILED, failure_reason=common_pb2.Task.TIMEOUT,
        error="the task ran longer than its run_timeout of 1.5 s; its process (pid 42) was killed",
    )  # fmt: skip
    task.run_timeout.FromMilliseconds(1500)
    block = tasks.task_block(task).splitlines()
    assert "failure_reason:   TIMEOUT" in block and "run_timeout:      1.5 s" in block
    assert "failure_reason:  TIMEOUT" in tasks.outcome_block(task).splitlines()
