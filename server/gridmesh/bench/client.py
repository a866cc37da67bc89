"""The bench's client of a mesh: generated ``grpc.aio`` stubs on one channel
(to the edge, or straight to the Scheduler), as a user's program would talk.

:class:`Completions` is one ``WatchTasks(terminal_only)`` stream opened before
the first submit: it notes when each task's completion notice arrived, so
throughput runs need no call per task to learn that it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio

from gridmesh import clients
from gridmesh.clients._coalesce import AsyncCoalescer
from gridmesh.clients.tasks import MAX_BATCH
from gridmesh.config import API_KEY_VAR
from gridmesh.core.access import PeerRole
from gridmesh.grpc_support.tls import MeshTls, aio_channel
from gridmesh.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc

RPC_TIMEOUT_S = 30.0
"""Deadline of each unary call."""
IN_FLIGHT = 32
"""Submits in flight at once in throughput runs (the peers' raw gRPC reference uses 32)."""
CHANNEL_OPTIONS = [("grpc.keepalive_time_ms", 20_000), ("grpc.keepalive_timeout_ms", 10_000)]
TERMINAL = frozenset({common_pb2.SUCCEEDED, common_pb2.FAILED, common_pb2.CANCELLED})


class BenchError(Exception):
    """A run could not be measured (the mesh refused or lost something)."""


@dataclass(frozen=True)
class Notice:
    """A task's completion notice as the client received it."""

    state: int
    at: float
    """``time.perf_counter()`` when it arrived."""
    error: str


class Completions:
    """Completion notices of every task, from one ``WatchTasks(terminal_only)`` stream.

    Use in rounds: :meth:`expect` each task id as its submit answers (the
    notice may already have arrived), :meth:`seal` once all are submitted,
    then :meth:`wait`; :meth:`begin` starts the next round.
    """

    def __init__(self, stub: scheduler_pb2_grpc.SchedulerStub) -> None:
        self.seen: dict[str, Notice] = {}
        self.done = 0
        """Notices received for ids expected in this round."""
        self._pending: set[str] = set()
        self._sealed = False
        self._all = asyncio.Event()
        self._error: BaseException | None = None
        self._call = stub.WatchTasks(scheduler_pb2.WatchTasksRequest(terminal_only=True), metadata=key_metadata())
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for event in self._call:
                task = event.task
                if task.task_id in self.seen:
                    continue
                self.seen[task.task_id] = Notice(task.state, time.perf_counter(), task.error)
                if task.task_id in self._pending:
                    self._pending.discard(task.task_id)
                    self.done += 1
                    if self._sealed and not self._pending:
                        self._all.set()
            self._error = BenchError("the WatchTasks stream ended")
        except aio.AioRpcError as e:
            self._error = BenchError(f"the WatchTasks stream broke: {e.code().name}: {e.details()}")
        except asyncio.CancelledError:
            self._error = BenchError("the WatchTasks stream was closed")
            raise
        finally:
            self._all.set()

    def begin(self) -> None:
        self._pending, self._sealed, self.done = set(), False, 0
        self._all.clear()

    def expect(self, task_id: str) -> None:
        if task_id in self.seen:
            self.done += 1
        else:
            self._pending.add(task_id)

    def seal(self) -> None:
        self._sealed = True
        if not self._pending:
            self._all.set()

    async def wait(self, timeout: float) -> None:
        """Until every expected task's notice is in; :class:`BenchError` on a
        broken stream or after ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._all.wait(), timeout)
        except TimeoutError:
            raise BenchError(f"{len(self._pending)} completion notices missing after {timeout:.0f} s") from None
        if self._pending and self._error is not None:
            raise self._error

    async def close(self) -> None:
        self._call.cancel()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, BenchError):
            await self._reader


def key_metadata() -> tuple[tuple[str, str], ...]:
    """The API key the bench presents at the edge (``$GRIDMESH_API_KEY``,
    which ``gridmesh bench`` sets from the local admin's key)."""
    return clients.key_metadata(os.environ.get(API_KEY_VAR))


class BenchClient:
    """One channel and the Scheduler stub on it."""

    def __init__(self, target: str, *, tls: MeshTls | None = None, edge_ca: str | None = None) -> None:
        """``tls``: the admin certificate, when ``target`` is the Scheduler
        itself; else ``target`` is the edge, reached over TLS trusting
        ``edge_ca`` (plaintext without)."""
        self.target = target
        if tls is not None:
            self.channel = aio_channel(target, tls, PeerRole.SCHEDULER, CHANNEL_OPTIONS)
        elif edge_ca is not None:
            self.channel = aio.secure_channel(target, clients.edge_credentials(edge_ca), options=CHANNEL_OPTIONS)
        else:
            self.channel = aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        self.scheduler = scheduler_pb2_grpc.SchedulerStub(self.channel)
        # Concurrent submits share SubmitTasks calls, as the client library's do.
        self._submits: AsyncCoalescer[scheduler_pb2.SubmitTaskRequest, str] = AsyncCoalescer(
            self._send_submits, MAX_BATCH
        )

    async def close(self) -> None:
        await self.channel.close()

    def completions(self) -> Completions:
        return Completions(self.scheduler)

    async def submit(self, request: scheduler_pb2.SubmitTaskRequest) -> str:
        """The task id; a lone submit is one ``SubmitTask``, concurrent ones go
        together as ``SubmitTasks`` (each still answered once committed)."""
        return await self._submits.call(request)

    async def _send_submits(self, requests: Sequence[scheduler_pb2.SubmitTaskRequest]) -> list[str | BaseException]:
        try:
            if len(requests) == 1:
                return [
                    str(
                        (
                            await self.scheduler.SubmitTask(requests[0], timeout=RPC_TIMEOUT_S, metadata=key_metadata())
                        ).task_id
                    )
                ]
            batch = scheduler_pb2.SubmitTasksRequest(requests=requests)
            response = await self.scheduler.SubmitTasks(batch, timeout=RPC_TIMEOUT_S, metadata=key_metadata())
        except aio.AioRpcError as e:
            raise BenchError(f"SubmitTask failed: {e.code().name}: {e.details()}") from None
        return [
            str(r.task.task_id) if r.HasField("task") else BenchError(f"SubmitTasks refused a task: {r.error.message}")
            for r in response.results
        ]

    async def submit_all(
        self,
        requests: Iterable[scheduler_pb2.SubmitTaskRequest],
        on_submitted: Callable[[int, str], None],
        in_flight: int = IN_FLIGHT,
    ) -> None:
        """Submit every request with up to ``in_flight`` calls outstanding;
        ``on_submitted(index, task_id)`` as each is answered. After a failed
        submit no new one starts, the outstanding ones are waited for (not
        abandoned), then the first error is raised."""
        pending = enumerate(requests)
        failed: list[BaseException] = []

        async def lane() -> None:
            for index, request in pending:  # the lanes share one iterator
                if failed:
                    return
                try:
                    on_submitted(index, await self.submit(request))
                except Exception as e:
                    failed.append(e)
                    return

        await asyncio.gather(*(lane() for _ in range(in_flight)))
        if failed:
            raise failed[0]

    async def wait(self, task_id: str, timeout: float = RPC_TIMEOUT_S) -> common_pb2.Task:
        """The task once it has ended, by ``WatchTask``."""
        call = self.scheduler.WatchTask(
            scheduler_pb2.WatchTaskRequest(task_id=task_id), timeout=timeout, metadata=key_metadata()
        )
        try:
            async for event in call:
                if event.task.state in TERMINAL:
                    return event.task
        except aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise BenchError(f"task {task_id} did not end within {timeout:.0f} s") from None
            raise BenchError(f"WatchTask failed: {e.code().name}: {e.details()}") from None
        finally:
            call.cancel()
        raise BenchError(f"the watch of task {task_id} ended before the task did")

    async def task_types(self) -> list[str]:
        response = await self.scheduler.ListTaskTypes(
            scheduler_pb2.ListTaskTypesRequest(), timeout=RPC_TIMEOUT_S, metadata=key_metadata()
        )
        return [t.name for t in response.task_types]

    async def workers(self) -> list[scheduler_pb2.WorkerInfo]:
        response = await self.scheduler.ListWorkers(
            scheduler_pb2.ListWorkersRequest(), timeout=RPC_TIMEOUT_S, metadata=key_metadata()
        )
        return list(response.workers)


def submit_request(task_type: str, params: dict[str, Any], result_dir: str) -> scheduler_pb2.SubmitTaskRequest:
    request = scheduler_pb2.SubmitTaskRequest(task_type=task_type, result_dir=result_dir)
    request.params.update(params)
    return request
