"""SPEC §3 "Tasks": dispatch order, pull credit, leases and fencing, silent
retries, idempotency, cancel — the Scheduler's rules on an in-memory store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gridmesh.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, OutOfRange, Unavailable
from gridmesh.core.lifecycle import LifecycleKind, MemoryLifecycleLog
from gridmesh.core.scheduler import (
    MAX_ERROR_CHARS,
    Crash,
    Failure,
    RerunFilter,
    SchedulerCore,
    SchedulerSettings,
    Success,
    clip_error,
)
from gridmesh.core.submits import SubmitRequest
from gridmesh.core.tasks import FailureReason, Priority, RetryPolicy, Task, TaskState
from gridmesh.core.tasktypes import default_registry
from gridmesh.core.workers import Assignment, CancelNotice, DrainNotice, TakeBack, WorkerState
from gridmesh.scheduler.store import MemoryTaskStore

REGISTRY = default_registry(load_plugins=False)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class WallClock:
    def __init__(self) -> None:
        self.at = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.at


class Harness:
    def __init__(
        self, ttl: float = 10.0, store: MemoryTaskStore | None = None, jitter: Callable[[], float] = lambda: 1.0
    ) -> None:
        self.store = store or MemoryTaskStore()
        self.log = MemoryLifecycleLog()
        self.clock = Clock()
        self.wall = WallClock()
        self.core = SchedulerCore(
            self.store,
            self.log,
            REGISTRY,
            SchedulerSettings(lease_ttl_s=ttl, default_max_attempts=3),
            clock=self.clock,
            now=self.wall,
            random=jitter,
        )

    async def submit(self, task_type: str = "noop", **kw: Any) -> str:
        params = kw.pop("params", {})
        task = await self.core.submit(SubmitRequest(task_type, params, kw.pop("result_dir", "out"), **kw))
        return task.task_id

    def worker(self, worker_id: str = "w1", slots: int = 2, prefetch: int = 0):
        self.core.register_worker(worker_id, f"{worker_id}:1", slots, REGISTRY.names(), prefetch)
        return self.core.open_link(worker_id)

    @staticmethod
    def assignments(link) -> list[Assignment]:
        items = []
        while not link.outbox.empty():
            items.append(link.outbox.get_nowait())
        return items


def run(test: Callable[[Harness], Coroutine[Any, Any, None]], **kw: Any) -> None:
    asyncio.run(test(Harness(**kw)))


def test_submit_answers_queued_with_a_uuid_and_logs_pending():
    async def body(h: Harness) -> None:
        task_id = await h.submit("echo", params={"a": 1})
        task = await h.core.get(task_id)
        assert task.state is TaskState.QUEUED and task.attempt == 1 and task.priority is Priority.NORMAL
        assert [e.kind for e in h.log.events] == [LifecycleKind.PENDING]

    run(body)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (SubmitRequest("nope", {}, "out"), "task_type"),
        (SubmitRequest("sleep", {"ms": -5}, "out"), "params.ms"),
        (SubmitRequest("noop", {}, "/abs"), "result_dir"),
        (SubmitRequest("noop", {}, "a/../b"), "result_dir"),
        (SubmitRequest("noop", {}, "out", max_attempts=99), "max_attempts"),
        (SubmitRequest("echo", {"x": "y" * 2_000_000}, "out"), "params"),
        (SubmitRequest("noop", {}, "out", run_timeout_s=-1), "run_timeout"),
        (SubmitRequest("noop", {}, "out", run_timeout_s=8 * 86_400), "run_timeout"),
    ],
)
def test_bad_submits_are_refused_naming_the_field_and_nothing_is_queued(request_, field):
    async def body(h: Harness) -> None:
        with pytest.raises(InvalidArgument) as info:
            await h.core.submit(request_)
        assert info.value.field == field
        assert h.store.rows == {} and h.core.queued == 0 and h.log.events == []

    run(body)


def test_dispatch_order_is_high_normal_low_fifo_within_a_level():
    async def body(h: Harness) -> None:
        low = await h.submit(priority=Priority.LOW)
        normal1 = await h.submit()
        high1 = await h.submit(priority=Priority.HIGH)
        normal2 = await h.submit(priority=Priority.NORMAL)
        high2 = await h.submit(priority=Priority.HIGH)
        link = h.worker(slots=5)
        h.core.grant_credit(link, 5)
        order = [a.task.task_id for a in h.assignments(link)]
        assert order == [high1, high2, normal1, normal2, low]

    run(body)


def test_a_worker_never_gets_more_tasks_than_its_credit():
    async def body(h: Harness) -> None:
        for _ in range(5):
            await h.submit()
        link = h.worker(slots=2)
        h.core.grant_credit(link, 1)
        assert len(h.assignments(link)) == 1
        h.core.grant_credit(link, 10)  # more than its slots: capped at 2
        assert len(h.assignments(link)) == 2
        assert h.core.queued == 2

    run(body)


def test_same_idempotency_key_returns_the_same_task():
    async def body(h: Harness) -> None:
        first, second = await asyncio.gather(h.submit(idempotency_key="order-7"), h.submit(idempotency_key="order-7"))
        third = await h.submit(idempotency_key="order-7")
        assert first == second == third
        assert len(h.store.rows) == 1

    run(body)


def test_a_batch_answers_each_item_on_its_own_and_a_bad_item_queues_nothing_of_its_own():
    async def body(h: Harness) -> None:
        results = await h.core.submit_many(
            [
                SubmitRequest("echo", {"a": 1}, "out"),
                SubmitRequest("sleep", {"ms": -5}, "out"),
                SubmitRequest("noop", {}, "out", priority=Priority.HIGH, idempotency_key="k"),
                SubmitRequest("nope", {}, "out"),
                SubmitRequest("noop", {}, "elsewhere", idempotency_key="k"),  # the same key: the same task
            ]
        )
        echo, bad_params, keyed, bad_type, again = results
        assert isinstance(echo, Task) and echo.state is TaskState.QUEUED and echo.params == {"a": 1}
        assert isinstance(bad_params, InvalidArgument) and bad_params.field == "params.ms"
        assert isinstance(keyed, Task) and keyed.priority is Priority.HIGH
        assert isinstance(bad_type, InvalidArgument) and bad_type.field == "task_type"
        assert isinstance(again, Task) and again.task_id == keyed.task_id
        assert set(h.store.rows) == {echo.task_id, keyed.task_id}
        assert h.core.queued == 2
        assert [e.kind for e in h.log.events] == [LifecycleKind.PENDING] * 2

    run(body)


def test_a_batch_over_the_limit_is_refused_whole():
    async def body(h: Harness) -> None:
        with pytest.raises(InvalidArgument, match="the limit is 1000") as info:
            await h.core.submit_many([SubmitRequest("noop", {}, "out")] * 1001)
        assert info.value.field == "requests" and h.store.rows == {}

    run(body)


class AnswerLostStore(MemoryTaskStore):
    """Stores the row, then answers as a retried INSERT would after its
    first answer was lost: a duplicate key."""

    async def insert(self, task: Task) -> None:
        await super().insert(task)
        raise AlreadyExists(f"Duplicate entry '{task.task_id}' for key 'PRIMARY'")


def test_a_submit_whose_insert_committed_but_answered_duplicate_is_accepted_and_runs():
    async def body(h: Harness) -> None:
        task_id = await h.submit()
        assert (await h.core.get(task_id)).state is TaskState.QUEUED
        link = h.worker()
        h.core.grant_credit(link, 1)
        assert [a.task.task_id for a in h.assignments(link)] == [task_id]

    run(body, store=AnswerLostStore())


class KeyTakenStore(MemoryTaskStore):
    """Another Scheduler holds the key, but the row cannot be read back."""

    async def insert(self, task: Task) -> None:
        raise AlreadyExists(f"idempotency key {task.idempotency_key!r} is taken")

    async def find_by_idempotency_key(self, key: str) -> Task | None:
        return None


def test_a_submit_whose_key_is_taken_but_not_found_fails_and_the_key_stays_usable():
    async def body(h: Harness) -> None:
        for _ in range(2):  # the second must not wait for the first forever
            with pytest.raises(AlreadyExists):
                await asyncio.wait_for(h.submit(idempotency_key="order-9"), 1)

    run(body, store=KeyTakenStore())


def test_success_is_published_only_after_the_store_committed_it():
    async def body(h: Harness) -> None:
        task_id = await h.submit()
        link = h.worker()
        h.core.grant_credit(link, 1)
        (assignment,) = h.assignments(link)
        watcher = h.core.watch([task_id], terminal_only=True)
        done = await h.core.report("w1", task_id, assignment.fencing_token, Success("out/x.json", 4, "ab" * 32))
        assert done.state is TaskState.SUCCEEDED
        assert h.store.rows[task_id].state is TaskState.SUCCEEDED
        item = watcher.queue.get_nowait()
        assert item is not None
        task, _ = item
        assert task.state is TaskState.SUCCEEDED and task.result_path == "out/x.json"
        assert [e.kind for e in h.log.events] == [LifecycleKind.PENDING, LifecycleKind.COMPLETED]

    run(body)


def test_a_watch_of_one_task_type_gets_only_that_types_changes_and_an_unknown_type_is_refused():
    async def body(h: Harness) -> None:
        watcher = h.core.watch([], terminal_only=False, task_type="echo")
        echo = await h.submit(task_type="echo")
        await h.submit(task_type="noop")
        seen = []
        while not watcher.queue.empty():
            item = watcher.queue.get_nowait()
            assert item is not None
            seen.append((item[0].task_id, item[0].task_type))
        assert seen == [(echo, "echo")]
        with pytest.raises(InvalidArgument, match=r"'ech' is unknown; known types: .*echo"):
            h.core.watch([], terminal_only=False, task_type="ech")

    run(body)


def test_a_task_that_raises_ends_failed_with_the_error():
    async def body(h: Harness) -> None:
        task_id = await h.submit()
        link = h.worker()
        h.core.grant_credit(link, 1)
        (assignment,) = h.assignments(link)
        done = await h.core.report("w1", task_id, assignment.fencing_token, Failure("ValueError: bad input"))
        assert done.state is TaskState.FAILED and done.error == "ValueError: bad input"
        assert h.log.events[-1].kind is LifecycleKind.FAILED

    run(body)


def test_a_huge_error_is_kept_cut_to_its_start_and_its_end():
    async def body(h: Harness) -> None:
        task_id = await h.submit()
        link = h.worker()
        h.core.grant_credit(link, 1)
        (assignment,) = h.assignments(link)
        error = "Traceback (most recent call last):\n" + "  frame\n" * 50_000 + "ValueError: the real cause"
        done = await h.core.report("w1", task_id, assignment.fencing_token, Failure(error))
        assert done.state is TaskState.FAILED and len(done.error) <= MAX_ERROR_CHARS
        assert done.error.startswith("Traceback") and done.error.endswith("ValueError: the real cause")
        assert "characters cut" in done.error and h.store.rows[task_id].error == done.error

    run(body)


def test_clip_error_names_exactly_how_much_it_cut():
    text = "a" * 10_000 + "b" * 10_000
    clipped = clip_error(text, limit=1_000)
    head, rest = clipped.split("\n… (", 1)
    count, tail = rest.split(" characters cut) …\n")
    assert len(clipped) <= 1_000 and len(head) + len(tail) + int(count) == len(text)
    assert clip_error("short") == "short"


def test_a_node_listed_offline_still_gets_work_for_the_credit_it_grants_later():
    async def body(h: Harness) -> None:
        link = h.worker(slots=1)
        h.wall.at += timedelta(seconds=30)  # silent for longer than a lease TTL
        assert [w.state for w in h.core.workers()] == [WorkerState.OFFLINE]
        task_id = await h.submit()
        h.core.grant_credit(link, 1)  # e.g. after a long pause, its task ended
        (assignment,) = h.assignments(link)
        assert assignment.task.task_id == task_id

    run(body)


def test_credit_granted_with_nothing_queued_keeps_one_turn_per_node():
    async def body(h: Harness) -> None:
        first, second = h.worker("w1", slots=1), h.worker("w2", slots=1)
        for _ in range(1000):  # a lightly loaded mesh: credit comes back after every task
            h.core.grant_credit(first, 1)
            h.core.grant_credit(second, 1)
        assert h.core._workers.ready == 2  # not a turn per grant, growing forever
        ids = [await h.submit() for _ in range(2)]
        assert [a.task.task_id for a in h.assignments(first) + h.assignments(second)] == ids

    run(body)


def test_assignments_a_closed_pull_stream_never_sent_are_queued_again_as_the_same_attempt():
    async def body(h: Harness) -> None:
        first, second = await h.submit(), await h.submit()
        old = h.worker(slots=2)
        h.core.grant_credit(old, 2)
        taken = old.outbox.get_nowait()  # taken by the stream's writer, then the stream ended
        new = h.core.open_link("w1")  # the worker reconnected: the old stream closes
        h.core.close_link(old, unsent=[taken])
        for task_id in (first, second):
            task = await h.core.get(task_id)
            assert task.state is TaskState.QUEUED and task.attempt == 1 and task.worker_id == ""
        h.core.grant_credit(new, 2)
        assert [a.task.task_id for a in h.assignments(new)] == [first, second]  # in their old order
        assert [e.kind for e in h.log.events] == [LifecycleKind.PENDING] * 2  # no retry, no failure

    run(body)


def test_a_crashed_task_is_retried_silently_at_high_priority_then_fails_after_max_attempts():
    async def body(h: Harness) -> None:
        normal = await h.submit()
        crashing = await h.submit(max_attempts=2)
        link = h.worker(slots=1)
        watcher = h.core.watch([], terminal_only=True)
        h.core.grant_credit(link, 1)
        (first,) = h.assignments(link)
        assert first.task.task_id == normal
        await h.core.report("w1", normal, first.fencing_token, Success("out/a.json", 1, "0" * 64))
        h.core.grant_credit(link, 1)
        (second,) = h.assignments(link)
        retried = await h.core.report("w1", crashing, second.fencing_token, Crash("killed by SIGKILL"))
        assert retried.state is TaskState.QUEUED and retried.attempt == 2
        assert retried.priority is Priority.HIGH
        h.core.grant_credit(link, 1)
        (third,) = h.assignments(link)
        assert third.task.task_id == crashing and third.task.attempt == 2
        assert third.fencing_token > second.fencing_token
        failed = await h.core.report("w1", crashing, third.fencing_token, Crash("killed by SIGKILL"))
        assert failed.state is TaskState.FAILED and "2 attempts" in failed.error
        assert failed.failure_reason is FailureReason.CRASHED
        terminal = []
        while not watcher.queue.empty():
            item = watcher.queue.get_nowait()
            assert item is not None
            terminal.append((item[0].task_id, item[0].state))
        # No failure notice for the silent retry: only the final one.
        assert terminal == [(normal, TaskState.SUCCEEDED), (crashing, TaskState.FAILED)]
        kinds = [e.kind for e in h.log.events if e.task_id == crashing]
        assert kinds == [LifecycleKind.PENDING, LifecycleKind.RETRIED, LifecycleKind.FAILED]

    run(body)


def test_expired_leases_requeue_and_late_reports_are_refused_changing_nothing():
    async def body(h: Harness) -> None:
        task_id = await h.submit()
        link = h.worker("w1")
        h.core.grant_credit(link, 1)
        (old,) = h.assignments(link)
        h.clock.now += 5
        assert h.core.heartbeat("w1", [(task_id, old.fencing_token)]).lost == []
        h.clock.now += 9  # renewed at +5: not expired yet at +14
        assert h.core.expire_leases() == 0
        h.clock.now += 2
        assert h.core.expire_leases() == 1
        await asyncio.sleep(0)  # let the commit be published
        requeued = await h.core.get(task_id)
        assert requeued.state is TaskState.QUEUED and requeued.attempt == 2
        other = h.worker("w2")
        h.core.grant_credit(other, 1)
        (new,) = h.assignments(other)
        before = h.store.rows[task_id].snapshot()
        with pytest.raises(FailedPrecondition, match="no longer current"):
            await h.core.report("w1", task_id, old.fencing_token, Success("out/x.json", 1, "0" * 64))
        assert h.store.rows[task_id] == before
        assert h.core.heartbeat("w1", [(task_id, old.fencing_token)]).lost == [(task_id, old.fencing_token)]
        done = await h.core.report("w2", task_id, new.fencing_token, Success("out/x.json", 1, "0" * 64))
        assert done.state is TaskState.SUCCEEDED

    run(body)


def test_cancel_queued_at_once_running_tells_its_worker_and_finished_is_refused():
    async def body(h: Harness) -> None:
        queued = await h.submit()
        running = await h.submit(priority=Priority.HIGH)
        link = h.worker(slots=1)
        h.core.grant_credit(link, 1)
        (assignment,) = h.assignments(link)
        assert assignment.task.task_id == running
        cancelled = await h.core.cancel(queued)
        assert cancelled.state is TaskState.CANCELLED and cancelled.failure_reason is FailureReason.CANCELLED
        assert h.core.queued == 0
        assert (await h.core.cancel(running)).state is TaskState.CANCELLED
        (notice,) = h.assignments(link)
        assert notice == CancelNotice(running, assignment.fencing_token)
        with pytest.raises(FailedPrecondition, match="already CANCELLED"):
            await h.core.cancel(running)
        with pytest.raises(FailedPrecondition):
            await h.core.report("w1", running, assignment.fencing_token, Success("p", 1, "0" * 64))
        with pytest.raises(NotFound):
            await h.core.cancel("7c9e6679-7425-40de-944b-e07fc1f90ae7")
        with pytest.raises(InvalidArgument, match="not a UUID"):
            await h.core.get("nope")

    run(body)


def test_drain_node_sends_no_more_work_tells_the_node_and_keeps_it_draining_until_it_leaves():
    async def body(h: Harness) -> None:
        running = await h.submit()
        link = h.worker(slots=2)
        h.core.grant_credit(link, 1)
        (assignment,) = h.assignments(link)
        await h.submit()
        worker = h.core.drain_worker("w1")
        assert worker.state is WorkerState.DRAINING and worker.leases == {running}
        assert h.assignments(link) == [DrainNotice()]
        h.core.drain_worker("w1")  # again: changes nothing, no second notice
        h.core.grant_credit(link, 1)  # credit sent before the node saw the notice
        h.core.heartbeat("w1", [(running, assignment.fencing_token)], WorkerState.ACTIVE)
        assert h.assignments(link) == [] and h.core.queued == 1
        assert [w.state for w in h.core.workers()] == [WorkerState.DRAINING]
        # The node reconnects before it saw the notice: it is told again.
        assert h.assignments(h.core.open_link("w1")) == [DrainNotice()]
        with pytest.raises(NotFound, match="ListWorkers"):
            h.core.drain_worker("nobody")
        with pytest.raises(InvalidArgument):
            h.core.drain_worker("")
        await h.core.report("w1", running, assignment.fencing_token, Success("p", 1, "0" * 64))
        h.core.deregister("w1")
        assert h.core.workers() == [] and h.core.queued == 1

    run(body)


def test_a_new_leader_takes_over_queued_and_running_tasks_from_the_store():
    async def body(h: Harness) -> None:
        queued = await h.submit()
        running = await h.submit(priority=Priority.HIGH)
        link = h.worker(slots=1)
        h.core.grant_credit(link, 1)
        (assignment,) = h.assignments(link)
        successor = SchedulerCore(h.store, h.log, REGISTRY, SchedulerSettings(lease_ttl_s=10), clock=h.clock)
        assert await successor.load() == 2
        # The worker keeps its lease and can report to the new leader.
        successor.register_worker("w1", "w1:1", 1, REGISTRY.names())
        done = await successor.report("w1", running, assignment.fencing_token, Success("p", 1, "0" * 64))
        assert done.state is TaskState.SUCCEEDED
        new_link = successor.open_link("w1")
        successor.grant_credit(new_link, 1)
        (next_,) = Harness.assignments(new_link)
        assert next_.task.task_id == queued and next_.fencing_token > assignment.fencing_token

    run(body)


def test_revisions_follow_every_commit_across_leaders_and_a_resumed_watch_reads_what_changed_since():
    async def body(h: Harness) -> None:
        first = await h.submit()
        mark = (await h.core.get(first)).revision
        second = await h.submit("echo", params={"a": 1})
        link = h.worker(slots=1)
        h.core.grant_credit(link, 1)
        (assignment,) = h.assignments(link)  # the first task: RUNNING
        await h.core.report("w1", first, assignment.fencing_token, Success("p", 1, "0" * 64))
        stored = sorted(h.store.rows.values(), key=lambda t: t.revision)
        assert [t.task_id for t in stored] == [second, first]  # ordered by their last change
        assert len({t.revision for t in stored}) == 2 and all(t.revision > mark for t in stored[1:])

        # Every change after the first submit: the current state of each changed task, oldest change first.
        watcher = h.core.watch([], terminal_only=False)
        changed = await h.core.changes_after(mark, watcher)
        assert [(t.task_id, t.state) for t in changed] == [(second, TaskState.QUEUED), (first, TaskState.SUCCEEDED)]
        terminal = h.core.watch([], terminal_only=True, task_type="noop")
        assert [t.task_id for t in await h.core.changes_after(0, terminal)] == [first]
        with pytest.raises(InvalidArgument):
            await h.core.changes_after(-1, watcher)

        # A new leader continues the revisions from the store: positions only grow.
        successor = SchedulerCore(h.store, h.log, REGISTRY, SchedulerSettings(lease_ttl_s=10), clock=h.clock)
        await successor.load()
        third = await successor.submit(SubmitRequest("noop", {}, "out"))
        assert third.revision > max(t.revision for t in stored)

    run(body)


def test_a_new_leader_emits_again_the_events_after_the_last_acknowledged_position():
    async def body(h: Harness) -> None:
        await h.core.load()  # a new mesh: nothing to emit again, the position is kept from here
        link = h.worker(slots=1)

        async def run_one() -> str:
            task_id = await h.submit()
            h.core.grant_credit(link, 1)
            (assignment,) = h.assignments(link)
            await h.core.report("w1", task_id, assignment.fencing_token, Success("p", 1, "0" * 64))
            return task_id

        before = await run_one()
        await h.core.save_lifecycle_progress()  # every event so far acknowledged and kept
        after = await run_one()  # its events emitted, but the leader dies before keeping the position

        log = MemoryLifecycleLog()
        successor = SchedulerCore(h.store, log, REGISTRY, SchedulerSettings(lease_ttl_s=10), clock=h.clock)
        await successor.load()
        assert [(e.kind, e.task_id, e.attempt) for e in log.events] == [
            (LifecycleKind.PENDING, after, 1),
            (LifecycleKind.STARTED, after, 1),  # from the committed state too (the node's own may be lost)
            (LifecycleKind.COMPLETED, after, 1),
        ]
        assert before not in {e.task_id for e in log.events}
        assert all(e.position == h.store.rows[after].revision for e in log.events)

    run(body)


class SlowStore(MemoryTaskStore):
    """A store whose saves, while ``holding``, wait until :meth:`release`."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = False
        self.held: list[tuple[asyncio.Future[None], Task]] = []

    def save(self, task: Task) -> asyncio.Future[None]:
        if not self.holding:
            return super().save(task)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.held.append((future, task.snapshot()))
        return future

    def release(self) -> None:
        for future, task in self.held:
            self.rows[task.task_id] = task
            future.set_result(None)
        self.held.clear()


def test_a_core_that_stepped_down_writes_nothing_more_and_is_closed_only_once_its_last_writes_land():
    """A leader may step down with a report's commit still in the store's
    hands. Its successor must load only after that lands: one that read the
    task RUNNING would expire its lease and run it again. After close, a late
    credit or heartbeat leases nothing and writes nothing."""
    store = SlowStore()

    async def body(h: Harness) -> None:
        reported, waiting = await h.submit(), await h.submit()
        link = h.worker(slots=1)
        h.core.grant_credit(link, 1)
        (assignment,) = h.assignments(link)
        store.holding = True
        report = asyncio.create_task(h.core.report("w1", reported, assignment.fencing_token, Success("p", 1, "0" * 64)))
        await asyncio.sleep(0)
        assert len(store.held) == 1  # its SUCCEEDED is in the store's hands
        h.core.close()
        closed = asyncio.create_task(h.core.closed())
        await asyncio.sleep(0.01)
        assert not closed.done()
        late = h.core.open_link("w1")
        h.core.grant_credit(late, 1)
        h.core.heartbeat("w1", [])
        assert Harness.assignments(late) == [] and len(store.held) == 1
        assert h.store.rows[waiting].state is TaskState.QUEUED
        store.release()
        await closed
        assert (await report).state is TaskState.SUCCEEDED
        successor = SchedulerCore(h.store, h.log, REGISTRY, SchedulerSettings(lease_ttl_s=10), clock=h.clock)
        assert await successor.load() == 1  # only the waiting task: the reported one SUCCEEDED
        with pytest.raises(Unavailable, match="no longer leads"):
            await h.core.submit(SubmitRequest("noop", {}, "out"))

    run(body, store=store)


def test_a_lost_database_stops_the_scheduler():
    async def body(h: Harness) -> None:
        fatal: list[BaseException] = []
        h.core.on_fatal = fatal.append
        task_id = await h.submit()
        link = h.worker()
        h.store.fail_saves = True
        h.core.grant_credit(link, 1)
        (assignment,) = h.assignments(link)
        await asyncio.sleep(0)
        assert fatal
        with pytest.raises(Unavailable):
            await h.core.report("w1", task_id, assignment.fencing_token, Success("p", 1, "0" * 64))

    run(body)


def test_a_submit_whose_client_goes_away_is_still_queued_once_stored():
    async def body(h: Harness) -> None:
        release = asyncio.Event()
        store_insert = h.store.insert

        async def slow_insert(task):
            await release.wait()
            await store_insert(task)

        h.store.insert = slow_insert  # type: ignore[method-assign]
        call = asyncio.create_task(h.core.submit(SubmitRequest("noop", {}, "out")))
        await asyncio.sleep(0)
        call.cancel()
        release.set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert call.cancelled()
        assert len(h.store.rows) == 1 and h.core.queued == 1

    run(body)


# -- prefetch and take-back (SPEC §3 "Workers pull") -----------------------------


def test_a_node_holds_up_to_slots_plus_prefetch_leases():
    async def body(h: Harness) -> None:
        ids = [await h.submit() for _ in range(5)]
        link = h.worker(slots=2, prefetch=2)
        h.core.grant_credit(link, 9)  # more than its room: capped at slots + prefetch
        assert [a.task.task_id for a in h.assignments(link)] == ids[:4]
        assert h.core.queued == 1

    run(body)


def test_a_prefetched_task_is_taken_back_for_a_node_with_a_free_slot_and_runs_there():
    async def body(h: Harness) -> None:
        busy = h.worker("busy", slots=1, prefetch=1)
        h.core.grant_credit(busy, 2)
        long_id, short_id = await h.submit("sleep", params={"ms": 60_000}), await h.submit()
        held = h.assignments(busy)
        assert [a.task.task_id for a in held] == [long_id, short_id]  # one runs, one waits there
        idle = h.worker("idle", slots=1)
        h.core.grant_credit(idle, 1)  # a free slot, and nothing queued
        (take_back,) = h.assignments(busy)
        assert take_back == TakeBack(short_id, held[1].fencing_token)  # the one that waits
        assert h.assignments(idle) == []  # nothing moves until the node gives it back
        h.core.grant_credit(busy, 1)
        h.core.give_back(busy, short_id, held[1].fencing_token)
        (moved,) = h.assignments(idle)  # to the free slot, not back to the node with prefetch room
        assert h.assignments(busy) == []
        assert moved.task.task_id == short_id and moved.task.attempt == 1
        # The old lease is gone: a late report on it changes nothing.
        with pytest.raises(FailedPrecondition):
            await h.core.report("busy", short_id, held[1].fencing_token, Crash("late"))

    run(body)


def test_a_prefetched_task_that_already_started_is_not_given_back_and_stays_leased():
    async def body(h: Harness) -> None:
        busy = h.worker("busy", slots=1, prefetch=1)
        h.core.grant_credit(busy, 2)
        await h.submit()
        await h.submit()
        held = h.assignments(busy)
        idle = h.worker("idle", slots=1)
        h.core.grant_credit(idle, 1)
        assert isinstance(h.assignments(busy)[0], TakeBack)
        h.core.grant_credit(idle, 0)  # asked once only, however often the Scheduler dispatches
        assert h.assignments(busy) == []
        task = await h.core.report("busy", held[1].task.task_id, held[1].fencing_token, Success("p", 1, "0" * 64))
        assert task.state is TaskState.SUCCEEDED  # it had started: its report still counts

    run(body)


def test_a_high_task_queued_behind_prefetched_low_ones_takes_their_place():
    async def body(h: Harness) -> None:
        node = h.worker(slots=1, prefetch=2)
        h.core.grant_credit(node, 3)
        lows = [await h.submit(priority=Priority.LOW) for _ in range(3)]
        held = h.assignments(node)
        assert [a.task.task_id for a in held] == lows
        high = await h.submit(priority=Priority.HIGH)  # no room anywhere: it waits in the queue
        (take_back,) = h.assignments(node)
        assert take_back == TakeBack(lows[2], held[2].fencing_token)  # the one that would run last
        # The node's answer: the room it got back, and the task (as the servicer applies them).
        h.core.grant_credit(node, 1)
        h.core.give_back(node, lows[2], held[2].fencing_token)
        (next_,) = h.assignments(node)
        assert next_.task.task_id == high  # HIGH first; the LOW one waits in the queue again
        assert h.core.queued == 1

    run(body)


def test_a_node_passed_over_while_silent_takes_the_queued_work_at_its_next_heartbeat():
    async def body(h: Harness) -> None:
        link = h.worker("w1", slots=2)
        h.core.grant_credit(link, 2)
        h.wall.at += timedelta(seconds=30)  # silent (SIGSTOPped): passed over
        task_id = await h.submit()
        assert h.assignments(link) == [] and h.core.queued == 1
        h.core.heartbeat("w1", [])  # back: no new credit comes, its old credit still stands
        (assignment,) = h.assignments(link)
        assert assignment.task.task_id == task_id and h.core.queued == 0

    run(body)


def test_a_run_timeout_comes_from_the_submit_else_the_type_and_a_timeout_report_keeps_its_reason():
    async def body(h: Harness) -> None:
        given = await h.submit("sleep", params={"ms": 10}, run_timeout_s=2.5)
        default = await h.submit("noop")
        assert (await h.core.get(given)).run_timeout_s == 2.5
        assert (await h.core.get(default)).run_timeout_s == REGISTRY.get("noop").run_timeout_s
        link = h.worker(slots=2)
        h.core.grant_credit(link, 2)
        first, second = h.assignments(link)
        assert first.task.run_timeout_s == 2.5  # the worker gets the limit with the task
        timed_out = await h.core.report(
            "w1", given, first.fencing_token, Failure("ran past 2.5 s", FailureReason.TIMEOUT)
        )
        assert timed_out.state is TaskState.FAILED and timed_out.failure_reason is FailureReason.TIMEOUT
        raised = await h.core.report("w1", default, second.fencing_token, Failure("boom"))
        assert raised.failure_reason is FailureReason.ERROR
        stored = await h.store.get(given)
        assert stored is not None and stored.failure_reason is FailureReason.TIMEOUT  # committed with it

    run(body)


def test_a_queued_task_past_its_deadline_ends_expired_and_is_never_dispatched():
    async def body(h: Harness) -> None:
        soon = h.wall.at + timedelta(seconds=5)
        expiring = await h.submit("noop", deadline=soon)
        later = await h.submit("noop", deadline=soon + timedelta(hours=1))
        assert h.core.seconds_to_next_timer() == 5.0
        assert h.core.run_timers() == (0, 0)
        h.wall.at = soon
        assert h.core.run_timers() == (0, 1)
        await asyncio.sleep(0)  # let the commit be published
        task = await h.core.get(expiring)
        assert task.state is TaskState.FAILED and task.failure_reason is FailureReason.EXPIRED
        assert "never ran" in task.error and task.started_at is None
        link = h.worker(slots=2)
        h.core.grant_credit(link, 2)
        assert [a.task.task_id for a in h.assignments(link)] == [later]  # only the one still in time
        assert [e.kind for e in h.log.events if e.task_id == expiring] == [LifecycleKind.PENDING, LifecycleKind.FAILED]

    run(body)


def test_a_task_whose_deadline_passes_before_a_worker_asks_is_expired_instead_of_dispatched():
    async def body(h: Harness) -> None:
        task_id = await h.submit("noop", deadline=h.wall.at + timedelta(seconds=1))
        h.wall.at += timedelta(seconds=2)  # no expiry pass ran yet
        link = h.worker(slots=1)
        h.core.grant_credit(link, 1)
        assert h.assignments(link) == []
        await asyncio.sleep(0)  # let the commit be published
        assert (await h.core.get(task_id)).failure_reason is FailureReason.EXPIRED

    run(body)


def test_a_deadline_that_has_passed_is_refused():
    async def body(h: Harness) -> None:
        with pytest.raises(InvalidArgument) as info:
            await h.submit("noop", deadline=h.wall.at)
        assert info.value.field == "deadline" and h.store.rows == {}

    run(body)


def test_a_delayed_task_is_queued_at_once_but_dispatched_only_when_due_also_by_a_new_leader():
    async def body(h: Harness) -> None:
        delayed = await h.submit("noop", delay_s=3)
        task = await h.core.get(delayed)
        assert task.state is TaskState.QUEUED and task.not_before == h.wall.at + timedelta(seconds=3)
        link = h.worker(slots=1)
        h.core.grant_credit(link, 1)
        assert h.assignments(link) == [] and h.core.delayed == 1 and h.core.queued == 0
        assert h.core.seconds_to_next_timer() == 3.0
        # The leader dies during the delay: its successor loads the task, still waiting.
        successor = SchedulerCore(h.store, h.log, REGISTRY, SchedulerSettings(), clock=h.clock, now=h.wall)
        await successor.load()
        successor.register_worker("w2", "w2:1", 1, REGISTRY.names())
        new_link = successor.open_link("w2")
        successor.grant_credit(new_link, 1)
        assert Harness.assignments(new_link) == [] and successor.run_timers() == (0, 0)
        h.wall.at += timedelta(seconds=3)
        assert successor.run_timers() == (1, 0)
        (assignment,) = Harness.assignments(new_link)
        assert assignment.task.task_id == delayed and assignment.task.attempt == 1

    run(body)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"delay_s": -1}, "delay"),
        ({"delay_s": 400 * 86_400}, "delay"),
        ({"delay_s": 5, "not_before": datetime(2026, 1, 1, 0, 1, tzinfo=UTC)}, "delay"),
        ({"not_before": datetime(2027, 6, 1, tzinfo=UTC)}, "not_before"),
        ({"delay_s": 60, "deadline": datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)}, "deadline"),
    ],
)
def test_bad_delays_are_refused_naming_the_field(kw, field):
    async def body(h: Harness) -> None:
        with pytest.raises(InvalidArgument) as info:
            await h.submit("noop", **kw)
        assert info.value.field == field and h.store.rows == {}

    run(body)


def test_a_task_that_raises_is_retried_after_a_growing_backoff_as_a_delayed_task_then_fails():
    async def body(h: Harness) -> None:
        policy = RetryPolicy(max_attempts=3, initial_backoff_s=2, max_backoff_s=5, multiplier=3)
        task_id = await h.submit("fail", retry=policy)
        link = h.worker(slots=1)
        waits = []
        for attempt in (1, 2, 3):
            h.core.grant_credit(link, 1)
            (assignment,) = h.assignments(link)
            assert assignment.task.attempt == attempt
            failed_at = h.wall.at
            task = await h.core.report("w1", task_id, assignment.fencing_token, Failure("TaskFailed: nope"))
            if attempt < 3:
                assert task.state is TaskState.QUEUED and task.not_before is not None
                waits.append((task.not_before - failed_at).total_seconds())
                h.core.grant_credit(link, 1)
                assert h.assignments(link) == []  # waiting out its backoff
                h.wall.at = task.not_before
                h.core.run_timers()
        assert waits == [2.0, 5.0]  # 2 s, then 2 x 3 = 6 capped at 5 (the jitter drew the top of each range)
        assert task.state is TaskState.FAILED and task.failure_reason is FailureReason.ERROR
        assert task.error == "TaskFailed: nope" and task.attempt == 3
        kinds = [e.kind for e in h.log.events if e.task_id == task_id]
        assert kinds == [LifecycleKind.PENDING, LifecycleKind.RETRIED, LifecycleKind.RETRIED, LifecycleKind.FAILED]

    run(body)


def test_a_non_retryable_error_fails_at_once_and_the_jitter_stays_within_its_bounds():
    async def body(h: Harness) -> None:
        policy = RetryPolicy(max_attempts=5, non_retryable_errors=("ValueError",))
        task_id = await h.submit("fail", retry=policy)
        link = h.worker(slots=1)
        h.core.grant_credit(link, 1)
        (assignment,) = h.assignments(link)
        task = await h.core.report("w1", task_id, assignment.fencing_token, Failure("ValueError: bad input"))
        assert task.state is TaskState.FAILED and task.attempt == 1

    run(body)
    policy = RetryPolicy(max_attempts=9, initial_backoff_s=1, max_backoff_s=10, multiplier=2)
    assert [policy.backoff_bounds(n) for n in (1, 2, 3, 4, 5)] == [(0.5, 1), (1, 2), (2, 4), (4, 8), (5, 10)]
    assert policy.backoff_s(3, lambda: 0.0) == 2 and policy.backoff_s(3, lambda: 1.0) == 4


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        (RetryPolicy(max_attempts=0), "retry.max_attempts"),
        (RetryPolicy(max_attempts=3, initial_backoff_s=0), "retry.initial_backoff"),
        (RetryPolicy(max_attempts=3, initial_backoff_s=5, max_backoff_s=1), "retry.max_backoff"),
        (RetryPolicy(max_attempts=3, multiplier=0.5), "retry.multiplier"),
        (RetryPolicy(max_attempts=3, non_retryable_errors=("not a type",)), "retry.non_retryable_errors"),
    ],
)
def test_bad_retry_policies_are_refused_naming_the_field(policy, field):
    async def body(h: Harness) -> None:
        with pytest.raises(InvalidArgument) as info:
            await h.submit("fail", retry=policy)
        assert info.value.field == field and h.store.rows == {}

    run(body)


def test_rerun_makes_a_new_task_from_a_failed_one_and_refuses_an_unfinished_one():
    async def body(h: Harness) -> None:
        policy = RetryPolicy(max_attempts=1)
        failed = await h.submit("fail", params={"message": "x"}, run_timeout_s=9, retry=policy, priority=Priority.LOW)
        link = h.worker(slots=1)
        h.core.grant_credit(link, 1)
        (assignment,) = h.assignments(link)
        queued = await h.submit("noop")
        await h.core.report("w1", failed, assignment.fencing_token, Failure("TaskFailed: x"))
        again = await h.core.rerun(failed)
        original = await h.core.get(failed)
        assert again.task_id != failed and again.rerun_of == failed and again.state is TaskState.QUEUED
        assert (again.task_type, again.params, again.result_dir, again.priority) == (
            "fail",
            {"message": "x"},
            "out",
            Priority.LOW,
        )
        assert again.run_timeout_s == 9 and again.retry == policy and again.attempt == 1
        assert original.state is TaskState.FAILED and original.rerun_of == ""  # unchanged
        with pytest.raises(FailedPrecondition, match="only FAILED or CANCELLED"):
            await h.core.rerun(queued)
        with pytest.raises(NotFound):
            await h.core.rerun("7c9e6679-7425-40de-944b-e07fc1f90ae7")

    run(body)


def test_rerun_by_filter_counts_on_a_dry_run_and_reruns_only_what_matches():
    async def body(h: Harness) -> None:
        ids = [await h.submit("noop") for _ in range(3)] + [await h.submit("echo")]
        for task_id in ids:
            await h.core.cancel(task_id)
        matching = RerunFilter(task_type="noop", failure_reason=FailureReason.CANCELLED)
        assert await h.core.rerun_many(matching, 0, dry_run=True) == (3, [])
        assert h.core.queued == 0  # a dry run makes nothing
        matched, made = await h.core.rerun_many(matching, 2, dry_run=False)
        assert matched == 2 and [t.rerun_of for t in made] == ids[:2]  # oldest first, up to the limit
        with pytest.raises(InvalidArgument) as info:
            await h.core.rerun_many(RerunFilter(state=TaskState.RUNNING), 0, dry_run=True)
        assert info.value.field == "state"

    run(body)


class Cleaner:
    def __init__(self) -> None:
        self.expired: list[str] = []

    async def expire_results(self, task_ids: list[str]) -> tuple[int, int]:
        self.expired += task_ids
        return len(task_ids), 10 * len(task_ids)


def test_retention_deletes_finished_tasks_past_their_ttl_results_first_and_never_a_running_one():
    async def body(h: Harness) -> None:
        done = await h.submit("noop", result_ttl_s=60)
        running = await h.submit("noop", result_ttl_s=60)
        link = h.worker(slots=2)
        h.core.grant_credit(link, 2)
        first, _ = h.assignments(link)
        assert first.task.task_id == done
        await h.core.report("w1", done, first.fencing_token, Success("out/a.json", 1, "0" * 64))
        cancelled = await h.submit("noop", result_ttl_s=60)
        await h.core.cancel(cancelled)
        cleaner = Cleaner()
        assert await h.core.sweep(cleaner, 100) == (0, 0, 0)  # not expired yet
        h.wall.at += timedelta(seconds=61)
        assert await h.core.sweep(cleaner, 1) == (1, 1, 10)  # bounded: one per round
        assert await h.core.sweep(cleaner, 100) == (1, 0, 0)
        assert cleaner.expired == [done]  # only a SUCCEEDED task has a result
        assert set(h.store.rows) == {running}
        with pytest.raises(NotFound):
            await h.core.get(done)
        assert (await h.core.get(running)).state is TaskState.RUNNING
        # A watch resumed from before the deleted tasks' last changes would miss them: refused, named.
        watcher = h.core.watch([], terminal_only=False)
        pruned = await h.store.pruned_through()
        with pytest.raises(OutOfRange, match="list the tasks again") as info:
            await h.core.changes_after(pruned - 1, watcher)
        assert info.value.field == "resume_after"
        await h.core.changes_after(pruned, watcher)  # from there on, nothing is missing

    run(body)


def test_a_reported_attempt_commits_the_workers_start_and_emits_its_started_event_with_it():
    async def body(h: Harness) -> None:
        task_id = await h.submit()
        link = h.worker(slots=1)
        h.core.grant_credit(link, 1)
        (assignment,) = h.assignments(link)
        began = h.wall.at + timedelta(milliseconds=250)  # the node started it a little after the lease
        done = await h.core.report("w1", task_id, assignment.fencing_token, Success("p", 1, "0" * 64, started_at=began))
        assert done.started_at == began and (await h.store.get(task_id)).started_at == began  # type: ignore[union-attr]
        events = [(e.kind, e.occurred_at) for e in h.log.events if e.task_id == task_id]
        assert events[-2:] == [(LifecycleKind.STARTED, began), (LifecycleKind.COMPLETED, h.wall.at)]
        assert {e.position for e in h.log.events if e.task_id == task_id and e.kind != LifecycleKind.PENDING} == {
            h.store.rows[task_id].revision
        }

    run(body)


def test_the_queue_is_counted_by_priority_and_type_with_its_longest_wait():
    async def body(h: Harness) -> None:
        await h.submit("noop")
        h.wall.at += timedelta(seconds=5)
        await h.submit("noop")
        await h.submit("echo", priority=Priority.HIGH)
        assert h.core.queued_by_kind() == {
            ("normal", "noop"): (2, datetime(2026, 1, 1, tzinfo=UTC)),
            ("high", "echo"): (1, datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)),
        }

    run(body)
