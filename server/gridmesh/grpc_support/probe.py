"""Synchronous health probes used by the CLI and the tests."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gridmesh.clients import edge_channel
from gridmesh.common.errors import ConfigError
from gridmesh.core.access import PeerRole
from gridmesh.grpc_support.tls import MeshTls, channel

Connect = Callable[[str], grpc.Channel]


def grpc_health(address: str, service: str = "", timeout_s: float = 1.0, *, connect: Connect | None = None) -> str:
    """``SERVING``, ``NOT_SERVING``, ``UNKNOWN`` … or ``UNREACHABLE``, over
    the channel ``connect`` opens (default: plaintext); ``NO_CREDENTIALS``
    when the certificates it needs are not there (yet)."""
    try:
        ch = (connect or grpc.insecure_channel)(address)
    except (OSError, ConfigError):
        return "NO_CREDENTIALS"
    try:
        with ch:
            stub = health_pb2_grpc.HealthStub(ch)
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
    except grpc.RpcError as e:
        return "UNREACHABLE" if e.code() == grpc.StatusCode.UNAVAILABLE else e.code().name
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def to_edge(ca_file: str | None) -> Connect:
    """Opens channels to the edge as a client: TLS trusting ``ca_file`` (the
    mesh's CA, ``config.edge_ca_file``), or plaintext without one (an edge
    configured so)."""
    return lambda address: edge_channel(address, ca_file=ca_file, plaintext=ca_file is None)


def to_component(tls: MeshTls | Callable[[], MeshTls | None] | None, peer: PeerRole) -> Connect:
    """Opens channels to a mesh process of role ``peer``, presenting ``tls``
    (None: plaintext, when the mesh's TLS is off; a callable: loaded when a
    channel is opened, e.g. ``MeshTls.load`` before ``up`` made the files)."""
    return lambda address: channel(address, tls() if callable(tls) else tls, peer)
