"""SPEC §3 "Workers pull": a worker node against a scripted Scheduler and
StoreKeeper (real gRPC on localhost, real task processes): work it did not
ask for is handed back, and the node goes on pulling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from google.protobuf import struct_pb2
from grpc import aio

from gridmesh.core.lifecycle import MemoryLifecycleLog
from gridmesh.v1 import (
    common_pb2,
    scheduler_pb2,
    scheduler_pb2_grpc,
    storekeeper_pb2,
    storekeeper_pb2_grpc,
)
from gridmesh.worker.node import NodeSettings, WorkerNode
from gridmesh.worker.pool import ProcessPool

TIMEOUT_S = 30


def assignment(token: int, ms: int) -> scheduler_pb2.TaskAssignment:
    params = struct_pb2.Struct()
    params.update({"ms": ms})
    task = common_pb2.Task(task_id=f"00000000-0000-4000-8000-{token:012d}", task_type="sleep", params=params, attempt=1)
    task.result_dir = "out"
    return scheduler_pb2.TaskAssignment(task=task, fencing_token=token)


class ScriptedScheduler(scheduler_pb2_grpc.WorkQueueServicer):
    """Answers registration and heartbeats; on the pull stream, sends what a
    test puts in ``to_send`` and collects credit and reports."""

    def __init__(self) -> None:
        self.to_send: asyncio.Queue[scheduler_pb2.PullTasksResponse] = asyncio.Queue()
        self.reports: asyncio.Queue[scheduler_pb2.ReportTaskRequest] = asyncio.Queue()
        self.credit: asyncio.Queue[int] = asyncio.Queue()

    async def RegisterWorker(self, request, context):
        return scheduler_pb2.RegisterWorkerResponse(lease_ttl_ms=10_000, heartbeat_interval_ms=1_000)

    async def Heartbeat(self, request, context):
        return scheduler_pb2.HeartbeatResponse()

    async def DeregisterWorker(self, request, context):
        return scheduler_pb2.DeregisterWorkerResponse()

    async def PullTasks(
        self, request_iterator: AsyncIterator[scheduler_pb2.PullTasksRequest], context
    ) -> AsyncIterator[scheduler_pb2.PullTasksResponse]:
        async def read() -> None:
            async for message in request_iterator:
                if message.credit:
                    self.credit.put_nowait(message.credit)
                for report in message.reports:
                    self.reports.put_nowait(report)
                    ack = scheduler_pb2.ReportResult(task_id=report.task_id, fencing_token=report.fencing_token)
                    self.to_send.put_nowait(scheduler_pb2.PullTasksResponse(report_results=[ack]))

        reader = asyncio.create_task(read())
        try:
            while True:
                yield await self.to_send.get()
        finally:
            reader.cancel()


class AcceptingStoreKeeper(storekeeper_pb2_grpc.StoreKeeperServicer):
    """Takes every result, and its completion, as the Scheduler would (the
    completion lands among the Scheduler's reports, with its lease)."""

    def __init__(self, reports: asyncio.Queue[scheduler_pb2.ReportTaskRequest]) -> None:
        self.reports = reports

    async def StoreResults(self, request_iterator, context):
        async for message in request_iterator:
            answers = []
            for request in message.results:
                assert request.worker_id == "w-test"
                stored = storekeeper_pb2.StoreResultResponse(path=f"out/{request.task_id}.json", sha256="0" * 64)
                self.reports.put_nowait(
                    scheduler_pb2.ReportTaskRequest(
                        task_id=request.task_id,
                        fencing_token=request.fencing_token,
                        success=scheduler_pb2.TaskSuccess(),
                    )
                )
                answers.append(
                    storekeeper_pb2.StoreResultAnswer(
                        task_id=request.task_id, fencing_token=request.fencing_token, stored=stored
                    )
                )
            yield storekeeper_pb2.StoreResultsResponse(answers=answers)


async def scenario() -> list[tuple[int, str]]:
    scheduler = ScriptedScheduler()
    server = aio.server()
    scheduler_pb2_grpc.add_WorkQueueServicer_to_server(scheduler, server)
    storekeeper_pb2_grpc.add_StoreKeeperServicer_to_server(AcceptingStoreKeeper(scheduler.reports), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    settings = NodeSettings(
        worker_id="w-test",
        address="127.0.0.1:1",
        slots=1,
        task_types=["sleep"],
        scheduler_addresses=[f"127.0.0.1:{port}"],
        storekeeper_address=f"127.0.0.1:{port}",
    )
    pool = ProcessPool(1)
    node = WorkerNode(settings, pool, MemoryLifecycleLog())
    reports: list[tuple[int, str]] = []

    async def next_report() -> None:
        report = await asyncio.wait_for(scheduler.reports.get(), TIMEOUT_S)
        reports.append((report.fencing_token, report.WhichOneof("outcome") or ""))
        if report.HasField("crash"):
            assert "w-test had no free slot" in report.crash.reason

    try:
        await node.start()
        assert await asyncio.wait_for(scheduler.credit.get(), TIMEOUT_S) == 1  # one free slot
        # Two assignments for one slot (a Scheduler's slip): the second is handed back at once.
        too_many = scheduler_pb2.PullTasksResponse(assignments=[assignment(1, 300), assignment(2, 10)])
        scheduler.to_send.put_nowait(too_many)
        await next_report()
        await next_report()
        # The node still pulls: its slot's credit comes back and the next task runs.
        assert await asyncio.wait_for(scheduler.credit.get(), TIMEOUT_S) == 1
        scheduler.to_send.put_nowait(scheduler_pb2.PullTasksResponse(assignments=[assignment(3, 10)]))
        await next_report()
    finally:
        await node.close()
        pool.close()
        await server.stop(None)
    return reports


def test_work_beyond_the_free_slots_is_handed_back_and_the_node_keeps_pulling():
    assert asyncio.run(scenario()) == [(2, "crash"), (1, "success"), (3, "success")]
