"""The StoreKeeper's link to the Scheduler: completions go out on one
long-lived ``WorkQueue.ReportCompletions`` stream, batched, and each waits
for its answer. gRPC errors stop here: a refused lease is
:class:`FailedPrecondition`, an answer that never came :class:`Unavailable`.

The stream follows the leader: when it breaks (the Scheduler stopped, or it
is a standby), the next Scheduler address is tried, and the completions
still waiting are sent again there. Sending one twice is harmless: the
Scheduler recognises a report it already took.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

import grpc
from grpc import aio

from gridmesh.common.convert import from_timestamp, to_timestamp
from gridmesh.common.errors import Unavailable
from gridmesh.core.access import PeerRole
from gridmesh.core.results import DEFAULT_CONTENT_TYPE, Lease, StoredResult
from gridmesh.grpc_support.errors import error_of
from gridmesh.grpc_support.server import channel_options
from gridmesh.grpc_support.streams import RequestStream
from gridmesh.grpc_support.tls import MeshTls, aio_channel
from gridmesh.observability import tracing
from gridmesh.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc

log = logging.getLogger(__name__)

REPORT_DEADLINE_S = 8.0
"""How long a completion is retried before the StoreKeeper answers the
worker UNAVAILABLE (the worker then stores it again later)."""
ANSWER_TIMEOUT_S = 5.0
RETRY_S = 0.1

_Key = tuple[bool, str, int]
"""(check?, task id, fencing token): what an answer is matched by."""


class SchedulerCompletions:
    """:class:`~gridmesh.core.results.Completions` over gRPC."""

    def __init__(self, scheduler_addresses: list[str], tls: MeshTls | None) -> None:
        self._addresses = scheduler_addresses
        self._channels = [
            aio_channel(a, tls, PeerRole.SCHEDULER, options=channel_options()) for a in scheduler_addresses
        ]
        self._current = 0
        self._opened = False
        self._answered = False
        self._stream: RequestStream[
            _Key,
            tuple[bool, scheduler_pb2.ReportTaskRequest],
            tuple[bool, scheduler_pb2.ReportResult],
            scheduler_pb2.ReportCompletionsRequest,
            scheduler_pb2.ReportCompletionsResponse,
        ] = RequestStream(
            self._open,
            item_key=lambda item: (item[0], item[1].task_id, item[1].fencing_token),
            answer_key=lambda answer: (answer[0], answer[1].task_id, answer[1].fencing_token),
            pack=_pack,
            unpack=_unpack,
            what="the Scheduler",
        )

    def _open(
        self,
    ) -> aio.StreamStreamCall[scheduler_pb2.ReportCompletionsRequest, scheduler_pb2.ReportCompletionsResponse]:
        """A new stream: to the next Scheduler if the last one never answered
        (it is down, or a standby)."""
        if self._opened and not self._answered:
            self._current = (self._current + 1) % len(self._channels)
            log.info("sending completions to the Scheduler at %s", self._addresses[self._current])
        self._opened, self._answered = True, False
        return scheduler_pb2_grpc.WorkQueueStub(self._channels[self._current]).ReportCompletions()

    async def check(self, task_id: str, lease: Lease) -> None:
        request = scheduler_pb2.ReportTaskRequest(
            worker_id=lease.worker_id, task_id=task_id, fencing_token=lease.fencing_token
        )
        await self._call(True, request)

    async def report(self, result: StoredResult, lease: Lease) -> None:
        request = scheduler_pb2.ReportTaskRequest(
            worker_id=lease.worker_id,
            task_id=result.task_id,
            fencing_token=lease.fencing_token,
            success=scheduler_pb2.TaskSuccess(
                result_path=result.path, result_size_bytes=result.size_bytes, result_sha256=result.sha256
            ),
            traceparent=tracing.current(),
        )
        started_at = to_timestamp(lease.started_at)
        if started_at is not None:
            request.started_at.CopyFrom(started_at)
        await self._call(False, request)

    async def committed(self, task_id: str) -> StoredResult | None:
        """Asks each Scheduler in turn (a standby answers UNAVAILABLE)."""
        request = scheduler_pb2.GetTaskRequest(task_id=task_id)
        last = ""
        for offset in range(len(self._channels)):
            channel = self._channels[(self._current + offset) % len(self._channels)]
            try:
                task = await scheduler_pb2_grpc.SchedulerStub(channel).GetTask(request, timeout=ANSWER_TIMEOUT_S)
            except aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    return None
                last = e.details() or e.code().name
                continue
            if task.state != common_pb2.SUCCEEDED or not task.result_path:
                return None
            return StoredResult(
                task_id=task.task_id,
                result_dir=task.result_dir,
                path=task.result_path,
                size_bytes=task.result_size_bytes,
                sha256=task.result_sha256,
                content_type=DEFAULT_CONTENT_TYPE,
                stored_at=from_timestamp(task.finished_at) if task.HasField("finished_at") else datetime.now(UTC),
            )
        raise Unavailable(f"no Scheduler answered about the result of task {task_id}: {last}")

    async def _call(self, check: bool, request: scheduler_pb2.ReportTaskRequest) -> None:
        deadline = time.monotonic() + REPORT_DEADLINE_S
        while True:
            sent_to = self._current
            try:
                _, answer = await self._stream.call((check, request), ANSWER_TIMEOUT_S)
            except aio.AioRpcError as e:  # the stream broke (or is silent): send it again, maybe elsewhere
                if time.monotonic() >= deadline:
                    raise Unavailable(
                        f"no answer from the Scheduler about task {request.task_id}: {e.details()}"
                    ) from None
                await asyncio.sleep(RETRY_S)
                continue
            if answer.code == grpc.StatusCode.OK.value[0]:
                self._answered = True
                return
            if answer.code == grpc.StatusCode.UNAVAILABLE.value[0] and time.monotonic() < deadline:
                # This Scheduler stepped down: a new stream, to the next one
                # (not to it again, however much it answered before) — unless
                # another completion's answer has moved the stream already.
                if sent_to == self._current:
                    self._answered = False
                    self._stream.close()
                await asyncio.sleep(RETRY_S)
                continue
            self._answered = True
            raise error_of(answer.code, answer.message)

    async def close(self) -> None:
        self._stream.close()
        for channel in self._channels:
            await channel.close()


def _pack(items: list[tuple[bool, scheduler_pb2.ReportTaskRequest]]) -> scheduler_pb2.ReportCompletionsRequest:
    return scheduler_pb2.ReportCompletionsRequest(
        reports=[request for check, request in items if not check],
        checks=[request for check, request in items if check],
    )


def _unpack(message: scheduler_pb2.ReportCompletionsResponse) -> list[tuple[bool, scheduler_pb2.ReportResult]]:
    return [*((False, r) for r in message.results), *((True, c) for c in message.checks)]


__all__ = ["SchedulerCompletions"]
