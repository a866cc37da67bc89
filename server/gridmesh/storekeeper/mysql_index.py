"""The result index in MySQL: table ``results`` of the StoreKeeper's own
database. Writes go through the :class:`GroupCommitter` (one transaction for
every store of the moment), reads through :meth:`MySQL.read`; neither runs on
the event loop.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from gridmesh.adapters.mysql import Cursor, GroupCommitter, MySQL, Row
from gridmesh.config import MySQLLogin
from gridmesh.core.results import ResultKey, StoredResult

# Statement i is schema version i + 1; append, never edit. Names and paths are
# ASCII (see gridmesh.common.names) and compared byte-wise, as on the file system and in
# the page-token order.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE results (
        task_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
        result_dir VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
        path VARCHAR(300) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
        size_bytes BIGINT NOT NULL,
        sha256 CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
        content_type VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
        stored_at DATETIME(6) NOT NULL,
        PRIMARY KEY (task_id),
        KEY results_by_dir (result_dir, stored_at, task_id)
    ) ENGINE=InnoDB
    """,
    # Retention: the file is deleted, the entry stays to say so.
    "ALTER TABLE results ADD COLUMN expired_at DATETIME(6) NULL",
)

_COLUMNS = "task_id, result_dir, path, size_bytes, sha256, content_type, stored_at, expired_at"
_UPSERT = f"""
    INSERT INTO results ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, NULL)
    ON DUPLICATE KEY UPDATE
        result_dir = VALUES(result_dir), path = VALUES(path), size_bytes = VALUES(size_bytes),
        sha256 = VALUES(sha256), content_type = VALUES(content_type), stored_at = VALUES(stored_at)
"""
_ORDER = "ORDER BY result_dir, stored_at, task_id LIMIT %s"
_AFTER_IN_DIR = "(stored_at > %s OR (stored_at = %s AND task_id > %s))"


class MySQLResultIndex:
    """:class:`~gridmesh.storekeeper.index.ResultIndex` on MySQL / MariaDB."""

    def __init__(self, db: MySQL, writer: GroupCommitter) -> None:
        self._db = db
        self._writer = writer
        self._closed = False

    @classmethod
    def open(cls, login: MySQLLogin, database: str) -> MySQLResultIndex:
        """Connect, create or migrate the schema, start the writer. Blocks:
        call it at start-up, before the server takes requests."""
        db = MySQL(login, database)
        try:
            db.ensure_schema(MIGRATIONS)
        except BaseException:
            db.close()
            raise
        return cls(db, GroupCommitter(db))

    async def get(self, task_id: str) -> StoredResult | None:
        def work(cur: Cursor) -> StoredResult | None:
            cur.execute(f"SELECT {_COLUMNS} FROM results WHERE task_id = %s", (task_id,))
            row = cur.fetchone()
            return _result(row) if row else None

        return await self._db.read(work)

    async def put(self, result: StoredResult) -> None:
        params = (
            result.task_id,
            result.result_dir,
            result.path,
            result.size_bytes,
            result.sha256,
            result.content_type,
            _naive_utc(result.stored_at),
        )
        await self._writer.submit_async(Row(_UPSERT, params))

    async def expire(self, task_ids: list[str], at: datetime) -> None:
        if not task_ids:
            return
        marks = ", ".join(["%s"] * len(task_ids))

        def work(cur: Cursor) -> None:
            cur.execute(f"UPDATE results SET expired_at=%s WHERE task_id IN ({marks})", (_naive_utc(at), *task_ids))

        await self._writer.submit_async(work)

    async def list(self, result_dir: str, after: ResultKey | None, limit: int) -> list[StoredResult]:
        where: list[str] = ["expired_at IS NULL"]
        params: list[Any] = []
        if result_dir:
            where.append("result_dir = %s")
            params.append(result_dir)
        if after is not None:
            at = _naive_utc(after.stored_at)
            if result_dir:
                where.append(_AFTER_IN_DIR)
            else:
                where.append(f"(result_dir > %s OR (result_dir = %s AND {_AFTER_IN_DIR}))")
                params += [after.result_dir, after.result_dir]
            params += [at, at, after.task_id]
        sql = f"SELECT {_COLUMNS} FROM results {'WHERE ' + ' AND '.join(where) if where else ''} {_ORDER}"
        params.append(limit)

        def work(cur: Cursor) -> list[StoredResult]:
            cur.execute(sql, params)
            return [_result(row) for row in cur.fetchall()]

        return await self._db.read(work)

    async def close(self) -> None:
        """Commit what is queued, stop the writer, release the readers. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._writer.close)
        self._db.close()


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def _result(row: tuple[Any, ...]) -> StoredResult:
    task_id, result_dir, path, size_bytes, sha256, content_type, stored_at, expired_at = row
    return StoredResult(
        task_id=task_id,
        result_dir=result_dir,
        path=path,
        size_bytes=int(size_bytes),
        sha256=sha256,
        content_type=content_type,
        stored_at=stored_at.replace(tzinfo=UTC),
        expired_at=expired_at.replace(tzinfo=UTC) if expired_at is not None else None,
    )


__all__ = ["MIGRATIONS", "MySQLResultIndex"]
