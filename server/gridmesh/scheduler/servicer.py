"""The Scheduler's servicers: ``gridmesh.v1.Scheduler`` for clients and
``gridmesh.v1.WorkQueue`` for workers. They convert protobuf ↔ core and
delegate; every rule lives in :class:`~gridmesh.core.scheduler.SchedulerCore`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from google.protobuf import empty_pb2
from grpc import aio

from gridmesh.common.convert import (
    dict_to_struct,
    from_duration,
    from_timestamp,
    struct_to_dict,
    to_duration,
    to_timestamp,
)
from gridmesh.common.errors import FailedPrecondition, GridmeshError, InvalidArgument, NotLeader, ResourceExhausted
from gridmesh.core.scheduler import Crash, Failure, Outcome, RerunFilter, SchedulerCore, Success
from gridmesh.core.schedules import CatchUp, Schedule, Schedules, ScheduleSpec
from gridmesh.core.stats import StatsReader
from gridmesh.core.submits import SubmitRequest
from gridmesh.core.tasks import FailureReason, Priority, RetryPolicy, Task, TaskState
from gridmesh.core.tasktypes import TaskTypeRegistry
from gridmesh.core.watch import Watcher
from gridmesh.core.workers import (
    Assignment,
    CancelNotice,
    DrainNotice,
    LinkItem,
    ReportAck,
    TakeBack,
    WorkerRecord,
    WorkerState,
)
from gridmesh.grpc_support.errors import status_code, status_proto
from gridmesh.grpc_support.streams import answer_each
from gridmesh.observability import metrics, tracing
from gridmesh.scheduler.stats import query_from_proto, report_to_proto
from gridmesh.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc


def task_to_proto(task: Task) -> common_pb2.Task:
    return common_pb2.Task(
        task_id=task.task_id,
        task_type=task.task_type,
        params=dict_to_struct(task.params),
        result_dir=task.result_dir,
        state=int(task.state),  # type: ignore[arg-type]
        priority=int(task.priority),  # type: ignore[arg-type]
        attempt=task.attempt,
        max_attempts=task.max_attempts,
        worker_id=task.worker_id,
        result_path=task.result_path,
        result_size_bytes=task.result_size_bytes,
        result_sha256=task.result_sha256,
        error=task.error,
        idempotency_key=task.idempotency_key,
        created_at=to_timestamp(task.created_at),
        started_at=to_timestamp(task.started_at),
        finished_at=to_timestamp(task.finished_at),
        run_timeout=to_duration(task.run_timeout_s),
        failure_reason=int(task.failure_reason),  # type: ignore[arg-type]
        deadline=to_timestamp(task.deadline),
        not_before=to_timestamp(task.not_before),
        retry=_retry_to_proto(task.retry),
        rerun_of=task.rerun_of,
        result_ttl=to_duration(task.result_ttl_s),
        expires_at=to_timestamp(task.expires_at),
        dispatched_at=to_timestamp(task.dispatched_at),
    )


def _retry_to_proto(policy: RetryPolicy | None) -> common_pb2.RetryPolicy | None:
    if policy is None:
        return None
    return common_pb2.RetryPolicy(
        max_attempts=policy.max_attempts,
        initial_backoff=to_duration(policy.initial_backoff_s),
        max_backoff=to_duration(policy.max_backoff_s),
        multiplier=policy.multiplier,
        non_retryable_errors=list(policy.non_retryable_errors),
    )


def _retry_from_proto(policy: common_pb2.RetryPolicy) -> RetryPolicy:
    """Unset numbers take :class:`RetryPolicy`'s defaults."""
    defaults = RetryPolicy()
    return RetryPolicy(
        max_attempts=policy.max_attempts,
        initial_backoff_s=(
            from_duration(policy.initial_backoff) if policy.HasField("initial_backoff") else defaults.initial_backoff_s
        ),
        max_backoff_s=from_duration(policy.max_backoff) if policy.HasField("max_backoff") else defaults.max_backoff_s,
        multiplier=policy.multiplier or defaults.multiplier,
        non_retryable_errors=tuple(policy.non_retryable_errors),
    )


def worker_to_proto(worker: WorkerRecord) -> scheduler_pb2.WorkerInfo:
    return scheduler_pb2.WorkerInfo(
        worker_id=worker.worker_id,
        address=worker.address,
        slots=worker.slots,
        busy_slots=worker.busy_slots,
        state=int(worker.state),  # type: ignore[arg-type]
        task_types=list(worker.task_types),
        last_heartbeat=to_timestamp(worker.last_heartbeat),
        registered_at=to_timestamp(worker.registered_at),
        running_task_ids=sorted(worker.leases),
    )


def _event(task: Task, at: datetime) -> common_pb2.TaskEvent:
    return common_pb2.TaskEvent(task=task_to_proto(task), occurred_at=to_timestamp(at), position=task.revision)


def _changed_at(task: Task) -> datetime:
    """When a task read back (not seen changing) last changed, as far as it shows."""
    return task.finished_at or task.started_at or task.created_at


def _enum(
    cls: type[Priority] | type[TaskState] | type[FailureReason] | type[CatchUp], value: int, field: str
) -> Priority | TaskState | FailureReason | CatchUp:
    try:
        return cls(value)
    except ValueError:
        names = ", ".join(m.name for m in cls if m.value)
        raise InvalidArgument(f"{field} {value} is not one of {names}", field=field) from None


def _submit_request(request: scheduler_pb2.SubmitTaskRequest, trace_parent: str = "") -> SubmitRequest:
    return SubmitRequest(
        task_type=request.task_type,
        params=struct_to_dict(request.params),
        result_dir=request.result_dir,
        priority=Priority(_enum(Priority, request.priority, "priority")),
        idempotency_key=request.idempotency_key,
        max_attempts=request.max_attempts,
        run_timeout_s=from_duration(request.run_timeout),
        deadline=from_timestamp(request.deadline) if request.HasField("deadline") else None,
        not_before=from_timestamp(request.not_before) if request.HasField("not_before") else None,
        delay_s=from_duration(request.delay),
        retry=_retry_from_proto(request.retry) if request.HasField("retry") else None,
        result_ttl_s=from_duration(request.result_ttl),
        trace_parent=trace_parent,
    )


def _submit_to_proto(request: SubmitRequest) -> scheduler_pb2.SubmitTaskRequest:
    return scheduler_pb2.SubmitTaskRequest(
        task_type=request.task_type,
        params=dict_to_struct(request.params),
        result_dir=request.result_dir,
        priority=int(request.priority),  # type: ignore[arg-type]
        max_attempts=request.max_attempts,
        run_timeout=to_duration(request.run_timeout_s),
        retry=_retry_to_proto(request.retry),
        result_ttl=to_duration(request.result_ttl_s),
    )


def schedule_to_proto(schedule: Schedule) -> scheduler_pb2.Schedule:
    return scheduler_pb2.Schedule(
        schedule_id=schedule.schedule_id,
        cron=schedule.spec.cron,
        time_zone=schedule.spec.time_zone if schedule.spec.cron else "",
        interval=to_duration(schedule.spec.interval_s),
        task=_submit_to_proto(schedule.template),
        catch_up=int(schedule.catch_up),  # type: ignore[arg-type]
        catch_up_limit=schedule.catch_up_limit,
        paused=schedule.paused,
        next_tick=to_timestamp(schedule.next_tick),
        last_tick=to_timestamp(schedule.last_tick),
        last_task_id=schedule.last_task_id,
        created_at=to_timestamp(schedule.created_at),
    )


class CoreHolder:
    """The core while this Scheduler leads; None while it stands by."""

    def __init__(self) -> None:
        self.core: SchedulerCore | None = None
        self.schedules: Schedules | None = None

    def get(self) -> SchedulerCore:
        if self.core is None:
            raise NotLeader("this Scheduler is a standby; the leader serves requests (retry through the edge)")
        return self.core

    def get_schedules(self) -> Schedules:
        if self.schedules is None:
            raise NotLeader("this Scheduler is a standby; the leader serves requests (retry through the edge)")
        return self.schedules


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServicer):
    def __init__(self, holder: CoreHolder, registry: TaskTypeRegistry, stats: StatsReader | None = None) -> None:
        self._holder = holder
        self._registry = registry
        self._stats = stats

    async def SubmitTask(
        self, request: scheduler_pb2.SubmitTaskRequest, context: aio.ServicerContext
    ) -> common_pb2.Task:
        task = await self._holder.get().submit(_submit_request(request, tracing.current()))
        return task_to_proto(task)

    async def SubmitTasks(
        self, request: scheduler_pb2.SubmitTasksRequest, context: aio.ServicerContext
    ) -> scheduler_pb2.SubmitTasksResponse:
        core = self._holder.get()
        converted: list[SubmitRequest | GridmeshError] = []
        trace_parent = tracing.current()  # the batch's: its tasks are one trace
        for message in request.requests:
            try:
                converted.append(_submit_request(message, trace_parent))
            except GridmeshError as e:
                converted.append(e)
        valid = [c for c in converted if isinstance(c, SubmitRequest)]
        outcomes = iter(await core.submit_many(valid))
        response = scheduler_pb2.SubmitTasksResponse()
        for item in converted:
            outcome: Task | GridmeshError = next(outcomes) if isinstance(item, SubmitRequest) else item
            if isinstance(outcome, GridmeshError):
                response.results.add(error=status_proto(outcome))
            else:
                response.results.add(task=task_to_proto(outcome))
        return response

    async def GetTask(self, request: scheduler_pb2.GetTaskRequest, context: aio.ServicerContext) -> common_pb2.Task:
        return task_to_proto(await self._holder.get().get(request.task_id))

    async def ListTasks(
        self, request: scheduler_pb2.ListTasksRequest, context: aio.ServicerContext
    ) -> scheduler_pb2.ListTasksResponse:
        tasks, token = await self._holder.get().list_tasks(
            TaskState(_enum(TaskState, request.state, "state")),
            request.task_type,
            request.page_size,
            request.page_token,
        )
        return scheduler_pb2.ListTasksResponse(tasks=[task_to_proto(t) for t in tasks], next_page_token=token)

    async def CancelTask(
        self, request: scheduler_pb2.CancelTaskRequest, context: aio.ServicerContext
    ) -> common_pb2.Task:
        task = await self._holder.get().cancel(request.task_id)
        metrics.CANCELLED.labels(task.task_type).inc()
        return task_to_proto(task)

    async def CreateSchedule(
        self, request: scheduler_pb2.CreateScheduleRequest, context: aio.ServicerContext
    ) -> scheduler_pb2.Schedule:
        s = request.schedule
        spec = ScheduleSpec(cron=s.cron, time_zone=s.time_zone or "UTC", interval_s=from_duration(s.interval))
        catch_up = CatchUp(_enum(CatchUp, s.catch_up, "catch_up"))
        schedule = await self._holder.get_schedules().create(spec, _submit_request(s.task), catch_up, s.catch_up_limit)
        return schedule_to_proto(schedule)

    async def ListSchedules(
        self, request: scheduler_pb2.ListSchedulesRequest, context: aio.ServicerContext
    ) -> scheduler_pb2.ListSchedulesResponse:
        schedules = self._holder.get_schedules().list()
        return scheduler_pb2.ListSchedulesResponse(schedules=[schedule_to_proto(s) for s in schedules])

    async def GetSchedule(
        self, request: scheduler_pb2.GetScheduleRequest, context: aio.ServicerContext
    ) -> scheduler_pb2.Schedule:
        return schedule_to_proto(self._holder.get_schedules().get(request.schedule_id))

    async def PauseSchedule(
        self, request: scheduler_pb2.PauseScheduleRequest, context: aio.ServicerContext
    ) -> scheduler_pb2.Schedule:
        return schedule_to_proto(await self._holder.get_schedules().pause(request.schedule_id))

    async def ResumeSchedule(
        self, request: scheduler_pb2.ResumeScheduleRequest, context: aio.ServicerContext
    ) -> scheduler_pb2.Schedule:
        return schedule_to_proto(await self._holder.get_schedules().resume(request.schedule_id))

    async def DeleteSchedule(
        self, request: scheduler_pb2.DeleteScheduleRequest, context: aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self._holder.get_schedules().delete(request.schedule_id)
        return empty_pb2.Empty()

    async def RerunTask(self, request: scheduler_pb2.RerunTaskRequest, context: aio.ServicerContext) -> common_pb2.Task:
        return task_to_proto(await self._holder.get().rerun(request.task_id, tracing.current()))

    async def RerunTasks(
        self, request: scheduler_pb2.RerunTasksRequest, context: aio.ServicerContext
    ) -> scheduler_pb2.RerunTasksResponse:
        matching = RerunFilter(
            state=TaskState(_enum(TaskState, request.state, "state")),
            task_type=request.task_type,
            failure_reason=FailureReason(_enum(FailureReason, request.failure_reason, "failure_reason")),
            created_after=from_timestamp(request.created_after) if request.HasField("created_after") else None,
            created_before=from_timestamp(request.created_before) if request.HasField("created_before") else None,
        )
        matched, tasks = await self._holder.get().rerun_many(
            matching, request.limit, request.dry_run, tracing.current()
        )
        return scheduler_pb2.RerunTasksResponse(matched=matched, tasks=[task_to_proto(t) for t in tasks])

    async def WatchTask(
        self, request: scheduler_pb2.WatchTaskRequest, context: aio.ServicerContext
    ) -> AsyncIterator[common_pb2.TaskEvent]:
        core = self._holder.get()
        watcher = core.watch([request.task_id] if request.task_id else [], terminal_only=False)
        try:
            if not request.task_id:
                raise InvalidArgument("task_id is required", field="task_id")
            if request.resume_after < 0:
                raise InvalidArgument("resume_after must not be negative", field="resume_after")
            current = await core.get(request.task_id)
            if current.revision > request.resume_after or not request.resume_after:
                yield _event(current, _changed_at(current))
            if current.state.terminal:
                return
            async for task, at in _drain(watcher, after=max(current.revision, request.resume_after)):
                yield _noticed(task, at)
                if task.state.terminal:
                    return
        finally:
            core.unwatch(watcher)

    async def WatchTasks(
        self, request: scheduler_pb2.WatchTasksRequest, context: aio.ServicerContext
    ) -> AsyncIterator[common_pb2.TaskEvent]:
        core = self._holder.get()
        watcher = core.watch(request.task_ids, request.terminal_only, request.task_type)
        try:
            latest: dict[str, int] = {}
            after = request.resume_after
            if after:
                # Resuming: every change since, from the store (it spans
                # restarts and fail-overs); then only what is newer goes live.
                while page := await core.changes_after(after, watcher):
                    for task in page:
                        yield _event(task, _changed_at(task))
                    after = page[-1].revision
            else:
                # Tasks named explicitly: their current state first, as WatchTask does.
                for task_id in dict.fromkeys(request.task_ids):
                    current = await core.get(task_id)
                    latest[current.task_id] = current.revision
                    if watcher.wants(current):
                        yield _event(current, _changed_at(current))
            async for task, at in _drain(watcher, after=after):
                if task.revision <= latest.get(task.task_id, 0):
                    continue
                yield _noticed(task, at)
        finally:
            core.unwatch(watcher)

    async def ListTaskTypes(
        self, request: scheduler_pb2.ListTaskTypesRequest, context: aio.ServicerContext
    ) -> scheduler_pb2.ListTaskTypesResponse:
        return scheduler_pb2.ListTaskTypesResponse(
            task_types=[
                scheduler_pb2.TaskTypeInfo(
                    name=t.name, description=t.description, params_schema=dict_to_struct(dict(t.params_schema))
                )
                for t in self._registry
            ]
        )

    async def ListWorkers(
        self, request: scheduler_pb2.ListWorkersRequest, context: aio.ServicerContext
    ) -> scheduler_pb2.ListWorkersResponse:
        return scheduler_pb2.ListWorkersResponse(workers=[worker_to_proto(w) for w in self._holder.get().workers()])

    async def DrainNode(
        self, request: scheduler_pb2.DrainNodeRequest, context: aio.ServicerContext
    ) -> scheduler_pb2.WorkerInfo:
        return worker_to_proto(self._holder.get().drain_worker(request.worker_id))

    async def GetStats(
        self, request: scheduler_pb2.GetStatsRequest, context: aio.ServicerContext
    ) -> scheduler_pb2.GetStatsResponse:
        # Reads the analytics tables only: a standby Scheduler answers too.
        if self._stats is None:
            raise FailedPrecondition("this Scheduler was started without access to the analytics tables")
        query = query_from_proto(request, datetime.now(UTC))
        return report_to_proto(await self._stats.read(query))


def _noticed(task: Task, at: datetime) -> common_pb2.TaskEvent:
    """A live change for a watcher; the notice that a task finished is a
    span of its trace, from the commit to the notice going out."""
    if task.state.terminal and task.trace_parent:
        tracing.record(
            "notify",
            parent=task.trace_parent,
            start=at,
            end=datetime.now(UTC),
            kind=tracing.SpanKind.PRODUCER,
            attributes={"gridmesh.task_id": task.task_id, "gridmesh.state": task.state.name},
        )
    return _event(task, at)


async def _drain(watcher: Watcher, after: int) -> AsyncIterator[tuple[Task, datetime]]:
    """Committed changes seen by ``watcher`` newer than revision ``after``."""
    while True:
        item = await watcher.queue.get()
        if item is None:
            raise NotLeader("this Scheduler stepped down; watch again through the edge")
        if watcher.overflowed:
            raise ResourceExhausted("this watch fell too far behind and was closed; watch again")
        task, at = item
        if task.revision > after:
            yield task, at


class WorkQueueServicer(scheduler_pb2_grpc.WorkQueueServicer):
    def __init__(self, holder: CoreHolder) -> None:
        self._holder = holder

    async def RegisterWorker(
        self, request: scheduler_pb2.RegisterWorkerRequest, context: aio.ServicerContext
    ) -> scheduler_pb2.RegisterWorkerResponse:
        core = self._holder.get()
        core.register_worker(request.worker_id, request.address, request.slots, request.task_types, request.prefetch)
        return scheduler_pb2.RegisterWorkerResponse(
            lease_ttl_ms=int(core.lease_ttl_s * 1000), heartbeat_interval_ms=int(core.heartbeat_interval_s * 1000)
        )

    async def PullTasks(
        self, request_iterator: AsyncIterator[scheduler_pb2.PullTasksRequest], context: aio.ServicerContext
    ) -> AsyncIterator[scheduler_pb2.PullTasksResponse]:
        core = self._holder.get()
        first = await anext(aiter(request_iterator), None)
        if first is None:
            return
        if not first.worker_id:
            raise InvalidArgument("the first PullTasksRequest must name worker_id", field="worker_id")
        worker_id = first.worker_id
        link = core.open_link(worker_id)
        reports: set[asyncio.Task[None]] = set()

        async def answer(report: scheduler_pb2.ReportTaskRequest) -> None:
            try:
                with _reported(report):
                    await core.report(worker_id, report.task_id, report.fencing_token, _worker_outcome(report))
                link.outbox.put_nowait(ReportAck(report.task_id, report.fencing_token))
            except GridmeshError as e:
                link.outbox.put_nowait(ReportAck(report.task_id, report.fencing_token, e))

        def take(message: scheduler_pb2.PullTasksRequest) -> None:
            for report in message.reports:
                job = asyncio.create_task(answer(report))
                reports.add(job)
                job.add_done_callback(reports.discard)
            # Credit first: the room a given-back task left is there before
            # that task is queued again (and goes to a free slot elsewhere).
            if message.credit:
                core.grant_credit(link, message.credit)
            for lease in message.given_back:
                core.give_back(link, lease.task_id, lease.fencing_token)

        async def read() -> None:
            try:
                take(first)
                async for message in request_iterator:
                    take(message)
            finally:
                link.close()  # the worker went away: end the sending side too

        reader = asyncio.create_task(read())
        unsent: list[LinkItem] = []
        try:
            while True:
                items = [await link.outbox.get()]
                while not link.outbox.empty():  # send everything pending in one message
                    items.append(link.outbox.get_nowait())
                if None in items:  # the link was closed (worker gone, or this Scheduler stepped down)
                    unsent = [item for item in items if item is not None]
                    break
                yield _pull_response([item for item in items if item is not None])
            if reader.done():
                reader.result()  # re-raise what ended the worker's side, if anything
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            core.close_link(link, unsent)  # assignments never sent are queued again

    async def Heartbeat(
        self, request: scheduler_pb2.HeartbeatRequest, context: aio.ServicerContext
    ) -> scheduler_pb2.HeartbeatResponse:
        result = self._holder.get().heartbeat(
            request.worker_id,
            [(lease.task_id, lease.fencing_token) for lease in request.leases],
            WorkerState(request.state) if request.state in WorkerState._value2member_map_ else WorkerState.ACTIVE,
        )
        return scheduler_pb2.HeartbeatResponse(
            lost=[scheduler_pb2.LeaseRef(task_id=t, fencing_token=f) for t, f in result.lost],
            lease_expires_at=to_timestamp(result.lease_expires_at),
            reregister=result.reregister,
        )

    async def ReportTask(
        self, request: scheduler_pb2.ReportTaskRequest, context: aio.ServicerContext
    ) -> scheduler_pb2.ReportTaskResponse:
        core = self._holder.get()
        task = await core.report(request.worker_id, request.task_id, request.fencing_token, _worker_outcome(request))
        return scheduler_pb2.ReportTaskResponse(task=task_to_proto(task))

    async def ReportCompletions(
        self, request_iterator: AsyncIterator[scheduler_pb2.ReportCompletionsRequest], context: aio.ServicerContext
    ) -> AsyncIterator[scheduler_pb2.ReportCompletionsResponse]:
        core = self._holder.get()

        async def answer(item: tuple[bool, scheduler_pb2.ReportTaskRequest]) -> tuple[bool, scheduler_pb2.ReportResult]:
            check, report = item
            try:
                if check:
                    await core.check_lease(report.worker_id, report.task_id, report.fencing_token)
                else:
                    with _reported(report):
                        await core.report(report.worker_id, report.task_id, report.fencing_token, _completion(report))
                error = None
            except GridmeshError as e:
                error = e
            return check, _report_result(ReportAck(report.task_id, report.fencing_token, error))

        def pack(answers: list[tuple[bool, scheduler_pb2.ReportResult]]) -> scheduler_pb2.ReportCompletionsResponse:
            return scheduler_pb2.ReportCompletionsResponse(
                results=[result for check, result in answers if not check],
                checks=[result for check, result in answers if check],
            )

        async for response in answer_each(
            request_iterator,
            lambda message: [*((True, c) for c in message.checks), *((False, r) for r in message.reports)],
            answer,
            pack,
        ):
            yield response

    async def DeregisterWorker(
        self, request: scheduler_pb2.DeregisterWorkerRequest, context: aio.ServicerContext
    ) -> scheduler_pb2.DeregisterWorkerResponse:
        self._holder.get().deregister(request.worker_id)
        return scheduler_pb2.DeregisterWorkerResponse()


def _reported(report: scheduler_pb2.ReportTaskRequest) -> contextlib.AbstractContextManager[str]:
    """The span of a task's end being committed, continuing the reporter's."""
    return tracing.span(
        f"report {report.WhichOneof('outcome') or 'outcome'}",
        parent=report.traceparent,
        kind=tracing.SpanKind.SERVER,
        attributes={"gridmesh.task_id": report.task_id, "gridmesh.worker_id": report.worker_id},
    )


def _completion(request: scheduler_pb2.ReportTaskRequest) -> Success:
    if request.WhichOneof("outcome") != "success":
        raise InvalidArgument("a completion reports a success", field="success")
    s = request.success
    return Success(s.result_path, s.result_size_bytes, s.result_sha256, _started_at(request))


def _started_at(request: scheduler_pb2.ReportTaskRequest) -> datetime | None:
    return from_timestamp(request.started_at) if request.HasField("started_at") else None


def _worker_outcome(request: scheduler_pb2.ReportTaskRequest) -> Outcome:
    """What a worker reports itself: only the StoreKeeper reports a success
    (once the result is durable), so a worker cannot claim one."""
    kind = request.WhichOneof("outcome")
    if kind == "success":
        raise InvalidArgument(
            "a success is reported by the StoreKeeper: store the result with its lease (StoreResults)",
            field="success",
        )
    if kind == "failure":
        reason = request.failure.reason or FailureReason.ERROR
        if reason not in (FailureReason.ERROR, FailureReason.TIMEOUT, FailureReason.EXPIRED):
            raise InvalidArgument("a worker reports a failure as ERROR, TIMEOUT or EXPIRED", field="failure.reason")
        return Failure(request.failure.error, FailureReason(reason), _started_at(request))
    if kind == "crash":
        return Crash(request.crash.reason)
    if kind == "stopped":
        return Crash("the worker stopped the task")
    raise InvalidArgument("outcome is required: success, failure, crash or stopped", field="outcome")


def _pull_response(items: list[LinkItem]) -> scheduler_pb2.PullTasksResponse:
    """One message for what the Scheduler has for the worker."""
    response = scheduler_pb2.PullTasksResponse()
    for item in items:
        if isinstance(item, Assignment):
            response.assignments.append(
                scheduler_pb2.TaskAssignment(
                    task=task_to_proto(item.task),
                    fencing_token=item.fencing_token,
                    lease_expires_at=to_timestamp(item.lease_expires_at),
                    traceparent=_dispatched(item.task),
                )
            )
        elif isinstance(item, CancelNotice):
            response.cancels.append(scheduler_pb2.LeaseRef(task_id=item.task_id, fencing_token=item.fencing_token))
        elif isinstance(item, TakeBack):
            response.take_back.append(scheduler_pb2.LeaseRef(task_id=item.task_id, fencing_token=item.fencing_token))
        elif isinstance(item, DrainNotice):
            response.drain = True
        else:
            response.report_results.append(_report_result(item))
    return response


def _dispatched(task: Task) -> str:
    """The span of the task's wait in the queue, which this dispatch ends
    and its run continues (its traceparent; ``""``: not traced)."""
    if not task.trace_parent:
        return ""
    queued_since = max(task.created_at, task.not_before) if task.not_before else task.created_at
    return tracing.record(
        f"dispatch {task.task_type}",
        parent=task.trace_parent,
        start=queued_since,
        end=task.dispatched_at,
        kind=tracing.SpanKind.PRODUCER,
        attributes={
            "gridmesh.task_id": task.task_id,
            "gridmesh.worker_id": task.worker_id,
            "gridmesh.attempt": task.attempt,
        },
    )


def _report_result(ack: ReportAck) -> scheduler_pb2.ReportResult:
    return scheduler_pb2.ReportResult(
        task_id=ack.task_id,
        fencing_token=ack.fencing_token,
        code=status_code(ack.error).value[0] if ack.error is not None else 0,
        message=ack.error.message if ack.error is not None else "",
    )
