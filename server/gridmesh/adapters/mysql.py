"""MySQL / MariaDB adapter (pymysql). The only module that imports pymysql.

Concurrency model (one choice for every process): pymysql is blocking, so it
never runs on the event loop. Writes go through a :class:`GroupCommitter`,
one thread with its own connections that runs every pending unit of work of
the moment in one transaction and commits once (group commit), then resolves
each caller's future (callers on an event loop: all of a group's futures in
one hop to the loop). Reads use :meth:`MySQL.read` on a small thread pool,
one connection per thread.

pymysql's exceptions stop here: they become :class:`Unavailable` (server
unreachable, lost connection — retried with backoff where it is safe),
:class:`AlreadyExists` (a duplicate key), :class:`Internal` (anything else
the server refused: a bug, or a value a column cannot hold; it fails only the
unit of work at fault) or propagate as the domain errors a unit of work
raises itself.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import pymysql
import pymysql.cursors

from gridmesh.common.backoff import Backoff
from gridmesh.common.errors import AlreadyExists, GridmeshError, Internal, Unavailable
from gridmesh.config import MySQLLogin

log = logging.getLogger(__name__)

T = TypeVar("T")
Cursor = pymysql.cursors.Cursor


@dataclass(frozen=True)
class Row:
    """One ``INSERT ... VALUES (...)`` (optionally ``ON DUPLICATE KEY UPDATE``)
    with its values. All rows of one statement in a group are sent as one
    multi-row statement, at the place of the first of them: one round trip
    for the lot. So a row may run before units queued ahead of it — use
    rows where that is harmless (an insert, then upserts of the same row).
    Rows of one statement keep their order."""

    sql: str
    args: tuple[Any, ...]


Work = Callable[[Cursor], Any] | Row
Waiter = Future[Any] | asyncio.Future[Any]
"""Where a unit's outcome goes: see :meth:`GroupCommitter.submit_async`."""

CONNECT_TIMEOUT_S = 5
MAX_RETRIES = 5
RETRY = Backoff(initial_s=0.2, max_s=3.2)
"""The pauses between the tries of a read or a group commit that lost MySQL."""
MAX_GROUP = 2000
"""Units of work committed together at most."""
READ_THREADS = 4
MIGRATION_LOCK_TIMEOUT_S = 60

_CONNECTION_ERRORS = (pymysql.err.OperationalError, pymysql.err.InterfaceError, ConnectionError, OSError)
# OperationalError codes after which the work may be retried: the connection
# is gone (server gone away, lost connection, killed, shutdown, can't
# connect) or the transaction was rolled back by a deadlock or lock timeout.
# Any other OperationalError (e.g. 1054 unknown column) is a bug in the SQL.
_RETRYABLE_ERRNOS = frozenset({1040, 1053, 1205, 1213, 1927, 2002, 2003, 2006, 2013, 2014, 2055, 4031})


def _retryable(error: BaseException) -> bool:
    if isinstance(error, pymysql.err.OperationalError):
        return bool(error.args) and error.args[0] in _RETRYABLE_ERRNOS
    return isinstance(error, _CONNECTION_ERRORS)


def _refused(error: BaseException) -> Internal:
    """A non-retryable server error as the domain's :class:`Internal` (logged here)."""
    log.error("MySQL refused a statement: %r", error)
    return Internal(f"MySQL refused the statement: {error.args[-1] if error.args else error}")


def _one_row(sql: str, args: tuple[Any, ...]) -> Callable[[Cursor], None]:
    def work(cur: Cursor) -> None:
        cur.execute(sql, args)

    return work


def _discard(conn: pymysql.Connection[Cursor] | None) -> None:
    """Close a connection given up on, so the server ends its transaction."""
    if conn is not None:
        try:
            conn.close()
        except Exception:
            log.debug("closing a broken MySQL connection failed", exc_info=True)


class MySQL:
    """Connections to one database of one MySQL server."""

    def __init__(self, login: MySQLLogin, database: str) -> None:
        self._config = login
        self.database = database
        self._local = threading.local()
        self._readers = ThreadPoolExecutor(READ_THREADS, thread_name_prefix=f"mysql-read-{database}")

    def connect(self, database: str | None = None, *, autocommit: bool = False) -> pymysql.Connection[Cursor]:
        try:
            return pymysql.connect(
                host=self._config.host,
                port=self._config.port,
                user=self._config.user,
                password=self._config.password,
                database=database,
                autocommit=autocommit,
                connect_timeout=CONNECT_TIMEOUT_S,
                charset="utf8mb4",
            )
        except _CONNECTION_ERRORS as e:
            raise Unavailable(
                f"MySQL at {self._config.host}:{self._config.port} is unreachable or refused the login: {e}"
            ) from None

    def ensure_schema(self, migrations: Sequence[str]) -> None:
        """Create the database if needed and apply the migrations not applied
        yet, in order (statement i is schema version i + 1)."""
        with self.connect() as conn, conn.cursor() as cur:
            # Two processes of one service (a Scheduler and its standby) may start together.
            cur.execute("SELECT GET_LOCK(%s, %s)", (f"gridmesh-migrate-{self.database}", MIGRATION_LOCK_TIMEOUT_S))
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{self.database}` CHARACTER SET utf8mb4")
            cur.execute(f"USE `{self.database}`")
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INT NOT NULL PRIMARY KEY)")
            cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            row = cur.fetchone()
            current = int(row[0]) if row else 0
            for version, statement in enumerate(migrations, start=1):
                if version <= current:
                    continue
                log.info("migrating %s to schema version %d", self.database, version)
                cur.execute(statement)
                cur.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
            conn.commit()

    def drop_database(self) -> None:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{self.database}`")

    # -- reads --------------------------------------------------------------

    def _reader_conn(self) -> pymysql.Connection[Cursor]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.connect(self.database)
        return conn

    def read_sync(self, work: Callable[[Cursor], T]) -> T:
        """Run ``work`` in a read transaction of its own on this thread's connection."""
        for attempt in range(MAX_RETRIES):
            try:
                conn = self._reader_conn()
                try:
                    with conn.cursor() as cur:
                        return work(cur)
                finally:
                    # End the read transaction: an open one would hold metadata
                    # locks that block migrations and DROP DATABASE elsewhere.
                    conn.rollback()
            except (pymysql.err.Error, *_CONNECTION_ERRORS) as e:
                if not _retryable(e):
                    raise _refused(e) from None
                _discard(self._local.conn)
                self._local.conn = None
                _backoff(attempt, e)
        raise Unavailable(f"MySQL database {self.database} is unreachable")

    def write_sync(self, work: Callable[[Cursor], T]) -> T:
        """Run ``work`` in a transaction of its own and commit it (for the
        occasional change, e.g. ``gridmesh keys``; services group theirs
        with :class:`GroupCommitter`)."""
        try:
            with self.connect(self.database) as conn, conn.cursor() as cur:
                result = work(cur)
                conn.commit()
                return result
        except (pymysql.err.Error, *_CONNECTION_ERRORS) as e:
            if _retryable(e):
                raise Unavailable(f"MySQL database {self.database} is unreachable: {e}") from None
            raise _refused(e) from None

    async def read(self, work: Callable[[Cursor], T]) -> T:
        """:meth:`read_sync` on the reader pool, awaited from the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._readers, self.read_sync, work)

    def close(self) -> None:
        self._readers.shutdown(wait=False, cancel_futures=True)


def _backoff(attempt: int, error: BaseException) -> None:
    pause = RETRY.pause_s(attempt)
    log.warning("MySQL error (%s); retry %d/%d in %.1f s", error, attempt + 1, MAX_RETRIES, pause)
    time.sleep(pause)


class GroupCommitter:
    """One writer thread; every unit of work submitted while the previous
    commit ran is committed together in the next transaction.

    A unit of work is a function of a cursor. It must be idempotent against a
    retry of the whole group after a lost connection (use upserts, or check
    before insert). A unit that raises a :class:`GridmeshError` (a duplicate
    key becomes :class:`AlreadyExists`) fails alone: the group is rolled back
    and the other units are committed one by one.

    A group made only of :class:`Row` s of one statement (the usual case: a
    service's inserts, or its upserts) is one multi-row statement, which is
    atomic by itself: it runs on a second connection in autocommit mode and
    commits in the same round trip, instead of a statement then ``COMMIT``.
    If the server refuses it, nothing was applied and the group takes the
    transactional path above to find the row at fault.
    """

    def __init__(self, db: MySQL) -> None:
        self._db = db
        self._queue: queue.SimpleQueue[tuple[Work, Waiter] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"mysql-commit-{db.database}", daemon=True)
        self._conns: dict[bool, pymysql.Connection[Cursor]] = {}
        """The writer's connections, by autocommit mode."""
        self._closed = False
        self.commits = 0
        self.units = 0
        self._thread.start()

    def submit(self, work: Work) -> Future[Any]:
        if self._closed:
            raise Unavailable("the MySQL writer is shut down")
        future: Future[Any] = Future()
        self._queue.put((work, future))
        return future

    def submit_async(self, work: Work) -> asyncio.Future[Any]:
        """:meth:`submit` for a caller on an event loop: the future belongs to
        the running loop. The writer settles all of one loop's futures of a
        committed group in a single ``call_soon_threadsafe`` — one wake-up of
        the loop per commit instead of one per unit (``asyncio.wrap_future``
        would also add a :class:`concurrent.futures.Future` and a chained
        callback per unit). Cancelling the future stops the wait, not the work."""
        if self._closed:
            raise Unavailable("the MySQL writer is shut down")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put((work, future))
        return future

    async def run(self, work: Work) -> Any:
        """Submit ``work`` and wait until it is committed (its result) or failed."""
        return await self.submit_async(work)

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                break
            group = [item]
            while len(group) < MAX_GROUP:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                group.append(nxt)
            try:
                self._commit(group)
            except Exception as e:  # a bug here must not stop every later commit
                log.exception("MySQL writer of %s: a group of %d failed", self._db.database, len(group))
                self._resolve(group, [(False, Internal(f"the write to MySQL failed: {e!r}"))])
        for conn in self._conns.values():
            conn.close()

    def _commit(self, group: list[tuple[Work, Waiter]]) -> None:
        outcomes = self._transaction(group)
        if outcomes is not None and all(ok for ok, _ in outcomes):
            self._resolve(group, outcomes)
            return
        if outcomes is not None and len(group) > 1:
            # A unit failed and the group was rolled back: commit the others
            # alone so that one bad unit fails only its own caller.
            for item in group:
                self._commit([item])
            return
        if outcomes is None:
            outcomes = [(False, Unavailable(f"MySQL database {self._db.database} is unreachable; nothing was saved"))]
        self._resolve(group, outcomes)

    def _connection(self, autocommit: bool) -> pymysql.Connection[Cursor]:
        conn = self._conns.get(autocommit)
        if conn is None:
            conn = self._conns[autocommit] = self._db.connect(self._db.database, autocommit=autocommit)
        return conn

    def _transaction(self, group: list[tuple[Work, Waiter]]) -> list[tuple[bool, Any]] | None:
        """Run the group in one transaction: commit if every unit succeeded,
        else roll back. None when MySQL stayed unreachable."""
        units = [work for work, _ in group]
        statement = _single_statement(units)
        for attempt in range(MAX_RETRIES):
            try:
                if statement is not None:
                    if self._autocommit_statement(*statement):
                        return [(True, None)] * len(units)
                    statement = None  # refused whole: find the row at fault in a transaction
                conn = self._connection(autocommit=False)
                with conn.cursor() as cur:
                    outcomes = self._apply(cur, units)
                if all(ok for ok, _ in outcomes):
                    conn.commit()
                    self.commits += 1
                    self.units += len(group)
                else:
                    conn.rollback()
                return outcomes
            except (pymysql.err.Error, *_CONNECTION_ERRORS, Unavailable) as e:
                self._reset()
                if not (isinstance(e, Unavailable) or _retryable(e)):
                    return [(False, _refused(e))] * len(units)
                _backoff(attempt, e)
        return None

    def _reset(self) -> None:
        """Drop the writer's connections (new ones are opened on demand)."""
        for conn in self._conns.values():
            _discard(conn)
        self._conns.clear()

    def _autocommit_statement(self, sql: str, rows: list[Row]) -> bool:
        """Run ``rows`` as one multi-row statement that commits itself. False
        if the server refused it: a statement is atomic, so nothing was applied."""
        try:
            with self._connection(autocommit=True).cursor() as cur:
                cur.executemany(sql, [row.args for row in rows])
        except Exception as e:
            if _retryable(e):
                raise  # the whole group is retried
            return False
        self.commits += 1
        self.units += len(rows)
        return True

    @classmethod
    def _apply(cls, cur: Cursor, units: list[Work]) -> list[tuple[bool, Any]]:
        """Run the units; rows of one statement go out as one statement, at the
        place of the first of them (see :class:`Row`)."""
        outcomes: list[tuple[bool, Any] | None] = [None] * len(units)
        rows: dict[str, list[int]] = {}
        order: list[str | int] = []
        for i, unit in enumerate(units):
            if isinstance(unit, Row):
                if unit.sql not in rows:
                    rows[unit.sql] = []
                    order.append(unit.sql)
                rows[unit.sql].append(i)
            else:
                order.append(i)
        for step in order:
            if isinstance(step, int):
                outcomes[step] = cls._unit(cur, units[step])  # type: ignore[arg-type]
                continue
            indexes = rows[step]
            results = cls._rows(cur, [units[i].args for i in indexes], step)  # type: ignore[union-attr]
            for i, result in zip(indexes, results, strict=True):
                outcomes[i] = result
        return [o for o in outcomes if o is not None]

    @staticmethod
    def _unit(cur: Cursor, work: Callable[[Cursor], Any]) -> tuple[bool, Any]:
        try:
            return True, work(cur)
        except pymysql.err.IntegrityError as e:
            return False, AlreadyExists(f"already stored: {e.args[-1]}")
        except GridmeshError as e:
            return False, e
        except Exception as e:
            if _retryable(e):
                raise  # the whole group is retried
            # A bug in the unit (bad SQL, a value the column refuses):
            # it fails alone; the writer thread must not die with it.
            return False, _refused(e)

    @classmethod
    def _rows(cls, cur: Cursor, rows: list[tuple[Any, ...]], sql: str) -> list[tuple[bool, Any]]:
        if len(rows) > 1:
            try:
                cur.executemany(sql, rows)  # one multi-row statement
                return [(True, None)] * len(rows)
            except pymysql.err.Error as e:
                if _retryable(e):
                    raise  # the whole group is retried
                # The statement was refused whole (a duplicate key, a value a
                # column cannot hold): find the row at fault, one at a time.
        return [cls._unit(cur, _one_row(sql, r)) for r in rows]

    @staticmethod
    def _resolve(group: list[tuple[Work, Waiter]], outcomes: list[tuple[bool, Any]]) -> None:
        if len(outcomes) == 1 and len(group) > 1:
            outcomes = outcomes * len(group)
        on_loops: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for (_, future), (ok, value) in zip(group, outcomes, strict=True):
            if isinstance(future, asyncio.Future):
                on_loops.setdefault(future.get_loop(), []).append((future, ok, value))
            else:
                _settle([(future, ok, value)])
        for loop, settled in on_loops.items():
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                log.debug("%d commits settled after their event loop closed", len(settled))


def _single_statement(units: list[Work]) -> tuple[str, list[Row]] | None:
    """The SQL and the rows if every unit is a :class:`Row` of that one statement."""
    rows = [unit for unit in units if isinstance(unit, Row)]
    if len(rows) < len(units) or any(row.sql != rows[0].sql for row in rows):
        return None
    return rows[0].sql, rows


def _settle(settled: Sequence[tuple[Waiter, bool, Any]]) -> None:
    """Resolve futures in commit order; asyncio ones on their own loop."""
    for future, ok, value in settled:
        if future.done():  # the caller cancelled its wait; the work is done all the same
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
