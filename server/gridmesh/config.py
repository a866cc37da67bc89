"""Configuration: small frozen dataclasses, one per concern.

Built once, in a process's ``main()``, by :func:`load_config` from a mapping
of environment variables (``GRIDMESH_<SECTION>_<FIELD>``) and an optional
TOML file (``GRIDMESH_CONFIG`` or ``--config``; environment wins). Nothing
here reads ``os.environ`` itself, so tests pass their own mapping.

Every value is checked: an unknown key or a value of the wrong shape raises
:class:`~gridmesh.common.errors.ConfigError` naming the key, before anything
starts.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gridmesh.clients._channel import API_KEY_VAR, CA_FILE_VAR
from gridmesh.common.errors import ConfigError

ENV_PREFIX = "GRIDMESH_"
CONFIG_FILE_VAR = "GRIDMESH_CONFIG"
# Variables with the prefix that are not config keys: the clients' own.
_NON_CONFIG_VARS = frozenset({CONFIG_FILE_VAR, API_KEY_VAR, CA_FILE_VAR})


@dataclass(frozen=True)
class MySQLConfig:
    host: str = "127.0.0.1"
    """MySQL / MariaDB host."""
    port: int = 3306
    """MySQL / MariaDB TCP port."""
    # Each component logs in as an account of its own, named after its
    # database, with its password in <secrets_dir>/mysql/<account>.password
    # (see MeshConfig.mysql_login). On a local MariaDB, ``gridmesh up`` (as
    # root) creates the accounts through the unix socket; elsewhere create
    # them yourself (docs/deploy.md).


@dataclass(frozen=True)
class MySQLLogin:
    """Where and as whom one component reaches MySQL."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class RabbitMQConfig:
    host: str = "127.0.0.1"
    """RabbitMQ host."""
    port: int = 5672
    """AMQP port."""
    user: str = "gridmesh"
    """AMQP user, never ``guest``; its password is in
    <secrets_dir>/rabbitmq.password. On a local RabbitMQ, ``gridmesh up``
    (as root) creates it with rights on ``vhost`` only."""
    vhost: str = "gridmesh"
    """Virtual host of the mesh's exchanges and queues."""


@dataclass(frozen=True)
class ZooKeeperConfig:
    hosts: str = "127.0.0.1:2181"
    """Comma-separated host:port list of the ensemble."""
    user: str = "gridmesh"
    """Digest identity the mesh's znodes are restricted to (ACL); its
    password is in <secrets_dir>/zookeeper.password."""
    session_timeout_s: float = 10.0
    """Session timeout; ephemeral nodes vanish this long after a crash. A
    leader cut off from ZooKeeper steps down 0.9 of it after it was last
    heard. Keep it within the servers' bounds (2-20 ticks: 4-40 s by
    default): a server grants no longer a session than its maximum."""
    request_timeout_s: float = 5.0
    """Longest wait for one ZooKeeper request (e.g. while it is down) before
    the call fails with UNAVAILABLE instead of hanging."""
    server_id: int = 0
    """For ``gridmesh up --only zookeeper`` on a host of an ensemble: this
    host's place (1, 2, …) in ``hosts``; every host listed there is a server
    of the ensemble. 0 = one standalone server at the first of ``hosts``."""
    peer_port: int = 2888
    """Port the servers of an ensemble follow their leader on."""
    election_port: int = 3888
    """Port the servers of an ensemble elect their leader on."""


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str = "127.0.0.1:9092"
    """Kafka brokers (host:port, comma-separated)."""
    buffer_messages: int = 100_000
    """Life-cycle events kept locally while the broker is unreachable."""
    partitions: int = 1
    """Partitions of each life-cycle topic when gridmesh creates it."""
    replication_factor: int = 1
    """Replicas of each life-cycle topic when gridmesh creates it (3 on a cluster)."""
    controller_port: int = 0
    """KRaft controller port of the broker ``gridmesh up`` starts (0 = a free
    one; a cluster's brokers need a fixed one)."""
    node_id: int = 0
    """For ``gridmesh up --only kafka`` on a host of a cluster: this host's
    place (1, 2, …) in ``bootstrap_servers``; every broker listed there is
    also a KRaft controller at ``controller_port``. 0 = one single-node broker
    at the first of ``bootstrap_servers``."""
    cluster_id: str = ""
    """The KRaft cluster id every broker of a cluster formats its log with
    (22 characters of URL-safe base64; empty = one made on the first start,
    for a single node only)."""
    min_insync_replicas: int = 1
    """Replicas that must have an event before the broker acknowledges it
    (the producer asks for all in-sync ones): 2 on a 3-broker cluster keeps
    producing through the loss of one broker and loses nothing."""
    tls: bool = True
    """With ``tls.enabled``: the brokers ``gridmesh up`` starts take only
    mutual-TLS connections from certificates of the mesh's CA (the broker's
    own names its ``kafka`` role), and every client of the mesh presents its
    role's certificate. Off, for a Kafka of your own reached in plaintext."""


@dataclass(frozen=True)
class SchedulerConfig:
    host: str = "127.0.0.1"
    """Address the Scheduler listens on."""
    port: int = 50051
    """Scheduler gRPC port (0 = any free port)."""
    standby_port: int = 0
    """Port of a standby Scheduler that ``gridmesh up`` also starts (0 = none).
    Leader election through ZooKeeper picks which of the two serves."""
    addresses: str = ""
    """Every Scheduler of a mesh whose Schedulers run on several hosts
    (``host:port``, comma-separated): whom workers, the StoreKeeper and the
    edge call. Each Scheduler host gives its own ``host``
    (``GRIDMESH_SCHEDULER_HOST``). Empty = ``host:port`` and the standby."""
    lease_ttl_s: float = 10.0
    """A worker that has not renewed a lease for this long loses it."""
    heartbeat_interval_s: float = 2.0
    """How often workers renew their leases."""
    default_max_attempts: int = 3
    """Attempts of a task whose submit did not say (1 + silent retries)."""
    max_params_bytes: int = 1_048_576
    """Largest serialized params a submit may carry."""
    result_ttl_s: float = 7 * 86_400.0
    """How long a finished task and its result are kept, unless its submit
    gives its own result_ttl; then the retention sweeper deletes both."""
    sweep_interval_s: float = 60.0
    """How often the leading Scheduler's retention sweeper looks for expired tasks."""
    sweep_batch: int = 500
    """Tasks the sweeper deletes per round (bounded batches)."""


@dataclass(frozen=True)
class WorkerConfig:
    host: str = "127.0.0.1"
    """Address worker nodes listen on."""
    base_port: int = 50061
    """Port of the first worker node; node i listens on base_port + i."""
    slots: int = 2
    """Task processes per node (the peers' benchmarks use 2 as well)."""
    prefetch: int = -1
    """Tasks a node may hold beyond its slots, so its next task is there when
    a slot frees; the Scheduler takes back any that would wait while another
    node idles. -1 = as many as its slots; 0 = only as many as free slots."""

    stall_after_s: float = 600.0
    """A node whose prefetched tasks have waited this long for a slot while
    none of its slots started or finished a task is stalled (its task
    processes stopped or hung): it answers NOT_SERVING and the
    GridmeshWorkerStalled alert fires. Keep it above your longest task."""

    def prefetch_for(self, slots: int) -> int:
        """The prefetch of a node with ``slots`` slots."""
        return slots if self.prefetch < 0 else self.prefetch


@dataclass(frozen=True)
class StoreKeeperConfig:
    host: str = "127.0.0.1"
    """Address the StoreKeeper listens on."""
    port: int = 50052
    """StoreKeeper gRPC port (0 = any free port)."""
    storage_root: str = ""
    """Where results are written (empty = <state_dir>/results)."""
    max_result_bytes: int = 64 * 1024 * 1024
    """Largest result a task may store."""
    low_disk_bytes: int = 1024 * 1024 * 1024
    """``gridmesh up`` and ``status`` warn when less is free under the storage root."""


@dataclass(frozen=True)
class EventManagerConfig:
    host: str = "127.0.0.1"
    """Address the EventManager listens on."""
    port: int = 50053
    """EventManager gRPC port (0 = any free port)."""
    max_redeliveries: int = 5
    """Deliveries of one event before it goes to the dead-letter queue."""
    max_payload_bytes: int = 262_144
    """Largest serialized payload an event may carry."""


@dataclass(frozen=True)
class EnvoyConfig:
    host: str = "127.0.0.1"
    """Address Envoy listens on."""
    port: int = 8080
    """Edge port: gRPC and HTTP/JSON."""
    admin_port: int = 9901
    """Envoy admin interface port."""
    plaintext: bool = False
    """Serve the edge without TLS. Allowed only on a loopback ``host``; by
    default the edge serves TLS with the mesh's ``edge`` certificate, and
    clients trust ``<tls.dir>/ca.crt`` (``$GRIDMESH_CA_FILE``)."""


@dataclass(frozen=True)
class ConsoleConfig:
    enabled: bool = True
    """Serve the web console; Envoy routes ``/`` of the edge port to it."""
    host: str = "127.0.0.1"
    """Address the console's static file server listens on."""
    port: int = 50080
    """Port of the console's static file server (reach it through Envoy)."""
    assets_dir: str = ""
    """The built console (empty = ``console/dist`` of this checkout, built by ``./dev``)."""


@dataclass(frozen=True)
class DemoConfig:
    enabled: bool = False
    """Run the replication demo (CustomerService and OrderService) with
    ``gridmesh up`` and route it through Envoy; ``gridmesh up --demo`` sets it."""
    host: str = "127.0.0.1"
    """Address the demo services listen on."""
    customers_port: int = 50091
    """CustomerService gRPC port."""
    orders_port: int = 50092
    """OrderService gRPC port."""


@dataclass(frozen=True)
class AnalyticsConfig:
    enabled: bool = True
    """Whether ``gridmesh up`` starts the analytics job (Spark Structured
    Streaming over the life-cycle topics into MySQL)."""
    window_s: int = 60
    """Length of the tumbling event-time windows statistics are kept for."""
    watermark_s: float = 600.0
    """Allowed lateness: an event that occurred this long before the latest
    event time seen so far is late (counted apart, not in any window)."""
    retention_s: float = 86_400.0
    """How long stored events are kept behind the watermark; a queue wait or
    run time longer than this is not measured."""
    trigger_interval_s: float = 2.0
    """How often a micro-batch is started when there is new data."""
    max_batch_messages: int = 50_000
    """Most Kafka records one micro-batch reads."""
    spark_master: str = "local[1]"
    """Spark master URL (``local[N]``: N task threads in the job's own JVM;
    one is plenty for the life-cycle topics and leaves the cores to tasks)."""
    driver_memory: str = "512m"
    """Heap of the Spark driver JVM (``spark.driver.memory``)."""
    stall_after_s: float = 300.0
    """Records wait on the life-cycle topics and no micro-batch was stored for
    this long: the job is stalled (``gridmesh status`` says so,
    ``gridmesh_analytics_stalled`` is 1, GridmeshAnalyticsStalled fires)."""
    checkpoint_dir: str = ""
    """Spark checkpoint of the streaming query, i.e. the Kafka offsets it has
    read (empty = <state_dir>/analytics/checkpoint). Deleting it makes the
    job read the topics again from their beginning (nothing is counted twice)."""


@dataclass(frozen=True)
class AuthConfig:
    enabled: bool = True
    """Calls at the edge must present an API key whose role allows them
    (``gridmesh keys``); off, the edge serves anyone who reaches it."""
    host: str = "127.0.0.1"
    """Address the edge's authorizer listens on (Envoy asks it about every call)."""
    port: int = 50070
    """The authorizer's gRPC port."""
    refresh_s: float = 1.0
    """How often the authorizer reads the key table again: a revoked key is
    refused within this long."""
    credentials_file: str = ""
    """The local admin's key, which ``gridmesh up`` makes (0600) and the CLI
    uses when ``GRIDMESH_API_KEY`` is not set (empty = <state_dir>/credentials/admin.key)."""


@dataclass(frozen=True)
class TlsConfig:
    enabled: bool = True
    """Mutual TLS between the mesh's processes, Envoy to them included: each
    service takes an internal RPC only from a peer whose certificate names a
    role allowed to make it. Off, the internal ports are plaintext and trust
    whoever reaches them: for a closed network only."""
    dir: str = ""
    """The CA certificate ``ca.crt`` and each role's ``<role>.crt`` and
    ``<role>.key`` (empty = <state_dir>/tls). ``gridmesh up`` creates a local
    CA and what is missing; with an operator's own CA, place its
    ``ca.crt`` and the role files here and leave ``ca.key`` out."""
    names: str = ""
    """More DNS names or addresses the certificates ``up`` makes are valid
    for, comma-separated: e.g. the public name clients reach the edge by
    (localhost, 127.0.0.1, the config's hosts and this machine's names always are)."""


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    """Serve Prometheus metrics (``/metrics``) from every gridmesh process."""
    host: str = "127.0.0.1"
    """Address the metrics endpoints listen on (each process on a free port)."""
    targets_dir: str = ""
    """Where each process publishes its endpoint as a Prometheus file_sd
    target file while it runs (empty = <state_dir>/metrics/targets)."""
    prometheus: bool = True
    """``gridmesh up`` runs a Prometheus server (Debian's, installed once)
    that scrapes every process and evaluates the shipped alert rules."""
    alert_rules: str = ""
    """The alert rules the Prometheus server evaluates (empty = the shipped
    ``gridmesh/observability/alerts.yml``; give your own copy to change
    thresholds or ``for:`` durations)."""
    prometheus_port: int = 9190
    """Port of that Prometheus server (on ``host``); not Prometheus's usual
    9090, where Debian's own ``prometheus`` service starts once installed
    on a machine with systemd."""


@dataclass(frozen=True)
class TracingConfig:
    enabled: bool = False
    """Export OpenTelemetry spans from every gridmesh process and Envoy: one
    trace per task (submit, dispatch, run, store, completion, notice) and
    per replicated event (publish, deliver, apply)."""
    endpoint: str = ""
    """The OTLP/gRPC collector (``host:port``, plaintext) spans go to; empty =
    the Jaeger ``gridmesh up`` runs (``host:otlp_port``)."""
    sample_ratio: float = 1.0
    """The share of traces kept, decided where a trace starts (the client,
    Envoy, or the first gridmesh process the call reaches) and followed by
    every process after it: 1.0 keeps every task's trace; a busy mesh keeps
    a sample (0.1: one in ten), which costs it far less."""
    jaeger: bool = True
    """With tracing on and no ``endpoint``, ``gridmesh up`` runs Jaeger
    (built once from the Go module proxy) to store traces and show them."""
    host: str = "127.0.0.1"
    """Address that Jaeger listens on."""
    otlp_port: int = 4317
    """Jaeger's OTLP/gRPC receiver."""
    ui_port: int = 16686
    """Jaeger's UI and query API (``/api/traces/<trace id>``)."""

    @property
    def collector(self) -> str:
        """Where spans go: ``endpoint``, else the Jaeger ``up`` runs."""
        return self.endpoint or f"{self.host}:{self.otlp_port}"


@dataclass(frozen=True)
class MeshConfig:
    namespace: str = ""
    """Prefix for database names, ZooKeeper paths, RabbitMQ names and Kafka
    topics, so several meshes share one set of backing services."""
    state_dir: str = "~/.local/state/gridmesh"
    """Pids, logs and data of what ``gridmesh up`` starts."""
    secrets_dir: str = ""
    """Passwords of the backing services' accounts (0600 files, made by
    ``gridmesh up`` where it provisions the service; empty =
    <state_dir>/credentials). Hosts of one mesh share its contents."""
    cache_dir: str = "~/.cache/gridmesh"
    """Downloads kept across meshes: the Java jars fetched from Maven Central."""
    log_level: str = "INFO"
    """Python logging level of the services."""
    log_format: str = "text"
    """``text`` lines, or ``json``: one object per line with ts, level,
    logger, component, msg and, where known, task_id, worker_id and
    subscriber (``gridmesh logs`` shows either)."""
    mysql: MySQLConfig = field(default_factory=MySQLConfig)
    rabbitmq: RabbitMQConfig = field(default_factory=RabbitMQConfig)
    zookeeper: ZooKeeperConfig = field(default_factory=ZooKeeperConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    storekeeper: StoreKeeperConfig = field(default_factory=StoreKeeperConfig)
    eventmanager: EventManagerConfig = field(default_factory=EventManagerConfig)
    envoy: EnvoyConfig = field(default_factory=EnvoyConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    analytics: AnalyticsConfig = field(default_factory=AnalyticsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)

    # -- derived names, all under the namespace ---------------------------

    @property
    def scheduler_addresses(self) -> list[str]:
        """Every Scheduler: ``scheduler.addresses``, or the leader and, if
        configured, the standby on this host."""
        s = self.scheduler
        if s.addresses.strip():
            return [a.strip() for a in s.addresses.split(",") if a.strip()]
        ports = [s.port, s.standby_port] if s.standby_port else [s.port]
        return [f"{s.host}:{p}" for p in ports]

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir).expanduser()

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir).expanduser()

    @property
    def storage_root(self) -> Path:
        root = self.storekeeper.storage_root
        return Path(root).expanduser() if root else self.state_path / "results"

    @property
    def analytics_dir(self) -> Path:
        """The analytics job's status file and scratch space."""
        return self.state_path / "analytics"

    @property
    def analytics_checkpoint(self) -> Path:
        root = self.analytics.checkpoint_dir
        return Path(root).expanduser() if root else self.analytics_dir / "checkpoint"

    @property
    def credentials_path(self) -> Path:
        """The local admin's key file."""
        path = self.auth.credentials_file
        return Path(path).expanduser() if path else self.state_path / "credentials" / "admin.key"

    @property
    def kafka_tls(self) -> bool:
        """Whether the mesh reaches Kafka over mutual TLS."""
        return self.kafka.tls and self.tls.enabled

    @property
    def secrets_path(self) -> Path:
        return Path(self.secrets_dir).expanduser() if self.secrets_dir else self.state_path / "credentials"

    def secret(self, name: str) -> str:
        """The password in ``<secrets_dir>/<name>``; ConfigError if it is not there."""
        path = self.secrets_path / name
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            raise ConfigError(
                f"no password file {path}: gridmesh up writes it where it provisions the service; "
                "on another host, copy it from there (mode 0600) or set secrets_dir"
            ) from None

    def mysql_account(self, component: str) -> str:
        """The MySQL account of one component: named after its database."""
        return self.database(component)

    def mysql_login(self, component: str) -> MySQLLogin:
        """How ``component`` (scheduler, storekeeper, analytics, auth,
        demo_<name>) logs in to MySQL: as its own account, whose rights
        reach its own database only."""
        account = self.mysql_account(component)
        return MySQLLogin(self.mysql.host, self.mysql.port, account, self.secret(mysql_secret(account)))

    @property
    def rabbitmq_password(self) -> str:
        return self.secret(RABBITMQ_SECRET)

    @property
    def zookeeper_password(self) -> str:
        return self.secret(ZOOKEEPER_SECRET)

    @property
    def tls_path(self) -> Path:
        """The mesh's CA certificate and each role's certificate and key."""
        root = self.tls.dir
        return Path(root).expanduser() if root else self.state_path / "tls"

    @property
    def edge_address(self) -> str:
        return f"{self.envoy.host}:{self.envoy.port}"

    @property
    def edge_ca_file(self) -> str | None:
        """The CA certificate a client of the edge trusts; None for a plaintext edge."""
        return None if self.envoy.plaintext else str(self.tls_path / "ca.crt")

    @property
    def edge_url(self) -> str:
        """``https://host:port`` of the edge (``http://`` for a plaintext one)."""
        return f"{'http' if self.envoy.plaintext else 'https'}://{self.edge_address}"

    @property
    def metrics_targets(self) -> Path:
        """The file_sd directory: one target file per running process."""
        root = self.metrics.targets_dir
        return Path(root).expanduser() if root else self.state_path / "metrics" / "targets"

    def prefixed(self, name: str, sep: str = ".") -> str:
        """``name`` under the namespace: ``<namespace><sep><name>``."""
        return f"{self.namespace}{sep}{name}" if self.namespace else name

    def database(self, component: str) -> str:
        """MySQL database of one component, e.g. ``gridmesh_scheduler``."""
        return self.prefixed(f"gridmesh_{component}", "_")

    @property
    def zk_root(self) -> str:
        """ZooKeeper path everything of this mesh lives under."""
        return f"/{self.namespace}/gridmesh" if self.namespace else "/gridmesh"

    def topic(self, name: str) -> str:
        """Kafka topic, e.g. ``gridmesh.task.pending``."""
        return self.prefixed(f"gridmesh.{name}")


RABBITMQ_SECRET = "rabbitmq.password"
ZOOKEEPER_SECRET = "zookeeper.password"


def mysql_secret(account: str) -> str:
    """Name of a MySQL account's password file under ``secrets_dir``."""
    return f"mysql/{account}.password"


_NAMESPACE_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$|^$")
_SECTIONS = {f.name: f for f in dataclasses.fields(MeshConfig) if dataclasses.is_dataclass(f.default_factory)}


def host_port(address: str, default_port: int = 0) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``, or a bare host: ``default_port``) as its parts."""
    host, sep, port = address.strip().rpartition(":")
    if not sep:
        return address.strip(), default_port
    return host.strip("[]"), int(port)


def load_config(env: Mapping[str, str], file: str | Path | None = None) -> MeshConfig:
    """Build the mesh configuration from ``env`` and an optional TOML file.

    The file is ``file`` if given, else ``env["GRIDMESH_CONFIG"]`` if set.
    Top-level keys and ``[section]`` tables mirror :class:`MeshConfig`;
    ``GRIDMESH_<SECTION>_<FIELD>`` (or ``GRIDMESH_<FIELD>`` for top-level
    fields) overrides the file.
    """
    values: dict[str, Any] = {}
    path = file or env.get(CONFIG_FILE_VAR)
    if path:
        values = _read_file(Path(path))
    for key, raw in env.items():
        if not key.startswith(ENV_PREFIX) or key in _NON_CONFIG_VARS:
            continue
        section, name = _env_key(key)
        if section:
            values.setdefault(section, {})[name] = raw
        else:
            values[name] = raw
    return _build(MeshConfig, values, "")


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


def _env_key(key: str) -> tuple[str, str]:
    rest = key[len(ENV_PREFIX) :].lower()
    for section in _SECTIONS:
        if rest.startswith(section + "_"):
            return section, rest[len(section) + 1 :]
    return "", rest


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        key = f"{where}{name}"
        if name not in fields:
            raise ConfigError(f"unknown config key {_display(key)!s}")
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key {_display(key)} must be a table of settings")
            kwargs[name] = _build(typing.cast(type, hint), value, f"{key}.")
        else:
            kwargs[name] = _coerce(key, hint, value)
    built = cls(**kwargs)
    _validate(built, where)
    return built


def _display(key: str) -> str:
    env = ENV_PREFIX + key.replace(".", "_").upper()
    return f"{key!r} ({env})"


def _coerce(key: str, hint: Any, value: Any) -> Any:
    if isinstance(hint, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if hint is int:
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            if not isinstance(value, str | int | float):
                raise ValueError(value)
            return str(value)
    except (ValueError, TypeError):  # TypeError: e.g. a TOML list or table where a number belongs
        kind = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[hint]
        raise ConfigError(f"config key {_display(key)} must be {kind}, got {value!r}") from None
    raise ConfigError(f"config key {_display(key)} has an unsupported type")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_HOST_PORT_RE = re.compile(r"(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:]+\]):[0-9]{1,5}")


def _validate(section: Any, where: str) -> None:
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        key = f"{where}{f.name}"
        if f.name.endswith("port") and isinstance(value, int) and not 0 <= value <= 65535:
            raise ConfigError(f"config key {_display(key)} must be a TCP port (0-65535), got {value}")
        if (
            f.name in ("slots", "default_max_attempts", "max_redeliveries", "replication_factor", "min_insync_replicas")
            and value < 1
        ):
            raise ConfigError(f"config key {_display(key)} must be at least 1, got {value}")
        if f.name == "prefetch" and value < -1:
            raise ConfigError(f"config key {_display(key)} must be -1 (as many as slots) or more, got {value}")
        if f.name.endswith(("_s", "_bytes", "_messages")) and value <= 0:
            raise ConfigError(f"config key {_display(key)} must be positive, got {value}")
    if isinstance(section, EnvoyConfig) and section.plaintext and not _loopback(section.host):
        raise ConfigError(
            f"config key {_display('envoy.plaintext')} is allowed only with a loopback envoy.host, "
            f"not {section.host!r}: serve the edge over TLS anywhere else"
        )
    if isinstance(section, TracingConfig) and not 0.0 <= section.sample_ratio <= 1.0:
        raise ConfigError(
            f"config key {_display('tracing.sample_ratio')} must be between 0 and 1, got {section.sample_ratio}"
        )
    if isinstance(section, TracingConfig) and section.endpoint and not _HOST_PORT_RE.fullmatch(section.endpoint):
        raise ConfigError(
            f"config key {_display('tracing.endpoint')} must be the host:port of an OTLP/gRPC collector, "
            f"got {section.endpoint!r}"
        )
    if isinstance(section, ZooKeeperConfig):
        servers = len(section.hosts.split(","))
        if not 0 <= section.server_id <= servers:
            raise ConfigError(
                f"config key {_display('zookeeper.server_id')} must be 0 or a place in zookeeper.hosts "
                f"(1-{servers}), got {section.server_id}"
            )
    if isinstance(section, KafkaConfig) and section.node_id:
        brokers = len(section.bootstrap_servers.split(","))
        if not 1 <= section.node_id <= brokers:
            raise ConfigError(
                f"config key {_display('kafka.node_id')} must be 0 or a place in kafka.bootstrap_servers "
                f"(1-{brokers}), got {section.node_id}"
            )
        if not section.controller_port or not re.fullmatch(r"[A-Za-z0-9_-]{22}", section.cluster_id):
            raise ConfigError(
                f"a broker of a cluster ({_display('kafka.node_id')} {section.node_id}) needs a fixed "
                f"{_display('kafka.controller_port')} and the cluster's {_display('kafka.cluster_id')} "
                "(22 characters of URL-safe base64, the same on every broker)"
            )
    if isinstance(section, MeshConfig) and not _NAMESPACE_RE.match(section.namespace):
        raise ConfigError(
            f"config key {_display('namespace')} must match [a-z][a-z0-9_]{{0,30}}, got {section.namespace!r}"
        )
    if isinstance(section, MeshConfig) and section.log_level.upper() not in (
        "DEBUG",
        "INFO",
        "WARNING",
        "ERROR",
    ):
        raise ConfigError(f"config key {_display('log_level')} must be DEBUG, INFO, WARNING or ERROR")
    if isinstance(section, MeshConfig) and section.log_format not in ("text", "json"):
        raise ConfigError(f"config key {_display('log_format')} must be text or json, got {section.log_format!r}")
