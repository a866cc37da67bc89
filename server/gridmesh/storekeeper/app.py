"""Composition root of the StoreKeeper process: a file store under the
storage root, a MySQL result index and the completion stream to the
Scheduler wired into the result service, served over gRPC. Shutdown (after
the server stopped): file operations under way finish, then the index
commits what is queued and closes, then the completion stream."""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import time

from gridmesh.adapters.filestore import FileStore
from gridmesh.config import MeshConfig
from gridmesh.core.access import PeerRole
from gridmesh.grpc_support.server import (
    GrpcHost,
    build_grpc_server,
    export_metrics,
    run_process,
    serve_until_signal,
)
from gridmesh.grpc_support.tls import MeshTls
from gridmesh.observability import metrics
from gridmesh.storekeeper.completions import SchedulerCompletions
from gridmesh.storekeeper.index import ResultIndex
from gridmesh.storekeeper.mysql_index import MySQLResultIndex
from gridmesh.storekeeper.service import ResultService
from gridmesh.storekeeper.servicer import StoreKeeperServicer
from gridmesh.v1 import storekeeper_pb2, storekeeper_pb2_grpc

log = logging.getLogger(__name__)

SERVICES = (storekeeper_pb2.DESCRIPTOR.services_by_name["StoreKeeper"].full_name,)

MESSAGE_OVERHEAD_BYTES = 1024 * 1024
"""Room for the other fields of a StoreResult request above the content limit."""


def build_server(config: MeshConfig, *, index: ResultIndex | None = None) -> GrpcHost:
    """The StoreKeeper, bound but not started. Without ``index``, opens the
    MySQL index of ``config.database("storekeeper")`` (creating or migrating
    its schema: this blocks; :func:`serve` does it on a thread)."""
    if index is None:
        index = MySQLResultIndex.open(config.mysql_login("storekeeper"), config.database("storekeeper"))
    tls = MeshTls.load(config, PeerRole.STOREKEEPER)
    completions = SchedulerCompletions(config.scheduler_addresses, tls)
    service = ResultService(
        FileStore(config.storage_root), index, completions, max_result_bytes=config.storekeeper.max_result_bytes
    )
    servicer = StoreKeeperServicer(service)
    host = build_grpc_server(
        f"{config.storekeeper.host}:{config.storekeeper.port}",
        [lambda server: storekeeper_pb2_grpc.add_StoreKeeperServicer_to_server(servicer, server)],
        SERVICES,
        tls=tls,
        # Let results up to the configured limit in; the service answers
        # larger ones itself, naming the limit.
        options=[("grpc.max_receive_message_length", config.storekeeper.max_result_bytes + MESSAGE_OVERHEAD_BYTES)],
    )
    host.close_adapters += [service.close, index.close, completions.close]
    return host


async def serve(config: MeshConfig) -> None:
    # The temporary files of writes a killed StoreKeeper cut short: this
    # process owns the storage root, so none of them will be renamed now.
    started = time.time()
    removed = await asyncio.to_thread(FileStore(config.storage_root).remove_leftovers, started)
    if removed:
        log.info("removed %d temporary files of writes cut short", removed)
    # Connecting and migrating the schema block: off the event loop, like every MySQL call.
    index = await asyncio.to_thread(
        MySQLResultIndex.open, config.mysql_login("storekeeper"), config.database("storekeeper")
    )
    host = build_server(config, index=index)
    metrics.serve(metrics.STOREKEEPER)
    root = config.storage_root
    metrics.gauge_from(
        metrics.STORAGE_FREE, lambda: shutil.disk_usage(next(p for p in (root, *root.parents) if p.exists())).free
    )
    export_metrics(host, config, "storekeeper")
    await serve_until_signal(host)


def main(argv: list[str] | None = None) -> None:
    run_process(serve, "storekeeper")


if __name__ == "__main__":
    main(sys.argv[1:])
