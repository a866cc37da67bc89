"""The Scheduler's :class:`~gridmesh.core.scheduler.TaskStore` on MySQL.

One table per concern: ``tasks`` holds every task's current state, indexed
for dispatch order (state, dispatch priority, seq) and for listing. Writes go
through the group committer (many changes, one commit); reads use the reader
pool.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

from gridmesh.adapters.mysql import Cursor, GroupCommitter, MySQL, Row
from gridmesh.common.errors import AlreadyExists, Unavailable
from gridmesh.core.scheduler import RERUNNABLE, Counters, RerunFilter, TaskStore
from gridmesh.core.schedules import CatchUp, Schedule, ScheduleSpec
from gridmesh.core.submits import SubmitRequest
from gridmesh.core.tasks import FailureReason, Priority, RetryPolicy, Task, TaskState
from gridmesh.core.watch import WatchFilter

MIGRATIONS = [
    """
    CREATE TABLE tasks (
      task_id CHAR(36) NOT NULL PRIMARY KEY,
      seq BIGINT NOT NULL,
      task_type VARCHAR(64) NOT NULL,
      params LONGTEXT NOT NULL,
      result_dir VARCHAR(255) NOT NULL,
      state TINYINT NOT NULL,
      priority TINYINT NOT NULL,
      attempt INT NOT NULL,
      max_attempts INT NOT NULL,
      worker_id VARCHAR(255) NOT NULL DEFAULT '',
      fencing_token BIGINT NOT NULL DEFAULT 0,
      result_path VARCHAR(512) NOT NULL DEFAULT '',
      result_size_bytes BIGINT NOT NULL DEFAULT 0,
      result_sha256 CHAR(64) NOT NULL DEFAULT '',
      error TEXT NOT NULL,
      idempotency_key VARCHAR(255) NULL,
      created_at DATETIME(6) NOT NULL,
      started_at DATETIME(6) NULL,
      finished_at DATETIME(6) NULL,
      UNIQUE KEY uq_tasks_idempotency_key (idempotency_key),
      UNIQUE KEY uq_tasks_seq (seq),
      KEY ix_tasks_dispatch (state, priority, seq),
      KEY ix_tasks_type (task_type, state, seq)
    ) ENGINE=InnoDB
    """,
    # Every committed change of a task gets the next revision, across
    # Schedulers: the position a watch resumes after (see changes_after).
    "ALTER TABLE tasks ADD COLUMN revision BIGINT NOT NULL DEFAULT 0, ADD KEY ix_tasks_revision (revision)",
    # The revision through which every life-cycle event reached Kafka.
    "CREATE TABLE lifecycle_progress (id TINYINT NOT NULL PRIMARY KEY, position BIGINT NOT NULL) ENGINE=InnoDB",
    # Time limits: how long one attempt may run, and why a task failed.
    "ALTER TABLE tasks ADD COLUMN run_timeout_ms BIGINT NOT NULL DEFAULT 0,"
    " ADD COLUMN failure_reason TINYINT NOT NULL DEFAULT 0",
    "ALTER TABLE tasks ADD COLUMN deadline DATETIME(6) NULL",
    "ALTER TABLE tasks ADD COLUMN not_before DATETIME(6) NULL",
    "ALTER TABLE tasks ADD COLUMN retry_policy TEXT NULL",
    "ALTER TABLE tasks ADD COLUMN rerun_of CHAR(36) NULL, ADD KEY ix_tasks_finished (state, created_at)",
    """
    CREATE TABLE schedules (
      schedule_id CHAR(36) NOT NULL PRIMARY KEY,
      spec TEXT NOT NULL,
      template LONGTEXT NOT NULL,
      catch_up TINYINT NOT NULL,
      catch_up_limit INT NOT NULL,
      created_at DATETIME(6) NOT NULL,
      next_tick DATETIME(6) NOT NULL,
      paused TINYINT NOT NULL,
      last_tick DATETIME(6) NULL,
      last_task_id CHAR(36) NOT NULL DEFAULT ''
    ) ENGINE=InnoDB
    """,
    # Retention: a finished task is deleted (its result too) once expires_at passes.
    "ALTER TABLE tasks ADD COLUMN result_ttl_ms BIGINT NOT NULL DEFAULT 0,"
    " ADD COLUMN expires_at DATETIME(6) NULL, ADD KEY ix_tasks_expires (expires_at)",
    # The newest revision among the tasks retention deleted: a watch resumed before it missed changes.
    "CREATE TABLE retention_progress (id TINYINT NOT NULL PRIMARY KEY, revision BIGINT NOT NULL) ENGINE=InnoDB",
    # The W3C trace context a task's spans continue (tracing on).
    "ALTER TABLE tasks ADD COLUMN traceparent VARCHAR(55) NULL",
    # When the current attempt was dispatched (started_at becomes the node's start of it).
    "ALTER TABLE tasks ADD COLUMN dispatched_at DATETIME(6) NULL",
]
_SAVE_PROGRESS = (
    "INSERT INTO lifecycle_progress (id, position) VALUES (1, %s) "
    "ON DUPLICATE KEY UPDATE position=GREATEST(position, VALUES(position))"
)

_COLUMNS = (
    "task_id, seq, task_type, params, result_dir, state, priority, attempt, max_attempts,"
    " worker_id, fencing_token, result_path, result_size_bytes, result_sha256, error, idempotency_key,"
    " created_at, started_at, finished_at, revision,"
    " run_timeout_ms, failure_reason, deadline, not_before, retry_policy, rerun_of, result_ttl_ms, expires_at,"
    " traceparent, dispatched_at"
)
_INSERT = f"INSERT INTO tasks ({_COLUMNS}) VALUES ({', '.join(['%s'] * 30)})"
_MUTABLE = (
    "state",
    "priority",
    "attempt",
    "worker_id",
    "fencing_token",
    "result_path",
    "result_size_bytes",
    "result_sha256",
    "error",
    "started_at",
    "finished_at",
    "revision",
    "failure_reason",
    "not_before",
    "expires_at",
    "dispatched_at",
)
# A save is an upsert of the whole row, so that a group of saves is one
# multi-row statement (see adapters.mysql.Row).
_SAVE = _INSERT + " ON DUPLICATE KEY UPDATE " + ", ".join(f"{c}=VALUES({c})" for c in _MUTABLE)


def _naive(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC).replace(tzinfo=None) if value is not None else None


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None else None


def _row(task: Task) -> tuple[Any, ...]:
    return (
        task.task_id,
        task.seq,
        task.task_type,
        json.dumps(task.params, separators=(",", ":")),
        task.result_dir,
        int(task.state),
        int(task.priority),
        task.attempt,
        task.max_attempts,
        task.worker_id,
        task.fencing_token,
        task.result_path,
        task.result_size_bytes,
        task.result_sha256,
        task.error,
        task.idempotency_key or None,
        _naive(task.created_at),
        _naive(task.started_at),
        _naive(task.finished_at),
        task.revision,
        round(task.run_timeout_s * 1000),
        int(task.failure_reason),
        _naive(task.deadline),
        _naive(task.not_before),
        json.dumps(dataclasses.asdict(task.retry)) if task.retry is not None else None,
        task.rerun_of or None,
        round(task.result_ttl_s * 1000),
        _naive(task.expires_at),
        task.trace_parent or None,
        _naive(task.dispatched_at),
    )


def _task(row: tuple[Any, ...]) -> Task:
    return Task(
        task_id=row[0],
        seq=row[1],
        task_type=row[2],
        params=json.loads(row[3]),
        result_dir=row[4],
        state=TaskState(row[5]),
        priority=Priority(row[6]),
        attempt=row[7],
        max_attempts=row[8],
        worker_id=row[9],
        fencing_token=row[10],
        result_path=row[11],
        result_size_bytes=row[12],
        result_sha256=row[13],
        error=row[14],
        idempotency_key=row[15] or "",
        created_at=_aware(row[16]) or datetime.now(UTC),
        started_at=_aware(row[17]),
        finished_at=_aware(row[18]),
        revision=row[19],
        run_timeout_s=row[20] / 1000,
        failure_reason=FailureReason(row[21]),
        deadline=_aware(row[22]),
        not_before=_aware(row[23]),
        retry=_retry_policy(row[24]),
        rerun_of=row[25] or "",
        result_ttl_s=row[26] / 1000,
        trace_parent=row[28] or "",
        dispatched_at=_aware(row[29]),
    )


def _retry_policy(text: str | None) -> RetryPolicy | None:
    if not text:
        return None
    fields = json.loads(text)
    return RetryPolicy(**{**fields, "non_retryable_errors": tuple(fields.get("non_retryable_errors", ()))})


class MySQLTaskStore(TaskStore):
    def __init__(self, db: MySQL) -> None:
        self._db = db
        self._writer = GroupCommitter(db)

    def setup(self) -> None:
        """Create or migrate the schema (blocking; call before serving)."""
        self._db.ensure_schema(MIGRATIONS)

    def close(self) -> None:
        self._writer.close()
        self._db.close()

    # -- schedules (ScheduleStore) -----------------------------------------------

    async def load_schedules(self) -> list[Schedule]:
        def work(cur: Cursor) -> list[Schedule]:
            cur.execute(f"SELECT {_SCHEDULE_COLUMNS} FROM schedules")
            return [_schedule(r) for r in cur.fetchall()]

        return await self._db.read(work)

    async def save_schedule(self, schedule: Schedule) -> None:
        await self._writer.submit_async(Row(_SAVE_SCHEDULE, _schedule_row(schedule)))

    async def delete_schedule(self, schedule_id: str) -> None:
        def work(cur: Cursor) -> None:
            cur.execute("DELETE FROM schedules WHERE schedule_id=%s", (schedule_id,))

        await self._writer.submit_async(work)

    async def insert(self, task: Task) -> None:
        await self._writer.submit_async(Row(_INSERT, _row(task)))

    def save(self, task: Task) -> asyncio.Future[None]:
        return self._writer.submit_async(Row(_SAVE, _row(task)))

    async def load_active(self) -> list[Task]:
        def work(cur: Cursor) -> list[Task]:
            cur.execute(
                f"SELECT {_COLUMNS} FROM tasks WHERE state IN (%s, %s) ORDER BY priority DESC, seq",
                (int(TaskState.QUEUED), int(TaskState.RUNNING)),
            )
            return [_task(r) for r in cur.fetchall()]

        return await self._db.read(work)

    async def counters(self) -> Counters:
        def work(cur: Cursor) -> Counters:
            cur.execute(
                "SELECT COALESCE(MAX(seq), 0), COALESCE(MAX(fencing_token), 0), COALESCE(MAX(revision), 0) FROM tasks"
            )
            row = cur.fetchone()
            return Counters(int(row[0]), int(row[1]), int(row[2])) if row else Counters(0, 0, 0)

        return await self._db.read(work)

    async def lifecycle_position(self) -> int | None:
        def work(cur: Cursor) -> int | None:
            cur.execute("SELECT position FROM lifecycle_progress WHERE id=1")
            row = cur.fetchone()
            return int(row[0]) if row else None

        return await self._db.read(work)

    def save_lifecycle_position(self, position: int) -> asyncio.Future[None]:
        return self._writer.submit_async(Row(_SAVE_PROGRESS, (position,)))

    async def changes_after(self, after: int, watch: WatchFilter, limit: int) -> list[Task]:
        clauses: list[str] = ["revision>%s"]
        args: list[object] = [after]
        if watch.task_ids is not None:
            clauses.append(f"task_id IN ({', '.join(['%s'] * len(watch.task_ids))})")
            args += sorted(watch.task_ids)
        if watch.task_type:
            clauses.append("task_type=%s")
            args.append(watch.task_type)
        if watch.terminal_only:
            terminal = [int(s) for s in TaskState if s.terminal]
            clauses.append(f"state IN ({', '.join(['%s'] * len(terminal))})")
            args += terminal

        def work(cur: Cursor) -> list[Task]:
            where = " AND ".join(clauses)
            cur.execute(f"SELECT {_COLUMNS} FROM tasks WHERE {where} ORDER BY revision LIMIT %s", (*args, limit))
            return [_task(r) for r in cur.fetchall()]

        return await self._db.read(work)

    async def get(self, task_id: str) -> Task | None:
        def work(cur: Cursor) -> Task | None:
            cur.execute(f"SELECT {_COLUMNS} FROM tasks WHERE task_id=%s", (task_id,))
            row = cur.fetchone()
            return _task(row) if row else None

        return await self._db.read(work)

    async def find_by_idempotency_key(self, key: str) -> Task | None:
        def work(cur: Cursor) -> Task | None:
            cur.execute(f"SELECT {_COLUMNS} FROM tasks WHERE idempotency_key=%s", (key,))
            row = cur.fetchone()
            return _task(row) if row else None

        return await self._db.read(work)

    async def list_tasks(self, state: TaskState, task_type: str, limit: int, before_seq: int | None) -> list[Task]:
        clauses: list[str] = []
        args: list[object] = []
        if state is not TaskState.UNSPECIFIED:
            clauses.append("state=%s")
            args.append(int(state))
        if task_type:
            clauses.append("task_type=%s")
            args.append(task_type)
        if before_seq is not None:
            clauses.append("seq<%s")
            args.append(before_seq)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""

        def work(cur: Cursor) -> list[Task]:
            cur.execute(f"SELECT {_COLUMNS} FROM tasks {where} ORDER BY seq DESC LIMIT %s", (*args, limit))
            return [_task(r) for r in cur.fetchall()]

        return await self._db.read(work)

    async def expired(self, now: datetime, limit: int) -> list[tuple[str, TaskState, int]]:
        def work(cur: Cursor) -> list[tuple[str, TaskState, int]]:
            cur.execute(
                "SELECT task_id, state, revision FROM tasks WHERE expires_at < %s ORDER BY expires_at LIMIT %s",
                (_naive(now), limit),
            )
            return [(row[0], TaskState(row[1]), int(row[2])) for row in cur.fetchall()]

        return await self._db.read(work)

    async def delete_tasks(self, task_ids: list[str], revision: int) -> None:
        if not task_ids:
            return
        marks = ", ".join(["%s"] * len(task_ids))

        def work(cur: Cursor) -> None:
            # Only finished tasks (expires_at is set when a task finishes): never a running one.
            cur.execute(f"DELETE FROM tasks WHERE task_id IN ({marks}) AND expires_at IS NOT NULL", tuple(task_ids))
            cur.execute(
                "INSERT INTO retention_progress (id, revision) VALUES (1, %s) "
                "ON DUPLICATE KEY UPDATE revision=GREATEST(revision, VALUES(revision))",
                (revision,),
            )

        await self._writer.submit_async(work)

    async def pruned_through(self) -> int:
        def work(cur: Cursor) -> int:
            cur.execute("SELECT revision FROM retention_progress WHERE id=1")
            row = cur.fetchone()
            return int(row[0]) if row else 0

        return await self._db.read(work)

    async def finished(self, matching: RerunFilter, limit: int) -> list[Task]:
        states = (matching.state,) if matching.state is not TaskState.UNSPECIFIED else RERUNNABLE
        clauses = [f"state IN ({', '.join(['%s'] * len(states))})"]
        args: list[object] = [int(state) for state in states]
        if matching.task_type:
            clauses.append("task_type=%s")
            args.append(matching.task_type)
        if matching.failure_reason is not FailureReason.UNSPECIFIED:
            clauses.append("failure_reason=%s")
            args.append(int(matching.failure_reason))
        if matching.created_after is not None:
            clauses.append("created_at>%s")
            args.append(_naive(matching.created_after))
        if matching.created_before is not None:
            clauses.append("created_at<%s")
            args.append(_naive(matching.created_before))
        where = " AND ".join(clauses)

        def work(cur: Cursor) -> list[Task]:
            cur.execute(f"SELECT {_COLUMNS} FROM tasks WHERE {where} ORDER BY seq LIMIT %s", (*args, limit))
            return [_task(r) for r in cur.fetchall()]

        return await self._db.read(work)


_SCHEDULE_COLUMNS = (
    "schedule_id, spec, template, catch_up, catch_up_limit, created_at, next_tick, paused, last_tick, last_task_id"
)
_SAVE_SCHEDULE = (
    f"INSERT INTO schedules ({_SCHEDULE_COLUMNS}) VALUES ({', '.join(['%s'] * 10)}) ON DUPLICATE KEY UPDATE "
    "next_tick=VALUES(next_tick), paused=VALUES(paused), last_tick=VALUES(last_tick), "
    "last_task_id=VALUES(last_task_id)"
)


def _template_json(request: SubmitRequest) -> str:
    fields = dataclasses.asdict(request)
    fields["priority"] = int(request.priority)
    return json.dumps(fields, separators=(",", ":"))


def _template(text: str) -> SubmitRequest:
    fields = json.loads(text)
    retry = fields.pop("retry")
    return SubmitRequest(
        **{**fields, "priority": Priority(fields["priority"]), "deadline": None, "not_before": None},
        retry=RetryPolicy(**{**retry, "non_retryable_errors": tuple(retry["non_retryable_errors"])}) if retry else None,
    )


def _schedule_row(s: Schedule) -> tuple[Any, ...]:
    return (
        s.schedule_id,
        json.dumps(dataclasses.asdict(s.spec), separators=(",", ":")),
        _template_json(s.template),
        int(s.catch_up),
        s.catch_up_limit,
        _naive(s.created_at),
        _naive(s.next_tick),
        int(s.paused),
        _naive(s.last_tick),
        s.last_task_id,
    )


def _schedule(row: tuple[Any, ...]) -> Schedule:
    return Schedule(
        schedule_id=row[0],
        spec=ScheduleSpec(**json.loads(row[1])),
        template=_template(row[2]),
        catch_up=CatchUp(row[3]),
        catch_up_limit=row[4],
        created_at=_aware(row[5]) or datetime.now(UTC),
        next_tick=_aware(row[6]) or datetime.now(UTC),
        paused=bool(row[7]),
        last_tick=_aware(row[8]),
        last_task_id=row[9],
    )


class MemoryTaskStore(TaskStore):
    """The same contract in memory (unit tests). ``fail_saves`` makes every
    later save fail, as a lost database would."""

    def __init__(self) -> None:
        self.rows: dict[str, Task] = {}
        self.progress: int | None = None
        self.saves = 0
        self.fail_saves = False
        self.schedules: dict[str, Schedule] = {}
        self.pruned = 0

    async def load_schedules(self) -> list[Schedule]:
        return [s.snapshot() for s in self.schedules.values()]

    async def save_schedule(self, schedule: Schedule) -> None:
        self.schedules[schedule.schedule_id] = schedule.snapshot()

    async def delete_schedule(self, schedule_id: str) -> None:
        self.schedules.pop(schedule_id, None)

    async def insert(self, task: Task) -> None:
        if task.idempotency_key and any(t.idempotency_key == task.idempotency_key for t in self.rows.values()):
            raise AlreadyExists(f"idempotency key {task.idempotency_key!r} is taken")
        self.rows[task.task_id] = task.snapshot()

    def save(self, task: Task) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail_saves:
            future.set_exception(Unavailable("the database is gone"))
        else:
            self.rows[task.task_id] = task.snapshot()
            self.saves += 1
            future.set_result(None)
        return future

    async def load_active(self) -> list[Task]:
        active = [t.snapshot() for t in self.rows.values() if t.state in (TaskState.QUEUED, TaskState.RUNNING)]
        return sorted(active, key=lambda t: (-t.priority, t.seq))

    async def counters(self) -> Counters:
        rows = self.rows.values()
        return Counters(
            max((t.seq for t in rows), default=0),
            max((t.fencing_token for t in rows), default=0),
            max((t.revision for t in rows), default=0),
        )

    async def lifecycle_position(self) -> int | None:
        return self.progress

    def save_lifecycle_position(self, position: int) -> asyncio.Future[None]:
        self.progress = max(self.progress or 0, position)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def changes_after(self, after: int, watch: WatchFilter, limit: int) -> list[Task]:
        changed = sorted(
            (t for t in self.rows.values() if t.revision > after and watch.wants(t)), key=lambda t: t.revision
        )
        return [t.snapshot() for t in changed[:limit]]

    async def get(self, task_id: str) -> Task | None:
        task = self.rows.get(task_id)
        return task.snapshot() if task else None

    async def find_by_idempotency_key(self, key: str) -> Task | None:
        return next((t.snapshot() for t in self.rows.values() if t.idempotency_key == key), None)

    async def list_tasks(self, state: TaskState, task_type: str, limit: int, before_seq: int | None) -> list[Task]:
        tasks = [
            t.snapshot()
            for t in sorted(self.rows.values(), key=lambda t: -t.seq)
            if (state is TaskState.UNSPECIFIED or t.state is state)
            and (not task_type or t.task_type == task_type)
            and (before_seq is None or t.seq < before_seq)
        ]
        return tasks[:limit]

    async def expired(self, now: datetime, limit: int) -> list[tuple[str, TaskState, int]]:
        due = sorted(
            (t for t in self.rows.values() if (at := t.expires_at) is not None and at < now),
            key=lambda t: t.expires_at or now,
        )
        return [(t.task_id, t.state, t.revision) for t in due[:limit]]

    async def delete_tasks(self, task_ids: list[str], revision: int) -> None:
        for task_id in task_ids:
            if task_id in self.rows and self.rows[task_id].expires_at is not None:
                del self.rows[task_id]
        self.pruned = max(self.pruned, revision)

    async def pruned_through(self) -> int:
        return self.pruned

    async def finished(self, matching: RerunFilter, limit: int) -> list[Task]:
        found = [t.snapshot() for t in sorted(self.rows.values(), key=lambda t: t.seq) if matching.matches(t)]
        return found[:limit]
