"""Composition root of a worker node."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys

from grpc import aio

from gridmesh.config import MeshConfig, load_config
from gridmesh.grpc_support.server import GrpcHost, build_grpc_server, configure_logging, serve_until_signal
from gridmesh.v1 import scheduler_pb2, worker_pb2, worker_pb2_grpc

SERVICES = (worker_pb2.DESCRIPTOR.services_by_name["Worker"].full_name,)


class WorkerServicer(worker_pb2_grpc.WorkerServicer):
    def __init__(self, worker_id: str, slots: int) -> None:
        self._worker_id = worker_id
        self._slots = slots

    async def GetWorkerStatus(
        self, request: worker_pb2.GetWorkerStatusRequest, context: aio.ServicerContext
    ) -> worker_pb2.WorkerStatus:
        return worker_pb2.WorkerStatus(
            worker_id=self._worker_id, slots=self._slots, busy_slots=0, state=scheduler_pb2.ACTIVE
        )


def build_server(config: MeshConfig, port: int, slots: int) -> GrpcHost:
    servicer = WorkerServicer(f"{socket.gethostname()}:{port}", slots)
    return build_grpc_server(
        f"{config.worker.host}:{port}",
        [lambda server: worker_pb2_grpc.add_WorkerServicer_to_server(servicer, server)],
        SERVICES,
    )


async def serve(config: MeshConfig, port: int, slots: int) -> None:
    await serve_until_signal(build_server(config, port, slots))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gridmesh worker start")
    parser.add_argument("--port", type=int, default=None, help="Worker gRPC port (default: the configured base port)")
    parser.add_argument("--slots", type=int, default=None, help="task processes (default: the configured slots)")
    args = parser.parse_args(argv)
    run(load_config(os.environ), args.port, args.slots)


def run(config: MeshConfig, port: int | None, slots: int | None) -> None:
    """Run a worker node in the foreground until SIGTERM/SIGINT."""
    configure_logging(config.log_level)
    port = config.worker.base_port if port is None else port
    slots = config.worker.slots if slots is None else slots
    asyncio.run(serve(config, port, slots))


if __name__ == "__main__":
    main(sys.argv[1:])
