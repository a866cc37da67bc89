"""Mutual TLS inside the mesh: the local CA, the handshake and the role checks,
against a real in-process gRPC server with real certificates."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gridmesh.adapters import pki
from gridmesh.common.errors import ConfigError, PermissionDenied
from gridmesh.core.access import PeerRole, check_peer
from gridmesh.grpc_support.server import build_grpc_server
from gridmesh.grpc_support.tls import MeshTls, aio_channel
from gridmesh.v1 import scheduler_pb2, scheduler_pb2_grpc

ROLES = list(PeerRole)


def test_ensure_makes_a_ca_and_one_certificate_per_role_with_private_keys_0600(tmp_path: Path) -> None:
    issued = pki.ensure(tmp_path / "tls", ROLES)
    assert sorted(issued) == sorted(ROLES)
    for path in (tmp_path / "tls").iterdir():
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.suffix == ".key":
            assert mode == 0o600, (path, oct(mode))
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700
    assert pki.ensure(tmp_path / "tls", ROLES) == []  # idempotent: nothing issued twice


def test_a_missing_role_certificate_is_issued_without_touching_the_others(tmp_path: Path) -> None:
    directory = tmp_path / "tls"
    pki.ensure(directory, ROLES)
    before = pki.cert_path(directory, PeerRole.SCHEDULER).read_bytes()
    pki.cert_path(directory, PeerRole.WORKER).unlink()
    assert pki.ensure(directory, ROLES) == [PeerRole.WORKER]
    assert pki.cert_path(directory, PeerRole.SCHEDULER).read_bytes() == before


def test_an_operators_own_ca_without_its_key_is_never_replaced(tmp_path: Path) -> None:
    directory = tmp_path / "tls"
    pki.ensure(directory, ROLES)
    (directory / "ca.key").unlink()
    assert pki.ensure(directory, ROLES) == []  # everything there: used as it is
    pki.key_path(directory, PeerRole.EDGE).unlink()
    with pytest.raises(ConfigError, match=r"edge\.crt/edge\.key"):
        pki.ensure(directory, ROLES)


def test_loading_a_missing_certificate_names_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"scheduler\.crt.*gridmesh up"):
        MeshTls.from_dir(tmp_path, PeerRole.SCHEDULER)


@pytest.mark.parametrize(
    ("peer", "method", "allowed"),
    [
        (PeerRole.WORKER, "/gridmesh.v1.WorkQueue/PullTasks", True),
        (PeerRole.WORKER, "/gridmesh.v1.StoreKeeper/StoreResults", True),
        (PeerRole.WORKER, "/gridmesh.v1.Scheduler/SubmitTask", False),
        (PeerRole.WORKER, "/gridmesh.v1.StoreKeeper/GetResult", False),
        (PeerRole.WORKER, "/gridmesh.v1.WorkQueue/ReportCompletions", False),
        (PeerRole.STOREKEEPER, "/gridmesh.v1.WorkQueue/ReportCompletions", True),
        (PeerRole.STOREKEEPER, "/gridmesh.v1.Scheduler/GetTask", True),
        (PeerRole.STOREKEEPER, "/gridmesh.v1.WorkQueue/PullTasks", False),
        (PeerRole.STOREKEEPER, "/gridmesh.v1.Scheduler/SubmitTask", False),
        (PeerRole.EDGE, "/gridmesh.v1.Scheduler/SubmitTask", True),
        (PeerRole.EDGE, "/gridmesh.v1.EventManager/Publish", True),
        (PeerRole.EDGE, "/gridmesh.v1.WorkQueue/Heartbeat", False),
        (PeerRole.EDGE, "/gridmesh.v1.StoreKeeper/StoreResult", False),
        (PeerRole.EDGE, "/gridmesh.v1.Worker/DrainWorker", False),
        (PeerRole.EDGE, "/envoy.service.auth.v3.Authorization/Check", True),
        (PeerRole.ADMIN, "/gridmesh.v1.Worker/GetWorkerStatus", True),
        (PeerRole.ADMIN, "/envoy.service.auth.v3.Authorization/Check", False),
        (PeerRole.SCHEDULER, "/grpc.health.v1.Health/Check", True),
        (PeerRole.EDGE, "/some.Other/Method", False),
    ],
)
def test_each_internal_rpc_is_open_only_to_the_roles_that_make_it(peer: PeerRole, method: str, allowed: bool) -> None:
    if allowed:
        check_peer(peer, method)
    else:
        with pytest.raises(PermissionDenied, match="needs one of"):
            check_peer(peer, method)


# -- a real server -------------------------------------------------------------------------------


class _Queue(scheduler_pb2_grpc.WorkQueueServicer):
    def __init__(self) -> None:
        self.beats = 0

    async def Heartbeat(
        self, request: scheduler_pb2.HeartbeatRequest, context: aio.ServicerContext
    ) -> scheduler_pb2.HeartbeatResponse:
        self.beats += 1
        return scheduler_pb2.HeartbeatResponse()


async def _heartbeat(channel: aio.Channel) -> grpc.StatusCode:
    try:
        await scheduler_pb2_grpc.WorkQueueStub(channel).Heartbeat(
            scheduler_pb2.HeartbeatRequest(worker_id="w"), timeout=5
        )
    except aio.AioRpcError as e:
        return e.code()
    finally:
        await channel.close()
    return grpc.StatusCode.OK


def test_the_scheduler_port_takes_only_a_worker_certificate_from_its_own_ca(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    pki.ensure(ours, ROLES)
    pki.ensure(theirs, ROLES)  # another CA: the same role names, signed by a stranger

    async def scenario() -> tuple[dict[str, grpc.StatusCode], int]:
        queue = _Queue()
        host = build_grpc_server(
            "127.0.0.1:0",
            [lambda s: scheduler_pb2_grpc.add_WorkQueueServicer_to_server(queue, s)],
            ["gridmesh.v1.WorkQueue"],
            tls=MeshTls.from_dir(ours, PeerRole.SCHEDULER),
        )
        await host.server.start()
        await host.set_serving(True)
        target = f"127.0.0.1:{host.port}"
        try:

            def as_(role: PeerRole, ca: Path = ours, server: PeerRole = PeerRole.SCHEDULER) -> aio.Channel:
                return aio_channel(target, MeshTls.from_dir(ca, role), server)

            codes = {
                "worker": await _heartbeat(as_(PeerRole.WORKER)),
                "edge": await _heartbeat(as_(PeerRole.EDGE)),
                "storekeeper": await _heartbeat(as_(PeerRole.STOREKEEPER)),
                "plaintext": await _heartbeat(aio.insecure_channel(target)),
                "foreign CA": await _heartbeat(as_(PeerRole.WORKER, ca=theirs)),
                # The client checks the server too: a Scheduler's certificate is not a StoreKeeper's.
                "wrong server": await _heartbeat(as_(PeerRole.WORKER, server=PeerRole.STOREKEEPER)),
            }
            async with aio_channel(target, MeshTls.from_dir(ours, PeerRole.EDGE), PeerRole.SCHEDULER) as channel:
                health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert health.status == health_pb2.HealthCheckResponse.SERVING
        finally:
            await host.server.stop(None)
        return codes, queue.beats

    codes, beats = asyncio.run(scenario())
    assert codes == {
        "worker": grpc.StatusCode.OK,
        "edge": grpc.StatusCode.PERMISSION_DENIED,
        "storekeeper": grpc.StatusCode.PERMISSION_DENIED,
        "plaintext": grpc.StatusCode.UNAVAILABLE,  # refused at the handshake
        "foreign CA": grpc.StatusCode.UNAVAILABLE,
        "wrong server": grpc.StatusCode.UNAVAILABLE,
    }
    assert beats == 1  # only the worker's call reached the servicer


def test_a_host_joining_a_mesh_never_makes_a_ca_of_its_own(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"copy its ca\.crt and worker\.crt/worker\.key"):
        pki.ensure(tmp_path / "tls", [PeerRole.WORKER], new_ca=False)
    assert not (tmp_path / "tls" / "ca.crt").exists()


def test_a_certificate_names_its_role_localhost_and_the_hosts_given_once_each(tmp_path: Path) -> None:
    from cryptography import x509

    pki.ensure(tmp_path, [PeerRole.EDGE], ["edge.example.com", "10.0.0.4", "localhost", "edge.example.com"])
    cert = x509.load_pem_x509_certificate(pki.cert_path(tmp_path, PeerRole.EDGE).read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = names.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    assert dns == ["edge.gridmesh.internal", "localhost", "edge.example.com"] and ips == ["127.0.0.1", "10.0.0.4"]
    assert cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value == "edge"
