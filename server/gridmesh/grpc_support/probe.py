"""Synchronous health probes used by the CLI and the tests."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gridmesh.core.access import PeerRole
from gridmesh.grpc_support.tls import MeshTls, channel

Connect = Callable[[str], grpc.Channel]


def grpc_health(address: str, service: str = "", timeout_s: float = 1.0, *, connect: Connect | None = None) -> str:
    """``SERVING``, ``NOT_SERVING``, ``UNKNOWN`` … or ``UNREACHABLE``, over
    the channel ``connect`` opens (default: plaintext)."""
    try:
        with (connect or grpc.insecure_channel)(address) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
    except grpc.RpcError as e:
        return "UNREACHABLE" if e.code() == grpc.StatusCode.UNAVAILABLE else e.code().name
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def to_component(tls: MeshTls | None, peer: PeerRole) -> Connect:
    """Opens channels to a mesh process of role ``peer``, presenting ``tls``
    (None: plaintext, when the mesh's TLS is off)."""
    return lambda address: channel(address, tls, peer)
