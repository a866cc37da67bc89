"""The StoreKeeper's logic (SPEC §2 StoreKeeper, §3) on a real file store and
an in-memory index: store durably then index, read back in chunks, list in
pages, refuse bad input without touching anything."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gridmesh.adapters.filestore import FileStore
from gridmesh.common.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from gridmesh.core.results import Lease, StoredResult
from gridmesh.storekeeper.index import InMemoryResultIndex
from gridmesh.storekeeper.service import ResultService

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _clock() -> Callable[[], datetime]:
    ticks = itertools.count()
    return lambda: T0 + timedelta(milliseconds=next(ticks))


def _task() -> str:
    return str(uuid.uuid4())


class Harness:
    def __init__(self, root: Path, **kwargs) -> None:
        self.root = root
        self.index = InMemoryResultIndex()
        self.service = ResultService(
            FileStore(root), self.index, max_result_bytes=kwargs.pop("max_result_bytes", 1024), clock=_clock(), **kwargs
        )

    def files(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())

    async def read_all(self, task_id: str) -> tuple[str, list[bytes]]:
        stored, chunks = await self.service.read(task_id)
        return stored.content_type, [c async for c in chunks]


def run(root: Path, scenario, **kwargs):
    async def main():
        harness = Harness(root, **kwargs)
        try:
            return await scenario(harness)
        finally:
            await harness.service.close()

    return asyncio.run(main())


def test_a_stored_result_is_the_file_result_dir_task_id_json_and_its_index_entry(tmp_path):
    task = _task()

    async def scenario(h: Harness):
        stored = await h.service.store(task, "reports/2026", b'{"n": 1}')
        assert stored.path == f"reports/2026/{task}.json"
        assert (h.root / stored.path).read_bytes() == b'{"n": 1}'
        assert stored.size_bytes == 8
        assert stored.sha256 == hashlib.sha256(b'{"n": 1}').hexdigest()
        assert stored.content_type == "application/json"
        assert await h.service.info(task) == stored == h.index.entries[task]
        assert await h.read_all(task) == ("application/json", [b'{"n": 1}'])

    run(tmp_path, scenario)


def test_get_result_streams_in_chunks_of_at_most_chunk_bytes(tmp_path):
    task, content = _task(), os.urandom(10)

    async def scenario(h: Harness):
        await h.service.store(task, "d", content, "application/octet-stream")
        content_type, chunks = await h.read_all(task)
        assert content_type == "application/octet-stream"
        assert [len(c) for c in chunks] == [4, 4, 2]
        assert b"".join(chunks) == content

    run(tmp_path, scenario, chunk_bytes=4)


def test_storing_the_same_task_again_overwrites_it_idempotently(tmp_path):
    task = _task()

    async def scenario(h: Harness):
        first = await h.service.store(task, "d", b"one")
        again = await h.service.store(task, "d", b"one")
        assert (again.path, again.sha256) == (first.path, first.sha256)
        changed = await h.service.store(task, "d", b"two!")
        assert changed.sha256 == hashlib.sha256(b"two!").hexdigest()
        assert await h.service.info(task) == changed
        assert h.files() == [f"d/{task}.json"]
        assert len(h.index.entries) == 1

    run(tmp_path, scenario)


def test_concurrent_stores_of_one_task_leave_the_index_matching_the_file(tmp_path):
    task = _task()

    async def scenario(h: Harness):
        await asyncio.gather(*(h.service.store(task, "d", str(i).encode() * 50) for i in range(20)))
        stored = await h.service.info(task)
        on_disk = (h.root / stored.path).read_bytes()
        assert stored.sha256 == hashlib.sha256(on_disk).hexdigest()
        assert stored.size_bytes == len(on_disk)
        assert len(h.service._locks) == 0  # no lock left behind

    run(tmp_path, scenario)


@pytest.mark.parametrize(
    ("task_id", "result_dir", "content", "content_type", "error", "field"),
    [
        ("nope", "d", b"x", "", InvalidArgument, "task_id"),
        (None, "../d", b"x", "", InvalidArgument, "result_dir"),
        (None, "/abs", b"x", "", InvalidArgument, "result_dir"),
        (None, "", b"x", "", InvalidArgument, "result_dir"),
        (None, "d", b"x", "text", InvalidArgument, "content_type"),
        (None, "d", b"x" * 1025, "", ResourceExhausted, "content"),
    ],
)
def test_a_refused_store_writes_no_file_and_no_index_entry(
    tmp_path, task_id, result_dir, content, content_type, error, field
):
    async def scenario(h: Harness):
        with pytest.raises(error) as e:
            await h.service.store(task_id or _task(), result_dir, content, content_type)
        assert e.value.field == field
        assert h.files() == []
        assert h.index.entries == {}

    run(tmp_path, scenario)


def test_an_unknown_task_has_no_result(tmp_path):
    task = _task()

    async def scenario(h: Harness):
        for call in (h.service.info, h.service.read):
            with pytest.raises(NotFound) as e:
                await call(task)
            assert e.value.message == f"no result stored for task {task}"
        with pytest.raises(InvalidArgument):
            await h.service.info("not-a-uuid")

    run(tmp_path, scenario)


def test_a_result_whose_file_vanished_is_not_found_and_says_so(tmp_path):
    task = _task()

    async def scenario(h: Harness):
        stored = await h.service.store(task, "d", b"x")
        (h.root / stored.path).unlink()
        with pytest.raises(NotFound) as e:
            await h.service.read(task)
        assert "no longer there" in e.value.message

    run(tmp_path, scenario)


def test_an_expired_result_loses_its_file_and_says_it_expired_and_the_others_stay(tmp_path):
    gone, kept = _task(), _task()

    async def scenario(h: Harness):
        await h.service.store(gone, "d", b"xyz")
        await h.service.store(kept, "d", b"k")
        assert await h.service.expire([gone, _task()]) == (1, 3)  # an unknown task is skipped
        assert h.files() == [f"d/{kept}.json"]
        with pytest.raises(NotFound) as e:
            await h.service.info(gone)
        assert "expired" in e.value.message
        assert [r.task_id for r in (await h.service.list("d")).results] == [kept]
        assert await h.service.expire([gone]) == (0, 0)  # once only

    run(tmp_path, scenario)


def _open_fds_on(path: Path) -> int:
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # fds close while we look
            count += os.readlink(fd) == str(path)
    return count


def test_a_stream_abandoned_half_way_closes_its_file(tmp_path):
    task = _task()

    async def scenario(h: Harness):
        stored = await h.service.store(task, "d", b"x" * 100)
        _, chunks = await h.service.read(task)
        assert await anext(chunks) == b"xxxx"
        assert _open_fds_on(h.root / stored.path) == 1
        await chunks.aclose()
        assert _open_fds_on(h.root / stored.path) == 0

    run(tmp_path, scenario, chunk_bytes=4)


def test_list_results_pages_through_one_directory_or_all_oldest_first(tmp_path):
    async def scenario(h: Harness):
        in_a = [(await h.service.store(_task(), "a", b"x")).task_id for _ in range(5)]
        in_b = [(await h.service.store(_task(), "b", b"x")).task_id for _ in range(2)]

        async def collect(result_dir: str, page_size: int) -> tuple[list[str], int]:
            ids, token, pages = [], "", 0
            while True:
                page = await h.service.list(result_dir, page_size, token)
                ids += [r.task_id for r in page.results]
                pages += 1
                token = page.next_page_token
                if not token:
                    return ids, pages

        assert await collect("a", 2) == (in_a, 3)
        assert await collect("b", 0) == (in_b, 1)
        assert await collect("", 3) == (in_a + in_b, 3)
        assert await collect("nothing/here", 3) == ([], 1)

        first = await h.service.list("a", 2)
        with pytest.raises(InvalidArgument):
            await h.service.list("b", 2, first.next_page_token)
        with pytest.raises(InvalidArgument):
            await h.service.list("a", 2, "garbage")

    run(tmp_path, scenario)


# -- completions: a store carrying the worker's lease (SPEC §3) ------------------


class ScriptedScheduler:
    """:class:`~gridmesh.core.results.Completions` that takes the leases in
    ``current`` (task id → fencing token) and refuses every other, recording
    what it was asked."""

    def __init__(self) -> None:
        self.current: dict[str, int] = {}
        self.digests: dict[str, str] = {}
        """task id → sha256 the 'Scheduler' committed."""
        self.checks: list[tuple[str, int]] = []
        self.unreachable = False
        self.rows: dict[str, StoredResult] = {}
        """The task rows' results: what the 'Scheduler' committed."""
        self.hold_answers: asyncio.Event | None = None
        """While set and not set-yet: a report is committed but its answer is held up."""

    def _judge(self, task_id: str, lease: Lease) -> None:
        if self.unreachable:
            raise Unavailable("no answer from the Scheduler")
        if self.current.get(task_id) != lease.fencing_token:
            raise FailedPrecondition(f"lease {lease.fencing_token} of task {task_id} is no longer current")

    async def check(self, task_id: str, lease: Lease) -> None:
        self.checks.append((task_id, lease.fencing_token))
        self._judge(task_id, lease)

    async def report(self, result, lease: Lease) -> None:
        self._judge(result.task_id, lease)
        self.digests[result.task_id] = result.sha256
        self.rows[result.task_id] = result
        if self.hold_answers is not None:
            await self.hold_answers.wait()

    async def committed(self, task_id: str) -> StoredResult | None:
        return self.rows.get(task_id)


def _lease(token: int) -> Lease:
    return Lease(worker_id="w-1", fencing_token=token)


def test_a_completion_is_reported_with_the_file_durable_and_answers_at_once_from_memory(tmp_path):
    scheduler = ScriptedScheduler()
    task = _task()
    scheduler.current[task] = 7

    async def scenario(h: Harness):
        stored = await h.service.store(task, "out", b'{"a": 1}', lease=_lease(7))
        assert scheduler.digests == {task: hashlib.sha256(b'{"a": 1}').hexdigest()}
        assert (h.root / "out" / f"{task}.json").read_bytes() == b'{"a": 1}'
        assert await h.service.info(task) == stored  # from memory, or the index once it caught up
        assert [r.task_id for r in (await h.service.list("out")).results] == [task]
        assert h.index.entries[task] == stored  # listing waits for the index
        assert scheduler.checks == []  # nothing was there: no question asked first

    run(tmp_path, scenario, completions=scheduler)


def test_a_refused_completion_leaves_no_result_under_the_tasks_name(tmp_path):
    scheduler = ScriptedScheduler()
    task = _task()
    scheduler.current[task] = 8  # the lease moved on: 7 is stale

    async def scenario(h: Harness):
        with pytest.raises(FailedPrecondition, match="no longer current"):
            await h.service.store(task, "out", b'{"stale": true}', lease=_lease(7))
        assert h.files() == []
        assert h.index.entries == {}
        with pytest.raises(NotFound):
            await h.service.info(task)

    run(tmp_path, scenario, completions=scheduler)


def test_a_stale_completion_after_the_task_succeeded_keeps_the_committed_result(tmp_path):
    scheduler = ScriptedScheduler()
    task = _task()
    scheduler.current[task] = 8

    async def scenario(h: Harness):
        good = await h.service.store(task, "out", b'{"run": 2}', lease=_lease(8))
        with pytest.raises(FailedPrecondition):
            await h.service.store(task, "out", b'{"run": 1}', lease=_lease(7))
        assert scheduler.checks == [(task, 7)]  # asked before touching the file there
        assert (h.root / "out" / f"{task}.json").read_bytes() == b'{"run": 2}'
        assert h.files() == [f"out/{task}.json"]
        assert await h.service.info(task) == good

    run(tmp_path, scenario, completions=scheduler)


def test_a_completion_whose_answer_never_came_keeps_its_file_and_a_retry_settles_it(tmp_path):
    scheduler = ScriptedScheduler()
    task = _task()
    scheduler.current[task] = 3

    async def scenario(h: Harness):
        scheduler.unreachable = True
        with pytest.raises(Unavailable):
            await h.service.store(task, "out", b"{}", lease=_lease(3))
        assert h.files() == [f"out/{task}.json"]  # it may have been committed: never taken away
        scheduler.unreachable = False
        await h.service.store(task, "out", b"{}", lease=_lease(3))  # the worker's retry
        assert scheduler.checks == [(task, 3)]
        assert task in scheduler.digests

    run(tmp_path, scenario, completions=scheduler)


def test_a_lookup_while_the_schedulers_answer_is_under_way_waits_for_it(tmp_path):
    # The Scheduler commits and notifies the client before its answer
    # reaches the StoreKeeper: the client's GetResult must find the result.
    scheduler = ScriptedScheduler()
    task = _task()
    scheduler.current[task] = 5
    held = scheduler.hold_answers = asyncio.Event()

    async def scenario(h: Harness):
        storing = asyncio.create_task(h.service.store(task, "out", b'{"n": 1}', lease=_lease(5)))
        while task not in scheduler.digests:
            await asyncio.sleep(0.001)
        looking = asyncio.create_task(h.service.info(task))
        await asyncio.sleep(0.01)
        assert not looking.done()  # not a NOT_FOUND while the answer is on its way
        held.set()
        assert await looking == await storing

    run(tmp_path, scenario, completions=scheduler)


def test_a_committed_result_missing_from_the_index_is_found_from_its_task_row(tmp_path):
    # The StoreKeeper died after the Scheduler committed but before the
    # index entry was written: the task row still names the result.
    scheduler = ScriptedScheduler()
    task = _task()
    scheduler.current[task] = 2

    async def scenario(h: Harness):
        stored = await h.service.store(task, "out", b"[1, 2]", lease=_lease(2))
        await h.service.list()  # the entry reached the index
        h.index.entries.clear()  # as if it never had
        assert await h.service.info(task) == stored
        assert (await h.read_all(task))[1] == [b"[1, 2]"]
        await h.service.list()
        assert h.index.entries[task] == stored  # written back to the index
        with pytest.raises(NotFound):
            await h.service.info(_task())  # a task with no committed result still has none

    run(tmp_path, scenario, completions=scheduler)


def test_without_a_scheduler_a_completion_is_refused_and_writes_nothing(tmp_path):
    task = _task()

    async def scenario(h: Harness):
        with pytest.raises(FailedPrecondition, match="knows no Scheduler"):
            await h.service.store(task, "out", b"{}", lease=_lease(1))
        assert h.files() == []

    run(tmp_path, scenario)
