"""SPEC §3 "Life-cycle log and analytics", the MySQL half, against a real
MariaDB: the sink's idempotent upserts (a replayed micro-batch neither loses
nor double-counts), late and malformed records, a MySQL connection lost in
the middle of a batch, and ``GetStats`` reading the tables back.

The MySQL outage is simulated by killing the sink's connection (``KILL``)
while its batch waits on a row lock the test holds, i.e. in the middle of the
batch's transaction; the machine's MariaDB is shared and is not restarted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from typing import Any

import pymysql
import pytest

from gridmesh.adapters.mysql import MySQL
from gridmesh.analytics import LifecycleSink, Record, SinkSettings
from gridmesh.config import MySQLLogin
from gridmesh.core.stats import StatsQuery
from gridmesh.scheduler.stats import MySQLStatsReader
from tests.helpers import wait_for

T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
"""Start of a window; every event of a test happens within minutes of it."""
_offsets = itertools.count()


def rec(task: str, kind: str, ms: float, *, attempt: int = 1, worker: str = "w1", task_type: str = "noop") -> Record:
    us = int((T0 - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1) + ms * 1000)
    return Record(f"t.gridmesh.task.{kind}", 0, next(_offsets), True, "", task, task_type, worker, attempt, 2, kind, us)


def task(name: str, start_ms: float = 0, wait_ms: float = 100, run_ms: float = 200, **kw: Any) -> list[Record]:
    return [
        rec(name, "pending", start_ms, **kw),
        rec(name, "started", start_ms + wait_ms, **kw),
        rec(name, "completed", start_ms + wait_ms + run_ms, **kw),
    ]


def malformed() -> Record:
    return Record("t.gridmesh.task.started", 0, next(_offsets), False, "not a TaskLifecycleEvent (3 bytes)")


class Tables:
    """Direct reads of the analytics tables."""

    def __init__(self, login: MySQLLogin, database: str) -> None:
        self.conn = pymysql.connect(**dataclasses.asdict(login), database=database, autocommit=True)

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def windows(self) -> list[tuple[Any, ...]]:
        return self.rows(
            "SELECT window_start, task_type, pending, started, completed, failed, retried, queue_wait_count, "
            "queue_wait_mean_ms, queue_wait_max_ms, queue_wait_p50_ms, queue_wait_p95_ms, run_time_count, "
            "run_time_mean_ms, run_time_max_ms FROM task_stats ORDER BY 1, 2"
        )

    def workers(self) -> list[tuple[Any, ...]]:
        return self.rows("SELECT window_start, worker_id, completed, busy_ms FROM worker_stats ORDER BY 1, 2")

    def progress(self) -> tuple[int, int, int]:
        (row,) = self.rows("SELECT events, malformed, late FROM job_progress")
        return int(row[0]), int(row[1]), int(row[2])

    def snapshot(self) -> tuple[Any, ...]:
        events = self.rows(
            "SELECT task_id, attempt, kind, occurred_at, wait_ms, run_ms, busy_ms, busy_worker "
            "FROM lifecycle_events ORDER BY 1, 2, 3"
        )
        return (self.windows(), self.workers(), events, self.progress())


@pytest.fixture
def sink_db(tests_mysql: MySQLLogin) -> Iterator[tuple[LifecycleSink, Tables, MySQL]]:
    database = f"t{uuid.uuid4().hex[:10]}_gridmesh_analytics"
    db = MySQL(tests_mysql, database)
    sink = LifecycleSink(db, SinkSettings(window_s=60, lateness_s=600, retention_s=86_400))
    sink.setup()
    tables = Tables(tests_mysql, database)
    try:
        yield sink, tables, db
    finally:
        sink.close()
        tables.conn.close()
        MySQL(tests_mysql, database).drop_database()


def test_each_event_is_stored_once_and_its_window_holds_counts_waits_and_run_times(sink_db):
    sink, tables, _ = sink_db
    records = task("a", 0, 100, 200, worker="w1") + task("b", 1000, 300, 400, worker="w2")
    records += [rec("c", "pending", 2000), rec("c", "started", 2050), rec("c", "failed", 2100)]
    records += [rec("e", "pending", 3000, task_type="echo")]
    outcome = sink.apply([*records, malformed()], batch_id=0, query_id="q1")
    assert (outcome.stored, outcome.malformed, outcome.duplicates) == (10, 1, 0)
    w = T0.replace(tzinfo=None)
    assert tables.windows() == [
        (w, "echo", 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        # noop: 3 pending, 3 started, 2 completed, 1 failed; waits 100, 300, 50; runs 200, 400
        (w, "noop", 3, 3, 2, 1, 0, 3, 150.0, 300.0, 100.0, 280.0, 2, 300.0, 400.0),
    ]
    assert tables.workers() == [(w, "w1", 1, 250.0), (w, "w2", 1, 400.0)]  # w1: a (200) + c (50, failed)
    assert tables.progress() == (10, 1, 0)
    assert tables.rows("SELECT reason FROM rejected_records") == [("malformed",)]


def test_a_replayed_micro_batch_neither_loses_nor_double_counts(sink_db):
    sink, tables, _ = sink_db
    first, second = task("a") + task("b"), task("c", 30_000) + task("d", 90_000)
    sink.apply(first, batch_id=0, query_id="q1")
    sink.apply(second, batch_id=1, query_id="q1")
    expected = tables.snapshot()
    assert sum(row[4] for row in expected[0]) == 4  # completed

    # Spark re-runs batch 1 after a crash that came after the MySQL commit.
    assert sink.apply(second, batch_id=1, query_id="q1").skipped
    assert tables.snapshot() == expected
    # A fresh checkpoint (new query id, batch ids from 0) reads everything again.
    again = sink.apply(first + second, batch_id=0, query_id="q2")
    assert (again.skipped, again.stored, again.duplicates) == (False, 0, 12)
    assert tables.snapshot() == expected


def test_the_two_ends_of_a_wait_or_run_may_arrive_in_any_batch_and_order(sink_db):
    sink, tables, _ = sink_db
    a = task("a", 0, 100, 200)
    sink.apply([a[2]], batch_id=0, query_id="q")  # completed first
    sink.apply([a[1]], batch_id=1, query_id="q")  # then started
    sink.apply([a[0]], batch_id=2, query_id="q")  # pending last
    ((_, _, pending, started, completed, *_rest),) = tables.windows()
    assert (pending, started, completed) == (1, 1, 1)
    ((*_, wait_count, wait_mean, _, _, _, run_count, run_mean, _),) = tables.windows()
    assert (wait_count, wait_mean, run_count, run_mean) == (1, 100.0, 1, 200.0)


def test_a_retried_attempt_counts_its_retry_and_waits_from_it(sink_db):
    sink, tables, _ = sink_db
    records = [
        rec("a", "pending", 0),
        rec("a", "started", 10, worker="w1"),
        rec("a", "retried", 510, worker="w1"),
        rec("a", "started", 530, attempt=2, worker="w2"),
        rec("a", "completed", 1530, attempt=2, worker="w2"),
    ]
    sink.apply(records, batch_id=0, query_id="q")
    ((_, _, pending, started, completed, failed, retried, wait_n, wait_mean, wait_max, *_),) = tables.windows()
    assert (pending, started, completed, failed, retried) == (1, 2, 1, 0, 1)
    assert (wait_n, wait_mean, wait_max) == (2, 15.0, 20.0)
    assert [(w[1], w[2], w[3]) for w in tables.workers()] == [("w1", 0, 500.0), ("w2", 1, 1000.0)]


def test_an_event_behind_the_watermark_is_counted_as_late_and_changes_no_window(sink_db):
    sink, tables, _ = sink_db
    sink.apply(task("a", 0), batch_id=0, query_id="q")
    before = tables.windows()
    late = rec("old", "pending", -700_000)  # 700 s before the latest event; lateness is 600 s
    within = rec("recent", "pending", -500_000)
    outcome = sink.apply([late, within], batch_id=1, query_id="q")
    assert (outcome.late, outcome.stored) == (1, 1)
    assert tables.progress() == (4, 0, 1)
    assert tables.rows("SELECT reason FROM rejected_records") == [("late",)]
    assert [w for w in tables.windows() if w[0] == before[0][0]] == before
    assert len(tables.windows()) == 2  # the window of the in-bound late event


def test_a_mysql_connection_lost_during_a_batch_retries_the_batch_and_counts_stay_exact(sink_db, tests_mysql):
    sink, tables, db = sink_db
    sink.apply(task("a"), batch_id=0, query_id="q")
    window = T0.replace(tzinfo=None)
    locker = pymysql.connect(**dataclasses.asdict(tests_mysql), database=db.database)
    outcome: Future[Any] = Future()
    try:
        with locker.cursor() as cur:
            cur.execute("SELECT * FROM task_stats WHERE window_start = %s AND task_type = 'noop' FOR UPDATE", (window,))

        def run() -> None:
            try:
                outcome.set_result(sink.apply(task("b") + task("c"), batch_id=1, query_id="q"))
            except BaseException as e:
                outcome.set_exception(e)

        threading.Thread(target=run, daemon=True).start()
        # The batch has inserted its events and now waits for the locked stats row.
        blocked = wait_for(
            "the sink's batch to block on the locked row",
            lambda: tables.rows(
                "SELECT id FROM information_schema.PROCESSLIST WHERE db = %s AND info LIKE 'INSERT INTO task_stats%%'",
                db.database,
            ),
        )
        tables.rows(f"KILL CONNECTION {int(blocked[0][0])}")
    finally:
        locker.rollback()
        locker.close()
    result = outcome.result(timeout=60)
    assert result.stored == 6 and not result.skipped
    ((_, _, pending, started, completed, *_),) = tables.windows()
    assert (pending, started, completed) == (3, 3, 3)
    assert tables.progress() == (9, 0, 0)


def test_get_stats_reads_the_windows_the_job_stored(sink_db):
    sink, _, db = sink_db
    sink.apply(task("a", 0) + task("b", 61_000) + task("e", 0, task_type="echo"), batch_id=0, query_id="q")
    reader = MySQLStatsReader(db, db.database)

    def read(start: datetime, end: datetime, task_type: str = "") -> Any:
        return asyncio.run(reader.read(StatsQuery(start, end, task_type)))

    report = read(T0 - timedelta(hours=1), T0 + timedelta(hours=1))
    assert [(w.window.start, w.task_type, w.completed) for w in report.windows] == [
        (T0, "echo", 1),
        (T0, "noop", 1),
        (T0 + timedelta(minutes=1), "noop", 1),
    ]
    assert report.windows[1].run_time.mean_ms == 200.0
    assert report.progress.events == 9 and report.progress.last_batch_id == 0
    assert report.progress.watermark is not None
    only = read(T0 + timedelta(seconds=30), T0 + timedelta(seconds=61), "noop")
    assert [w.window.start for w in only.windows] == [T0, T0 + timedelta(minutes=1)]  # overlapping windows
    assert read(T0 + timedelta(hours=2), T0 + timedelta(hours=3)).windows == []


def test_get_stats_is_empty_before_the_job_made_its_tables(sink_db):
    _, _, db = sink_db
    reader = MySQLStatsReader(db, f"t{uuid.uuid4().hex[:10]}_gridmesh_analytics")  # no such database yet
    report = asyncio.run(reader.read(StatsQuery(T0 - timedelta(hours=1), T0 + timedelta(hours=1), "")))
    assert (report.windows, report.workers, report.progress.events) == ([], [], 0)
