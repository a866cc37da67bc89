"""The Scheduler's domain: the task book — accepting tasks, dispatching them
to pulling workers under leases, retrying, and publishing every committed
change. The nodes, their credit and leases are the :class:`WorkerRegistry`'s
(:mod:`gridmesh.core.workers`), the open watches the :class:`WatchHub`'s
(:mod:`gridmesh.core.watch`), what a submit must keep to be accepted is
:mod:`gridmesh.core.submits`, and the events a committed state implies
:mod:`gridmesh.core.lifecycle`; :class:`SchedulerCore` is the façade the
servicers call and decides when work moves.

Runs on one asyncio event loop; every method that mutates state is called on
that loop, so a check and the change it guards are atomic. State changes are
applied in memory first and handed to the :class:`TaskStore` in order; a
change is *published* (readers, watchers, the life-cycle log) only once the
store has committed it. The store commits in the order it was given changes,
so memory and database never diverge; if the store fails for good,
:attr:`on_fatal` is called and the process must stop (a standby takes over
from the database).

Leases: each dispatched task carries a fencing token (a number that only
grows). A worker renews the leases of what it runs with heartbeats; a lease
not renewed for ``lease_ttl_s`` expires and the task is retried. A report or
heartbeat naming a token that is no longer current is refused.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, Protocol

from gridmesh.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    GridmeshError,
    InvalidArgument,
    NotFound,
    OutOfRange,
    Unavailable,
)
from gridmesh.common.names import check_uuid
from gridmesh.core.lifecycle import LifecycleEvent, LifecycleKind, LifecycleLog, implied_events, task_event
from gridmesh.core.submits import Admitted, SubmitRequest, admit, check_task
from gridmesh.core.tasks import (
    DispatchQueue,
    FailureReason,
    Priority,
    QueueTimers,
    RetryPolicy,
    Task,
    TaskState,
    never_ran,
)
from gridmesh.core.tasktypes import TaskTypeRegistry
from gridmesh.core.watch import Watcher, WatchFilter, WatchHub
from gridmesh.core.workers import (
    Assignment,
    CancelNotice,
    HeartbeatResult,
    LinkItem,
    WorkerLink,
    WorkerRecord,
    WorkerRegistry,
    WorkerState,
)

log = logging.getLogger(__name__)

MAX_BATCH_SUBMITS = 1000
"""Most tasks one :meth:`SchedulerCore.submit_many` takes."""
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_ERROR_CHARS = 8_000
"""A task's error (a worker's report: a message, a traceback) is cut to this
many characters, keeping its start and, longer, its end (where a traceback
names the exception)."""
REPLAY_PAGE = 1000
"""Changes read from the store at a time when a watch resumes."""
TERMINAL_TASKS_KEPT = 50_000
"""Finished tasks kept in memory for reads; older ones are read from the store."""


# -- ports --------------------------------------------------------------------


class Counters(NamedTuple):
    """The highest numbers a store holds: a new leader continues from them."""

    seq: int
    fencing_token: int
    revision: int


class TaskStore(Protocol):
    """Durable task state. Changes are committed in the order they are given,
    each with its revision (which only grows, across Schedulers)."""

    async def insert(self, task: Task) -> None:
        """Commit a new task; :class:`AlreadyExists` if its idempotency key is taken."""

    def save(self, task: Task) -> asyncio.Future[None]:
        """Queue the new state of ``task`` now; the future is done once committed."""

    async def load_active(self) -> list[Task]:
        """Every QUEUED and RUNNING task, in dispatch order."""

    async def counters(self) -> Counters:
        """The highest ``seq``, fencing token and revision ever stored."""

    async def changes_after(self, after: int, watch: WatchFilter, limit: int) -> list[Task]:
        """Tasks ``watch`` wants whose last committed revision is after
        ``after``, oldest change first, at most ``limit``: the current state
        of every task changed since."""

    async def lifecycle_position(self) -> int | None:
        """The revision through which every life-cycle event was delivered
        (None: never saved)."""

    def save_lifecycle_position(self, position: int) -> asyncio.Future[None]:
        """Queue a new life-cycle position (it never goes back)."""

    async def get(self, task_id: str) -> Task | None: ...

    async def find_by_idempotency_key(self, key: str) -> Task | None: ...

    async def list_tasks(self, state: TaskState, task_type: str, limit: int, before_seq: int | None) -> list[Task]:
        """Tasks newest first, optionally filtered, with ``seq < before_seq``."""

    async def finished(self, matching: RerunFilter, limit: int) -> list[Task]:
        """FAILED or CANCELLED tasks ``matching`` selects, oldest first, at most ``limit``."""

    async def expired(self, now: datetime, limit: int) -> list[tuple[str, TaskState, int]]:
        """(id, state, revision) of finished tasks whose retention ended before ``now``, oldest first."""

    async def delete_tasks(self, task_ids: list[str], revision: int) -> None:
        """Delete these finished tasks' rows (never a task that has not finished), and
        keep ``revision`` (their newest) as :meth:`pruned_through` if it is newer."""

    async def pruned_through(self) -> int:
        """The newest revision of a task retention deleted (0: none)."""


class ResultCleaner(Protocol):
    """Deletes stored results (the StoreKeeper, for retention)."""

    async def expire_results(self, task_ids: list[str]) -> tuple[int, int]:
        """(results deleted, bytes freed)."""


# -- values exchanged with the servicers ------------------------------------------


@dataclass(frozen=True)
class RerunFilter:
    """Which finished tasks ``RerunTasks`` runs again."""

    state: TaskState = TaskState.UNSPECIFIED
    """FAILED or CANCELLED; UNSPECIFIED: both."""
    task_type: str = ""
    failure_reason: FailureReason = FailureReason.UNSPECIFIED
    created_after: datetime | None = None
    created_before: datetime | None = None

    def matches(self, task: Task) -> bool:
        return (
            task.state in ((self.state,) if self.state is not TaskState.UNSPECIFIED else RERUNNABLE)
            and (not self.task_type or task.task_type == self.task_type)
            and (self.failure_reason is FailureReason.UNSPECIFIED or task.failure_reason is self.failure_reason)
            and (self.created_after is None or task.created_at > self.created_after)
            and (self.created_before is None or task.created_at < self.created_before)
        )


RERUNNABLE = (TaskState.FAILED, TaskState.CANCELLED)
MAX_RERUN_BATCH = 1000
DEFAULT_RERUN_BATCH = 100


@dataclass(frozen=True)
class SchedulerSettings:
    lease_ttl_s: float = 10.0
    heartbeat_interval_s: float = 2.0
    default_max_attempts: int = 3
    max_params_bytes: int = 1_048_576
    result_ttl_s: float = 7 * 86_400.0


@dataclass(frozen=True)
class Success:
    result_path: str
    result_size_bytes: int
    result_sha256: str
    started_at: datetime | None = None
    """When the attempt's process started (the worker's clock)."""


@dataclass(frozen=True)
class Failure:
    error: str
    reason: FailureReason = FailureReason.ERROR
    started_at: datetime | None = None
    """When the attempt's process started (the worker's clock)."""


@dataclass(frozen=True)
class Crash:
    reason: str


Outcome = Success | Failure | Crash


# -- the core -------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


class SchedulerCore:
    def __init__(
        self,
        store: TaskStore,
        lifecycle: LifecycleLog,
        registry: TaskTypeRegistry,
        settings: SchedulerSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _now,
        random: Callable[[], float] = random.random,
    ) -> None:
        self._store = store
        self._lifecycle = lifecycle
        self._types = registry
        self._settings = settings
        self._now = now
        self._random = random
        """Draws each retry's backoff within its bounds (jitter)."""
        self._tasks: dict[str, Task] = {}
        """Live state of every task in memory (all active, recent finished)."""
        self._views: dict[str, Task] = {}
        """The last committed snapshot of each task in ``_tasks``."""
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._queue = DispatchQueue()
        self._timers = QueueTimers()
        """Deadlines of queued tasks, and due times of QUEUED tasks not due
        yet (which wait there instead of in the dispatch queue)."""
        self.timers_changed = self._timers.changed
        """Set when a task with a deadline or a due time is queued (the
        timer loop may have to wake sooner than it planned)."""
        self._workers = WorkerRegistry(
            lease_ttl_s=settings.lease_ttl_s,
            heartbeat_interval_s=settings.heartbeat_interval_s,
            clock=clock,
            now=now,
        )
        self._watches = WatchHub()
        self._keys: dict[str, str] = {}  # idempotency key -> task id, for tasks in memory
        self._pending_keys: dict[str, asyncio.Future[Task]] = {}
        self._seq = 0
        self._pruned = 0
        """The newest revision retention deleted (a resume before it is OUT_OF_RANGE)."""
        self._revisions = itertools.count(1)
        self._lifecycle_saved = 0
        self._failed: BaseException | None = None
        """Why this core's term ended (it stepped down, or its store failed
        for good): from then on it takes no work and writes nothing."""
        self._writes: set[asyncio.Future[None]] = set()
        """Writes handed to the store and not yet done (see :meth:`closed`)."""
        self.on_fatal: Callable[[BaseException], None] = lambda e: None
        """Called once if the store fails for good: the process must stop."""

    # -- start -----------------------------------------------------------------

    async def load(self) -> int:
        """Take over the durable state: every QUEUED task is queued again in
        order and every RUNNING task keeps its lease for one more TTL, so its
        worker can renew it. Returns the number of active tasks."""
        counters = await self._store.counters()
        self._seq, self._workers.last_token = counters.seq, counters.fencing_token
        self._revisions = itertools.count(counters.revision + 1)
        await self._replay_lifecycle(counters.revision)
        self._pruned = await self._store.pruned_through()
        for task in await self._store.load_active():
            self._remember(task)
            self._views[task.task_id] = task.snapshot()
            if task.state is TaskState.QUEUED:
                self._enqueue(task)
            else:
                self._workers.keep(task.task_id, task.worker_id, task.fencing_token)
        return len(self._tasks)

    async def _replay_lifecycle(self, newest: int) -> None:
        """Emit again the life-cycle events of every change after the last
        position the log acknowledged: a Scheduler that died may have
        committed them without their events reaching Kafka (they sat in the
        producer's buffer). The analytics job keys events by (task, attempt,
        kind), so an event sent twice counts once."""
        after = await self._store.lifecycle_position()
        if after is None:  # a new mesh, or one from before positions were kept
            await self._write(self._store.save_lifecycle_position(newest))
            self._lifecycle_saved = newest
            return
        self._lifecycle_saved = after
        replayed = 0
        while page := await self._store.changes_after(after, WatchFilter(), REPLAY_PAGE):
            for task in page:
                for event in implied_events(task):
                    self._lifecycle.emit(event)
                    replayed += 1
            after = page[-1].revision
        if replayed:
            log.info("emitted %d life-cycle events again (after position %d)", replayed, self._lifecycle_saved)

    async def save_lifecycle_progress(self) -> None:
        """Keep the life-cycle log's acknowledged position durably (called
        every second or so while leading)."""
        position = self._lifecycle.acknowledged()
        if position > self._lifecycle_saved:
            await self._write(self._store.save_lifecycle_position(position))
            self._lifecycle_saved = position

    # -- clients -----------------------------------------------------------

    def _check_alive(self) -> None:
        if self._failed is not None:
            raise Unavailable(f"this Scheduler no longer leads ({self._failed}); retry against the new leader")

    async def submit(self, request: SubmitRequest) -> Task:
        """Validate, commit and queue a task; return it QUEUED. The same
        idempotency key always returns the same task."""
        self._check_alive()
        s = self._settings
        admitted = admit(
            request,
            self._types,
            self._now(),
            max_params_bytes=s.max_params_bytes,
            default_max_attempts=s.default_max_attempts,
        )
        key = request.idempotency_key
        if key:
            existing = await self._existing_for_key(key)
            if existing is not None:
                return existing
            self._pending_keys[key] = asyncio.get_running_loop().create_future()
        try:
            task = await self._insert_or_adopt(request, admitted)
        except BaseException as e:
            if key:
                self._resolve_key(key, e)
            raise
        if key:
            self._resolve_key(key, task)
        return task

    def check_submit(self, request: SubmitRequest) -> tuple[str, int]:
        """:func:`~gridmesh.core.submits.check_task` with this mesh's limits
        (a schedule's task, checked when the schedule is created)."""
        s = self._settings
        return check_task(
            request, self._types, max_params_bytes=s.max_params_bytes, default_max_attempts=s.default_max_attempts
        )

    async def submit_many(self, requests: Sequence[SubmitRequest]) -> list[Task | GridmeshError]:
        """Submit each request on its own: its task, or the error that
        refused it (a bad item never fails the others). The accepted tasks
        reach the store together, so they commit as one group."""
        self._check_alive()
        if len(requests) > MAX_BATCH_SUBMITS:
            raise InvalidArgument(
                f"a batch holds {len(requests)} tasks; the limit is {MAX_BATCH_SUBMITS}", field="requests"
            )
        outcomes = await asyncio.gather(*(self.submit(r) for r in requests), return_exceptions=True)
        results: list[Task | GridmeshError] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, GridmeshError):
                raise outcome
            results.append(outcome)
        return results

    async def _insert_or_adopt(self, request: SubmitRequest, admitted: Admitted) -> Task:
        try:
            return await self._insert(request, admitted)
        except AlreadyExists as taken:
            if not request.idempotency_key:
                raise
            # Another Scheduler (before a failover) stored the key meanwhile.
            return await self._adopt_stored(request.idempotency_key, taken)

    async def _adopt_stored(self, key: str, taken: AlreadyExists) -> Task:
        """The task another Scheduler stored under ``key``; queued here if it
        waits and this Scheduler has not loaded it."""
        existing = await self._store.find_by_idempotency_key(key)
        if existing is None:
            raise taken
        if existing.task_id in self._tasks:
            return self._views[existing.task_id].snapshot()
        if existing.state is TaskState.QUEUED:
            self._remember(existing)
            self._views[existing.task_id] = existing.snapshot()
            self._enqueue(existing)
            self._dispatch()
        return existing.snapshot()

    def _resolve_key(self, key: str, outcome: Task | BaseException) -> None:
        """Hand a submit's outcome to the submits of the same key waiting on it."""
        pending = self._pending_keys.pop(key, None)
        if pending is None or pending.done():
            return
        if isinstance(outcome, BaseException):
            pending.set_exception(outcome)
            pending.exception()  # nobody may be waiting: do not warn that it went unretrieved
        else:
            pending.set_result(outcome)

    async def _existing_for_key(self, key: str) -> Task | None:
        if key in self._pending_keys:
            return await asyncio.shield(self._pending_keys[key])
        if key in self._keys:
            return self._views[self._keys[key]].snapshot()
        return await self._store.find_by_idempotency_key(key)

    async def _insert(self, request: SubmitRequest, admitted: Admitted) -> Task:
        self._seq += 1
        priority = request.priority.effective()
        task_type = self._types.get(request.task_type)
        task = Task(
            task_id=str(uuid.uuid4()),
            task_type=request.task_type,
            params=dict(request.params),
            result_dir=admitted.result_dir,
            state=TaskState.QUEUED,
            priority=priority,
            attempt=1,
            max_attempts=admitted.max_attempts,
            created_at=self._now(),
            seq=self._seq,
            idempotency_key=request.idempotency_key,
            run_timeout_s=request.run_timeout_s or task_type.run_timeout_s,
            deadline=request.deadline,
            not_before=admitted.not_before,
            retry=request.retry or task_type.retry,
            result_ttl_s=request.result_ttl_s or self._settings.result_ttl_s,
            trace_parent=request.trace_parent,
        )
        # Once handed to the store, the task is accepted even if the client
        # goes away meanwhile: what is committed must also be queued.
        return await asyncio.shield(self._accept(task))

    async def _accept(self, task: Task) -> Task:
        # The revision is taken as the row goes to the store (no await in
        # between), so revisions follow the store's commit order.
        self._check_alive()  # (a submit may have waited for its key meanwhile)
        task.revision = next(self._revisions)
        try:
            await self._write(self._store.insert(task.snapshot()))
        except AlreadyExists:
            if await self._store.get(task.task_id) is None:
                raise  # its idempotency key is another task's
            # The row is ours: the insert was committed but its answer was
            # lost and the retried statement found it. It is accepted.
            log.info("task %s: its insert was retried after it had committed", task.task_id)
        self._remember(task)
        self._publish(task.snapshot(), self._event(LifecycleKind.PENDING, task))
        accepted = task.snapshot()
        self._enqueue(task)
        self._dispatch()
        return accepted

    async def get(self, task_id: str) -> Task:
        """The last committed state of a task."""
        task_id = check_uuid(task_id, "task_id")
        view = self._views.get(task_id)
        if view is not None:
            return view.snapshot()
        stored = await self._store.get(task_id)
        if stored is None:
            raise NotFound(f"task {task_id} does not exist")
        return stored

    async def list_tasks(
        self, state: TaskState, task_type: str, page_size: int, page_token: str
    ) -> tuple[list[Task], str]:
        """Tasks newest first, filtered; returns the page and the next page's token."""
        if page_size < 0:
            raise InvalidArgument("page_size must not be negative", field="page_size")
        self._check_type_filter(task_type)
        limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        before = _decode_page_token(page_token) if page_token else None
        tasks = await self._store.list_tasks(state, task_type, limit + 1, before)
        if len(tasks) > limit:
            return tasks[:limit], _encode_page_token(tasks[limit - 1].seq)
        return tasks, ""

    def _check_type_filter(self, task_type: str) -> None:
        """A filter naming a type the registry does not know is refused
        (a typo would otherwise match nothing, silently)."""
        if task_type and task_type not in self._types:
            self._types.get(task_type)  # raises with the known types

    async def cancel(self, task_id: str) -> Task:
        """A QUEUED task is cancelled at once; a RUNNING one loses its lease
        and its worker is told to stop it."""
        self._check_alive()
        task_id = check_uuid(task_id, "task_id")
        task = self._tasks.get(task_id)
        if task is None:
            stored = await self._store.get(task_id)
            if stored is None:
                raise NotFound(f"task {task_id} does not exist")
            task = stored
        if task.state.terminal:
            raise FailedPrecondition(
                f"task {task_id} is already {task.state.name}; only QUEUED or RUNNING tasks can be cancelled"
            )
        if task.state is TaskState.QUEUED:
            self._queue.discard(task_id)
        else:
            worker_id, token = task.worker_id, task.fencing_token
            self._release_lease(task)
            worker = self._workers.get(worker_id)
            if worker is not None:
                worker.send(CancelNotice(task_id, token))
        task.state = TaskState.CANCELLED
        task.error = "cancelled by a client"
        task.failure_reason = FailureReason.CANCELLED
        task.finished_at = self._now()
        await self._commit(task, None)
        return task.snapshot()

    # -- watching --------------------------------------------------------------

    async def rerun(self, task_id: str, trace_parent: str = "") -> Task:
        """A new task that runs a FAILED or CANCELLED one again: the same
        type, params, result_dir, priority, attempts, run_timeout and retry
        policy; ``rerun_of`` names the original, which is unchanged."""
        self._check_alive()
        task_id = check_uuid(task_id, "task_id")
        original = self._views.get(task_id) or await self._store.get(task_id)
        if original is None:
            raise NotFound(f"task {task_id} does not exist")
        if original.state not in RERUNNABLE:
            raise FailedPrecondition(
                f"task {task_id} is {original.state.name}; only FAILED or CANCELLED tasks can be rerun"
            )
        return await self._rerun(original, trace_parent)

    async def rerun_many(
        self, matching: RerunFilter, limit: int, dry_run: bool, trace_parent: str = ""
    ) -> tuple[int, list[Task]]:
        """(how many tasks ``matching`` selects, the new tasks) — none made on a dry run."""
        self._check_alive()
        if matching.state not in (TaskState.UNSPECIFIED, *RERUNNABLE):
            raise InvalidArgument("state must be FAILED or CANCELLED (or unset: both)", field="state")
        if matching.task_type:
            self._check_type_filter(matching.task_type)
        if not 0 <= limit <= MAX_RERUN_BATCH:
            raise InvalidArgument(f"limit must be between 0 and {MAX_RERUN_BATCH}, got {limit}", field="limit")
        found = await self._store.finished(matching, limit or DEFAULT_RERUN_BATCH)
        if dry_run:
            return len(found), []
        return len(found), list(await asyncio.gather(*(self._rerun(t, trace_parent) for t in found)))

    async def _rerun(self, original: Task, trace_parent: str) -> Task:
        self._seq += 1
        task = Task(
            task_id=str(uuid.uuid4()),
            task_type=original.task_type,
            params=dict(original.params),
            result_dir=original.result_dir,
            state=TaskState.QUEUED,
            priority=original.priority,
            attempt=1,
            max_attempts=original.max_attempts,
            created_at=self._now(),
            seq=self._seq,
            run_timeout_s=original.run_timeout_s,
            retry=original.retry,
            result_ttl_s=original.result_ttl_s,
            rerun_of=original.task_id,
            trace_parent=trace_parent,
        )
        return await asyncio.shield(self._accept(task))

    async def sweep(self, results: ResultCleaner, limit: int) -> tuple[int, int, int]:
        """Retention: delete up to ``limit`` finished tasks whose result_ttl
        has passed, with their results (first, so no result outlives its
        task); (tasks, results, bytes) deleted. Never a task that has not
        finished."""
        self._check_alive()
        expired = await self._store.expired(self._now(), limit)
        if not expired:
            return 0, 0, 0
        succeeded = [task_id for task_id, state, _ in expired if state is TaskState.SUCCEEDED]
        deleted, freed = await results.expire_results(succeeded) if succeeded else (0, 0)
        ids = [task_id for task_id, _, _ in expired]
        newest = max(revision for _, _, revision in expired)
        await self._write(self._store.delete_tasks(ids, newest))
        self._pruned = max(self._pruned, newest)
        for task_id in ids:
            task = self._tasks.pop(task_id, None)
            self._views.pop(task_id, None)
            self._finished.pop(task_id, None)
            if task is not None and task.idempotency_key:
                self._keys.pop(task.idempotency_key, None)
        return len(ids), deleted, freed

    def watch(self, task_ids: Iterable[str], terminal_only: bool, task_type: str = "") -> Watcher:
        ids = frozenset(check_uuid(t, "task_ids") for t in task_ids)
        self._check_type_filter(task_type)
        return self._watches.add(WatchFilter(ids or None, terminal_only, task_type))

    async def changes_after(self, after: int, watcher: Watcher, limit: int = REPLAY_PAGE) -> list[Task]:
        """What ``watcher`` wants of the changes committed after revision
        ``after`` (the current state of each task changed since), oldest
        first, at most ``limit``. Read from the store, so it spans restarts
        and fail-overs. Call it after :meth:`watch`: every change committed
        later reaches the watcher too."""
        if after < 0:
            raise InvalidArgument(f"resume_after must not be negative, got {after}", field="resume_after")
        pruned = self._pruned
        if after < pruned:
            raise OutOfRange(
                f"position {after} is older than what the mesh keeps: retention deleted tasks that changed "
                f"after it (through position {pruned}); list the tasks again (ListTasks) and watch without "
                "resume_after",
                field="resume_after",
            )
        return await self._store.changes_after(after, watcher.filter, limit)

    def unwatch(self, watcher: Watcher) -> None:
        self._watches.remove(watcher)

    # -- workers ------------------------------------------------------------

    def register_worker(
        self, worker_id: str, address: str, slots: int, task_types: Iterable[str], prefetch: int = 0
    ) -> None:
        self._workers.register(worker_id, address, slots, task_types, prefetch)

    def open_link(self, worker_id: str) -> WorkerLink:
        """A worker opened its pull stream (replacing any older one)."""
        return self._workers.open_link(worker_id)

    def close_link(self, link: WorkerLink, unsent: Iterable[LinkItem] = ()) -> None:
        """The pull stream ended. Assignments it never sent (``unsent``, taken
        from the outbox but not written, and what is still in the outbox)
        go back to the head of the queue as the same attempt."""
        self._workers.detach(link)
        if self._failed is not None:
            return  # stepping down: the next leader takes over from the store
        undelivered = [item for item in unsent if isinstance(item, Assignment)]
        while not link.outbox.empty():
            item = link.outbox.get_nowait()
            if isinstance(item, Assignment):
                undelivered.append(item)
        for assignment in reversed(undelivered):
            task = self._tasks.get(assignment.task.task_id)
            if task is None or task.state is not TaskState.RUNNING or task.fencing_token != assignment.fencing_token:
                continue
            self._requeue_unstarted(task)
        if undelivered:
            log.info("%d assignments to %s were never sent: queued again", len(undelivered), link.worker_id)
            self._dispatch()

    def grant_credit(self, link: WorkerLink, credit: int) -> None:
        if self._workers.grant_credit(link, credit):
            self._dispatch()

    def give_back(self, link: WorkerLink, task_id: str, token: int) -> None:
        """The worker gave back a task it held but had not started (asked by a
        :class:`TakeBack`): it is queued again at the head of its level, the
        same attempt, for a node with a free slot. A stale lease changes nothing."""
        if not self._workers.holds(link.worker_id, task_id, token):
            return
        self._requeue_unstarted(self._tasks[task_id])
        self._dispatch()

    def heartbeat(
        self, worker_id: str, leases: Iterable[tuple[str, int]], state: WorkerState = WorkerState.ACTIVE
    ) -> HeartbeatResult:
        heard = self._workers.heartbeat(worker_id, leases, state)
        if self._queue:
            # A node passed over while it was silent (stopped, cut off) takes
            # queued work again now: its credit was granted before, so no new
            # credit would come to trigger a dispatch.
            self._dispatch()
        return heard

    def drain_worker(self, worker_id: str) -> WorkerRecord:
        """Send ``worker_id`` no more work and ask it, over its pull stream, to
        drain. Idempotent; the node deregisters once its tasks are done."""
        return self._workers.drain(worker_id)

    def deregister(self, worker_id: str) -> None:
        """The worker left cleanly: the tasks it still holds are retried now."""
        worker = self._workers.remove(worker_id)
        if worker is None:
            return
        for task_id in list(worker.leases):
            task = self._tasks[task_id]
            self._commit_nowait(task, self._retry_or_fail(task, f"worker {worker_id} left"))
        log.info("worker %s left", worker_id)
        self._dispatch()

    def workers(self) -> list[WorkerRecord]:
        """Every known node; one silent for a lease TTL is shown OFFLINE."""
        return self._workers.listing()

    async def report(self, worker_id: str, task_id: str, token: int, outcome: Outcome) -> Task:
        """End a leased task. Refused (and nothing changes) unless
        ``token`` is the task's current lease held by ``worker_id``."""
        task, reported = await self._leased(worker_id, task_id, token)
        if reported:
            return self._views.get(task.task_id, task).snapshot()  # the same report again (a lost answer)
        started = None
        if isinstance(outcome, Success | Failure) and outcome.started_at is not None:
            # The attempt ran: its start comes from the committed state too, not only from the
            # node's own event (lost if the node dies before it reaches Kafka).
            task.started_at = outcome.started_at
            started = replace(self._event(LifecycleKind.STARTED, task), occurred_at=outcome.started_at, error="")
        if isinstance(outcome, Success):
            self._release_lease(task)
            task.state = TaskState.SUCCEEDED
            task.result_path = outcome.result_path
            task.result_size_bytes = outcome.result_size_bytes
            task.result_sha256 = outcome.result_sha256
            task.finished_at = self._now()
            event = self._event(LifecycleKind.COMPLETED, task)
        elif isinstance(outcome, Failure):
            self._release_lease(task)
            error = clip_error(outcome.error) or "the task raised an error"
            retry = task.retry if outcome.reason is not FailureReason.EXPIRED else None
            if retry is not None and retry.retries(task.attempt, error):
                event = self._retry_later(task, retry, error)
            else:
                task.state = TaskState.FAILED
                task.error = error
                task.failure_reason = outcome.reason
                task.finished_at = self._now()
                event = self._event(LifecycleKind.FAILED, task)
        else:
            event = self._retry_or_fail(task, clip_error(outcome.reason))
        done = self._commit(task, event, started)
        self._dispatch()
        await done
        return task.snapshot()

    async def check_lease(self, worker_id: str, task_id: str, token: int) -> None:
        """Whether a report on this lease would be taken: returns if so (also
        when it was taken already), raises :class:`FailedPrecondition` as
        :meth:`report` would if not. Changes nothing."""
        await self._leased(worker_id, task_id, token)

    async def _leased(self, worker_id: str, task_id: str, token: int) -> tuple[Task, bool]:
        """The task ``token`` leases to ``worker_id``, and whether it was
        reported already; :class:`FailedPrecondition` if the lease is not
        (or no longer) current. A task no longer in memory (finished long
        ago, or before a failover) is read from the store, so a report
        repeated late is still recognised as taken."""
        self._check_alive()
        task_id = check_uuid(task_id, "task_id")
        task = self._tasks.get(task_id) or await self._store.get(task_id)
        if (
            task is not None
            and task.state in (TaskState.SUCCEEDED, TaskState.FAILED)
            and task.fencing_token == token
            and task.worker_id == worker_id
        ):
            return task, True
        if task is None or task.state is not TaskState.RUNNING or task.fencing_token != token:
            state = task.state.name if task is not None else "unknown"
            raise FailedPrecondition(
                f"lease {token} of task {task_id} is no longer current (the task is {state}); report ignored"
            )
        if task.worker_id != worker_id:
            raise FailedPrecondition(f"task {task_id} is leased to {task.worker_id}, not {worker_id}; report ignored")
        return task, False

    def expire_leases(self) -> int:
        """Retry every task whose lease expired; returns how many."""
        expired = self._workers.expired()
        for task_id in expired:
            task = self._tasks[task_id]
            reason = f"lease expired: worker {task.worker_id} stopped renewing it"
            log.warning("task %s: %s", task_id, reason)
            self._commit_nowait(task, self._retry_or_fail(task, reason))
        if expired:
            self._dispatch()
        return len(expired)

    # -- internals ---------------------------------------------------------------

    def _remember(self, task: Task) -> None:
        self._tasks[task.task_id] = task
        if task.idempotency_key:
            self._keys[task.idempotency_key] = task.task_id

    def _enqueue(self, task: Task, *, front: bool = False) -> None:
        """Queue ``task`` (at the head of its level if ``front``), minding its
        deadline; one not due yet waits for its time (:meth:`run_timers`)."""
        if task.not_before is not None and task.not_before > self._now():
            self._timers.add_due(task.not_before, task.task_id)
        elif front:
            self._queue.push_front(task)
        else:
            self._queue.push(task)
        if task.deadline is not None:
            self._timers.add_deadline(task.deadline, task.task_id)

    def seconds_to_next_timer(self) -> float | None:
        """How long until the earliest due time or deadline of a queued task (None: none)."""
        first = self._timers.first()
        return None if first is None else max(0.0, (first - self._now()).total_seconds())

    def run_timers(self) -> tuple[int, int]:
        """Queue every delayed task that is due, and end every queued task
        whose deadline has passed; returns (released, expired)."""
        released = self._release_due()
        expired = self._expire_deadlines()
        if released:
            self._dispatch()
        return released, expired

    def _release_due(self) -> int:
        now = self._now()
        released = 0
        for due, task_id in self._timers.pop_due(now):
            task = self._tasks.get(task_id)
            if task is None or task.state is not TaskState.QUEUED or task.not_before != due:
                continue  # cancelled meanwhile
            self._queue.push(task)
            released += 1
        return released

    def _expire_deadlines(self) -> int:
        """End FAILED (EXPIRED) every queued task whose deadline has passed;
        returns how many. It never ran (the deadline is the latest start)."""
        now = self._now()
        expired = 0
        for task_id in self._timers.pop_deadlines(now):
            task = self._tasks.get(task_id)
            if task is None or task.state is not TaskState.QUEUED:
                continue  # started (or ended) in time; a retry queues it with its deadline again
            self._queue.discard(task_id)  # or it waits for its due time: it will find it FAILED
            self._expire(task, now)
            expired += 1
        return expired

    def _expire(self, task: Task, now: datetime) -> None:
        assert task.deadline is not None
        task.state = TaskState.FAILED
        task.failure_reason = FailureReason.EXPIRED
        task.error = never_ran(task.deadline)
        task.finished_at = now
        self._commit_nowait(task, self._event(LifecycleKind.FAILED, task))

    def _release_lease(self, task: Task) -> None:
        self._workers.release(task.task_id)

    def _requeue_unstarted(self, task: Task) -> None:
        """``task`` never started on the node that held it (never sent, or
        given back): queued again at the head of its level, the same attempt."""
        self._release_lease(task)
        self._unlease(task)
        self._enqueue(task, front=True)
        self._commit_nowait(task, None)

    @staticmethod
    def _unlease(task: Task) -> None:
        """``task`` is QUEUED again, held by no worker (its lease released)."""
        task.state = TaskState.QUEUED
        task.worker_id = ""
        task.fencing_token = 0
        task.dispatched_at = task.started_at = None

    def _retry_later(self, task: Task, policy: RetryPolicy, error: str) -> LifecycleEvent:
        """The attempt failed and ``policy`` tries again: the task waits out
        its backoff as a delayed task (QUEUED, due at ``not_before``)."""
        retried = self._event(LifecycleKind.RETRIED, task, error=error)
        backoff = policy.backoff_s(task.attempt, self._random)
        task.attempt += 1
        self._unlease(task)
        task.not_before = self._now() + timedelta(seconds=backoff)
        self._enqueue(task)
        return retried

    def _retry_or_fail(self, task: Task, reason: str) -> LifecycleEvent:
        """The task's process or node died: queue it again at HIGH priority
        (silently) or, after max_attempts, fail it."""
        self._release_lease(task)
        if task.attempt < task.max_attempts:
            retried = self._event(LifecycleKind.RETRIED, task, error=reason)
            task.attempt += 1
            task.priority = Priority.HIGH
            self._unlease(task)
            self._enqueue(task)
            return retried
        task.state = TaskState.FAILED
        task.error = f"the task's process died in each of its {task.attempt} attempts; last: {reason}"
        task.failure_reason = FailureReason.CRASHED
        task.finished_at = self._now()
        return self._event(LifecycleKind.FAILED, task)

    def _dispatch(self) -> None:
        """Hand queued tasks to workers with credit, round-robin, free slots
        before prefetch room; then take back prefetched tasks that would wait
        behind others (:meth:`_take_back`)."""
        if self._failed is not None:
            return  # its term ended: a late credit or heartbeat leases nothing
        while self._queue:
            worker = self._workers.next_worker()
            if worker is None:
                break
            task_id = self._queue.pop()
            if task_id is None:
                break
            task = self._tasks[task_id]
            if task.deadline is not None and task.deadline <= (now := self._now()):
                self._expire(task, now)
                continue
            token, _ = self._workers.lease(task_id, worker)
            task.state = TaskState.RUNNING
            task.worker_id = worker.worker_id
            task.fencing_token = token
            task.dispatched_at = task.started_at = self._now()
            worker.send(
                Assignment(task.snapshot(), token, task.started_at + timedelta(seconds=self._settings.lease_ttl_s))
            )
            self._commit_nowait(task, None)
        self._take_back()

    def _take_back(self) -> None:
        """Prefetched tasks must not wait while they could run (SPEC §3):

        - a node has a free slot and the queue has nothing for it: the
          newest prefetched tasks elsewhere are asked back, one per free slot;
        - a task waits in the queue (no node has room) above the priority of
          a prefetched one: the lowest-priority, newest such task is asked
          back, so the queued one runs first.

        A node gives back only what it has not started; what it gives back
        is queued again and goes to the free slot."""
        if not self._workers.any_prefetched():
            return
        task_of = self._tasks.__getitem__
        if not self._queue:
            for idle in self._workers.with_free_slots():

                def elsewhere(task: Task, idle_id: str = idle.worker_id) -> bool:
                    return task.worker_id != idle_id

                for _ in range(idle.free_slots):
                    if not self._workers.ask_back(elsewhere, task_of):
                        return
            return
        head = self._queue.head_priority()
        if head is not None:
            for _ in range(len(self._queue)):
                if not self._workers.ask_back(lambda lease_task: lease_task.priority.effective() < head, task_of):
                    return

    def _event(self, kind: LifecycleKind, task: Task, error: str = "") -> LifecycleEvent:
        return task_event(kind, task, self._now(), error or task.error)

    def _commit(
        self, task: Task, event: LifecycleEvent | None, started: LifecycleEvent | None = None
    ) -> asyncio.Future[None]:
        """Hand the task's current state to the store; publish it (and its
        events, ``started`` first) once committed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._failed is not None:  # its term ended: the successor decides from the store
            done.set_exception(Unavailable(f"task {task.task_id} was not saved: this Scheduler no longer leads"))
            return done
        task.revision = next(self._revisions)
        snapshot = task.snapshot()
        saved = self._write(self._store.save(snapshot))

        def committed(future: asyncio.Future[None]) -> None:
            error = future.exception()
            if error is not None:
                self._fail(error)
                done.set_exception(Unavailable(f"the change to task {task.task_id} could not be saved: {error}"))
                return
            self._publish(snapshot, event, started)
            done.set_result(None)

        saved.add_done_callback(committed)
        return done

    def _commit_nowait(self, task: Task, event: LifecycleEvent | None) -> None:
        self._commit(task, event).add_done_callback(_consume_exception)

    def _publish(self, snapshot: Task, event: LifecycleEvent | None, started: LifecycleEvent | None = None) -> None:
        at = self._now()
        if snapshot.task_id in self._tasks:
            self._views[snapshot.task_id] = snapshot
        if snapshot.state.terminal:
            self._forget_when_old(snapshot.task_id)
        self._watches.publish(snapshot, at)
        for e in (started, event):
            if e is not None:
                self._lifecycle.emit(replace(e, position=snapshot.revision))

    def _forget_when_old(self, task_id: str) -> None:
        self._finished[task_id] = None
        while len(self._finished) > TERMINAL_TASKS_KEPT:
            old, _ = self._finished.popitem(last=False)
            task = self._tasks.pop(old, None)
            self._views.pop(old, None)
            if task is not None and task.idempotency_key:
                self._keys.pop(task.idempotency_key, None)

    def _fail(self, error: BaseException) -> None:
        if self._failed is None:
            self._failed = error
            log.critical("the task store failed for good (%s); the Scheduler must stop", error)
            self.on_fatal(error)

    def close(self) -> None:
        """This Scheduler stops leading: end every worker stream and watch,
        and write nothing more (await :meth:`closed` for what is in flight)."""
        self._failed = self._failed or Unavailable("it stepped down")
        self._workers.close()
        self._watches.close()

    async def closed(self) -> None:
        """Once :meth:`close` is called: wait until the writes handed to the
        store before it are done. Only then may a successor load: one that
        read the store before a last report of this core landed would hold
        that task RUNNING, expire its lease and run it again."""
        while self._writes:
            await asyncio.wait(set(self._writes))

    def _write(self, write: Awaitable[None]) -> asyncio.Future[None]:
        """``write`` (a store call), remembered until done (see :meth:`closed`)."""
        future = asyncio.ensure_future(write)
        self._writes.add(future)
        future.add_done_callback(self._writes.discard)
        return future

    # -- introspection (tests, status) ---------------------------------------------

    @property
    def delayed(self) -> int:
        """QUEUED tasks waiting for their due time (not in :attr:`queued`)."""
        waiting = (self._tasks.get(task_id) for task_id in self._timers.waiting())
        return sum(1 for task in waiting if task is not None and task.state is TaskState.QUEUED)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def queued_by_kind(self) -> dict[tuple[str, str], tuple[int, datetime]]:
        """(priority, task type) → how many are queued and when the longest
        waiting of them was submitted."""
        found: dict[tuple[str, str], tuple[int, datetime]] = {}
        for task_id in self._queue:
            task = self._tasks[task_id]
            key = (task.priority.effective().name.lower(), task.task_type)
            count, oldest = found.get(key, (0, task.created_at))
            found[key] = (count + 1, min(oldest, task.created_at))
        return found

    def oldest_queued_at(self) -> datetime | None:
        """When the longest-waiting queued task was submitted (None: nothing queued)."""
        return min((self._tasks[t].created_at for t in self._queue.heads()), default=None)

    @property
    def watchers(self) -> int:
        return len(self._watches)

    @property
    def lease_ttl_s(self) -> float:
        return self._settings.lease_ttl_s

    @property
    def heartbeat_interval_s(self) -> float:
        return self._settings.heartbeat_interval_s


def clip_error(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` if it fits in ``limit`` characters, else its first quarter and
    its last part around a note of how much was cut."""
    if len(text) <= limit:
        return text
    head = limit // 4
    tail = limit - head - len(f"\n… ({len(text)} characters cut) …\n")  # the note is at most this long
    return text[:head] + f"\n… ({len(text) - head - tail} characters cut) …\n" + text[-tail:]


def _consume_exception(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _encode_page_token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode()


def _decode_page_token(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        prefix, _, value = text.partition(":")
        if prefix != "seq":
            raise ValueError(text)
        return int(value)
    except ValueError:
        raise InvalidArgument(
            "page_token is malformed; pass the next_page_token of a previous page", field="page_token"
        ) from None
