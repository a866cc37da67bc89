"""``gridmesh up`` / ``down`` / ``status``: the whole mesh on this machine.

``up`` makes sure every backing service answers (starting those that do not,
see :mod:`gridmesh.cli.backing`), then starts the four services, the worker
nodes and Envoy as background processes recorded by pid under the state
directory, and waits for each to be healthy. ``down`` stops exactly what
``up`` recorded, newest first.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import socket
import ssl
import sys
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gridmesh import clients
from gridmesh.adapters import pki
from gridmesh.analytics import status as analytics_status
from gridmesh.cli import backing, ports, procs
from gridmesh.clients import EventClient, TaskClient
from gridmesh.common.errors import ConfigError, Unavailable
from gridmesh.config import API_KEY_VAR, CONFIG_FILE_VAR, ZOOKEEPER_SECRET, MeshConfig, host_port
from gridmesh.console.app import assets_path, check_assets
from gridmesh.core.access import PeerRole, Role
from gridmesh.edge.envoy import envoy_argv, render_envoy_config
from gridmesh.edge.keys import KeyStore
from gridmesh.grpc_support.probe import grpc_health, to_component, to_edge
from gridmesh.grpc_support.tls import MeshTls
from gridmesh.observability import jaeger
from gridmesh.observability import server as prometheus_server

SERVICE_START_TIMEOUT_S = 30.0
ANALYTICS_START_TIMEOUT_S = 120.0
"""Spark's JVM and the first query take a while on a busy machine."""
ENVOY_START_TIMEOUT_S = 30.0

Progress = Callable[[str, str], None]


@dataclass(frozen=True)
class Component:
    """One process of the mesh that ``up`` starts."""

    name: str
    host: str
    port: int
    spec: procs.ProcessSpec
    health_service: str
    """gRPC health service name; empty for Envoy (checked on its admin port)."""
    peer: PeerRole | None = None
    """The role its certificate names (mutual TLS); None: plaintext, or not gRPC."""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}" if self.port else self.host


ROLES_FILE = "roles"
"""Under the run directory: the roles ``up`` took on this host."""
AUTHZ_SERVICE = "envoy.service.auth.v3.Authorization"
"""The health service name of the edge's authorizer."""


def run_dir(config: MeshConfig) -> Path:
    return config.state_path / "run"


def log_dir(config: MeshConfig) -> Path:
    return config.state_path / "log"


def _python_module(name: str, module: str, env: Mapping[str, str], *args: str) -> procs.ProcessSpec:
    return procs.ProcessSpec(name=name, argv=[sys.executable, "-m", module, *args], env=dict(env))


def components(config: MeshConfig, workers: int, env: Mapping[str, str]) -> list[Component]:
    """The mesh's own processes in start order (Jaeger first, Envoy last)."""
    result = [
        Component(
            "scheduler",
            config.scheduler.host,
            config.scheduler.port,
            _python_module("scheduler", "gridmesh.scheduler", env),
            "gridmesh.v1.Scheduler",
            PeerRole.SCHEDULER,
        ),
        Component(
            "storekeeper",
            config.storekeeper.host,
            config.storekeeper.port,
            _python_module("storekeeper", "gridmesh.storekeeper", env),
            "gridmesh.v1.StoreKeeper",
            PeerRole.STOREKEEPER,
        ),
        Component(
            "eventmanager",
            config.eventmanager.host,
            config.eventmanager.port,
            _python_module("eventmanager", "gridmesh.eventmanager", env),
            "gridmesh.v1.EventManager",
            PeerRole.EVENTMANAGER,
        ),
    ]
    if config.scheduler.standby_port:
        result.insert(
            1,
            Component(
                "scheduler-standby",
                config.scheduler.host,
                config.scheduler.standby_port,
                _python_module(
                    "scheduler-standby",
                    "gridmesh.scheduler",
                    {**env, "GRIDMESH_SCHEDULER_PORT": str(config.scheduler.standby_port)},
                ),
                "gridmesh.v1.Scheduler",
                PeerRole.SCHEDULER,
            ),
        )
    if jaeger.runs_jaeger(config):  # first: the others' spans have somewhere to go from the start
        spec = procs.ProcessSpec(name="jaeger", argv=jaeger.argv(config), env={**env, **jaeger.process_env(config)})
        result.insert(0, Component("jaeger", config.tracing.host, config.tracing.ui_port, spec, ""))
    for i in range(workers):
        port = config.worker.base_port + i
        result.append(
            Component(
                f"worker-{i + 1}",
                config.worker.host,
                port,
                _python_module(f"worker-{i + 1}", "gridmesh.worker", env, "--port", str(port)),
                "gridmesh.v1.Worker",
                PeerRole.WORKER,
            )
        )
    if config.demo.enabled:  # the replication demo (gridmesh up --demo)
        for name, port, service in (
            ("customers", config.demo.customers_port, "CustomerService"),
            ("orders", config.demo.orders_port, "OrderService"),
        ):
            spec = _python_module(f"demo-{name}", f"gridmesh.demo.{name}", env)
            result.append(Component(f"demo-{name}", config.demo.host, port, spec, f"gridmesh.demo.v1.{service}"))
    if config.analytics.enabled:  # no port: its health is its status file
        spec = _python_module("analytics", "gridmesh.analytics", env)
        result.append(Component("analytics", config.analytics.spark_master, 0, spec, ""))
    if config.console.enabled:  # static files; Envoy routes / to it
        spec = _python_module("console", "gridmesh.console", env)
        result.append(Component("console", config.console.host, config.console.port, spec, ""))
    if prometheus_enabled(config):  # scrapes every process through the file_sd targets
        spec = procs.ProcessSpec(name="prometheus", argv=prometheus_server.argv(config), env=dict(env))
        result.append(Component("prometheus", config.metrics.host, config.metrics.prometheus_port, spec, ""))
    if config.auth.enabled:  # the edge's authorizer, asked by Envoy about every call
        spec = _python_module("authz", "gridmesh.edge.authz", env)
        result.append(Component("authz", config.auth.host, config.auth.port, spec, AUTHZ_SERVICE, PeerRole.AUTHZ))
    envoy_config = config.state_path / "envoy" / "envoy.yaml"
    result.append(
        Component(
            "envoy",
            config.envoy.host,
            config.envoy.port,
            procs.ProcessSpec(name="envoy", argv=envoy_argv(envoy_config), env=dict(env)),
            "",
        )
    )
    return result


def with_demo(config: MeshConfig, env: Mapping[str, str]) -> tuple[MeshConfig, dict[str, str]]:
    """``config`` and the children's ``env`` with the replication demo enabled."""
    demo = dataclasses.replace(config.demo, enabled=True)
    return dataclasses.replace(config, demo=demo), {**env, "GRIDMESH_DEMO_ENABLED": "true"}


def with_tracing(config: MeshConfig, env: Mapping[str, str]) -> tuple[MeshConfig, dict[str, str]]:
    """``config`` and the children's ``env`` with tracing on."""
    traced = dataclasses.replace(config.tracing, enabled=True)
    return dataclasses.replace(config, tracing=traced), {**env, "GRIDMESH_TRACING_ENABLED": "true"}


def component_health(config: MeshConfig, component: Component) -> str:
    """``healthy``, ``standby`` (a Scheduler ready to lead while another
    does), ``waiting for leadership`` (no Scheduler leads yet: the last
    leader's ZooKeeper session has not expired) or what is wrong."""
    if component.name == "analytics":
        return analytics_health(config)
    if component.port and ports.nothing_listens(component.host, component.port):
        return "DOWN"  # not started yet, or gone: no connection to it (see gridmesh.cli.ports)
    if component.name == "envoy":
        edge = (
            grpc_health(component.address, "gridmesh.v1.Scheduler", connect=to_edge(config.edge_ca_file))
            if envoy_ready(config)
            else "DOWN"
        )
        return "healthy" if edge == "SERVING" else edge
    if component.name == "console":
        return "healthy" if http_ok(f"http://{component.address}/healthz") else "DOWN"
    if component.name == "prometheus":
        return "healthy" if http_ok(f"{prometheus_server.url(config)}/-/ready") else "DOWN"
    if component.name == "jaeger":
        return "healthy" if http_ok(f"{jaeger.url(config)}/api/services") else "DOWN"
    tls = functools.partial(MeshTls.load, config, PeerRole.ADMIN) if component.peer is not None else None
    connect = to_component(tls, component.peer or PeerRole.SCHEDULER)
    health = grpc_health(component.address, component.health_service, connect=connect)
    if health == "NOT_SERVING" and component.name.startswith("scheduler"):
        others = [a for a in config.scheduler_addresses if a != component.address]
        leads = any(grpc_health(a, component.health_service, connect=connect) == "SERVING" for a in others)
        return "standby" if leads else "waiting for leadership"
    if health == "NOT_SERVING" and component.name.startswith("worker-"):
        return "NOT_SERVING (stalled: tasks wait and none starts or finishes; or draining)"
    return "healthy" if health == "SERVING" else health


def _client_args(config: MeshConfig) -> dict[str, Any]:
    """How the CLI's clients reach the edge: its address, the key of
    :func:`api_key`, TLS trusting the mesh's CA (or plaintext, if so configured)."""
    return {
        "target": config.edge_address,
        "api_key": api_key(config),
        "ca_file": config.edge_ca_file,
        "plaintext": config.envoy.plaintext,
    }


def task_client(config: MeshConfig) -> TaskClient:
    return TaskClient(**_client_args(config))


def event_client(config: MeshConfig) -> EventClient:
    return EventClient(**_client_args(config))


def analytics_health(config: MeshConfig) -> str:
    """The analytics job's health, from its status file (see :mod:`gridmesh.analytics.status`)."""
    pid = procs.alive("analytics", run_dir(config))
    status = analytics_status.read_status(analytics_status.status_path(config))
    if status is not None and status.pid != pid:
        status = None  # left by an earlier run
    return analytics_status.health(status, pid is not None, datetime.now(UTC))


def analytics_address(config: MeshConfig) -> str:
    """Where the job runs, its last micro-batch and its lag, for ``gridmesh status``."""
    status = analytics_status.read_status(analytics_status.status_path(config))
    return f"{config.analytics.spark_master}: {analytics_status.describe(status)}"


def component_healthy(config: MeshConfig, component: Component) -> bool:
    return component_health(config, component) in ("healthy", "standby")


def envoy_ready(config: MeshConfig) -> bool:
    return http_ok(f"http://{config.envoy.host}:{config.envoy.admin_port}/ready")


def http_ok(url: str, ca_file: str | None = None) -> bool:
    """Whether ``url`` answers 200 (an https one checked against ``ca_file``)."""
    context = ssl.create_default_context(cafile=ca_file) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=1.0, context=context) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def console_url(config: MeshConfig) -> str:
    return f"{config.edge_url}/"


def child_env(env: Mapping[str, str], config_file: str | None) -> dict[str, str]:
    result = dict(env)
    if config_file:
        result[CONFIG_FILE_VAR] = str(Path(config_file).resolve())
    return result


BACKING_ROLES = ("mysql", "rabbitmq", "zookeeper", "kafka")
ROLES = (
    *BACKING_ROLES,
    "scheduler",
    "storekeeper",
    "eventmanager",
    "worker",
    "analytics",
    "console",
    "edge",
    "demo",
    "prometheus",
    "jaeger",
)
"""What one host of a mesh may run (``gridmesh up --only``): each backing
service, each of gridmesh's processes (``scheduler`` includes a configured
standby, ``worker`` every node, ``edge`` is Envoy and its authorizer)."""


_PROCESS_ROLES = frozenset(ROLES) - {*BACKING_ROLES, "prometheus", "jaeger"}
"""The roles that run gridmesh's own processes (which need certificates)."""


def role_of(name: str) -> str:
    """The role of a backing service or component, by its process name."""
    for prefix, role in (
        ("worker-", "worker"),
        ("scheduler", "scheduler"),
        ("demo-", "demo"),
        ("envoy", "edge"),
        ("authz", "edge"),
    ):
        if name.startswith(prefix):
            return role
    return name


def parse_roles(text: str) -> frozenset[str]:
    """``--only``'s comma-separated roles; :class:`ConfigError` naming the known ones."""
    roles = frozenset(r.strip().lower() for r in text.split(",") if r.strip())
    unknown = sorted(roles - set(ROLES))
    if unknown or not roles:
        raise ConfigError(f"--only takes roles among {', '.join(ROLES)}; got {text!r}")
    return roles


def host_roles(config: MeshConfig) -> frozenset[str]:
    """The roles the last ``up`` on this state directory took (all by default)."""
    try:
        return parse_roles((run_dir(config) / ROLES_FILE).read_text())
    except (OSError, ConfigError):
        return frozenset(ROLES)


def up(
    config: MeshConfig,
    *,
    workers: int,
    env: Mapping[str, str],
    progress: Progress,
    roles: frozenset[str] = frozenset(ROLES),
) -> None:
    """Start whatever of the mesh (of ``roles``, on a host that runs only
    some) is not running and wait until all is healthy."""
    if config.console.enabled and "console" in roles:
        check_assets(assets_path(config))  # before anything starts
    runs, logs = run_dir(config), log_dir(config)
    for d in (runs, logs):
        d.mkdir(parents=True, exist_ok=True)
    (runs / ROLES_FILE).write_text(",".join(r for r in ROLES if r in roles))
    if config.tls.enabled or not config.envoy.plaintext:
        ensure_certificates(config, progress, roles)  # before the backing services: the Kafka broker has one
    wanted = [s for s in backing.backing_services(config) if s.name in roles]
    backing.ensure_backing(config, runs, logs, progress, services=wanted)
    # The mesh's ZooKeeper identity: nothing to create on the servers (its znodes carry the ACL).
    backing.ensure_secret(config.secrets_path / ZOOKEEPER_SECRET)
    if config.analytics.enabled and "analytics" in roles:
        backing.ensure_spark_kafka(config, progress)
    if "storekeeper" in roles:
        config.storage_root.mkdir(parents=True, exist_ok=True)

    if "prometheus" in roles and prometheus_enabled(config):
        ensure_prometheus(config, progress)
    if "jaeger" in roles and jaeger.runs_jaeger(config):
        jaeger.ensure(config, progress)
        jaeger.write_config(config)
    if "edge" in roles:
        if config.auth.enabled:
            ensure_admin_key(config, progress)
        envoy_config = config.state_path / "envoy" / "envoy.yaml"
        envoy_config.parent.mkdir(parents=True, exist_ok=True)
        envoy_config.write_text(render_envoy_config(config))

    mesh = [c for c in components(config, workers, env) if role_of(c.name) in roles]
    to_start = []
    for component in mesh:
        if procs.alive(component.name, runs):
            progress(component.name, f"already running ({component.address})")
        elif component.port and ports.in_use(component.host, component.port):
            raise Unavailable(
                f"{component.name}: port {component.port} is in use by a process gridmesh did not start; "
                f"stop it or configure another port"
            )
        else:
            to_start.append(component)
    if (
        config.envoy.admin_port
        and ports.in_use(config.envoy.host, config.envoy.admin_port)
        and any(c.name == "envoy" for c in to_start)
    ):
        raise Unavailable(f"envoy: admin port {config.envoy.admin_port} is in use by another process")

    for component in to_start:
        procs.start(component.spec, runs, logs)
        progress(component.name, "starting")
    for component in mesh:
        if component in to_start:
            timeout = ENVOY_START_TIMEOUT_S if component.name == "envoy" else SERVICE_START_TIMEOUT_S
            timeout = ANALYTICS_START_TIMEOUT_S if component.name == "analytics" else timeout
            procs.wait_until(
                lambda c=component: component_healthy(config, c),  # type: ignore[misc]
                timeout,
                f"{component.name} ({component.address})",
                logs / f"{component.name}.log",
            )
            progress(component.name, f"healthy ({component.address})")
    if "storekeeper" in roles and (disk := storage_space(config)).low:
        progress("storekeeper", f"warning: {disk.describe()}")


def api_key(config: MeshConfig, env: Mapping[str, str] = os.environ) -> str | None:
    """The key the CLI presents: ``$GRIDMESH_API_KEY``, else the local
    admin's credentials file if this user can read it, else none."""
    key = env.get(API_KEY_VAR, "").strip()
    if key:
        return key
    try:
        return config.credentials_path.read_text().strip() or None
    except OSError:
        return None


def key_metadata(config: MeshConfig) -> tuple[tuple[str, str], ...]:
    """gRPC metadata presenting :func:`api_key` (none without a key)."""
    return clients.key_metadata(api_key(config))


prometheus_enabled = prometheus_server.enabled


def ensure_prometheus(config: MeshConfig, progress: Progress) -> None:
    """Debian's Prometheus, installed once, and its configuration for this mesh."""
    if not os.access(prometheus_server.PROMETHEUS, os.X_OK):
        backing.AptInstaller().install("prometheus", lambda message: progress("prometheus", message))
    data = prometheus_server.data_dir(config)
    data.mkdir(parents=True, exist_ok=True)
    config.metrics_targets.mkdir(parents=True, exist_ok=True)
    (data / "prometheus.yml").write_text(prometheus_server.render(config))


_CERTIFICATES = {
    "scheduler": (PeerRole.SCHEDULER,),
    "storekeeper": (PeerRole.STOREKEEPER,),
    "eventmanager": (PeerRole.EVENTMANAGER,),
    "worker": (PeerRole.WORKER,),
    "edge": (PeerRole.EDGE, PeerRole.AUTHZ),
    "analytics": (PeerRole.ANALYTICS,),
    "kafka": (PeerRole.KAFKA,),
}
"""The certificates the processes of each role of a host present."""


def ensure_certificates(config: MeshConfig, progress: Progress, roles: frozenset[str] = frozenset(ROLES)) -> None:
    """The mesh's CA and a certificate per role (mutual TLS), made once under
    ``tls.dir``; an operator's own, placed there, are kept as they are. The
    host that runs the Scheduler makes the CA; a host that joins a mesh
    (``up --only worker``, say) needs the mesh's CA and its roles' files
    there, and the admin's (``up`` checks health with it)."""
    if "scheduler" in roles:
        needed = list(PeerRole)
    elif roles & (_PROCESS_ROLES | {"kafka"}):
        needed = [PeerRole.ADMIN, *(c for role in sorted(roles) for c in _CERTIFICATES.get(role, ()))]
    else:
        return  # a host of other backing services only (MariaDB, ZooKeeper, …) needs none
    hosts = {socket.gethostname(), socket.getfqdn(), *(n.strip() for n in config.tls.names.split(",") if n.strip())}
    brokers = [host_port(b)[0] for b in config.kafka.bootstrap_servers.split(",") if b.strip()]
    for host in (
        config.scheduler.host,
        config.storekeeper.host,
        config.eventmanager.host,
        config.worker.host,
        config.envoy.host,
        *brokers,
    ):
        if host not in ("0.0.0.0", "::", ""):
            hosts.add(host)
    issued = pki.ensure(config.tls_path, needed, sorted(hosts), new_ca="scheduler" in roles)
    if issued:
        progress("tls", f"issued certificates for {', '.join(issued)} in {config.tls_path} (CA: ca.crt)")


def ensure_admin_key(config: MeshConfig, progress: Progress) -> None:
    """The local admin's key: made once and kept in the credentials file
    (0600, in a 0700 directory), registered as an ``admin`` key. A file
    placed there beforehand (an operator's own key) is registered as is."""
    path = config.credentials_path
    store = KeyStore.open(config)
    try:
        if path.exists():
            if store.register(path.read_text().strip(), Role.ADMIN, "the local admin (gridmesh up)"):
                progress("authz", f"registered the admin key in {path}")
            return
        record, key = store.create(Role.ADMIN.value, note="the local admin (gridmesh up)")
    finally:
        store.close()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    progress("authz", f"made the admin key {record.key_id}: {path} (0600)")


def down(config: MeshConfig, progress: Progress) -> None:
    """Stop every process ``up`` recorded, newest first."""
    runs = run_dir(config)
    for name in reversed(procs.recorded(runs)):
        stopped = procs.stop(name, runs)
        progress(name, "stopped" if stopped else "was not running")


@dataclass(frozen=True)
class DiskSpace:
    """Free space under the storage root (where results are written)."""

    root: Path
    free_bytes: int
    low_bytes: int

    @property
    def low(self) -> bool:
        return self.free_bytes < self.low_bytes

    def describe(self) -> str:
        text = f"{_size(self.free_bytes)} free under {self.root}"
        return f"{text} (less than {_size(self.low_bytes)}: results will soon fail to store)" if self.low else text


def storage_space(config: MeshConfig) -> DiskSpace:
    """Free space of the file system the storage root is (or will be) on."""
    root = config.storage_root
    existing = next(p for p in (root, *root.parents) if p.exists())
    return DiskSpace(root, shutil.disk_usage(existing).free, config.storekeeper.low_disk_bytes)


def _size(n: int) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def status(config: MeshConfig, workers_hint: int = 0) -> list[tuple[str, str, str, str]]:
    """Rows of (component, address, pid, health) for every part of the mesh
    this host runs (the roles of its last ``up``)."""
    runs = run_dir(config)
    roles = host_roles(config)
    rows: list[tuple[str, str, str, str]] = []
    for service in (s for s in backing.backing_services(config) if s.name in roles):
        pid = procs.alive(service.name, runs)
        health = "healthy" if service.probe() else "DOWN"
        origin = str(pid) if pid else "external"
        rows.append((service.name, service.address, origin, health))
    recorded = set(procs.recorded(runs))
    workers = max(workers_hint, sum(1 for n in recorded if n.startswith("worker-")))
    if any(n.startswith("demo-") for n in recorded):  # started by `gridmesh up --demo`
        config = with_demo(config, {})[0]
    for component in (c for c in components(config, workers, os.environ) if role_of(c.name) in roles):
        pid = procs.alive(component.name, runs)
        health = component_health(config, component)
        address = analytics_address(config) if component.name == "analytics" else component.address
        if component.name == "storekeeper":
            disk = storage_space(config)
            address = f"{address}, {disk.describe()}"
            health = "low disk" if health == "healthy" and disk.low else health
        rows.append((component.name, address, str(pid) if pid else "-", health))
    return rows
