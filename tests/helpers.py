"""Small helpers shared by the end-to-end tests: HTTP/JSON through the edge,
grpcurl, channels to the mesh's own processes (mutual TLS), and waiting on a
condition with a deadline (never a fixed sleep)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc import aio

from gridmesh import clients
from gridmesh.adapters import pki
from gridmesh.config import MeshConfig
from gridmesh.core.access import PeerRole
from gridmesh.grpc_support import tls

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
T = TypeVar("T")
ANONYMOUS = ""
"""Pass as ``key`` to call without a credential."""


def admin_key() -> str:
    """The admin key every test mesh registers (tests.conftest sets it)."""
    return os.environ.get("GRIDMESH_API_KEY", "")


def key_metadata(key: str | None = None) -> tuple[tuple[str, str], ...]:
    """gRPC metadata presenting ``key`` (default: the tests' admin key)."""
    return clients.key_metadata(admin_key() if key is None else key)


def certificates(config: MeshConfig) -> None:
    """The mesh's CA and certificates under ``config``'s TLS directory, made
    as ``gridmesh up`` makes them: for components a test runs in-process."""
    pki.ensure(config.tls_path, list(PeerRole))


def mesh_channel(config: MeshConfig, address: str, peer: PeerRole, own: PeerRole = PeerRole.ADMIN) -> grpc.Channel:
    """A channel to the mesh's ``peer`` process at ``address``, presenting the
    certificate of ``own`` (the local operator's by default)."""
    return tls.channel(address, tls.MeshTls.load(config, own), peer)


def mesh_aio_channel(config: MeshConfig, address: str, peer: PeerRole, own: PeerRole = PeerRole.ADMIN) -> aio.Channel:
    """:func:`mesh_channel` for ``grpc.aio``."""
    return tls.aio_channel(address, tls.MeshTls.load(config, own), peer)


def edge_ca_file() -> str:
    """The CA of the test meshes' edges (tests.conftest sets it, as a user exports it)."""
    return os.environ[clients.CA_FILE_VAR]


def edge_tls() -> ssl.SSLContext:
    """Verifies the edge's certificate against :func:`edge_ca_file`."""
    return ssl.create_default_context(cafile=edge_ca_file())


def edge_channel(edge: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    """A gRPC channel to the edge over TLS, as a client outside the mesh opens it."""
    return clients.edge_channel(edge, options=options)


def schedule_tasks(edge: str, schedule_id: str, task_type: str) -> list[tuple[datetime, dict[str, Any]]]:
    """(tick, task) of each task a schedule made, oldest first (the tick read
    from the task's idempotency key); none while the edge answers 503 (it
    has not followed a new leader yet)."""
    status, page = http_json(edge, "GET", f"/v1/tasks?page_size=1000&task_type={task_type}")
    if status == 503:
        return []
    assert status == 200, page
    prefix = f"schedule:{schedule_id}:"
    made = [
        (datetime.strptime(t["idempotency_key"].removeprefix(prefix), "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC), t)
        for t in page["tasks"]
        if t["idempotency_key"].startswith(prefix)
    ]
    return sorted(made, key=lambda pair: pair[0])


def http(
    edge: str, method: str, path: str, body: bytes | dict[str, Any] | None = None, *, key: str | None = None
) -> tuple[int, bytes]:
    """(status, body) of one HTTP call to the edge; a dict body is sent as
    JSON. ``key``: the API key presented (default the tests' admin key)."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(f"https://{edge}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    for name, value in key_metadata(key):
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30, context=edge_tls()) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_json(
    edge: str, method: str, path: str, body: dict[str, Any] | None = None, *, key: str | None = None
) -> tuple[int, Any]:
    status, raw = http(edge, method, path, body, key=key)
    try:
        return status, json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return status, raw.decode(errors="replace")


def ndjson(edge: str, path: str, timeout: float = 60) -> Iterator[dict[str, Any]]:
    """The objects of a newline-delimited JSON stream, as they arrive."""
    request = urllib.request.Request(f"https://{edge}{path}", headers=dict(key_metadata()))
    with urllib.request.urlopen(request, timeout=timeout, context=edge_tls()) as response:
        for line in response:
            if line.strip():
                yield json.loads(line)


def grpcurl(*args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    headers = [arg for name, value in key_metadata(key) for arg in ("-H", f"{name}: {value}")]
    tls = ["-cacert", edge_ca_file()]
    return subprocess.run([GRPCURL, *tls, *headers, *args], capture_output=True, text=True, timeout=30)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.05) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
