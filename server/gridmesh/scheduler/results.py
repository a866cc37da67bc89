"""The leading Scheduler's link to the StoreKeeper for retention: expired
tasks' results are deleted there (``StoreKeeper.ExpireResults``) before the
tasks' rows. gRPC errors stop here, as gridmesh errors."""

from __future__ import annotations

from grpc import aio

from gridmesh.core.access import PeerRole
from gridmesh.grpc_support.errors import error_of
from gridmesh.grpc_support.server import channel_options
from gridmesh.grpc_support.tls import MeshTls, aio_channel
from gridmesh.v1 import storekeeper_pb2, storekeeper_pb2_grpc

EXPIRE_TIMEOUT_S = 60.0


class StoreKeeperResults:
    """:class:`~gridmesh.core.scheduler.ResultCleaner` over gRPC."""

    def __init__(self, address: str, tls: MeshTls | None) -> None:
        self._channel = aio_channel(address, tls, PeerRole.STOREKEEPER, channel_options())
        self._stub = storekeeper_pb2_grpc.StoreKeeperStub(self._channel)

    async def expire_results(self, task_ids: list[str]) -> tuple[int, int]:
        request = storekeeper_pb2.ExpireResultsRequest(task_ids=task_ids)
        try:
            response = await self._stub.ExpireResults(request, timeout=EXPIRE_TIMEOUT_S)
        except aio.AioRpcError as e:
            raise error_of(e.code().value[0], f"the StoreKeeper: {e.details()}") from None
        return response.deleted, response.freed_bytes

    async def close(self) -> None:
        await self._channel.close()
