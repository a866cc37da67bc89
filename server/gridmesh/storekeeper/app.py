"""Composition root of the StoreKeeper process."""

from __future__ import annotations

import asyncio
import os
import sys

from gridmesh.config import MeshConfig, load_config
from gridmesh.grpc_support.server import GrpcHost, build_grpc_server, configure_logging, serve_until_signal
from gridmesh.v1 import storekeeper_pb2, storekeeper_pb2_grpc

SERVICES = (storekeeper_pb2.DESCRIPTOR.services_by_name["StoreKeeper"].full_name,)


def build_server(config: MeshConfig) -> GrpcHost:
    servicer = storekeeper_pb2_grpc.StoreKeeperServicer()
    return build_grpc_server(
        f"{config.storekeeper.host}:{config.storekeeper.port}",
        [lambda server: storekeeper_pb2_grpc.add_StoreKeeperServicer_to_server(servicer, server)],
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
