"""The StoreKeeper servicer: converts protobuf ↔ core and delegates to
:class:`~gridmesh.storekeeper.service.ResultService`. Errors are mapped to
status codes by the server's interceptor."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc
from google.api import httpbody_pb2
from grpc import aio

from gridmesh.core.errors import GridmeshError
from gridmesh.core.results import StoredResult
from gridmesh.grpc_support.convert import to_timestamp
from gridmesh.grpc_support.errors import status_code
from gridmesh.storekeeper.service import ResultService
from gridmesh.v1 import storekeeper_pb2, storekeeper_pb2_grpc

log = logging.getLogger(__name__)


class StoreKeeperServicer(storekeeper_pb2_grpc.StoreKeeperServicer):
    def __init__(self, service: ResultService) -> None:
        self._service = service

    async def StoreResult(
        self, request: storekeeper_pb2.StoreResultRequest, context: aio.ServicerContext
    ) -> storekeeper_pb2.StoreResultResponse:
        stored = await self._service.store(request.task_id, request.result_dir, request.content, request.content_type)
        return storekeeper_pb2.StoreResultResponse(path=stored.path, size_bytes=stored.size_bytes, sha256=stored.sha256)

    async def StoreResults(
        self, request_iterator: AsyncIterator[storekeeper_pb2.StoreResultRequest], context: aio.ServicerContext
    ) -> AsyncIterator[storekeeper_pb2.StoreResultsResponse]:
        answers: asyncio.Queue[storekeeper_pb2.StoreResultsResponse | None] = asyncio.Queue()
        stores: set[asyncio.Task[None]] = set()

        async def store(request: storekeeper_pb2.StoreResultRequest) -> None:
            try:
                stored = await self._service.store(
                    request.task_id, request.result_dir, request.content, request.content_type
                )
                answers.put_nowait(
                    storekeeper_pb2.StoreResultsResponse(
                        task_id=request.task_id,
                        stored=storekeeper_pb2.StoreResultResponse(
                            path=stored.path, size_bytes=stored.size_bytes, sha256=stored.sha256
                        ),
                    )
                )
            except Exception as e:  # answered either way: the worker must not be left waiting
                if isinstance(e, GridmeshError):
                    code, message = status_code(e), e.message
                else:  # a bug: the worker retries
                    log.exception("storing the result of %s failed", request.task_id)
                    code, message = grpc.StatusCode.INTERNAL, "the StoreKeeper failed to store it (see its log)"
                answers.put_nowait(
                    storekeeper_pb2.StoreResultsResponse(task_id=request.task_id, code=code.value[0], error=message)
                )

        async def read() -> None:
            async for request in request_iterator:
                job = asyncio.create_task(store(request))
                stores.add(job)
                job.add_done_callback(stores.discard)
            if stores:
                await asyncio.wait(stores)
            answers.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (answer := await answers.get()) is not None:
                yield answer
            reader.result()
        finally:
            reader.cancel()

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
