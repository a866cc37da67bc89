"""Composition root of a worker node (``gridmesh worker start``).

The node's gRPC server (``gridmesh.v1.Worker``) and :class:`WorkerNode` run
on the asyncio loop; task processes are children of a forkserver; kazoo
(membership) and confluent-kafka (life-cycle events) use their own threads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
import time

from grpc import aio

from gridmesh.adapters import kafka
from gridmesh.adapters.kafka import KafkaLifecycleLog
from gridmesh.adapters.zookeeper import ZooKeeper
from gridmesh.common.convert import to_timestamp
from gridmesh.config import MeshConfig, load_config
from gridmesh.core.access import PeerRole
from gridmesh.core.tasktypes import default_registry
from gridmesh.grpc_support.server import (
    GrpcHost,
    build_grpc_server,
    export_metrics,
    serve_until_signal,
)
from gridmesh.grpc_support.tls import MeshTls
from gridmesh.observability import metrics, tracing
from gridmesh.observability.logs import configure_logging, set_log_context
from gridmesh.observability.metrics import MeteredLifecycleLog
from gridmesh.v1 import scheduler_pb2, worker_pb2, worker_pb2_grpc
from gridmesh.worker.node import NodeSettings, WorkerNode
from gridmesh.worker.pool import ProcessPool

log = logging.getLogger(__name__)

SERVICES = (worker_pb2.DESCRIPTOR.services_by_name["Worker"].full_name,)
SHUTDOWN_DRAIN_S = 8.0
"""On SIGTERM, running tasks get this long to finish; the rest are stopped
(and retried elsewhere by the Scheduler)."""


class WorkerServicer(worker_pb2_grpc.WorkerServicer):
    def __init__(self, node: WorkerNode) -> None:
        self._node = node

    def _status(self) -> worker_pb2.WorkerStatus:
        node, c = self._node, self._node.counters
        return worker_pb2.WorkerStatus(
            worker_id=node.settings.worker_id,
            address=node.settings.address,
            slots=node.settings.slots,
            busy_slots=len(node.running),
            state=scheduler_pb2.DRAINING if node.draining else scheduler_pb2.ACTIVE,
            running=[
                worker_pb2.RunningTask(
                    task_id=r.task_id,
                    task_type=r.task_type,
                    pid=r.slot.pid,
                    attempt=r.attempt,
                    started_at=to_timestamp(r.started_at),
                    priority=r.priority,  # type: ignore[arg-type]
                )
                for r in list(node.running.values())
            ],
            counters=worker_pb2.WorkerCounters(
                pulled=c.pulled, succeeded=c.succeeded, failed=c.failed, crashed=c.crashed, lost_leases=c.lost_leases
            ),
        )

    async def GetWorkerStatus(
        self, request: worker_pb2.GetWorkerStatusRequest, context: aio.ServicerContext
    ) -> worker_pb2.WorkerStatus:
        return self._status()

    async def DrainWorker(
        self, request: worker_pb2.DrainWorkerRequest, context: aio.ServicerContext
    ) -> worker_pb2.WorkerStatus:
        if not self._node.draining:
            self._node.request_drain()
            await asyncio.sleep(0)  # let the drain mark the node DRAINING
        return self._status()


def build_server(config: MeshConfig, port: int, node: WorkerNode) -> GrpcHost:
    servicer = WorkerServicer(node)
    return build_grpc_server(
        f"{config.worker.host}:{port}",
        [lambda server: worker_pb2_grpc.add_WorkerServicer_to_server(servicer, server)],
        SERVICES,
        tls=node.settings.tls,
    )


async def serve(config: MeshConfig, port: int, slots: int) -> None:
    worker_id = f"{socket.gethostname()}-{port}"
    set_log_context(worker_id=worker_id)  # every record of this process names the node
    address = f"{config.worker.host}:{port}"
    registry = default_registry()
    pool = await asyncio.to_thread(ProcessPool, slots, config.tracing if config.tracing.enabled else None)
    producer = KafkaLifecycleLog(
        config.kafka, kafka.client_settings(config, PeerRole.WORKER), lambda kind: config.topic(kind.value)
    )
    metrics.register(metrics.LifecycleProducer(producer.health))
    lifecycle = MeteredLifecycleLog(producer)
    node = WorkerNode(
        NodeSettings(
            worker_id=worker_id,
            address=address,
            slots=slots,
            task_types=registry.names(),
            scheduler_addresses=config.scheduler_addresses,
            storekeeper_address=f"{config.storekeeper.host}:{config.storekeeper.port}",
            prefetch=config.worker.prefetch_for(slots),
            tls=MeshTls.load(config, PeerRole.WORKER),
        ),
        pool,
        lifecycle,
    )
    zk = ZooKeeper(config.zookeeper, config.zk_root, config.zookeeper_password)
    host = build_server(config, port, node)

    stall_after_s = config.worker.stall_after_s
    watches: list[asyncio.Task[None]] = []

    def stalled() -> bool:
        return node.stalled_for(time.monotonic()) >= stall_after_s

    async def watch_progress() -> None:
        """NOT_SERVING while stalled, SERVING again once a task moves."""
        was = False
        while True:
            await asyncio.sleep(min(1.0, stall_after_s / 4))
            now = stalled()
            if now != was and not node.draining:  # a draining node is NOT_SERVING anyway
                was = now
                await host.set_serving(not now)
                if now:
                    log.warning(
                        "stalled: %d tasks have waited %.0f s for a slot and no task started or finished; "
                        "are the task processes (%s) stopped or hung?",
                        len(node.held),
                        node.stalled_for(time.monotonic()),
                        ", ".join(str(slot.pid) for slot in pool.slots),
                    )
                else:
                    log.info("no longer stalled: a task started or finished")

    async def ready() -> None:
        await asyncio.to_thread(zk.start)
        membership = json.dumps({"address": address, "slots": slots, "pid": os.getpid()}).encode()
        await asyncio.to_thread(zk.register_ephemeral, f"workers/{worker_id}", membership)
        await node.start()
        await host.set_serving(True)
        watches.append(asyncio.create_task(watch_progress()))

    async def close_adapters() -> None:
        for watch in watches:
            watch.cancel()
        await node.close()
        await asyncio.to_thread(pool.close)
        await asyncio.to_thread(lifecycle.close)
        await asyncio.to_thread(zk.stop)

    async def drain() -> None:
        try:
            await asyncio.wait_for(node.drain(), SHUTDOWN_DRAIN_S)
        except TimeoutError:
            log.warning("tasks still running after %.0f s; stopping them", SHUTDOWN_DRAIN_S)

    host.stop_taking_work.append(drain)
    host.close_adapters.append(close_adapters)
    metrics.serve(metrics.WORKER)
    metrics.gauge_from(metrics.SLOTS, lambda: slots)
    metrics.gauge_from(metrics.BUSY_SLOTS, lambda: len(node.running))
    metrics.gauge_from(metrics.HELD, lambda: len(node.held))
    metrics.gauge_from(metrics.STALLED, stalled)
    export_metrics(host, config, "worker")
    stop = asyncio.Event()
    drained = asyncio.create_task(node.wait_drained())  # drained on request: the process ends
    drained.add_done_callback(lambda _: stop.set())
    await serve_until_signal(host, ready=ready, stop=stop)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gridmesh worker start")
    parser.add_argument("--port", type=int, default=None, help="Worker gRPC port (default: the configured base port)")
    parser.add_argument("--slots", type=int, default=None, help="task processes (default: the configured slots)")
    args = parser.parse_args(argv)
    run(load_config(os.environ), args.port, args.slots)


def run(config: MeshConfig, port: int | None, slots: int | None) -> None:
    """Run a worker node in the foreground until SIGTERM/SIGINT or a drain."""
    configure_logging(config.log_level, config.log_format, "worker")
    tracing.configure(config.tracing, "worker")
    port = config.worker.base_port if port is None else port
    slots = config.worker.slots if slots is None else slots
    asyncio.run(serve(config, port, slots))


if __name__ == "__main__":
    main(sys.argv[1:])
