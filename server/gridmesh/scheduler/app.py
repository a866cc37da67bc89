"""Composition root of the Scheduler process."""

from __future__ import annotations

import asyncio
import os
import sys

from gridmesh.config import MeshConfig, load_config
from gridmesh.core.tasktypes import TaskTypeRegistry, default_registry
from gridmesh.grpc_support.server import GrpcHost, build_grpc_server, configure_logging, serve_until_signal
from gridmesh.scheduler.servicer import SchedulerServicer
from gridmesh.v1 import scheduler_pb2, scheduler_pb2_grpc

SERVICES = (scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name,)


def build_server(config: MeshConfig, registry: TaskTypeRegistry) -> GrpcHost:
    servicer = SchedulerServicer(registry)
    return build_grpc_server(
        f"{config.scheduler.host}:{config.scheduler.port}",
        [lambda server: scheduler_pb2_grpc.add_SchedulerServicer_to_server(servicer, server)],
        SERVICES,
    )


async def serve(config: MeshConfig) -> None:
    host = build_server(config, default_registry())
    await serve_until_signal(host)


def main(argv: list[str] | None = None) -> None:
    config = load_config(os.environ)
    configure_logging(config.log_level)
    asyncio.run(serve(config))


if __name__ == "__main__":
    main(sys.argv[1:])
