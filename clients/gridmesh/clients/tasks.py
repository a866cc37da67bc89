"""Submit, follow and fetch tasks: a thin, typed client of the ``Scheduler``
and ``StoreKeeper`` services (SPEC §2), normally reached through the edge.

One :class:`TaskClient` wraps one gRPC channel (sync ``grpcio``). Every
method is one RPC (``list`` pages through several; concurrent ``submit``
calls from several threads share ``SubmitTasks`` calls, see
:meth:`TaskClient.submit`) and answers the generated protobuf messages
unchanged, so what a caller reads is exactly
the contract of ``protos/gridmesh/v1``. Every gRPC failure surfaces as a
:class:`TaskError` carrying the status code's name and the server's
message; the original :class:`grpc.RpcError` is its ``__cause__``.

    with TaskClient() as client:                 # the edge, 127.0.0.1:8080
        task = client.submit("word_count", {"text": "a b a"}, "demo")
        done = client.wait(task.task_id, timeout=60)
        data = client.result(done.task_id)
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from gridmesh.clients._channel import ChannelClient
from gridmesh.clients._coalesce import Coalescer
from gridmesh.clients._errors import ClientError
from gridmesh.common.backoff import Backoff
from gridmesh.v1 import (
    common_pb2,
    scheduler_pb2,
    scheduler_pb2_grpc,
    storekeeper_pb2,
    storekeeper_pb2_grpc,
)

log = logging.getLogger(__name__)

DEFAULT_TARGET = "127.0.0.1:8080"
"""The edge (Envoy) of a mesh started by ``gridmesh up`` with default settings."""

DEFAULT_RPC_TIMEOUT_S = 30.0
"""Deadline of each unary RPC unless the constructor says otherwise."""

WAIT_RETRIES = 5
"""How many times :meth:`TaskClient.wait` watches again after the watch broke
off (``UNAVAILABLE``, e.g. a Scheduler failover) before giving up."""
WAIT_BACKOFF = Backoff(initial_s=0.2, max_s=3.0)
"""The pauses before watching again after a watch broke off."""
RESUME_WINDOW_S = 60.0
"""How long a broken watch keeps trying to resume before it raises."""
RESUMABLE = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED", "INTERNAL", "UNKNOWN"})
"""Errors after which a watch resumes from its last position: the edge or the
Scheduler went away, or the watch fell behind and was closed."""

MAX_BATCH = 1000
"""Most tasks one ``SubmitTasks`` call carries (the Scheduler's limit)."""

TERMINAL_STATES: frozenset[int] = frozenset({common_pb2.SUCCEEDED, common_pb2.FAILED, common_pb2.CANCELLED})
"""Task states after which a task never changes again."""


class TaskError(ClientError):
    """A call to the task API failed (see :class:`ClientError`: ``code_name``,
    ``message`` and the ``violations`` of a bad request)."""


@dataclass(frozen=True)
class Download:
    """What :meth:`TaskClient.result_to` wrote."""

    path: Path
    """The file written."""
    size_bytes: int
    """Bytes written."""
    sha256: str
    """Hex SHA-256 of the bytes written (compare with ``Task.result_sha256``)."""


def is_terminal(state: int) -> bool:
    """True for ``SUCCEEDED``, ``FAILED`` and ``CANCELLED``."""
    return state in TERMINAL_STATES


class TaskClient(ChannelClient):
    """Client of the task API of one mesh.

    ``target`` is ``host:port`` of the edge (or of a Scheduler and
    StoreKeeper served on one address). Pass ``channel`` to reuse a channel
    you own (``target`` is then ignored and :meth:`close` leaves it open).
    ``api_key`` is presented at the edge (default: ``$GRIDMESH_API_KEY``).
    ``rpc_timeout_s`` is the deadline of each unary call (``None`` = none);
    streams (:meth:`watch`, :meth:`watch_all`, results) have no deadline.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        channel: grpc.Channel | None = None,
        rpc_timeout_s: float | None = DEFAULT_RPC_TIMEOUT_S,
        api_key: str | None = None,
        ca_file: str | None = None,
        plaintext: bool = False,
    ) -> None:
        super().__init__(target, channel, rpc_timeout_s, api_key=api_key, ca_file=ca_file, plaintext=plaintext)
        self._scheduler = scheduler_pb2_grpc.SchedulerStub(self._channel)
        self._storekeeper = storekeeper_pb2_grpc.StoreKeeperStub(self._channel)
        self._submits: Coalescer[scheduler_pb2.SubmitTaskRequest, common_pb2.Task] = Coalescer(
            self._send_submits, MAX_BATCH
        )

    # -- tasks ----------------------------------------------------------------

    def submit(
        self,
        task_type: str,
        params: Mapping[str, Any],
        result_dir: str,
        *,
        priority: str | int = "NORMAL",
        idempotency_key: str = "",
        max_attempts: int = 0,
        run_timeout: float | timedelta | None = None,
        deadline: datetime | None = None,
        delay: float | timedelta | None = None,
        not_before: datetime | None = None,
        retry: common_pb2.RetryPolicy | Mapping[str, Any] | None = None,
        result_ttl: float | timedelta | None = None,
    ) -> common_pb2.Task:
        """Submits a task; answers it ``QUEUED`` with its UUID in ``task_id``.

        ``params`` must be JSON-like (dicts, lists, str, numbers, bools,
        None). ``priority`` is ``"LOW"``, ``"NORMAL"`` or ``"HIGH"`` (or
        the ``Priority`` enum value). Submitting the same non-empty
        ``idempotency_key`` again answers the task it created the first
        time. ``max_attempts`` 0 means the Scheduler's default.
        ``run_timeout`` (seconds or a timedelta; None: the task type's
        default) kills an attempt that runs longer: the task ends ``FAILED``
        with ``failure_reason`` ``TIMEOUT``. A task that has not started by
        ``deadline`` (an aware datetime, in the future) ends ``FAILED`` with
        ``failure_reason`` ``EXPIRED`` and never runs. A task given a
        ``delay`` (seconds or a timedelta) or ``not_before`` (an aware
        datetime) is stored at once but dispatched only when due. ``retry``
        (a ``RetryPolicy`` or its JSON form, e.g. ``{"max_attempts": 5,
        "initial_backoff": "0.5s", "non_retryable_errors": ["ValueError"]}``)
        tries a task that raises again after a backoff. ``result_ttl``
        (seconds or a timedelta; None: the mesh's default) is how long the
        finished task and its result are kept. An unknown
        type, params that do not fit it or an unsafe ``result_dir`` raise
        :class:`TaskError` ``INVALID_ARGUMENT``; a bad ``priority`` name
        raises :class:`ValueError` before anything is sent.

        Calls from several threads at once share round trips: a call made
        while no submit is in flight is sent at once as ``SubmitTask``; calls
        made meanwhile go together as one ``SubmitTasks`` as soon as it
        returns. Each call still answers only its own task, once the
        Scheduler has committed it, or raises only its own error.
        """
        request = submit_request(
            task_type,
            params,
            result_dir,
            priority=priority,
            idempotency_key=idempotency_key,
            max_attempts=max_attempts,
            run_timeout=run_timeout,
            deadline=deadline,
            delay=delay,
            not_before=not_before,
            retry=retry,
            result_ttl=result_ttl,
        )
        return self._submits.call(request)

    def submit_many(
        self, requests: Iterable[scheduler_pb2.SubmitTaskRequest]
    ) -> builtins.list[common_pb2.Task | TaskError]:
        """Submits many tasks in ``SubmitTasks`` calls of up to
        :data:`MAX_BATCH`: one answer per request, in order — the task
        (``QUEUED``) or the :class:`TaskError` that refused that one item
        (the others are accepted regardless). Build requests with
        :func:`submit_request`. A failure of a whole call raises."""
        pending = builtins.list(requests)
        answers: builtins.list[common_pb2.Task | TaskError] = []
        for start in range(0, len(pending), MAX_BATCH):
            answers += self._submit_batch(pending[start : start + MAX_BATCH])
        return answers

    def _send_submits(
        self, requests: Sequence[scheduler_pb2.SubmitTaskRequest]
    ) -> builtins.list[common_pb2.Task | TaskError]:
        if len(requests) == 1:  # a lone submit: the plain call
            try:
                return [self._unary(self._scheduler.SubmitTask, requests[0])]
            except TaskError as e:
                return [e]
        return self._submit_batch(requests)

    def _submit_batch(
        self, requests: Sequence[scheduler_pb2.SubmitTaskRequest]
    ) -> builtins.list[common_pb2.Task | TaskError]:
        response = self._unary(self._scheduler.SubmitTasks, scheduler_pb2.SubmitTasksRequest(requests=requests))
        return [r.task if r.HasField("task") else TaskError.from_status(r.error) for r in response.results]

    def get(self, task_id: str) -> common_pb2.Task:
        """The task as it is now (``NOT_FOUND`` if there is no such task)."""
        return self._unary(self._scheduler.GetTask, scheduler_pb2.GetTaskRequest(task_id=task_id))

    def list(
        self, state: str | int | None = None, task_type: str | None = None, page_size: int = 100
    ) -> Iterator[common_pb2.Task]:
        """Every task, newest first, optionally of one ``state`` (name or
        enum value) and ``task_type``. Fetches pages of ``page_size`` lazily,
        as the iteration goes."""
        request = scheduler_pb2.ListTasksRequest(
            state=_enum_value(common_pb2.TaskState, state or 0, "state"),  # type: ignore[arg-type]
            task_type=task_type or "",
            page_size=page_size,
        )
        while True:
            page: scheduler_pb2.ListTasksResponse = self._unary(self._scheduler.ListTasks, request)
            yield from page.tasks
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def cancel(self, task_id: str) -> common_pb2.Task:
        """Cancels a ``QUEUED`` or ``RUNNING`` task; answers the task after the
        change. A finished task raises ``FAILED_PRECONDITION``."""
        return self._unary(self._scheduler.CancelTask, scheduler_pb2.CancelTaskRequest(task_id=task_id))

    def rerun(self, task_id: str) -> common_pb2.Task:
        """Runs a ``FAILED`` or ``CANCELLED`` task again as a new task (its
        ``rerun_of`` names the original); any other raises ``FAILED_PRECONDITION``."""
        return self._unary(self._scheduler.RerunTask, scheduler_pb2.RerunTaskRequest(task_id=task_id))

    def rerun_many(self, request: scheduler_pb2.RerunTasksRequest) -> scheduler_pb2.RerunTasksResponse:
        """Reruns every finished task the filter matches (``dry_run``: counts them only)."""
        return self._unary(self._scheduler.RerunTasks, request)

    # -- schedules ------------------------------------------------------------

    def create_schedule(self, schedule: scheduler_pb2.Schedule) -> scheduler_pb2.Schedule:
        """Creates a schedule (``cron`` + ``time_zone``, or ``interval``, and a
        ``task`` template); answers it with its id and first tick."""
        return self._unary(self._scheduler.CreateSchedule, scheduler_pb2.CreateScheduleRequest(schedule=schedule))

    def list_schedules(self) -> builtins.list[scheduler_pb2.Schedule]:
        return builtins.list(self._unary(self._scheduler.ListSchedules, scheduler_pb2.ListSchedulesRequest()).schedules)

    def get_schedule(self, schedule_id: str) -> scheduler_pb2.Schedule:
        return self._unary(self._scheduler.GetSchedule, scheduler_pb2.GetScheduleRequest(schedule_id=schedule_id))

    def pause_schedule(self, schedule_id: str) -> scheduler_pb2.Schedule:
        return self._unary(self._scheduler.PauseSchedule, scheduler_pb2.PauseScheduleRequest(schedule_id=schedule_id))

    def resume_schedule(self, schedule_id: str) -> scheduler_pb2.Schedule:
        request = scheduler_pb2.ResumeScheduleRequest(schedule_id=schedule_id)
        return self._unary(self._scheduler.ResumeSchedule, request)

    def delete_schedule(self, schedule_id: str) -> None:
        self._unary(self._scheduler.DeleteSchedule, scheduler_pb2.DeleteScheduleRequest(schedule_id=schedule_id))

    def watch(self, task_id: str, resume_after: int = 0) -> Generator[common_pb2.TaskEvent, None, None]:
        """The task's current state, then every change; ends after a terminal
        state. Closing the iterator early cancels the stream.

        A stream that breaks off (``UNAVAILABLE``: the edge restarting, a
        Scheduler failing over) is opened again from the last event's
        ``position``, so no change is missed or repeated; it gives up, with
        the last error, after :data:`RESUME_WINDOW_S` without getting through.
        ``resume_after`` starts after a position seen earlier.
        """

        def open_after(position: int) -> Any:
            return self._scheduler.WatchTask(scheduler_pb2.WatchTaskRequest(task_id=task_id, resume_after=position))

        return _resuming(open_after, resume_after, ends_after_terminal=True)

    def watch_all(
        self, task_ids: Iterable[str] = (), terminal_only: bool = False, task_type: str = "", resume_after: int = 0
    ) -> Generator[common_pb2.TaskEvent, None, None]:
        """Changes of the given tasks (none given = every task), only terminal
        ones if ``terminal_only``, only of ``task_type`` if given. Named tasks'
        current states come first. Never ends by itself: stop iterating (or
        ``close()`` it) to end it.

        Resumes by itself as :meth:`watch` does: a break (an edge restart, a
        Scheduler fail-over) costs no event and repeats none. ``resume_after``
        (an event's ``position``) starts with every change since.
        """
        ids = builtins.list(task_ids)

        def open_after(position: int) -> Any:
            request = scheduler_pb2.WatchTasksRequest(
                task_ids=ids, terminal_only=terminal_only, task_type=task_type, resume_after=position
            )
            return self._scheduler.WatchTasks(request)

        return _resuming(open_after, resume_after, ends_after_terminal=False)

    def wait(self, task_id: str, timeout: float | None = None) -> common_pb2.Task:
        """Blocks until the task is ``SUCCEEDED``, ``FAILED`` or ``CANCELLED``
        and answers it then (a failed task is answered, not raised).

        After ``timeout`` seconds raises :class:`TaskError`
        ``DEADLINE_EXCEEDED``. A watch that breaks off (``UNAVAILABLE``, e.g.
        while a standby Scheduler takes over) is opened again, at most
        :data:`WAIT_RETRIES` times, backing off between tries.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        retries = 0
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TaskError("DEADLINE_EXCEEDED", f"task {task_id} did not finish within {timeout} s")
            call = self._scheduler.WatchTask(scheduler_pb2.WatchTaskRequest(task_id=task_id), timeout=remaining)
            try:
                with contextlib.closing(_stream(call)) as events:
                    for event in events:
                        if is_terminal(event.task.state):
                            return event.task
                broken = TaskError("UNAVAILABLE", f"the watch of task {task_id} ended before the task did")
            except TaskError as e:
                if e.code_name == "DEADLINE_EXCEEDED" and remaining is not None:
                    raise TaskError("DEADLINE_EXCEEDED", f"task {task_id} did not finish within {timeout} s") from e
                if e.code_name != "UNAVAILABLE":
                    raise
                broken = e
            retries += 1
            if retries > WAIT_RETRIES:
                raise broken
            pause = WAIT_BACKOFF.pause_s(retries - 1)
            if deadline is not None:
                pause = max(0.0, min(pause, deadline - time.monotonic()))
            log.warning("watching task %s again in %.1f s (%d/%d): %s", task_id, pause, retries, WAIT_RETRIES, broken)
            time.sleep(pause)

    # -- results ----------------------------------------------------------------

    def iter_result(self, task_id: str) -> Iterator[bytes]:
        """The stored result of a ``SUCCEEDED`` task, chunk by chunk as the
        StoreKeeper streams it (``NOT_FOUND`` if nothing is stored)."""
        for body in _stream(self._storekeeper.GetResult(storekeeper_pb2.GetResultRequest(task_id=task_id))):
            if body.data:
                yield body.data

    def result(self, task_id: str) -> bytes:
        """The whole stored result in memory; see :meth:`result_to` for big ones."""
        return b"".join(self.iter_result(task_id))

    def result_to(self, task_id: str, path: str | os.PathLike[str]) -> Download:
        """Streams the stored result into the file ``path`` in bounded memory.

        The bytes go to a temporary file next to ``path`` that replaces it
        only once complete, so a failed download never leaves a partial or
        clobbered file. Answers the size and SHA-256 of what was written.
        """
        target = Path(path)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        digest = hashlib.sha256()
        size = 0
        try:
            with partial.open("xb") as f:
                for chunk in self.iter_result(task_id):
                    f.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                f.flush()
                os.fsync(f.fileno())
            partial.replace(target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            raise
        return Download(path=target, size_bytes=size, sha256=digest.hexdigest())

    def result_info(self, task_id: str) -> storekeeper_pb2.ResultInfo:
        """Where the result is stored, its size, SHA-256 and content type."""
        return self._unary(self._storekeeper.GetResultInfo, storekeeper_pb2.GetResultInfoRequest(task_id=task_id))

    # -- the mesh ---------------------------------------------------------------

    def task_types(self) -> builtins.list[scheduler_pb2.TaskTypeInfo]:
        """The task types the mesh runs, with a JSON Schema of their params."""
        response = self._unary(self._scheduler.ListTaskTypes, scheduler_pb2.ListTaskTypesRequest())
        return builtins.list(response.task_types)

    def workers(self) -> builtins.list[scheduler_pb2.WorkerInfo]:
        """The worker nodes the Scheduler knows, with their slots and state."""
        response = self._unary(self._scheduler.ListWorkers, scheduler_pb2.ListWorkersRequest())
        return builtins.list(response.workers)

    def drain_worker(self, worker_id: str) -> scheduler_pb2.WorkerInfo:
        """Drains a worker node (``Scheduler.DrainNode``): no new work goes to
        it, it finishes what it runs, then deregisters and exits. Idempotent;
        an unknown ``worker_id`` raises ``NOT_FOUND``."""
        return self._unary(self._scheduler.DrainNode, scheduler_pb2.DrainNodeRequest(worker_id=worker_id))

    def _unary(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self._timeout)
        except grpc.RpcError as e:
            raise TaskError.from_rpc_error(e) from e


def submit_request(
    task_type: str,
    params: Mapping[str, Any],
    result_dir: str,
    *,
    priority: str | int = "NORMAL",
    idempotency_key: str = "",
    max_attempts: int = 0,
    run_timeout: float | timedelta | None = None,
    deadline: datetime | None = None,
    delay: float | timedelta | None = None,
    not_before: datetime | None = None,
    retry: common_pb2.RetryPolicy | Mapping[str, Any] | None = None,
    result_ttl: float | timedelta | None = None,
) -> scheduler_pb2.SubmitTaskRequest:
    """One submit as a request message (see :meth:`TaskClient.submit` for
    the arguments; for :meth:`TaskClient.submit_many`)."""
    struct = struct_pb2.Struct()
    struct.update(dict(params))
    request = scheduler_pb2.SubmitTaskRequest(
        task_type=task_type,
        params=struct,
        result_dir=result_dir,
        priority=_enum_value(common_pb2.Priority, priority, "priority"),  # type: ignore[arg-type]
        idempotency_key=idempotency_key,
        max_attempts=max_attempts,
    )
    for name, duration in (("run_timeout", run_timeout), ("delay", delay), ("result_ttl", result_ttl)):
        if duration is not None:
            getattr(request, name).FromNanoseconds(_nanoseconds(duration))
    if isinstance(retry, common_pb2.RetryPolicy):
        request.retry.CopyFrom(retry)
    elif retry is not None:
        json_format.ParseDict(dict(retry), request.retry)
    for field, value in (("deadline", deadline), ("not_before", not_before)):
        if value is not None:
            if value.tzinfo is None:
                raise ValueError(f"{field} must be an aware datetime (with a time zone)")
            getattr(request, field).FromDatetime(value)
    return request


def _nanoseconds(value: float | timedelta) -> int:
    return round((value.total_seconds() if isinstance(value, timedelta) else float(value)) * 1e9)


def _resuming(
    open_after: Callable[[int], Any], position: int, *, ends_after_terminal: bool
) -> Generator[common_pb2.TaskEvent, None, None]:
    """Events of watch streams opened by ``open_after(position)``, opened
    again after the last event's position whenever one breaks off."""
    broken_since: float | None = None
    attempt = 0
    while True:
        try:
            with contextlib.closing(_stream(open_after(position))) as events:
                for event in events:
                    broken_since, attempt = None, 0
                    position = max(position, event.position)
                    yield event
                    if ends_after_terminal and is_terminal(event.task.state):
                        return
            if ends_after_terminal:
                return  # it ended on its own: the task had ended before resume_after
            error = TaskError("UNAVAILABLE", "the watch ended")
        except TaskError as e:
            if e.code_name not in RESUMABLE:
                raise
            error = e
        now = time.monotonic()
        broken_since = broken_since or now
        if now - broken_since > RESUME_WINDOW_S:
            raise error
        pause = WAIT_BACKOFF.pause_s(attempt)
        attempt += 1
        log.warning("the watch broke off (%s); resuming after position %d in %.1f s", error, position, pause)
        time.sleep(pause)


def _stream(call: Any) -> Generator[Any, None, None]:
    """The messages of a server stream; gRPC errors become :class:`TaskError`
    and closing the iterator early cancels the call."""
    try:
        yield from call
    except grpc.RpcError as e:
        raise TaskError.from_rpc_error(e) from e
    finally:
        call.cancel()


def _enum_value(enum: Any, value: str | int, field: str) -> int:
    """The number of an enum value given by name (any case) or number."""
    try:
        if isinstance(value, str):
            return int(enum.Value(value.upper()))
        enum.Name(value)
        return int(value)
    except ValueError:
        names = ", ".join(v.name for v in enum.DESCRIPTOR.values if v.number)
        raise ValueError(f"{field} {value!r} is not one of {names}") from None
