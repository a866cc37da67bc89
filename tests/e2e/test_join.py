"""A new worker host joins with a join token (issue 12): `gridmesh worker
join-token` on the mesh's host, `gridmesh worker start --join TOKEN` on a
"new host" — a state, TLS and secrets directory of its own, holding nothing
of the mesh's — against the real edge, authorizer and Scheduler."""

from __future__ import annotations

import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from gridmesh.adapters import pki
from gridmesh.cli import procs
from gridmesh.config import MeshConfig
from gridmesh.core.access import PeerRole
from gridmesh.edge.keys import KeyStore
from gridmesh.v1 import enrollment_pb2, enrollment_pb2_grpc
from gridmesh.worker.join import JoinToken
from tests.conftest import TEST_ADMIN_KEY, free_port
from tests.e2e.nodes import listed_workers
from tests.helpers import edge_channel, http_json, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

GRIDMESH = str(Path(sys.executable).parent / "gridmesh")


def _join_token(env: dict[str, str]) -> str:
    """A new token, once the edge knows its key (it reads the key table every auth.refresh_s)."""
    token = _new_join_token(env)
    parsed = JoinToken.parse(token)
    wait_for(
        "the token to reach the edge",
        lambda: http_json(parsed.edge, "GET", "/v1/task-types", key=parsed.key)[0] == 403,
    )
    return token


def _new_join_token(env: dict[str, str]) -> str:
    done = subprocess.run(
        [GRIDMESH, "worker", "join-token", "--expires", "10m", "--note", "tests/e2e/test_join.py"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    command = done.stdout.strip()
    assert command.startswith("gridmesh worker start --join gmj_"), done.stdout + done.stderr
    return command.rsplit(" ", 1)[1]


def _new_host_env(mesh_environment: dict[str, str], home: Path) -> dict[str, str]:
    """The mesh's addresses, but no file of the mesh: its own state, TLS and secrets directories."""
    return {
        **mesh_environment,
        "GRIDMESH_STATE_DIR": str(home / "state"),
        "GRIDMESH_TLS_DIR": str(home / "tls"),
        "GRIDMESH_SECRETS_DIR": str(home / "secrets"),
    }


@contextmanager
def _worker(env: dict[str, str], token: str, home: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    runs, logs = home / "run", home / "log"
    spec = procs.ProcessSpec(
        name="joined-worker",
        argv=[GRIDMESH, "worker", "start", "--join", token, "--port", str(port), "--slots", "1"],
        env=env,
    )
    procs.start(spec, runs, logs)
    try:
        yield port, logs / "joined-worker.log"
    finally:
        procs.stop("joined-worker", runs)


def _join_fails(env: dict[str, str], token: str) -> str:
    done = subprocess.run(
        [GRIDMESH, "worker", "start", "--join", token, "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0, done.stdout
    return done.stderr


def test_a_new_host_joins_with_a_token_once_and_runs_tasks(mesh_config, mesh_environment, edge, tmp_path):
    token = _join_token(mesh_environment)
    home = tmp_path / "new-host"
    env = _new_host_env(mesh_environment, home)
    with _worker(env, token, home) as (port, log):
        joined = wait_for(
            "the new node to register", lambda: [w for w in listed_workers(edge) if w.endswith(f"-{port}")]
        )
        tls = home / "tls"
        certificate = x509.load_pem_x509_certificate(pki.cert_path(tls, PeerRole.WORKER).read_bytes())
        assert certificate.subject.rfc4514_string() == "CN=worker,O=gridmesh"
        pki.check_issued(
            pki.cert_path(tls, PeerRole.WORKER).read_bytes(),
            (mesh_config.tls_path / pki.CA_CERT).read_bytes(),
            pki.key_path(tls, PeerRole.WORKER).read_bytes(),
        )
        assert pki.key_path(tls, PeerRole.WORKER).stat().st_mode & 0o777 == 0o600
        assert not (tls / pki.CA_KEY).exists()
        assert (home / "secrets" / "zookeeper.password").read_text().strip() == mesh_config.zookeeper_password
        assert "joined the mesh" in log.read_text()
        # It runs tasks (beside the session's own node: submitted until one ran here).
        ran_here = wait_for("a task to run on the joined node", lambda: _ran_on(edge, joined[0]), timeout=60)
        assert ran_here
    # The token was used up: another host cannot join with it, and nothing is written there.
    other = tmp_path / "other-host"
    refused = _join_fails(_new_host_env(mesh_environment, other), token)
    assert "used already" in refused, refused
    assert not pki.cert_path(other / "tls", PeerRole.WORKER).exists()


def _ran_on(edge: str, worker_id: str) -> bool:
    status, task = http_json(edge, "POST", "/v1/tasks", {"task_type": "noop", "result_dir": "joined"})
    assert status == 200, task
    final = wait_for(
        "the task to end",
        lambda: (t := http_json(edge, "GET", f"/v1/tasks/{task['task_id']}")[1])["state"] == "SUCCEEDED" and t,
    )
    return bool(final["worker_id"] == worker_id)


def test_a_token_is_never_sent_to_an_edge_whose_ca_is_not_the_one_it_names(mesh_config, mesh_environment, tmp_path):
    token = JoinToken.parse(_join_token(mesh_environment))
    forged = replace(token, ca_sha256="00" * 32)
    refused = _join_fails(_new_host_env(mesh_environment, tmp_path), str(forged))
    assert "not the one the token names" in refused, refused
    store = KeyStore.open(mesh_config)
    try:
        (record,) = [r for r in store.all() if token.key.startswith(f"gmk_{r.key_id}_")]
    finally:
        store.close()
    assert record.revoked_at is None  # still good for the right mesh


def test_join_takes_only_a_join_token_and_a_join_token_nothing_else(mesh_config, mesh_environment, edge):
    _, csr = pki.signing_request(PeerRole.WORKER)
    request = enrollment_pb2.JoinRequest(csr_pem=csr.decode())
    with edge_channel(edge) as channel:
        stub = enrollment_pb2_grpc.EnrollmentStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Join(request, metadata=(("authorization", f"Bearer {TEST_ADMIN_KEY}"),), timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as refused:
            stub.Join(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    key = JoinToken.parse(_join_token(mesh_environment)).key
    status, answer = http_json(edge, "POST", "/v1/tasks", {"task_type": "noop", "result_dir": "x"}, key=key)
    assert status == 403 and "join" in answer["message"], answer
    # A malformed request is refused before the token is used: it still joins after.
    with edge_channel(edge) as channel:
        stub = enrollment_pb2_grpc.EnrollmentStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Join(enrollment_pb2.JoinRequest(csr_pem="nonsense"), metadata=(("authorization", f"Bearer {key}"),))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        answer = stub.Join(request, metadata=(("authorization", f"Bearer {key}"),), timeout=10)
    assert (
        x509.load_pem_x509_certificate(answer.certificate_pem.encode()).subject.rfc4514_string()
        == "CN=worker,O=gridmesh"
    )


def test_the_edge_serves_the_meshs_ca_certificate_to_anyone(mesh_config: MeshConfig, edge: str):
    context = ssl.create_default_context(cafile=str(mesh_config.tls_path / pki.CA_CERT))
    context.check_hostname = False
    with urllib.request.urlopen(f"https://{edge}/v1/ca.crt", context=context, timeout=10) as reply:
        assert reply.read() == (mesh_config.tls_path / pki.CA_CERT).read_bytes()
