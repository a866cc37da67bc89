"""Synchronous health probes used by the CLI and the tests."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gridmesh.core.access import PeerRole
from gridmesh.grpc_support.tls import MeshTls, channel


def grpc_health(
    address: str,
    service: str = "",
    timeout_s: float = 1.0,
    *,
    tls: MeshTls | None = None,
    peer: PeerRole = PeerRole.SCHEDULER,
) -> str:
    """``SERVING``, ``NOT_SERVING``, ``UNKNOWN`` … or ``UNREACHABLE``. With
    ``tls``, over mutual TLS to a component whose certificate names ``peer``."""
    try:
        with channel(address, tls, peer) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
    except grpc.RpcError as e:
        return "UNREACHABLE" if e.code() == grpc.StatusCode.UNAVAILABLE else e.code().name
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
