"""The StoreKeeper's logic: store a result durably, then index it, or
complete a task with it; find, stream and list stored results. No gRPC here;
the servicer converts.

A plain store is made durable in this order: the file (atomic, fsync'ed, see
:class:`~gridmesh.adapters.filestore.FileStore`), then its index entry
(committed). A store that fails half-way leaves at most a complete file
without an entry, which the caller's retry overwrites.

A completion (a store carrying the worker's lease, SPEC §3) is made durable
as: the file, then the Scheduler's commit of the task's success with the
file's path, size and digest (:class:`~gridmesh.core.results.Completions`).
The task row is then the record of the result; the index entry follows
off the latency path (until it is committed, this process answers from
memory; a lookup made while the report is under way waits for its outcome,
and one the index cannot answer asks the Scheduler for the task row, so a
result whose entry a crash or a lost answer kept out of the index is still
found). A completion the Scheduler refuses leaves no result under the
task's name: its file is removed again. So that removing it can never take
away a result that was committed before, a file already there is replaced
only after the Scheduler confirmed the lease is current.

Stores of the same task are serialised in this process, so the recorded size
and digest are always those of the file on disk; one StoreKeeper process owns
a storage root.

File I/O runs on this service's own small thread pool, never on the event
loop; reading a result holds one chunk in memory at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import ParamSpec, TypeVar

from gridmesh.adapters.filestore import FileStore
from gridmesh.common.errors import AlreadyExists, FailedPrecondition, GridmeshError, NotFound
from gridmesh.core.results import (
    CHUNK_BYTES,
    Completions,
    Lease,
    ResultPage,
    StoredResult,
    StoreRequest,
    check_list_query,
    check_store_request,
    check_task_id,
    page_of,
    result_filename,
)
from gridmesh.observability import metrics, tracing
from gridmesh.storekeeper.index import ResultIndex

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

IO_THREADS = 8
"""File operations of this process running at once, at most."""


def utc_now() -> datetime:
    return datetime.now(UTC)


class ResultService:
    """Stores and serves task results (SPEC §2 StoreKeeper, §3)."""

    def __init__(
        self,
        files: FileStore,
        index: ResultIndex,
        completions: Completions | None = None,
        *,
        max_result_bytes: int,
        clock: Callable[[], datetime] = utc_now,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self._files = files
        self._index = index
        self._completions = completions
        self._unindexed: dict[str, tuple[StoredResult, asyncio.Future[None]]] = {}
        """Completed results whose index entry is not committed yet."""
        self._reporting: dict[str, asyncio.Event] = {}
        """Tasks whose completion the Scheduler is deciding on (set once it has)."""
        self._max_result_bytes = max_result_bytes
        self._clock = clock
        self._chunk_bytes = chunk_bytes
        self._io = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="storekeeper-io")
        self._locks = _KeyedLocks()

    async def store(
        self, task_id: str, result_dir: str, content: bytes, content_type: str = "", lease: Lease | None = None
    ) -> StoredResult:
        """Write ``<root>/<result_dir>/<task_id>.json`` atomically and durably,
        then index it (or, with the worker's ``lease``, complete the task with
        it); storing the same task again replaces both.

        Raises :class:`InvalidArgument` for a bad id, directory or content
        type and :class:`ResourceExhausted` above ``max_result_bytes``;
        nothing is written then. With a lease, :class:`FailedPrecondition` if
        the Scheduler refused it (no result is left under the task's name)
        and :class:`Unavailable` if its answer never came (the file stays;
        storing it again settles it). (A task's result_dir never changes, so
        a store again goes to the same file; were it stored under another
        directory, the entry would move and the earlier file stay.)
        """
        request = check_store_request(task_id, result_dir, content, content_type, max_bytes=self._max_result_bytes)
        async with self._locks.hold(request.task_id):
            if lease is None:
                result = await self._write(request)
                await self._index.put(result)
            else:
                with tracing.span(
                    "store result",
                    parent=lease.trace_parent,
                    kind=tracing.SpanKind.SERVER,
                    attributes={"gridmesh.task_id": request.task_id, "gridmesh.size_bytes": len(request.content)},
                ):
                    result = await self._complete(request, lease)
        log.debug("stored %s (%d bytes, sha256 %s)", result.path, result.size_bytes, result.sha256)
        return result

    async def _write(self, request: StoreRequest, *, replace: bool = True) -> StoredResult:
        began = time.monotonic()
        try:
            path, size, sha256 = await self._run(
                self._files.write_atomic,
                request.result_dir,
                result_filename(request.task_id),
                request.content,
                replace=replace,
            )
        except AlreadyExists:
            raise  # not a failure: a file is there, and the caller decides
        except GridmeshError as e:
            metrics.RESULT_ERRORS.labels(type(e).__name__).inc()
            raise
        metrics.RESULT_WRITE.observe(time.monotonic() - began)
        metrics.RESULT_BYTES.inc(size)
        return StoredResult(
            task_id=request.task_id,
            result_dir=request.result_dir,
            path=path,
            size_bytes=size,
            sha256=sha256,
            content_type=request.content_type,
            stored_at=self._clock(),
        )

    async def _complete(self, request: StoreRequest, lease: Lease) -> StoredResult:
        if self._completions is None:
            raise FailedPrecondition("this StoreKeeper reports no completions (it knows no Scheduler)")
        try:
            result = await self._write(request, replace=False)
        except AlreadyExists:
            # A file is there: maybe the task's committed result (this is a
            # stale lease), maybe what an earlier completion left. Only a
            # current lease may replace it.
            await self._completions.check(request.task_id, lease)
            result = await self._write(request)
        # The Scheduler may send the task's notice before its answer reaches
        # us: a lookup of the task meanwhile waits for that answer.
        reported = self._reporting[request.task_id] = asyncio.Event()
        try:
            await self._completions.report(result, lease)
            self._index_later(result)
        except FailedPrecondition:
            await self._run(self._files.remove, result.path)
            raise
        finally:
            del self._reporting[request.task_id]
            reported.set()
        return result

    def _index_later(self, result: StoredResult) -> None:
        """Index ``result`` off the latency path; until then :meth:`info` answers from memory."""
        put = asyncio.ensure_future(self._index.put(result))
        self._unindexed[result.task_id] = (result, put)

        def indexed(future: asyncio.Future[None]) -> None:
            if self._unindexed.get(result.task_id, (None, None))[1] is future:
                del self._unindexed[result.task_id]
            if not future.cancelled() and future.exception() is not None:
                log.error("indexing the result of %s failed: %s", result.task_id, future.exception())

        put.add_done_callback(indexed)

    async def info(self, task_id: str) -> StoredResult:
        """The index entry of the task's result; :class:`NotFound` if none."""
        task_id = check_task_id(task_id)
        reporting = self._reporting.get(task_id)
        if reporting is not None:
            await reporting.wait()
        pending = self._unindexed.get(task_id)
        if pending is not None:
            return pending[0]
        found = await self._index.get(task_id)
        if found is None and self._completions is not None:
            found = await self._completions.committed(task_id)
            if found is not None:  # committed, but its entry never made it here
                self._index_later(found)
        if found is None:
            raise NotFound(f"no result stored for task {task_id}", field="task_id")
        if found.expired_at is not None:
            raise NotFound(
                f"the result of task {task_id} expired: retention deleted it at {found.expired_at.isoformat()} "
                "(its result_ttl had passed)",
                field="task_id",
            )
        return found

    async def expire(self, task_ids: list[str]) -> tuple[int, int]:
        """Retention: delete the files of these tasks' results and mark their
        entries expired; (results deleted, bytes freed). Unknown ids are skipped."""
        found = [r for task_id in task_ids if (r := await self._index.get(check_task_id(task_id))) is not None]
        expiring = [r for r in found if r.expired_at is None]
        # The entries first: from then on GetResult says the result expired (never "the file is gone").
        await self._index.expire([r.task_id for r in expiring], datetime.now(UTC))
        for result in expiring:
            try:
                await self._run(self._files.remove, result.path)
            except NotFound:
                pass  # already gone
            except GridmeshError as e:  # left behind, said so; its entry says expired all the same
                log.warning("retention could not remove %s: %s", result.path, e)
        return len(expiring), sum(r.size_bytes for r in expiring)

    async def read(self, task_id: str) -> tuple[StoredResult, AsyncGenerator[bytes, None]]:
        """The entry and the stored bytes, in chunks of at most ``chunk_bytes``
        (one in memory at a time). Errors (unknown task, file gone) are raised
        here, before the first chunk; ``aclose()`` the chunks to stop early."""
        result = await self.info(task_id)
        try:
            chunks = await self._run(self._files.open_chunks, result.path, self._chunk_bytes)
        except NotFound:
            raise NotFound(
                f"the result of task {result.task_id} was stored at {result.path} but the file is no longer there",
                field="task_id",
            ) from None
        return result, self._stream(chunks)

    async def list(self, result_dir: str = "", page_size: int = 0, page_token: str = "") -> ResultPage:
        """One page of stored results ordered by directory, then oldest
        first; only ``result_dir``'s if given."""
        query = check_list_query(result_dir, page_size, page_token)
        await self._settle_index()
        rows = await self._index.list(query.result_dir, query.after, query.page_size + 1)
        return page_of(rows, query)

    async def close(self) -> None:
        """Let file operations under way finish; refuse new ones. Idempotent.
        (The index is the caller's to close; what was still to index is
        handed to it first.)"""
        await self._settle_index()
        await asyncio.to_thread(self._io.shutdown, wait=True, cancel_futures=True)

    # -- helpers ------------------------------------------------------------

    async def _settle_index(self) -> None:
        """Wait until every completed result so far is in the index."""
        if self._unindexed:
            await asyncio.wait([put for _, put in self._unindexed.values()])

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.wrap_future(self._io.submit(fn, *args, **kwargs))

    async def _stream(self, chunks: Generator[bytes, None, None]) -> AsyncGenerator[bytes, None]:
        pending: Future[bytes | None] | None = None
        try:
            while True:
                pending = self._io.submit(next, chunks, None)
                chunk = await asyncio.wrap_future(pending)
                pending = None
                if chunk is None:
                    return
                yield chunk
        finally:
            # Abandoned mid-read (client gone): the generator may still be
            # running on its thread, so close it (and its file) once it is done.
            if pending is None:
                chunks.close()
            else:
                pending.add_done_callback(lambda _: chunks.close())


class _KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


__all__ = ["IO_THREADS", "ResultService", "utc_now"]
