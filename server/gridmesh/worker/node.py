"""A worker node: registers with the Scheduler, pulls work with credit equal
to its free slots, runs each task in one process of its pool and hands the
result, with the task's lease, to the StoreKeeper, which stores it and
reports the completion to the Scheduler itself (SPEC §3). Failures and
crashes the node reports on its pull stream.

Concurrency: everything here runs on the asyncio loop; a task process's
answer is awaited as its pipe becoming readable (:meth:`Slot.run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from grpc import aio

from gridmesh.common.backoff import Backoff
from gridmesh.common.convert import from_duration, from_timestamp, struct_to_dict, to_timestamp
from gridmesh.core.access import PeerRole
from gridmesh.core.lifecycle import LifecycleEvent, LifecycleKind, LifecycleLog
from gridmesh.core.tasks import never_ran
from gridmesh.grpc_support.server import channel_options
from gridmesh.grpc_support.streams import RequestStream, batches, write_all
from gridmesh.grpc_support.tls import MeshTls, aio_channel
from gridmesh.observability import metrics, tracing
from gridmesh.observability.logs import set_log_context
from gridmesh.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc, storekeeper_pb2, storekeeper_pb2_grpc
from gridmesh.worker.pool import ProcessPool, Slot

log = logging.getLogger(__name__)

RECONNECT = Backoff(initial_s=0.05, max_s=2.0)
"""The pauses between attempts to register or to re-open the pull stream."""
STORE_RETRY = Backoff(initial_s=0.4, max_s=2.0)
"""The pauses between attempts to store a finished task's result."""
REPORT_RETRY = Backoff(initial_s=0.2, max_s=2.0)
"""The pauses between attempts to report a task's end."""
REPORT_ATTEMPTS = 8
REPORT_DEADLINE_S = 120.0
"""How long a finished task's report is retried (a Scheduler failover takes a ZooKeeper session timeout)."""
RPC_TIMEOUT_S = 10.0
STORE_TIMEOUT_S = 15.0
"""How long a completion is awaited: the StoreKeeper may retry its report to the Scheduler for 8 s."""
DEREGISTER_TIMEOUT_S = 2.0


@dataclass
class RunningTask:
    task_id: str
    task_type: str
    attempt: int
    priority: int
    fencing_token: int
    result_dir: str
    started_at: datetime
    slot: Slot
    run_timeout_s: float = 0.0
    """Kill the process when the task runs longer (0: no limit)."""
    trace_parent: str = ""
    """The Scheduler's dispatch span, which the run continues (``""``: not traced)."""
    cancelled: bool = False
    timed_out: bool = False
    renewed_at: float = field(default_factory=time.monotonic)
    """When a heartbeat last renewed this task's lease (monotonic)."""


@dataclass
class Counters:
    pulled: int = 0
    succeeded: int = 0
    failed: int = 0
    crashed: int = 0
    lost_leases: int = 0


@dataclass
class NodeSettings:
    worker_id: str
    address: str
    slots: int
    task_types: list[str]
    scheduler_addresses: list[str]
    """The Scheduler and its standby; the node follows whichever leads."""
    storekeeper_address: str
    prefetch: int = 0
    """Tasks held beyond the slots, each waiting there for a slot (worker.prefetch)."""
    heartbeat_interval_s: float = 2.0
    counters: Counters = field(default_factory=Counters)
    tls: MeshTls | None = None
    """The node's worker certificate, presented to the Scheduler and the
    StoreKeeper (None: plaintext)."""


_PERMANENT_STORE_ERRORS = frozenset(
    code.value[0]
    for code in (
        grpc.StatusCode.INVALID_ARGUMENT,  # e.g. a result over the size limit
        grpc.StatusCode.RESOURCE_EXHAUSTED,  # no space or quota left under the storage root
        grpc.StatusCode.FAILED_PRECONDITION,  # a read-only or forbidden storage root
    )
)
"""StoreKeeper answers after which a result is not stored again: the task
ends FAILED with the StoreKeeper's reason. Any other (the StoreKeeper
restarting, say) is retried."""


_OUTCOMES = {"ok": "succeeded", "error": "failed", "stopped": "stopped"}
"""A task process's result kind, as the outcome metrics name it."""


def result_stream(
    stub: storekeeper_pb2_grpc.StoreKeeperStub,
) -> RequestStream[
    tuple[str, int],
    storekeeper_pb2.StoreResultRequest,
    storekeeper_pb2.StoreResultAnswer,
    storekeeper_pb2.StoreResultsRequest,
    storekeeper_pb2.StoreResultsResponse,
]:
    """Results go to the StoreKeeper on one long-lived StoreResults stream,
    batched; answers are matched by (task id, fencing token)."""
    return RequestStream(
        stub.StoreResults,
        item_key=lambda request: (request.task_id, request.fencing_token),
        answer_key=lambda answer: (answer.task_id, answer.fencing_token),
        pack=lambda requests: storekeeper_pb2.StoreResultsRequest(results=requests),
        unpack=lambda response: response.answers,
        what="the StoreKeeper",
    )


@dataclass(frozen=True)
class _Outgoing:
    """One thing to tell the Scheduler on the pull stream."""

    credit: int = 0
    report: scheduler_pb2.ReportTaskRequest | None = None
    given_back: scheduler_pb2.LeaseRef | None = None


class WorkerNode:
    def __init__(self, settings: NodeSettings, pool: ProcessPool, lifecycle: LifecycleLog) -> None:
        self.settings = settings
        self.counters = settings.counters
        self._pool = pool
        self._lifecycle = lifecycle
        self.running: dict[str, RunningTask] = {}
        self.draining = False
        self.held: list[tuple[int, int, scheduler_pb2.TaskAssignment]] = []
        """Prefetched tasks waiting for a slot: a heap in the order they start
        (higher priority first, then dispatch order)."""
        self.progressed_at = time.monotonic()
        """When a task last started or finished here, or tasks began to wait
        for a slot (monotonic)."""
        self._outgoing: asyncio.Queue[_Outgoing] = asyncio.Queue()
        """What to send on the pull stream."""
        self._unacked: dict[
            tuple[str, int], tuple[scheduler_pb2.ReportTaskRequest, asyncio.Future[scheduler_pb2.ReportResult]]
        ] = {}
        self._schedulers = [
            aio_channel(a, settings.tls, PeerRole.SCHEDULER, channel_options()) for a in settings.scheduler_addresses
        ]
        self._current = 0
        self._queue = scheduler_pb2_grpc.WorkQueueStub(self._schedulers[0])
        self._store_channel = aio_channel(
            settings.storekeeper_address, settings.tls, PeerRole.STOREKEEPER, channel_options()
        )
        self._results = result_stream(storekeeper_pb2_grpc.StoreKeeperStub(self._store_channel))
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self._lease_ttl_s = 10.0
        self._drained = asyncio.Event()
        self._drain_job: asyncio.Task[None] | None = None

    # -- life -----------------------------------------------------------------

    def _next_scheduler(self) -> None:
        """The current Scheduler is down or a standby: try the next one."""
        if len(self._schedulers) > 1:
            self._current = (self._current + 1) % len(self._schedulers)
            self._queue = scheduler_pb2_grpc.WorkQueueStub(self._schedulers[self._current])

    async def start(self) -> None:
        await self._register()
        self._loops = [asyncio.create_task(self._pull_loop()), asyncio.create_task(self._heartbeat_loop())]

    async def _register(self) -> None:
        s = self.settings
        request = scheduler_pb2.RegisterWorkerRequest(
            worker_id=s.worker_id, address=s.address, slots=s.slots, task_types=s.task_types, prefetch=s.prefetch
        )
        attempt = 0
        while True:
            try:
                response = await self._queue.RegisterWorker(request, timeout=RPC_TIMEOUT_S)
                if response.heartbeat_interval_ms:
                    s.heartbeat_interval_s = response.heartbeat_interval_ms / 1000
                if response.lease_ttl_ms:
                    self._lease_ttl_s = response.lease_ttl_ms / 1000
                log.info("registered as %s with the Scheduler at %s", s.worker_id, s.scheduler_addresses[self._current])
                return
            except aio.AioRpcError as e:
                self._next_scheduler()
                if attempt % 20 == 0:
                    log.warning("cannot register with the Scheduler (%s); retrying", e.details())
                await asyncio.sleep(RECONNECT.pause_s(attempt))
                attempt += 1

    def request_drain(self) -> None:
        """Start draining in the background (Worker.DrainWorker, or the
        Scheduler's DrainNode arriving on the pull stream)."""
        if not self.draining and self._drain_job is None:
            self._drain_job = asyncio.create_task(self.drain())

    async def drain(self) -> None:
        """Stop pulling, finish what runs, deregister. Idempotent."""
        if self.draining:
            return
        self.draining = True
        log.info("draining: %d tasks still running, %d waiting for a slot", len(self.running), len(self.held))
        with contextlib.suppress(aio.AioRpcError):
            await self._heartbeat()  # the Scheduler stops sending work at once
        await self._idle.wait()
        await self._settle_reports()
        with contextlib.suppress(aio.AioRpcError):
            await self._queue.DeregisterWorker(
                scheduler_pb2.DeregisterWorkerRequest(worker_id=self.settings.worker_id), timeout=DEREGISTER_TIMEOUT_S
            )
        log.info("drained and deregistered")
        self._drained.set()

    async def wait_drained(self) -> None:
        await self._drained.wait()

    async def _settle_reports(self) -> None:
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending)

    async def close(self) -> None:
        """Stop at once: running tasks are killed (the Scheduler retries them)."""
        for loop_task in self._loops:
            loop_task.cancel()
        for running in list(self.running.values()):
            running.slot.kill()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        self._results.close()
        for channel in self._schedulers:
            await channel.close()
        await self._store_channel.close()

    # -- pulling -----------------------------------------------------------------

    async def _outgoing_stream(self, credit: int) -> AsyncIterator[scheduler_pb2.PullTasksRequest]:
        """What the node tells the Scheduler on the pull stream: credit (free
        slots) and reports. A new stream starts with ``credit`` and every
        report not yet answered, so none is lost when a stream breaks."""
        yield scheduler_pb2.PullTasksRequest(
            worker_id=self.settings.worker_id,
            credit=credit,
            reports=[request for request, _ in self._unacked.values()],
        )
        async for items in batches(self._outgoing):
            yield scheduler_pb2.PullTasksRequest(
                credit=sum(item.credit for item in items),
                reports=[item.report for item in items if item.report is not None],
                given_back=[item.given_back for item in items if item.given_back is not None],
            )

    async def _pull_loop(self) -> None:
        attempt = 0
        while True:
            # The new stream's credit is the free slots now, counted in the
            # same step as the queue for later credit is replaced: a task
            # ending in between must not be counted twice.
            self._outgoing = asyncio.Queue()
            call = self._queue.PullTasks()
            writer = write_all(call, self._outgoing_stream(0 if self.draining else self._room))
            try:
                async for response in call:
                    attempt = 0
                    for assignment in response.assignments:
                        self._take(assignment)
                    for cancel in response.cancels:
                        self._cancel(cancel.task_id, cancel.fencing_token)
                    for lease in response.take_back:
                        self._give_back(lease)
                    self._fill_slots()
                    for result in response.report_results:
                        entry = self._unacked.get((result.task_id, result.fencing_token))
                        if entry is not None and not entry[1].done():
                            entry[1].set_result(result)
                    if response.drain:
                        self.request_drain()
            except asyncio.CancelledError:
                call.cancel()
                raise
            except aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    await self._register()  # the Scheduler forgot us (restart or failover)
                    continue
                self._next_scheduler()
                if attempt % 20 == 0:
                    log.warning("pull stream broke (%s: %s); reconnecting", e.code().name, e.details())
            except Exception:  # a bug: log it and pull again rather than stop pulling for good
                call.cancel()
                log.exception("handling the pull stream failed; reconnecting")
            finally:
                writer.cancel()
            await asyncio.sleep(RECONNECT.pause_s(attempt))
            attempt += 1

    @property
    def _room(self) -> int:
        """Tasks the node can still take: free slots, then prefetch room."""
        return self.settings.slots + self.settings.prefetch - len(self.running) - len(self.held)

    def stalled_for(self, now: float) -> float:
        """How long tasks have waited here for a slot while no task started
        or finished (0 while none waits): a node whose task processes are
        stopped or hung looks alive, and even heartbeats, but makes no
        progress."""
        return now - self.progressed_at if self.held else 0.0

    def _credit(self) -> None:
        """Room for one more task came free: tell the Scheduler (not while draining)."""
        if not self.draining:
            self._outgoing.put_nowait(_Outgoing(credit=1))

    def _take(self, assignment: scheduler_pb2.TaskAssignment) -> None:
        """Hold an assignment until a slot is free (:meth:`_fill_slots`)."""
        task = assignment.task
        if self._room <= 0:  # more work than room (never asked for): hand it back
            log.error("task %s was assigned with no room for it; handing it back", task.task_id)
            self._spawn(
                self._report(
                    scheduler_pb2.ReportTaskRequest(
                        worker_id=self.settings.worker_id,
                        task_id=task.task_id,
                        fencing_token=assignment.fencing_token,
                        crash=scheduler_pb2.TaskCrash(reason=f"{self.settings.worker_id} had no free slot for it"),
                    )
                )
            )
            return
        if not self.held:
            self.progressed_at = time.monotonic()  # the wait starts now
        heapq.heappush(self.held, (-task.priority, assignment.fencing_token, assignment))
        self._idle.clear()

    def _fill_slots(self) -> None:
        """Start held tasks while slots are free, in order; one whose deadline
        passed while it was held never starts: it is reported EXPIRED."""
        while self.held and self._pool.free:
            _, _, assignment = heapq.heappop(self.held)
            task = assignment.task
            if task.HasField("deadline") and from_timestamp(task.deadline) <= datetime.now(UTC):
                self._expired(assignment)
                continue
            self._start(assignment)

    def _expired(self, assignment: scheduler_pb2.TaskAssignment) -> None:
        task = assignment.task
        log.info("task %s passed its deadline while held here: not started", task.task_id)
        failure = scheduler_pb2.TaskFailure(
            error=never_ran(from_timestamp(task.deadline)),
            reason=common_pb2.Task.EXPIRED,
        )
        request = scheduler_pb2.ReportTaskRequest(
            worker_id=self.settings.worker_id,
            task_id=task.task_id,
            fencing_token=assignment.fencing_token,
            failure=failure,
        )
        self._spawn(self._report(request))
        self._set_idle_if_done()
        self._credit()

    def _unhold(self, task_id: str, token: int) -> bool:
        """Forget a held task; whether it was held (not started)."""
        kept = [entry for entry in self.held if (entry[2].task.task_id, entry[1]) != (task_id, token)]
        if len(kept) == len(self.held):
            return False
        self.held = kept
        heapq.heapify(self.held)
        self._set_idle_if_done()
        return True

    def _give_back(self, lease: scheduler_pb2.LeaseRef) -> None:
        """The Scheduler asks for a held task back: given if not started yet."""
        if self._unhold(lease.task_id, lease.fencing_token):
            log.info("gave back task %s (not started) for a free slot elsewhere", lease.task_id)
            self._outgoing.put_nowait(_Outgoing(credit=0 if self.draining else 1, given_back=lease))

    def _set_idle_if_done(self) -> None:
        if not self.running and not self.held:
            self._idle.set()

    def _start(self, assignment: scheduler_pb2.TaskAssignment) -> None:
        task = assignment.task
        slot = self._pool.acquire()
        running = RunningTask(
            task_id=task.task_id,
            task_type=task.task_type,
            attempt=task.attempt,
            priority=task.priority,
            fencing_token=assignment.fencing_token,
            result_dir=task.result_dir,
            started_at=datetime.now(UTC),
            slot=slot,
            run_timeout_s=from_duration(task.run_timeout),
            trace_parent=assignment.traceparent,
        )
        self.running[task.task_id] = running
        self.progressed_at = time.monotonic()
        self._idle.clear()
        self.counters.pulled += 1
        if task.HasField("created_at"):
            waited = (running.started_at - from_timestamp(task.created_at)).total_seconds()
            metrics.QUEUE_WAIT.labels(task.task_type).observe(max(waited, 0.0))
        self._spawn(self._run(running, struct_to_dict(task.params)))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background, kept until done (drain and close wait for it)."""
        job = asyncio.create_task(work)
        self._tasks.add(job)
        job.add_done_callback(self._tasks.discard)

    def _cancel(self, task_id: str, token: int) -> None:
        if self._unhold(task_id, token):
            log.info("task %s cancelled before it started", task_id)
            self._credit()
            return
        running = self.running.get(task_id)
        if running is not None and running.fencing_token == token:
            log.info("task %s cancelled: stopping its process %d", task_id, running.slot.pid)
            running.cancelled = True
            running.slot.kill()

    def _time_out(self, running: RunningTask) -> None:
        """``running`` outlived its run_timeout: its process is killed."""
        if self.running.get(running.task_id) is running and not running.cancelled:
            log.info(
                "task %s ran past its run_timeout of %g s: killing its process", running.task_id, running.run_timeout_s
            )
            running.timed_out = True
            running.slot.kill()

    async def _run(self, running: RunningTask, params: dict[str, object]) -> None:
        set_log_context(task_id=running.task_id)  # this task's records (and its report's) name it
        with tracing.span(
            f"run {running.task_type}",
            parent=running.trace_parent,
            kind=tracing.SpanKind.CONSUMER,
            attributes={"gridmesh.task_id": running.task_id, "gridmesh.attempt": running.attempt},
        ):
            await self._run_traced(running, params)

    async def _run_traced(self, running: RunningTask, params: dict[str, object]) -> None:
        self._lifecycle.emit(self._event(LifecycleKind.STARTED, running))
        began = time.monotonic()
        limit = (
            asyncio.get_running_loop().call_later(running.run_timeout_s, self._time_out, running)
            if running.run_timeout_s
            else None
        )
        try:
            result = await running.slot.run(running.task_type, params, tracing.current())
            metrics.RUN_TIME.labels(running.task_type).observe(time.monotonic() - began)
            timed_out = running.timed_out and result.kind == "stopped"
            outcome = _OUTCOMES.get(result.kind, "crashed")
            outcome = "cancelled" if running.cancelled else "timed_out" if timed_out else outcome
            metrics.TASKS_RUN.labels(running.task_type, outcome).inc()
        finally:
            if limit is not None:
                limit.cancel()
            self._pool.release(running.slot)
            del self.running[running.task_id]
            self.progressed_at = time.monotonic()
            self._fill_slots()
            self._set_idle_if_done()
            self._credit()
        if running.cancelled or (result.kind == "stopped" and not timed_out):
            return  # the Scheduler already ended the task
        request = scheduler_pb2.ReportTaskRequest(
            worker_id=self.settings.worker_id,
            task_id=running.task_id,
            fencing_token=running.fencing_token,
            started_at=to_timestamp(running.started_at),
            traceparent=tracing.current(),
        )
        if not await self._still_leased(running):
            self.counters.lost_leases += 1
            log.warning("task %s finished after its lease was lost; result dropped", running.task_id)
            return
        if result.kind == "ok":
            await self._complete(running, result.payload)
            return
        if timed_out:
            request.failure.error = (
                f"the task ran longer than its run_timeout of {running.run_timeout_s:g} s; "
                f"its process (pid {result.pid}) was killed"
            )
            request.failure.reason = common_pb2.Task.TIMEOUT
            self.counters.failed += 1
        elif result.kind == "error":
            request.failure.error = result.payload.decode(errors="replace")
            self.counters.failed += 1
        else:
            request.crash.reason = result.payload.decode(errors="replace")
            self.counters.crashed += 1
            log.warning("task %s: %s", running.task_id, request.crash.reason)
        await self._report(request)

    async def _still_leased(self, running: RunningTask) -> bool:
        """Whether the lease may still be ours. Asked only when no heartbeat
        got through for half a TTL (e.g. the node was stopped or cut off), so
        a result whose lease expired is neither stored nor reported."""
        if time.monotonic() - running.renewed_at < self._lease_ttl_s / 2:
            return True
        try:
            response = await self._queue.Heartbeat(self._heartbeat_request([running]), timeout=RPC_TIMEOUT_S)
        except aio.AioRpcError:
            return True  # cannot tell: the report will be refused if the lease is gone
        return not any(lost.task_id == running.task_id for lost in response.lost)

    async def _complete(self, running: RunningTask, content: bytes) -> None:
        """Hand the result and the lease to the StoreKeeper: it stores the
        result and reports the completion. Retried while the StoreKeeper is
        unreachable (a completion sent twice is taken once); a result that
        cannot be stored fails the task, named; one whose lease was lost is
        dropped."""
        request = storekeeper_pb2.StoreResultRequest(
            task_id=running.task_id,
            result_dir=running.result_dir,
            content=content,
            content_type="application/json",
            worker_id=self.settings.worker_id,
            fencing_token=running.fencing_token,
            started_at=to_timestamp(running.started_at),
            traceparent=tracing.current(),
        )
        for attempt in range(REPORT_ATTEMPTS):
            try:
                answer = await self._results.call(request, STORE_TIMEOUT_S)
            except aio.AioRpcError as e:
                log.warning("storing the result of %s failed (%s); retrying", running.task_id, e.details())
                await asyncio.sleep(STORE_RETRY.pause_s(attempt))
                continue
            if answer.code == grpc.StatusCode.OK.value[0]:
                self.counters.succeeded += 1
                return
            if answer.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]:
                self.counters.lost_leases += 1
                log.warning("the completion of task %s was refused: %s", running.task_id, answer.error)
                return
            if answer.code in _PERMANENT_STORE_ERRORS:  # retrying cannot help: the task fails, named
                self.counters.failed += 1
                await self._report(
                    scheduler_pb2.ReportTaskRequest(
                        worker_id=self.settings.worker_id,
                        task_id=running.task_id,
                        fencing_token=running.fencing_token,
                        failure=scheduler_pb2.TaskFailure(error=f"the result could not be stored: {answer.error}"),
                        traceparent=tracing.current(),
                    )
                )
                return
            log.warning("storing the result of %s failed (%s); retrying", running.task_id, answer.error)
            await asyncio.sleep(STORE_RETRY.pause_s(attempt))
        log.error("giving up storing the result of %s; its lease will expire and it will run again", running.task_id)

    async def _report(self, request: scheduler_pb2.ReportTaskRequest) -> None:
        """Report on the pull stream and wait for the answer; retried (also
        across reconnects and fail-overs) until answered or the deadline."""
        key = (request.task_id, request.fencing_token)
        deadline = time.monotonic() + REPORT_DEADLINE_S
        attempt = 0
        while time.monotonic() < deadline:
            answer: asyncio.Future[scheduler_pb2.ReportResult] = asyncio.get_running_loop().create_future()
            self._unacked[key] = (request, answer)
            self._outgoing.put_nowait(_Outgoing(report=request))
            try:
                result = await asyncio.wait_for(answer, max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break
            finally:
                self._unacked.pop(key, None)
            if result.code == grpc.StatusCode.OK.value[0]:
                return
            if result.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]:
                self.counters.lost_leases += 1
                log.warning("report on task %s refused: %s", request.task_id, result.message)
                return
            log.warning("report on task %s failed (%s); retrying", request.task_id, result.message)
            await asyncio.sleep(REPORT_RETRY.pause_s(attempt))
            attempt += 1
        log.error("giving up reporting task %s; its lease will expire and it will run again", request.task_id)

    # -- heartbeats ---------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            started = time.monotonic()
            with contextlib.suppress(aio.AioRpcError):
                await self._heartbeat()
            await asyncio.sleep(max(0.0, self.settings.heartbeat_interval_s - (time.monotonic() - started)))

    async def _heartbeat(self) -> None:
        renewing = list(self.running.values())
        held = [scheduler_pb2.LeaseRef(task_id=a.task.task_id, fencing_token=token) for _, token, a in self.held]
        sent = time.monotonic()
        response = await self._queue.Heartbeat(self._heartbeat_request(renewing, held), timeout=RPC_TIMEOUT_S)
        lost_ids = {lost.task_id for lost in response.lost}
        for running in renewing:
            if running.task_id not in lost_ids:
                running.renewed_at = sent
        for lost in response.lost:
            if self._unhold(lost.task_id, lost.fencing_token):
                log.warning("lease of task %s was lost before it started", lost.task_id)
                self.counters.lost_leases += 1
                self._credit()
                continue
            holder = self.running.get(lost.task_id)
            if holder is not None and holder.fencing_token == lost.fencing_token:
                log.warning("lease of task %s was lost: stopping it", lost.task_id)
                self.counters.lost_leases += 1
                holder.cancelled = True
                holder.slot.kill()
        if response.reregister and not self.draining:
            await self._register()

    def _heartbeat_request(
        self, renewing: list[RunningTask], held: list[scheduler_pb2.LeaseRef] | None = None
    ) -> scheduler_pb2.HeartbeatRequest:
        """Renews the leases of ``renewing`` and ``held`` and tells the node's
        state (a draining node stays DRAINING whichever heartbeat the
        Scheduler sees)."""
        return scheduler_pb2.HeartbeatRequest(
            worker_id=self.settings.worker_id,
            leases=[
                *(scheduler_pb2.LeaseRef(task_id=r.task_id, fencing_token=r.fencing_token) for r in renewing),
                *(held or ()),
            ],
            busy_slots=len(self.running),
            state=scheduler_pb2.DRAINING if self.draining else scheduler_pb2.ACTIVE,
        )

    def _event(self, kind: LifecycleKind, running: RunningTask) -> LifecycleEvent:
        return LifecycleEvent(
            kind=kind,
            task_id=running.task_id,
            task_type=running.task_type,
            worker_id=self.settings.worker_id,
            attempt=running.attempt,
            priority=running.priority,
            occurred_at=datetime.now(UTC),
            trace_parent=tracing.current() or running.trace_parent,  # the run's span, when inside it
        )
