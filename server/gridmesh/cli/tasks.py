"""What the task commands print (``gridmesh submit``, ``get``, ``watch``,
``tasks``, ``task-types``, ``workers``, ``result``, ``cancel``): pure
functions from protobuf messages to text, plus the parsing of ``--params``.

Readable output is for people: aligned ``key: value`` blocks, tables with a
header row, one line per event, times in UTC (``2026-03-01T12:00:00.123Z``)
and ``-`` for what is not set. ``--json`` output is for programs: one JSON
object per line, the proto3 JSON mapping with the proto field names and
every field present (as the edge's HTTP/JSON answers are).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, message, timestamp_pb2

from gridmesh.clients import TaskError
from gridmesh.common.convert import integral_numbers, struct_to_dict
from gridmesh.common.errors import InvalidArgument
from gridmesh.v1 import common_pb2, scheduler_pb2, storekeeper_pb2

NOT_SET = "-"
_JSON_KINDS = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true/false",
    type(None): "null",
}


# -- parsing -------------------------------------------------------------------


def parse_params(text: str) -> dict[str, Any]:
    """The ``--params`` JSON object; :class:`InvalidArgument` with one line
    saying what is wrong otherwise."""
    return parse_json_object(text, "--params", '{"text": "a b a"}')


def parse_json_object(text: str, option: str, example: str = '{"max_attempts": 5}') -> dict[str, Any]:
    """A JSON object given to ``option``; :class:`InvalidArgument` with one line
    saying what is wrong otherwise."""
    field = option.removeprefix("--")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidArgument(f"{option} is not valid JSON: {e}", field=field) from None
    if not isinstance(value, dict):
        kind = _JSON_KINDS.get(type(value), type(value).__name__)
        raise InvalidArgument(f"{option} must be a JSON object such as {example}, got {kind}", field=field)
    return value


def parse_submit_line(line: str, result_dir: str) -> scheduler_pb2.SubmitTaskRequest:
    """One line of ``gridmesh submit --from``: a JSON object shaped like the
    body of ``POST /v1/tasks`` (``task_type``, ``params``, ``result_dir``,
    ``priority``, ``idempotency_key``, ``max_attempts``); ``result_dir``
    defaults to ``--result-dir``. :class:`InvalidArgument` if it is not."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as e:
        raise InvalidArgument(f"not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"must be a JSON object, got {_JSON_KINDS.get(type(value), type(value).__name__)}")
    if result_dir and "result_dir" not in value and "resultDir" not in value:
        value["result_dir"] = result_dir
    request = scheduler_pb2.SubmitTaskRequest()
    try:
        json_format.ParseDict(value, request)
    except json_format.ParseError as e:
        raise InvalidArgument(str(e)) from None
    return request


# -- machine-readable ------------------------------------------------------------


def json_line(msg: message.Message) -> str:
    """One message as one line of JSON (proto field names, every field)."""
    return json_object(
        integral_numbers(
            json_format.MessageToDict(msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        )
    )


def json_object(value: dict[str, Any]) -> str:
    """A plain dict as one line of JSON."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# -- scalars ---------------------------------------------------------------------


def format_time(ts: timestamp_pb2.Timestamp) -> str:
    """``2026-03-01T12:00:00.123Z``, or ``-`` for an unset timestamp."""
    if ts.seconds == 0 and ts.nanos == 0:
        return NOT_SET
    return ts.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def format_age(seconds: float) -> str:
    """How long ago, roughly: ``0.4 s ago``, ``12 min ago``, ``3 h ago``."""
    if seconds < 0:
        return "in the future"
    if seconds < 60:
        return f"{seconds:.1f} s ago"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min ago"
    if seconds < 86400:
        return f"{seconds // 3600:.0f} h ago"
    return f"{seconds // 86400:.0f} d ago"


def _enum_name(enum: Any, value: int) -> str:
    try:
        return str(enum.Name(value))
    except ValueError:  # a value newer than these generated stubs
        return str(value)


def state_name(state: int) -> str:
    return _enum_name(common_pb2.TaskState, state)


def failure_reason_name(reason: int) -> str:
    """``TIMEOUT``, ``CRASHED``, …; empty when unset."""
    return _enum_name(common_pb2.Task.FailureReason, reason) if reason else ""


def priority_name(priority: int) -> str:
    """The priority's name; ``PRIORITY_UNSPECIFIED`` shows as ``NORMAL`` (what it means)."""
    return "NORMAL" if priority == common_pb2.PRIORITY_UNSPECIFIED else _enum_name(common_pb2.Priority, priority)


def worker_state_name(state: int) -> str:
    return _enum_name(scheduler_pb2.WorkerState, state)


def _run_timeout(task: common_pb2.Task) -> str:
    return f"{task.run_timeout.ToTimedelta().total_seconds():g} s" if task.HasField("run_timeout") else NOT_SET


def _or_not_set(value: str) -> str:
    return value or NOT_SET


def _attempt(task: common_pb2.Task) -> str:
    return f"{task.attempt} of {task.max_attempts}" if task.max_attempts else str(task.attempt)


def _params(task: common_pb2.Task) -> str:
    return json.dumps(struct_to_dict(task.params), ensure_ascii=False)


# -- blocks and lines ---------------------------------------------------------------


def _block(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(key) for key, _ in rows) + 1
    return "\n".join(f"{key + ':':<{width}}  {value}" for key, value in rows)


def task_block(task: common_pb2.Task) -> str:
    """Every field of a task as an aligned ``key: value`` block (``gridmesh get``)."""
    result = NOT_SET
    if task.result_path:
        result = f"{task.result_path} ({task.result_size_bytes} bytes)"
    return _block(
        [
            ("task_id", task.task_id),
            ("type", task.task_type),
            ("state", state_name(task.state)),
            ("priority", priority_name(task.priority)),
            ("attempt", _attempt(task)),
            ("worker", _or_not_set(task.worker_id)),
            ("params", _params(task)),
            ("result_dir", _or_not_set(task.result_dir)),
            ("result", result),
            ("sha256", _or_not_set(task.result_sha256)),
            ("error", _or_not_set(task.error)),
            ("failure_reason", _or_not_set(failure_reason_name(task.failure_reason))),
            ("run_timeout", _run_timeout(task)),
            ("deadline", format_time(task.deadline)),
            ("not_before", format_time(task.not_before)),
            ("idempotency_key", _or_not_set(task.idempotency_key)),
            ("created", format_time(task.created_at)),
            ("started", format_time(task.started_at)),
            ("finished", format_time(task.finished_at)),
        ]
    )


def submitted_line(task: common_pb2.Task) -> str:
    """``<task id>  <state>``: what ``gridmesh submit`` answers at once."""
    return f"{task.task_id}  {state_name(task.state)}"


def outcome_block(task: common_pb2.Task) -> str:
    """How a finished task ended (``gridmesh submit --wait``): its state and
    either its result (path, size, SHA-256) or its error."""
    rows = [("task_id", task.task_id), ("state", state_name(task.state))]
    if task.result_path:
        rows += [("result", f"{task.result_path} ({task.result_size_bytes} bytes)"), ("sha256", task.result_sha256)]
    if task.error:
        rows.append(("error", task.error))
    if task.failure_reason:
        rows.append(("failure_reason", failure_reason_name(task.failure_reason)))
    return _block(rows)


def event_line(event: common_pb2.TaskEvent) -> str:
    """One task event on one line (``gridmesh watch``): time, task id, type,
    state, attempt, worker, and the error of a failed task."""
    task = event.task
    line = (
        f"{format_time(event.occurred_at):<24}  {task.task_id:<36}  {task.task_type:<10}  "
        f"{state_name(task.state):<9}  attempt {task.attempt}  worker {_or_not_set(task.worker_id)}"
    )
    if task.failure_reason:
        line += f"  {failure_reason_name(task.failure_reason)}"
    if task.error:
        line += f"  error: {task.error}"
    return line


def result_info_block(info: storekeeper_pb2.ResultInfo) -> str:
    """Where and what a stored result is (``gridmesh result ID --info``)."""
    return _block(
        [
            ("task_id", info.task_id),
            ("path", info.path),
            ("size", f"{info.size_bytes} bytes"),
            ("sha256", info.sha256),
            ("content_type", _or_not_set(info.content_type)),
            ("stored", format_time(info.stored_at)),
        ]
    )


# -- tables -------------------------------------------------------------------------


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, header first, no trailing blanks."""
    all_rows = [tuple(header), *(tuple(r) for r in rows)]
    widths = [max(len(row[i]) for row in all_rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in all_rows)


def tasks_table(tasks: Iterable[common_pb2.Task]) -> str:
    """``gridmesh tasks``: one row per task."""
    return table(
        ("task_id", "type", "state", "priority", "attempt", "worker", "created"),
        (
            (
                t.task_id,
                t.task_type,
                state_name(t.state),
                priority_name(t.priority),
                _attempt(t),
                _or_not_set(t.worker_id),
                format_time(t.created_at),
            )
            for t in tasks
        ),
    )


def params_summary(schema: dict[str, Any]) -> str:
    """The params a JSON Schema allows, ``name: type`` each, optional ones
    marked ``?``, required ones first: ``text: string``,
    ``ms?: integer, units?: integer``."""
    properties = schema.get("properties") or {}
    if not properties:
        return NOT_SET
    required = [str(name) for name in schema.get("required") or () if name in properties]
    # A Struct keeps no key order: required params in the schema's order, then the others by name.
    names = required + sorted(name for name in properties if name not in required)
    parts = []
    for name in names:
        spec = properties[name]
        kind = spec.get("type", "any") if isinstance(spec, dict) else "any"
        if isinstance(kind, list):
            kind = "|".join(str(k) for k in kind)
        parts.append(f"{name}{'' if name in required else '?'}: {kind}")
    return ", ".join(parts)


def task_types_table(types: Iterable[scheduler_pb2.TaskTypeInfo]) -> str:
    """``gridmesh task-types``: name, params (from the schema), description."""
    return table(
        ("name", "params", "description"),
        ((t.name, params_summary(struct_to_dict(t.params_schema)), t.description) for t in types),
    )


def workers_table(workers: Iterable[scheduler_pb2.WorkerInfo], now: datetime) -> str:
    """``gridmesh workers``: id, address, slots, busy, state, last heartbeat
    (with how long before ``now`` it was)."""

    def heartbeat(w: scheduler_pb2.WorkerInfo) -> str:
        when = format_time(w.last_heartbeat)
        if when == NOT_SET:
            return when
        age = (now - w.last_heartbeat.ToDatetime(tzinfo=UTC)).total_seconds()
        return f"{when} ({format_age(age)})"

    return table(
        ("worker_id", "address", "slots", "busy", "state", "last_heartbeat"),
        (
            (
                w.worker_id,
                _or_not_set(w.address),
                str(w.slots),
                str(w.busy_slots),
                worker_state_name(w.state),
                heartbeat(w),
            )
            for w in workers
        ),
    )


# -- errors and exit codes ------------------------------------------------------------


def error_line(error: TaskError) -> str:
    """``gridmesh: <CODE>: <message>``: how a failed call is reported."""
    return f"gridmesh: {error.code_name}: {error.message}"


def error_exit_code(error: TaskError) -> int:
    """2 for a request that is wrong as given (``INVALID_ARGUMENT``), else 1."""
    return 2 if error.code_name == "INVALID_ARGUMENT" else 1


def outcome_exit_code(task: common_pb2.Task) -> int:
    """0 if the task SUCCEEDED, 1 if it FAILED, was CANCELLED or has not ended."""
    return 0 if task.state == common_pb2.SUCCEEDED else 1
