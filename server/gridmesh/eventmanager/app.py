"""Composition root of the EventManager process.

Wires the ZooKeeper and RabbitMQ adapters into :class:`EventManager` and
serves it. Threading model (one per process, STYLE §12): pika runs on the
event loop through its AsyncioConnection adapter; kazoo's blocking calls run
in the default executor and its callbacks come back with
``call_soon_threadsafe``.

Health is SERVING only while the service is started and both ZooKeeper and
RabbitMQ are connected. Shutdown: health NOT_SERVING → end every Consume
stream (their unacknowledged events are redelivered) → ``server.stop(grace)``
lets in-flight publishes finish → close RabbitMQ, then ZooKeeper.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from dataclasses import dataclass, field

from gridmesh.adapters.rabbitmq import RabbitMQ
from gridmesh.adapters.zookeeper import ZooKeeper
from gridmesh.common.errors import GridmeshError
from gridmesh.config import MeshConfig, load_config
from gridmesh.core.access import PeerRole
from gridmesh.eventmanager._service import EventManager
from gridmesh.eventmanager._servicer import EventManagerServicer
from gridmesh.grpc_support.server import (
    GrpcHost,
    build_grpc_server,
    export_metrics,
    serve_until_signal,
    shutdown,
)
from gridmesh.grpc_support.tls import MeshTls
from gridmesh.observability import metrics, tracing
from gridmesh.observability.logs import configure_logging
from gridmesh.v1 import eventmanager_pb2, eventmanager_pb2_grpc

log = logging.getLogger(__name__)

SERVICES = (eventmanager_pb2.DESCRIPTOR.services_by_name["EventManager"].full_name,)


@dataclass
class EventManagerProcess:
    """A built EventManager: the gRPC host and the service behind it."""

    host: GrpcHost
    service: EventManager
    _health_changed: asyncio.Event = field(default_factory=asyncio.Event)
    _health_task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self.host.port

    async def ready(self) -> None:
        """Connect the adapters and follow their state with the health status
        (the server may already be listening: it answers UNAVAILABLE until then)."""
        self.service.add_state_listener(self._health_changed.set)
        await self.service.start()
        self._health_task = asyncio.get_running_loop().create_task(self._follow_health())

    async def _follow_health(self) -> None:
        serving: bool | None = None
        while True:
            healthy = self.service.healthy
            if healthy != serving:
                serving = healthy
                await self.host.set_serving(healthy)
                log.log(
                    logging.INFO if healthy else logging.WARNING, "health: %s", "SERVING" if healthy else "NOT_SERVING"
                )
            await self._health_changed.wait()
            self._health_changed.clear()

    async def _stop_health(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
            self._health_task = None

    async def listen(self) -> None:
        """Answer on the port: health NOT_SERVING and every call UNAVAILABLE
        until :meth:`ready`."""
        await self.host.set_serving(False)
        await self.host.server.start()

    async def start(self) -> None:
        """Listen and connect (for tests and embedding; :func:`serve` runs until a signal)."""
        await self.listen()
        await self.ready()

    async def stop(self, grace_s: float = 5.0) -> None:
        """The shutdown of STYLE §11 (see the module doc)."""
        await shutdown(self.host, grace_s=grace_s)


def build_server(config: MeshConfig) -> EventManagerProcess:
    """The EventManager on ``config.eventmanager.host:port`` (port 0 = any free
    port), not started and not connected yet."""
    zookeeper = ZooKeeper(config.zookeeper, config.zk_root, config.zookeeper_password)
    rabbitmq = RabbitMQ(
        config.rabbitmq, config.rabbitmq_password, connection_name=config.prefixed("gridmesh-eventmanager", "-")
    )
    service = EventManager(config, zookeeper, rabbitmq)
    servicer = EventManagerServicer(service)
    host = build_grpc_server(
        f"{config.eventmanager.host}:{config.eventmanager.port}",
        [lambda server: eventmanager_pb2_grpc.add_EventManagerServicer_to_server(servicer, server)],
        SERVICES,
        tls=MeshTls.load(config, PeerRole.EVENTMANAGER),
    )
    process = EventManagerProcess(host=host, service=service)
    host.stop_taking_work.append(process._stop_health)
    host.stop_taking_work.append(service.stop_consumers)
    host.close_adapters.append(service.close)
    return process


QUEUE_METRICS_INTERVAL_S = 5.0
"""How often the per-subscriber queue gauges are read from RabbitMQ (Prometheus scrapes every 5 s)."""


async def _refresh_queue_metrics(service: EventManager) -> None:
    while True:
        try:
            await service.refresh_queue_metrics()
        except GridmeshError as e:  # not started yet, or RabbitMQ away: the gauges keep their last values
            log.debug("queue metrics not refreshed: %s", e.message)
        await asyncio.sleep(QUEUE_METRICS_INTERVAL_S)


async def serve(config: MeshConfig) -> None:
    process = build_server(config)
    metrics.serve(metrics.EVENTMANAGER)
    export_metrics(process.host, config, "eventmanager")
    refreshing = asyncio.create_task(_refresh_queue_metrics(process.service))

    async def stop_refreshing() -> None:
        refreshing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refreshing

    process.host.stop_taking_work.append(stop_refreshing)
    await process.host.set_serving(False)  # until ready() connected the adapters
    try:
        await serve_until_signal(process.host, ready=process.ready)
    except GridmeshError:
        await process.stop(grace_s=0)
        raise


def main(argv: list[str] | None = None) -> None:
    config = load_config(os.environ)
    configure_logging(config.log_level, config.log_format, "eventmanager")
    tracing.configure(config.tracing, "eventmanager")
    # The RabbitMQ adapter reports connection trouble itself, once per
    # attempt; pika's own ERROR lines about the same failure are noise.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    try:
        asyncio.run(serve(config))
    except GridmeshError as e:
        log.error("EventManager cannot start: %s", e.message)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
