"""A whole mesh spread over hosts (network namespaces), each host started the
way an operator starts a machine: a config file of its own (the mesh's
settings, plus its state directory and its own address or place where that
differs per host, ``hosts/<name>.toml``) and ``gridmesh up --only ROLES`` run
on the host.

The layout (``10.77.0.x``):

========== ===== ===========================================================
host       .x    runs
========== ===== ===========================================================
db         10    MariaDB and RabbitMQ (servers of their own, see below)
zk1-3      11-13 a ZooKeeper ensemble (``up --only zookeeper``, server ids 1-3)
kafka1-3   21-23 an Apache Kafka cluster, KRaft, replication factor 3,
                 ``min.insync.replicas`` 2 (``up --only kafka``, node ids 1-3)
sched1-2   31-32 a Scheduler each: one leads, the other stands by
store      33    the StoreKeeper and the EventManager
edge       34    Envoy and its authorizer (TLS, API keys)
w1-3       41-43 a worker node each
spark      51    a Spark standalone master (pyspark's ``spark-class``) and
                 the analytics job (``up --only analytics``) as its driver
sparkw1-2  52-53 a Spark standalone worker each
========== ===== ===========================================================

All hosts share this machine's file system, so MariaDB and RabbitMQ on ``db``
get data directories (and a RabbitMQ node name) of their own instead of the
Debian packages' (which the machine's own servers may be using): they stand
for servers an operator already runs, and get gridmesh's user the way
docs/deploy.md tells the operator to make it. Spark's master and workers
likewise stand for a Spark cluster the analytics job is pointed at.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gridmesh.cli import backing, mesh
from gridmesh.config import RABBITMQ_SECRET, MeshConfig, load_config
from tests.helpers import wait_for
from tests.hosts.netns import Host, Network

log = logging.getLogger(__name__)

PYTHON = sys.executable
GRIDMESH = str(Path(sys.executable).parent / "gridmesh")
"""The CLI as installed beside this interpreter (``./dev`` installs it)."""
UP_TIMEOUT_S = 300.0
SPARK_PORT = 7077
SPARK_UI_PORT = 8090
SCHEDULER_PORT = 50051
EDGE_PORT = 8080
RABBITMQ_NODE = "gridmesh-hosts@localhost"
"""The db host's RabbitMQ node (``localhost`` is the host's own loopback)."""


@dataclass(frozen=True)
class Layout:
    """Which hosts there are; ``workers`` worker hosts (1-3), Spark or not."""

    workers: int = 3
    slots: int = 8
    spark: bool = True

    def hosts(self) -> list[tuple[str, int]]:
        hosts = [("db", 10), ("zk1", 11), ("zk2", 12), ("zk3", 13), ("kafka1", 21), ("kafka2", 22), ("kafka3", 23)]
        hosts += [("sched1", 31), ("sched2", 32), ("store", 33), ("edge", 34)]
        hosts += [(f"w{i}", 40 + i) for i in range(1, self.workers + 1)]
        if self.spark:
            hosts += [("spark", 51), ("sparkw1", 52), ("sparkw2", 53)]
        return hosts


@dataclass
class Cluster:
    """Start with :meth:`start`, end with :meth:`stop` (idempotent)."""

    base: Path
    layout: Layout = field(default_factory=Layout)
    net: Network = field(default_factory=Network)
    namespace: str = "hosts"
    lease_ttl_s: float = 4.0
    session_timeout_s: float = 6.0
    admin_key_given: str = ""
    """An admin key for the edge host to register (``up`` makes one if empty)."""

    def __post_init__(self) -> None:
        self.base = self.base.resolve()
        self.kafka_cluster_id = backing.kafka_cluster_id()
        self.tls_dir = self.base / "tls"
        self.secrets_dir = self.base / "secrets"

    # -- addresses ----------------------------------------------------------------

    def host(self, name: str) -> Host:
        return self.net.hosts[name]

    def hosts_named(self, prefix: str) -> list[Host]:
        return [h for n, h in self.net.hosts.items() if n.rstrip("0123456789") == prefix]

    @property
    def edge(self) -> str:
        return f"{self.host('edge').address}:{EDGE_PORT}"

    @property
    def ca_file(self) -> str:
        return str(self.tls_dir / "ca.crt")

    @property
    def admin_key(self) -> str:
        return (self.state_dir("edge") / "credentials" / "admin.key").read_text().strip()

    def state_dir(self, host: str) -> Path:
        return self.base / "hosts" / host

    def config(self, host: str = "edge") -> MeshConfig:
        """The mesh's configuration as ``host`` reads it."""
        return load_config(self.host_env(self.host(host)))

    # -- starting -----------------------------------------------------------------

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o755)  # the mysql and rabbitmq users keep their data under it
        self.net.create()
        for name, octet in self.layout.hosts():
            self.net.add(name, octet)
        self._write_configs()
        if self.admin_key_given:
            credentials = self.state_dir("edge") / "credentials" / "admin.key"
            credentials.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            credentials.write_text(self.admin_key_given + "\n")
            credentials.chmod(0o600)
        self._install()
        started = time.monotonic()
        self._parallel([self._start_mysql, self._start_rabbitmq, self._start_spark_cluster])
        # The mesh's CA and certificates, made as sched1's `up` makes them; the
        # Kafka brokers present theirs, so they come first.
        mesh.ensure_certificates(self.config("sched1"), lambda *_: None, frozenset(mesh.ROLES))
        self.up_all([(h.name, "zookeeper") for h in self.hosts_named("zk")])
        self.up_all([(h.name, "kafka") for h in self.hosts_named("kafka")])
        self.up(self.host("sched1"), "scheduler")
        self.up_all([("sched2", "scheduler"), ("store", "storekeeper,eventmanager"), ("edge", "edge")])
        self.up_all([(h.name, "worker") for h in self.hosts_named("w")])
        if self.layout.spark:
            self.up(self.host("spark"), "analytics")
        log.info("mesh on %d hosts up in %.1f s", len(self.net.hosts), time.monotonic() - started)

    def _install(self) -> None:
        """What the hosts run, installed once beforehand as ``gridmesh up``
        installs it (hosts starting at once would fight over dpkg's lock)."""
        config = self.config("db")
        apt = backing.AptInstaller()
        for service in backing.backing_services(config, apt):
            service.ensure_installed(lambda message: log.info("%s", message))
        if self.layout.spark:
            backing.ensure_spark_kafka(config, lambda _, message: log.info("%s", message))

    def host_env(self, host: Host) -> dict[str, str]:
        """What the host's processes get: its config file, and where Spark listens."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDMESH_")}
        env |= {
            "GRIDMESH_CONFIG": str(self.config_file(host)),
            "SPARK_LOCAL_IP": host.address,  # where the analytics driver and Spark's daemons listen
            "PYSPARK_PYTHON": PYTHON,
        }
        return env

    def gridmesh(self, host: Host, *args: str, timeout: float = UP_TIMEOUT_S) -> str:
        """Run the ``gridmesh`` CLI on ``host``; its output."""
        done = host.run([GRIDMESH, *args], self.host_env(host), timeout)
        return done.stdout

    def up(self, host: Host, roles: str) -> None:
        started = time.monotonic()
        self.gridmesh(host, "up", "--only", roles)
        log.info("%s: up --only %s in %.1f s", host.name, roles, time.monotonic() - started)

    def up_all(self, hosts_roles: Iterable[tuple[str, str]]) -> None:
        """``up`` on several hosts at once (an ensemble forms only once a
        quorum of its servers runs)."""
        self._parallel([functools.partial(self.up, self.host(name), roles) for name, roles in hosts_roles])

    def settings(self, host: Host) -> dict[str, Any]:
        """The config of ``host``: the mesh's, plus what is the host's own
        (its state directory, and its place or address as a ZooKeeper
        server, Kafka broker, Scheduler or worker host)."""
        a = {name: self.host(name).address for name in self.net.hosts}
        spark = f"spark://{a['spark']}:{SPARK_PORT}" if self.layout.spark else "local[1]"
        mesh: dict[str, Any] = {
            "namespace": self.namespace,
            "state_dir": str(self.state_dir(host.name)),
            "secrets_dir": str(self.secrets_dir),  # as an operator hands each host the passwords
            "mysql": {"host": a["db"]},
            "rabbitmq": {"host": a["db"]},
            "zookeeper": {
                "hosts": ",".join(f"{h.address}:2181" for h in self.hosts_named("zk")),
                "session_timeout_s": self.session_timeout_s,
            },
            "kafka": {
                "bootstrap_servers": ",".join(f"{h.address}:9092" for h in self.hosts_named("kafka")),
                "partitions": 3,
                "replication_factor": 3,
                "min_insync_replicas": 2,
                "controller_port": 9093,
                "cluster_id": self.kafka_cluster_id,
            },
            "scheduler": {
                "addresses": ",".join(f"{h.address}:{SCHEDULER_PORT}" for h in self.hosts_named("sched")),
                "port": SCHEDULER_PORT,
                "lease_ttl_s": self.lease_ttl_s,
                "heartbeat_interval_s": self.lease_ttl_s / 4,
            },
            "storekeeper": {"host": a["store"], "storage_root": str(self.base / "results"), "low_disk_bytes": 1},
            "eventmanager": {"host": a["store"]},
            "worker": {"slots": self.layout.slots},
            "envoy": {"host": a["edge"], "port": EDGE_PORT},
            "console": {"enabled": False},
            "metrics": {"prometheus": False},
            "analytics": {"enabled": self.layout.spark, "spark_master": spark, "trigger_interval_s": 1.0},
            "tls": {"dir": str(self.tls_dir)},
        }
        name = host.name
        if name.startswith("zk"):
            mesh["zookeeper"]["server_id"] = int(name[2:])
        if name.startswith("kafka"):
            mesh["kafka"]["node_id"] = int(name[5:])
        if name.startswith("sched"):
            mesh["scheduler"]["host"] = host.address
        if name.startswith("w"):
            mesh["worker"]["host"] = host.address
        return mesh

    def config_file(self, host: Host) -> Path:
        return self.base / "hosts" / f"{host.name}.toml"

    def _write_configs(self) -> None:
        for host in self.net.hosts.values():
            path = self.config_file(host)
            path.parent.mkdir(parents=True, exist_ok=True)
            header = f"# The config of host {host.name} ({host.address}), written by tests/hosts/cluster.py\n"
            path.write_text(header + to_toml(self.settings(host)))

    # -- the db host's servers ---------------------------------------------------------

    def _start_mysql(self) -> None:
        db = self.host("db")
        data = self.state_dir("db") / "mariadb"
        sock = data / "mysqld.sock"
        if not (data / "mysql").is_dir():
            data.mkdir(parents=True, exist_ok=True)
            shutil.chown(data, "mysql", "mysql")
            db.run(
                ["mariadb-install-db", "--no-defaults", "--user=mysql", f"--datadir={data}", "--skip-test-db"],
                os.environ,
                120,
            )
        db.popen(
            [
                "/usr/sbin/mariadbd",
                "--no-defaults",
                "--user=mysql",
                f"--datadir={data}",
                f"--socket={sock}",
                f"--pid-file={data / 'mysqld.pid'}",
                f"--bind-address={db.address}",
                "--port=3306",
                "--max-connections=1000",
            ],
            os.environ,
            self.base / "logs" / "db-mariadb.log",
        )
        client = ["mariadb", "--no-defaults", f"--socket={sock}", "-u", "root"]
        wait_for(
            "MariaDB on db",
            lambda: db.run([*client, "-e", "SELECT 1"], os.environ, 30, check=False).returncode == 0,
            120,
            0.2,
        )
        # The operator makes the mesh's accounts (the statements gridmesh up runs on a local server).
        config = load_config({}, self.config_file(db))
        accounts = backing.MySQL.from_config(config, backing.AptInstaller()).account_statements()
        db.run(client, os.environ, 30, given="".join(f"{statement};\n" for statement in accounts))

    def _start_rabbitmq(self) -> None:
        db = self.host("db")
        data = self.state_dir("db") / "rabbitmq"
        data.mkdir(parents=True, exist_ok=True)
        shutil.chown(data, "rabbitmq", "rabbitmq")
        env = {
            **os.environ,
            "HOME": "/var/lib/rabbitmq",  # the Erlang cookie rabbitmqctl needs too
            "RABBITMQ_NODENAME": RABBITMQ_NODE,
            "RABBITMQ_NODE_IP_ADDRESS": db.address,
            "RABBITMQ_NODE_PORT": "5672",
            "RABBITMQ_MNESIA_BASE": str(data / "mnesia"),
            "RABBITMQ_LOG_BASE": str(data / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(data / "enabled_plugins"),
        }
        (data / "enabled_plugins").write_text("[].\n")
        shutil.chown(data / "enabled_plugins", "rabbitmq", "rabbitmq")
        own = [f"{k}={v}" for k, v in env.items() if k == "HOME" or k.startswith("RABBITMQ_")]
        as_rabbitmq = ["runuser", "-u", "rabbitmq", "--", "env", *own]
        db.popen([*as_rabbitmq, "/usr/lib/rabbitmq/bin/rabbitmq-server"], env, self.base / "logs" / "db-rabbitmq.log")
        ctl = [*as_rabbitmq, "/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", RABBITMQ_NODE]
        # await_startup gives up at once while the node has not registered with epmd yet
        started = [*ctl, "await_startup", "--timeout", "30"]
        wait_for("RabbitMQ on db", lambda: db.run(started, env, 60, check=False).returncode == 0, 120, 0.2)
        config = load_config({}, self.config_file(db))
        password = backing.ensure_secret(config.secrets_path / RABBITMQ_SECRET)
        definitions = backing.rabbitmq_definitions(config.rabbitmq.user, password, config.rabbitmq.vhost)
        db.run([*ctl, "import_definitions", "--format", "json"], env, 60, given=definitions)

    # -- Spark standalone ---------------------------------------------------------------

    def _spark_env(self, host: Host) -> dict[str, str]:
        import pyspark

        return {
            **self.host_env(host),
            "SPARK_HOME": str(Path(pyspark.__file__).parent),
            "SPARK_LOG_DIR": str(self.state_dir(host.name) / "spark-logs"),
            "SPARK_DAEMON_MEMORY": "256m",
            "SPARK_NO_DAEMONIZE": "1",
        }

    def _spark_class(self, host: Host) -> str:
        return str(Path(self._spark_env(host)["SPARK_HOME"]) / "bin" / "spark-class")

    def _start_spark_cluster(self) -> None:
        if not self.layout.spark:
            return
        master = self.host("spark")
        url = f"spark://{master.address}:{SPARK_PORT}"
        argv = ["org.apache.spark.deploy.master.Master", "--host", master.address, "--port", str(SPARK_PORT)]
        argv += ["--webui-port", str(SPARK_UI_PORT)]
        master.popen(
            [self._spark_class(master), *argv], self._spark_env(master), self.base / "logs" / "spark-master.log"
        )
        wait_for("the Spark master", lambda: backing._tcp_open(master.address, SPARK_PORT) is None, 120, 0.2)
        for worker in self.hosts_named("sparkw"):
            self.start_spark_worker(worker, url)
        wait_for("both Spark workers to register", lambda: self.spark_workers_alive() == 2, 120, 0.2)

    def start_spark_worker(self, worker: Host, url: str | None = None) -> None:
        url = url or f"spark://{self.host('spark').address}:{SPARK_PORT}"
        work = self.state_dir(worker.name) / "spark-work"
        argv = ["org.apache.spark.deploy.worker.Worker", "--host", worker.address, "--cores", "1"]
        argv += ["--memory", "1536m", "--webui-port", str(SPARK_UI_PORT + 1), "--work-dir", str(work), url]
        log_file = self.base / "logs" / f"spark-{worker.name}.log"
        worker.popen([self._spark_class(worker), *argv], self._spark_env(worker), log_file)

    def spark_workers_alive(self) -> int:
        """The master's count of live workers, or 0 while it cannot tell.

        Spark's UI starts its web server first and adds each page's handler
        after; in between, ``/json/`` falls to the page at ``/`` and comes back
        as HTML (seen once on a loaded CI machine). That too is "not yet".
        """
        try:
            with urllib.request.urlopen(f"http://{self.host('spark').address}:{SPARK_UI_PORT}/json/", timeout=5) as r:
                return int(json.load(r).get("aliveworkers", 0))
        except (OSError, ValueError):
            return 0

    # -- stopping -----------------------------------------------------------------------

    def stop(self) -> None:
        """``gridmesh down`` on every host (newest first), then power off all."""
        for name in reversed(list(self.net.hosts)):
            host = self.net.hosts[name]
            host.heal()
            if (self.state_dir(name) / "run").is_dir():
                try:
                    self.gridmesh(host, "down", timeout=120)
                except (RuntimeError, subprocess.TimeoutExpired):
                    log.warning("gridmesh down on %s failed", name, exc_info=True)
        self.net.destroy()

    # -- helpers -----------------------------------------------------------------------

    @staticmethod
    def _parallel(jobs: Iterable[Callable[[], object]]) -> None:
        jobs = list(jobs)
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
            for future in [pool.submit(job) for job in jobs]:
                future.result()


def to_toml(settings: Mapping[str, Any]) -> str:
    """``settings`` (top-level values, then one table per section) as TOML."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        return json.dumps(v)  # a JSON string or number is a TOML one

    top = [f"{k} = {value(v)}\n" for k, v in settings.items() if not isinstance(v, Mapping)]
    tables = [
        f"\n[{k}]\n" + "".join(f"{key} = {value(item)}\n" for key, item in v.items())
        for k, v in settings.items()
        if isinstance(v, Mapping)
    ]
    return "".join(top + tables)
