"""Session fixtures: real backing services and a real mesh.

MariaDB and RabbitMQ are the machine's: used where they answer, installed and
started otherwise, exactly as ``gridmesh up`` does. ZooKeeper and the
Kafka broker are the session's own, on free ports, so a test run
never stops (or depends on) those of a mesh a developer is running, nor of
another test run. What the session started it stops at the end. Each mesh a
test starts gets its own namespace, ports and state directory, so it never
sees another mesh's databases, queues, znodes or topics. A service that
cannot be started fails the tests; nothing is skipped.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import random
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from gridmesh.adapters import pki
from gridmesh.adapters.mysql import MySQL
from gridmesh.cli import backing, mesh, procs
from gridmesh.clients import CA_FILE_VAR
from gridmesh.config import API_KEY_VAR, ENV_PREFIX, ZOOKEEPER_SECRET, MeshConfig, MySQLLogin, load_config, mysql_secret
from gridmesh.core.access import PeerRole, new_key
from tests.cleanup import delete_rabbitmq_user, drop_mysql_accounts

log = logging.getLogger("tests")


_PORTS = range(20_000, 32_000)
"""Where tests take listening ports: below Linux's ephemeral range (32768+),
so no outgoing connection of any process can take one between the check
and the listen."""
_handed_out: set[int] = set()
WORKER_PORTS = 8
"""Ports kept free after a worker base port (node i listens on base + i)."""


def free_port(span: int = 1) -> int:
    """The first of ``span`` consecutive ports free on 127.0.0.1 now and not
    handed out before in this session."""
    while True:
        first = random.randrange(_PORTS.start, _PORTS.stop - span)
        block = range(first, first + span)
        if _handed_out.intersection(block) or not all(_bindable(port) for port in block):
            continue
        _handed_out.update(block)
        return first


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _progress(component: str, what: str) -> None:
    log.info("%s: %s", component, what)


def base_env() -> dict[str, str]:
    """This process's environment without any GRIDMESH_* setting of the user."""
    return {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}


_SESSION_BACKING: dict[str, str] = {}
"""GRIDMESH_* settings naming the session's own ZooKeeper and Kafka broker."""


TEST_ADMIN_KEY = new_key()[2]
"""The admin key of every mesh the tests start: each test state directory
gets it as its credentials file before ``up``, which registers it; the test
process presents it (``GRIDMESH_API_KEY``) through TaskClient, EventClient
and tests.helpers."""
os.environ[API_KEY_VAR] = TEST_ADMIN_KEY

TEST_TLS_DIR = Path(tempfile.mkdtemp(prefix="gridmesh-tests-tls-"))
"""The CA and certificates of every mesh the tests start (``tls.dir``), made
as ``gridmesh up`` makes them: the test process trusts the edges' CA
(``GRIDMESH_CA_FILE``, as a user exports it) and presents the local admin's
certificate to the mesh's own processes (tests.helpers.mesh_channel)."""
pki.ensure(TEST_TLS_DIR, list(PeerRole))
os.environ[CA_FILE_VAR] = str(TEST_TLS_DIR / pki.CA_CERT)
atexit.register(shutil.rmtree, TEST_TLS_DIR, True)


SECRETS_DIR = Path(tempfile.mkdtemp(prefix="gridmesh-tests-secrets-"))
"""``secrets_dir`` of the session's backing services and of every mesh:
one RabbitMQ user and ZooKeeper identity for all; each mesh (namespace)
gets MySQL accounts of its own there."""
atexit.register(shutil.rmtree, SECRETS_DIR, True)
SESSION_NAMESPACE = f"s{uuid.uuid4().hex[:10]}"
"""The namespace of the session's backing services' accounts."""
TESTS_MYSQL_ACCOUNT = f"{SESSION_NAMESPACE}_gridmesh_tests"
"""The tests' own MySQL account, for databases of their own (…_gridmesh_…)."""


def session_backing() -> dict[str, str]:
    """GRIDMESH_* settings of the session's backing services (its ZooKeeper,
    Kafka broker, RabbitMQ user and secrets), for a test that loads a config
    of its own."""
    return dict(_SESSION_BACKING)


_NAMESPACES: set[str] = {SESSION_NAMESPACE}
"""The namespaces of the session's meshes: their MySQL accounts are dropped at its end."""


def provision_mysql(config: MeshConfig) -> None:
    """Make ``config``'s MySQL accounts as ``gridmesh up`` does, for a test
    that builds a component in-process."""
    _NAMESPACES.add(config.namespace)
    backing.MySQL.from_config(config, backing.AptInstaller()).provision(functools.partial(_progress, "mysql"))


def mesh_env(state_dir: Path, **overrides: str) -> dict[str, str]:
    """A fresh namespace, free ports and its own state directory, on the
    session's backing services."""
    credentials = state_dir / "credentials" / "admin.key"
    credentials.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    credentials.write_text(TEST_ADMIN_KEY + "\n")
    credentials.chmod(0o600)
    env = base_env()
    env.update(_SESSION_BACKING)
    env.update(
        {
            "GRIDMESH_NAMESPACE": f"t{uuid.uuid4().hex[:10]}",
            "GRIDMESH_STATE_DIR": str(state_dir),
            "GRIDMESH_TLS_DIR": str(TEST_TLS_DIR),
            "GRIDMESH_SCHEDULER_PORT": str(free_port()),
            "GRIDMESH_STOREKEEPER_PORT": str(free_port()),
            "GRIDMESH_EVENTMANAGER_PORT": str(free_port()),
            "GRIDMESH_WORKER_BASE_PORT": str(free_port(WORKER_PORTS)),
            "GRIDMESH_ENVOY_PORT": str(free_port()),
            "GRIDMESH_ENVOY_ADMIN_PORT": str(free_port()),
            "GRIDMESH_CONSOLE_PORT": str(free_port()),
            "GRIDMESH_AUTH_PORT": str(free_port()),
            # Retention looks for expired tasks every half second (tests/e2e/test_tasks.py waits for it).
            "GRIDMESH_SCHEDULER_SWEEP_INTERVAL_S": "0.5",
            # Spark (~1 GB, ~10 s of CPU to start) only where a test asks for it.
            "GRIDMESH_ANALYTICS_ENABLED": "false",
            # Likewise the Prometheus server (tests/e2e/test_observability.py runs one).
            "GRIDMESH_METRICS_PROMETHEUS": "false",
        }
    )
    env.update(overrides)
    _NAMESPACES.add(env["GRIDMESH_NAMESPACE"])
    return env


@dataclass(frozen=True)
class RunningMesh:
    config: MeshConfig
    env: dict[str, str]

    @property
    def edge(self) -> str:
        return f"{self.config.envoy.host}:{self.config.envoy.port}"


@contextmanager
def own_mesh(state_dir: Path, overrides: Mapping[str, str], *, workers: int = 1) -> Iterator[RunningMesh]:
    """A mesh of its own (:func:`mesh_env` with ``overrides``), started by
    ``gridmesh up``'s code and stopped when the block ends."""
    env = mesh_env(state_dir, **overrides)
    config = load_config(env)
    try:
        mesh.up(config, workers=workers, env=env, progress=_progress)
        yield RunningMesh(config, env)
    finally:
        mesh.down(config, _progress)


@contextmanager
def mesh_with_analytics(state_dir: Path, **overrides: str) -> Iterator[RunningMesh]:
    """A mesh of its own with the analytics job (a short trigger interval) and
    its own Kafka broker; its analytics database is dropped after."""
    analytics = {
        "GRIDMESH_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # its own broker, started by up
        "GRIDMESH_ANALYTICS_ENABLED": "true",
        "GRIDMESH_ANALYTICS_TRIGGER_INTERVAL_S": "0.5",
        "GRIDMESH_ANALYTICS_STALL_AFTER_S": "3",  # tests/e2e/test_analytics.py holds the job
    }
    with own_mesh(state_dir, {**analytics, **overrides}) as running:
        try:
            yield running
        finally:
            config = running.config
            MySQL(config.mysql_login("analytics"), config.database("analytics")).drop_database()


@pytest.fixture(scope="session")
def backing_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshConfig]:
    """The backing services on their configured addresses, started if missing."""
    state = tmp_path_factory.mktemp("backing")
    own = {
        "GRIDMESH_ZOOKEEPER_HOSTS": f"127.0.0.1:{free_port()}",
        "GRIDMESH_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "GRIDMESH_SECRETS_DIR": str(SECRETS_DIR),
        "GRIDMESH_TLS_DIR": str(TEST_TLS_DIR),  # the broker's certificate and its clients'
        # Accounts of the session's own (MariaDB's under a namespace of its
        # own, a RabbitMQ user and vhost): provisioning one resets its
        # password, which must lock out neither a mesh a developer runs here
        # nor another test session.
        "GRIDMESH_NAMESPACE": SESSION_NAMESPACE,
        "GRIDMESH_RABBITMQ_USER": f"gridmesh-{SESSION_NAMESPACE}",
        "GRIDMESH_RABBITMQ_VHOST": f"gridmesh-{SESSION_NAMESPACE}",
    }
    config = load_config({"GRIDMESH_STATE_DIR": str(state), **own})
    runs, logs = mesh.run_dir(config), mesh.log_dir(config)
    runs.mkdir(parents=True)
    logs.mkdir(parents=True)
    try:
        backing.ensure_backing(config, runs, logs, _progress)
        backing.ensure_secret(config.secrets_path / ZOOKEEPER_SECRET)
        _SESSION_BACKING.update(own)
        yield config
    finally:
        for name in reversed(procs.recorded(runs)):
            procs.stop(name, runs)
        delete_rabbitmq_user(config.rabbitmq.user, config.rabbitmq.vhost)
        drop_mysql_accounts(_NAMESPACES)


@pytest.fixture(scope="session")
def tests_mysql(backing_services: MeshConfig) -> MySQLLogin:
    """The tests' own MySQL account, with every right on databases named
    like gridmesh's (``…gridmesh…``) and on no others."""
    account = backing.MySQLAccount(
        TESTS_MYSQL_ACCOUNT,
        backing_services.secrets_path / mysql_secret(TESTS_MYSQL_ACCOUNT),
        (("ALL PRIVILEGES", "%gridmesh%"),),
    )
    m = backing_services.mysql
    backing.MySQL(m.host, m.port, [account]).provision(functools.partial(_progress, "mysql"))
    return MySQLLogin(m.host, m.port, account.name, account.password() or "")


@pytest.fixture(scope="session")
def mesh_environment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment the session's mesh processes run with."""
    return mesh_env(tmp_path_factory.mktemp("mesh"))


@pytest.fixture(scope="session")
def mesh_config(backing_services: MeshConfig, mesh_environment: dict[str, str]) -> Iterator[MeshConfig]:
    """A whole mesh (services, one worker node, Envoy) started by ``gridmesh up``'s code."""
    env = mesh_environment
    config = load_config(env)
    try:
        mesh.up(config, workers=1, env=env, progress=_progress)
        yield config
    finally:
        mesh.down(config, _progress)


@pytest.fixture(scope="session")
def edge(mesh_config: MeshConfig) -> str:
    """host:port of the mesh's Envoy."""
    return f"{mesh_config.envoy.host}:{mesh_config.envoy.port}"
