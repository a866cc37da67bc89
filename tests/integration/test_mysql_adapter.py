"""The MySQL adapter against the real server: migrations under a lock, group
commits that send rows of one statement together, and one bad unit failing
alone (STYLE: vendor errors stop in the adapter)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from gridmesh.adapters.mysql import GroupCommitter, MySQL, Row
from gridmesh.common.errors import AlreadyExists, Internal
from gridmesh.config import MySQLLogin

SCHEMA = ["CREATE TABLE items (id INT PRIMARY KEY, v VARCHAR(20) NOT NULL)"]
INSERT = "INSERT INTO items (id, v) VALUES (%s, %s)"
UPSERT = INSERT + " ON DUPLICATE KEY UPDATE v=VALUES(v)"


@pytest.fixture
def db(tests_mysql: MySQLLogin) -> Iterator[MySQL]:
    # the tests' account may use only databases named like gridmesh's own
    database = MySQL(tests_mysql, f"t{uuid.uuid4().hex[:10]}_gridmesh_adapter")
    database.ensure_schema(SCHEMA)
    try:
        yield database
    finally:
        database.drop_database()
        database.close()


@contextmanager
def busy_writer(db: MySQL) -> Iterator[tuple[GroupCommitter, Callable[[], None]]]:
    """A writer busy with a first unit until ``release()``: what is submitted
    meanwhile waits, and forms the next group."""
    writer = GroupCommitter(db)
    blocking = threading.Event()
    first = writer.submit(lambda cur: blocking.wait(10))

    def release() -> None:
        blocking.set()
        first.result(timeout=30)

    try:
        yield writer, release
    finally:
        blocking.set()
        writer.close()


def rows(db: MySQL) -> dict[int, str]:
    def work(cur):
        cur.execute("SELECT id, v FROM items ORDER BY id")
        return dict(cur.fetchall())

    return db.read_sync(work)


def test_schema_migrations_apply_once_and_in_order(db):
    db.ensure_schema([*SCHEMA, "ALTER TABLE items ADD COLUMN w INT NOT NULL DEFAULT 7"])
    db.ensure_schema([*SCHEMA, "ALTER TABLE items ADD COLUMN w INT NOT NULL DEFAULT 7"])  # no-op

    def versions(cur):
        cur.execute("SELECT version FROM schema_version ORDER BY version")
        return [r[0] for r in cur.fetchall()]

    assert db.read_sync(versions) == [1, 2]


def test_rows_queued_together_commit_together_and_keep_their_order(db):
    writer = GroupCommitter(db)
    try:
        futures = [writer.submit(Row(INSERT, (i, f"v{i}"))) for i in range(200)]
        futures += [writer.submit(Row(UPSERT, (i, f"w{i}"))) for i in range(0, 200, 2)]
        futures += [writer.submit(Row(UPSERT, (0, "last")))]
        for future in futures:
            future.result(timeout=30)
        assert writer.commits < len(futures)  # grouped: fewer commits than units
    finally:
        writer.close()
    stored = rows(db)
    assert len(stored) == 200
    assert stored[0] == "last" and stored[2] == "w2" and stored[3] == "v3"


def test_a_unit_that_fails_fails_alone(db):
    writer = GroupCommitter(db)

    async def scenario() -> list[object]:
        results = await asyncio.gather(
            asyncio.wrap_future(writer.submit(Row(INSERT, (1, "a")))),
            asyncio.wrap_future(writer.submit(Row(INSERT, (1, "duplicate")))),
            asyncio.wrap_future(writer.submit(Row(INSERT, (2, "b")))),
            asyncio.wrap_future(writer.submit(lambda cur: cur.execute("SELECT no_such_column FROM items"))),
            asyncio.wrap_future(writer.submit(Row(INSERT, (3, "c")))),
            return_exceptions=True,
        )
        return list(results)

    try:
        results = asyncio.run(scenario())
    finally:
        writer.close()
    assert isinstance(results[1], AlreadyExists)
    assert isinstance(results[3], Internal) and "no_such_column" in str(results[3])
    assert results[0] is None and results[2] is None and results[4] is None
    assert rows(db) == {1: "a", 2: "b", 3: "c"}


def test_a_value_the_column_refuses_fails_its_unit_alone_and_the_writer_goes_on(db):
    with busy_writer(db) as (writer, release):
        # Queued while the writer is busy: one group whose multi-row INSERT MySQL refuses whole.
        good = [writer.submit(Row(INSERT, (i, f"v{i}"))) for i in range(5)]
        too_long = writer.submit(Row(INSERT, (9, "x" * 100)))  # v is VARCHAR(20): strict mode refuses it
        also_good = writer.submit(Row(UPSERT, (1, "w1")))
        release()
        with pytest.raises(Internal, match="too long"):
            too_long.result(timeout=30)
        for future in [*good, also_good]:
            assert future.result(timeout=30) is None
        writer.submit(Row(INSERT, (10, "after"))).result(timeout=30)  # the writer thread lives on
    assert rows(db) == {0: "v0", 1: "w1", 2: "v2", 3: "v3", 4: "v4", 10: "after"}


def test_a_read_the_server_refuses_raises_internal_not_a_pymysql_error(db):
    with pytest.raises(Internal, match="no_such_column"):
        db.read_sync(lambda cur: cur.execute("SELECT no_such_column FROM items"))
    assert rows(db) == {}  # the reader's connection still works


def test_a_caller_that_stops_waiting_does_not_stop_the_writer(db):
    with busy_writer(db) as (writer, release):
        abandoned = writer.submit(Row(INSERT, (1, "a")))
        assert abandoned.cancel()  # the caller gave up before the group ran
        release()
        writer.submit(Row(INSERT, (2, "b"))).result(timeout=30)
    assert rows(db) == {1: "a", 2: "b"}


def test_a_group_of_one_statement_commits_in_one_round_trip_and_a_bad_row_still_fails_alone(db):
    with busy_writer(db) as (writer, release):
        # Queued while the writer is busy: the next group is one multi-row INSERT.
        futures = [writer.submit(Row(INSERT, (i, f"v{i}"))) for i in range(50)]
        duplicate = writer.submit(Row(INSERT, (7, "duplicate")))
        release()
        for future in futures:
            assert future.result(timeout=30) is None
        with pytest.raises(AlreadyExists):
            duplicate.result(timeout=30)
        commits = writer.commits
        writer.submit(Row(UPSERT, (7, "again"))).result(timeout=30)
        assert writer.commits == commits + 1
    stored = rows(db)
    assert len(stored) == 50 and stored[7] == "again" and stored[8] == "v8"


def test_callers_on_an_event_loop_get_their_commits_in_order(db):
    writer = GroupCommitter(db)

    async def scenario() -> list[int]:
        done: list[int] = []
        futures = [writer.submit_async(Row(INSERT, (i, f"v{i}"))) for i in range(100)]

        def record(i: int) -> Callable[[asyncio.Future[object]], None]:
            return lambda _: done.append(i)

        for i, future in enumerate(futures):
            future.add_done_callback(record(i))
        abandoned = writer.submit_async(Row(INSERT, (100, "x")))
        abandoned.cancel()  # stops the wait, not the work
        await asyncio.gather(*futures)
        await writer.run(Row(INSERT, (101, "y")))
        return done

    try:
        assert asyncio.run(scenario()) == list(range(100))
    finally:
        writer.close()
    assert len(rows(db)) == 102
