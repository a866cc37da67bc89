"""Synchronous health probes used by the CLI and the tests."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def grpc_health(address: str, service: str = "", timeout_s: float = 1.0) -> str:
    """``SERVING``, ``NOT_SERVING``, ``UNKNOWN`` … or ``UNREACHABLE``."""
    try:
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
    except grpc.RpcError as e:
        return "UNREACHABLE" if e.code() == grpc.StatusCode.UNAVAILABLE else e.code().name
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
