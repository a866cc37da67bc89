"""Composition root of the EventManager process."""

from __future__ import annotations

import asyncio
import os
import sys

from gridmesh.config import MeshConfig, load_config
from gridmesh.grpc_support.server import GrpcHost, build_grpc_server, configure_logging, serve_until_signal
from gridmesh.v1 import eventmanager_pb2, eventmanager_pb2_grpc

SERVICES = (eventmanager_pb2.DESCRIPTOR.services_by_name["EventManager"].full_name,)


def build_server(config: MeshConfig) -> GrpcHost:
    servicer = eventmanager_pb2_grpc.EventManagerServicer()
    return build_grpc_server(
        f"{config.eventmanager.host}:{config.eventmanager.port}",
        [lambda server: eventmanager_pb2_grpc.add_EventManagerServicer_to_server(servicer, server)],
        SERVICES,
    )


async def serve(config: MeshConfig) -> None:
    await serve_until_signal(build_server(config))


def main(argv: list[str] | None = None) -> None:
    config = load_config(os.environ)
    configure_logging(config.log_level)
    asyncio.run(serve(config))


if __name__ == "__main__":
    main(sys.argv[1:])
