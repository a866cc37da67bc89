"""The StoreKeeper servicer: converts protobuf ↔ core and delegates to
:class:`~gridmesh.storekeeper.service.ResultService`. Errors are mapped to
status codes by the server's interceptor."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import grpc
from google.api import httpbody_pb2
from grpc import aio

from gridmesh.common.convert import from_timestamp, to_timestamp
from gridmesh.common.errors import GridmeshError
from gridmesh.core.results import Lease, StoredResult
from gridmesh.grpc_support.errors import status_code
from gridmesh.grpc_support.streams import answer_each
from gridmesh.storekeeper.service import ResultService
from gridmesh.v1 import storekeeper_pb2, storekeeper_pb2_grpc

log = logging.getLogger(__name__)


class StoreKeeperServicer(storekeeper_pb2_grpc.StoreKeeperServicer):
    def __init__(self, service: ResultService) -> None:
        self._service = service

    async def StoreResult(
        self, request: storekeeper_pb2.StoreResultRequest, context: aio.ServicerContext
    ) -> storekeeper_pb2.StoreResultResponse:
        stored = await self._service.store(
            request.task_id, request.result_dir, request.content, request.content_type, _lease(request)
        )
        return _stored(stored)

    async def StoreResults(
        self, request_iterator: AsyncIterator[storekeeper_pb2.StoreResultsRequest], context: aio.ServicerContext
    ) -> AsyncIterator[storekeeper_pb2.StoreResultsResponse]:
        async for response in answer_each(
            request_iterator,
            lambda message: message.results,
            self._answer,
            lambda answers: storekeeper_pb2.StoreResultsResponse(answers=answers),
        ):
            yield response

    async def _answer(self, request: storekeeper_pb2.StoreResultRequest) -> storekeeper_pb2.StoreResultAnswer:
        """One store of a stream, answered whatever happens: the worker must not be left waiting."""
        answer = storekeeper_pb2.StoreResultAnswer(task_id=request.task_id, fencing_token=request.fencing_token)
        try:
            stored = await self._service.store(
                request.task_id, request.result_dir, request.content, request.content_type, _lease(request)
            )
            answer.stored.CopyFrom(_stored(stored))
        except GridmeshError as e:
            answer.code, answer.error = status_code(e).value[0], e.message
        except Exception:  # a bug: the worker retries
            log.exception("storing the result of %s failed", request.task_id)
            answer.code = grpc.StatusCode.INTERNAL.value[0]
            answer.error = "the StoreKeeper failed to store it (see its log)"
        return answer

    async def GetResult(
        self, request: storekeeper_pb2.GetResultRequest, context: aio.ServicerContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        stored, chunks = await self._service.read(request.task_id)
        sent = False
        async with contextlib.aclosing(chunks):  # the file closes even if the client goes away
            async for chunk in chunks:
                sent = True
                yield httpbody_pb2.HttpBody(content_type=stored.content_type, data=chunk)
        if not sent:  # an empty result still says what it is
            yield httpbody_pb2.HttpBody(content_type=stored.content_type)

    async def GetResultInfo(
        self, request: storekeeper_pb2.GetResultInfoRequest, context: aio.ServicerContext
    ) -> storekeeper_pb2.ResultInfo:
        return result_info(await self._service.info(request.task_id))

    async def ListResults(
        self, request: storekeeper_pb2.ListResultsRequest, context: aio.ServicerContext
    ) -> storekeeper_pb2.ListResultsResponse:
        page = await self._service.list(request.result_dir, request.page_size, request.page_token)
        return storekeeper_pb2.ListResultsResponse(
            results=[result_info(r) for r in page.results], next_page_token=page.next_page_token
        )

    async def ExpireResults(
        self, request: storekeeper_pb2.ExpireResultsRequest, context: aio.ServicerContext
    ) -> storekeeper_pb2.ExpireResultsResponse:
        deleted, freed = await self._service.expire(list(request.task_ids))
        return storekeeper_pb2.ExpireResultsResponse(deleted=deleted, freed_bytes=freed)


def _lease(request: storekeeper_pb2.StoreResultRequest) -> Lease | None:
    """The worker's lease the request carries, if any (a fencing token names one)."""
    if not request.fencing_token:
        return None
    started_at = from_timestamp(request.started_at) if request.HasField("started_at") else None
    return Lease(
        worker_id=request.worker_id,
        fencing_token=request.fencing_token,
        started_at=started_at,
        trace_parent=request.traceparent,
    )


def _stored(stored: StoredResult) -> storekeeper_pb2.StoreResultResponse:
    return storekeeper_pb2.StoreResultResponse(path=stored.path, size_bytes=stored.size_bytes, sha256=stored.sha256)


def result_info(stored: StoredResult) -> storekeeper_pb2.ResultInfo:
    return storekeeper_pb2.ResultInfo(
        task_id=stored.task_id,
        result_dir=stored.result_dir,
        path=stored.path,
        size_bytes=stored.size_bytes,
        sha256=stored.sha256,
        content_type=stored.content_type,
        stored_at=to_timestamp(stored.stored_at),
    )
