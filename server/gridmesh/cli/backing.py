"""The backing services of a mesh: MariaDB/MySQL, RabbitMQ, ZooKeeper, Kafka.

``gridmesh up`` uses what is already reachable and starts, under
:mod:`gridmesh.cli.procs` supervision, only what is not; ``gridmesh down``
stops exactly what was started (it is recorded in the run directory), and
``gridmesh status`` asks each service's :meth:`BackingService.probe`.

Each probe is a protocol-level check with short timeouts (a query, an AMQP
handshake, a ZooKeeper ``srvr`` command, a Kafka metadata request), not a
mere open port. The client libraries are imported inside the probes so that
commands which never probe stay quick to start.

How each service is started when it is not reachable:

- MariaDB: ``/usr/sbin/mariadbd --user=mysql --bind-address=H --port=P``,
  i.e. the Debian package's own configuration and data directory (needs root).
  A fresh Debian MariaDB lets ``root`` in only over its unix socket, so
  gridmesh logs in that way (as the OS root user) and creates an account per
  component, each with rights on its own database only (:meth:`MySQL.provision`).
- RabbitMQ: ``/usr/lib/rabbitmq/bin/rabbitmq-server`` in the foreground as
  the ``rabbitmq`` user, with the package's defaults; gridmesh creates its
  own user and vhost (:meth:`RabbitMQ.provision`) and never uses ``guest``.
- ZooKeeper: Debian's ``zkServer.sh start-foreground`` with a ``zoo.cfg`` and
  data under ``<state_dir>/data/zookeeper``.
- Kafka: Apache Kafka as one KRaft node (broker and controller), its jars
  fetched once from Maven Central with ``mvn``, its log under
  ``<state_dir>/data/kafka`` (a restart keeps every event).
"""

from __future__ import annotations

import abc
import base64
import hashlib
import json
import logging
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from gridmesh.cli import ports, procs
from gridmesh.common.errors import Unavailable
from gridmesh.config import RABBITMQ_SECRET, MeshConfig, host_port, mysql_secret
from gridmesh.core.access import PeerRole
from gridmesh.jvm import COMPLETE, KAFKA_BROKER, SPARK_KAFKA, JarSet

__all__ = [
    "AptInstaller",
    "BackingService",
    "Kafka",
    "MySQL",
    "RabbitMQ",
    "ZooKeeper",
    "backing_services",
    "ensure_backing",
    "ensure_spark_kafka",
    "fetch_jars",
    "stop_backing",
]

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0
"""Connect/read timeout of one probe."""
START_TIMEOUT_S = 60.0
"""How long a started service may take to answer its probe."""
SLOW_START_TIMEOUT_S = 120.0
"""Start-up allowance of MariaDB and RabbitMQ (first start initializes data)."""
STOP_TIMEOUT_S = 15.0
"""How long a service may take to stop after SIGTERM before SIGKILL."""
SLOW_STOP_TIMEOUT_S = 60.0
"""Stop allowance of MariaDB and RabbitMQ (they flush data on shutdown)."""
APT_TIMEOUT_S = 1200.0
"""Longest an ``apt-get`` command may run."""
MVN_TIMEOUT_S = 900.0
"""Longest one ``mvn`` download of jars may take."""
ADMIN_COMMAND_TIMEOUT_S = 30.0
"""Longest a one-off administrative command (e.g. ``mariadb -e``) may run."""
ZOOKEEPER_HEAP = "-Xmx256m"
"""JVM heap limit of a ZooKeeper started by gridmesh."""

HOW_EXTERNAL = "external (already running)"
HOW_EXTERNAL_INSTALLED = "external (started by its package on installation)"
HOW_STARTED = "started"
HOW_RUNNING = "running (started earlier by gridmesh)"

ProgressLog = Callable[[str], None]
"""Receives one human-readable progress line."""

_NOT_LISTENING = -1
"""Not a MySQL error code: nothing accepts TCP connections at the address."""
_NO_PASSWORD = -2
"""Not a MySQL error code: an account's password file is not there (yet)."""
# Codes meaning "the server is up but refused these credentials" (or we have none yet).
_MYSQL_AUTH_ERRORS = frozenset({1044, 1045, 1130, 1698, _NO_PASSWORD})


# -- installation ---------------------------------------------------------------


@dataclass
class AptInstaller:
    """Installs Debian packages; runs ``apt-get update`` at most once per instance.

    One instance is shared by the services of one ``gridmesh up`` run.
    """

    updated: bool = False
    """Whether ``apt-get update`` has run already."""
    run: Callable[[Sequence[str]], None] = field(default=lambda argv: _run_admin(argv, APT_TIMEOUT_S))
    """Runs one command, raising :class:`Unavailable` on failure (replaceable in tests)."""

    def install(self, package: str, progress: ProgressLog) -> None:
        """Install ``package`` non-interactively, or raise :class:`Unavailable`
        saying how to install it by hand."""
        by_hand = f"install it yourself (sudo apt-get install -y {package}) or point gridmesh at a running one"
        if shutil.which("apt-get") is None:
            raise Unavailable(f"{package} is not installed and apt-get is not available; {by_hand}")
        if os.geteuid() != 0:
            raise Unavailable(f"{package} is not installed and installing it needs root; {by_hand}")
        if not self.updated:
            progress("apt-get update")
            self.run(["apt-get", "update"])
            self.updated = True
        progress(f"installing the Debian package {package} (this can take a few minutes)")
        self.run(
            [
                "env",
                "DEBIAN_FRONTEND=noninteractive",
                "apt-get",
                "install",
                "-y",
                "--no-install-recommends",
                package,
            ]
        )


def _run_admin(argv: Sequence[str], timeout: float, cwd: Path | None = None, given: str | None = None) -> None:
    """Run one administrative command to completion; raise :class:`Unavailable`
    with the tail of its output if it fails. ``given`` goes to its standard
    input: what must not show in ``ps`` or in a log (a password)."""
    log.info("running %s", " ".join(argv))
    try:
        done = subprocess.run(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL if given is None else None,
            input=given,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Unavailable(f"{' '.join(argv)} failed: {e}") from None
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-10:])
        raise Unavailable(f"{' '.join(argv)} exited with status {done.returncode}:\n{tail}")


# -- the port -------------------------------------------------------------------


class BackingService(abc.ABC):
    """One backing service: how to check it, install it and start it."""

    name: ClassVar[str]
    """Process name under supervision, e.g. ``zookeeper``."""
    start_timeout_s: ClassVar[float] = START_TIMEOUT_S
    """How long a start may take until :meth:`accepting` is true."""
    stop_timeout_s: ClassVar[float] = STOP_TIMEOUT_S
    """How long a stop may take before the process is killed."""

    @property
    @abc.abstractmethod
    def address(self) -> str:
        """Where the service is expected, as configured (``host:port``)."""

    @abc.abstractmethod
    def check(self) -> str | None:
        """``None`` if the service answers correctly, else why not (one line).

        Never raises; returns within a few times :data:`PROBE_TIMEOUT_S`.
        """

    def probe(self) -> bool:
        """Whether the service answers correctly at the protocol level."""
        reason = self.check()
        if reason is not None:
            log.debug("%s at %s: %s", self.name, self.address, reason)
        return reason is None

    def accepting(self) -> bool:
        """Whether a server is up far enough for :meth:`provision` (by
        default: :meth:`probe`)."""
        return self.probe()

    @abc.abstractmethod
    def ensure_installed(self, progress: ProgressLog) -> bool:
        """Make sure the service's program is present, installing it if needed.

        Returns ``True`` if it installed something, ``False`` if all was there.
        Raises :class:`Unavailable` if it is missing and cannot be installed.
        """

    @abc.abstractmethod
    def spec(self, config: MeshConfig) -> procs.ProcessSpec:
        """How to run the service in the foreground under supervision.

        May prepare what the start needs (directories, a config file under
        ``config.state_path / "data" / name``).
        """

    def provision(self, progress: ProgressLog) -> bool:
        """Make a server that is :meth:`accepting` but refuses gridmesh's
        credentials accept them, where that can be done from this machine.

        Returns whether it changed something. The default does nothing.
        """
        return False

    def log_hint(self, log_dir: Path) -> str:
        """Where to look when the service does not come up."""
        return str(procs.log_path(self.name, log_dir))


def _host_port(hostport: str, default_port: int) -> tuple[str, int]:
    """Split the first entry of a comma-separated ``host:port`` list."""
    return host_port(hostport.split(",")[0], default_port)


def _tcp_open(host: str, port: int) -> str | None:
    """``None`` if something accepts TCP connections at ``host:port``, else why not."""
    if ports.nothing_listens(host, port):
        return f"nothing listens on {host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as e:
        return f"cannot connect to {host}:{port}: {e.strerror or e}"


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def _is_local(host: str) -> bool:
    """Whether ``host`` is this machine (loopback or one of its addresses)."""
    if _is_loopback(host) or host in ("0.0.0.0", "::"):
        return True
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))  # only an address of this machine can be bound
        return True
    except OSError:
        return False


def _sql_string(text: str) -> str:
    """``text`` as a MariaDB string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _data_dir(config: MeshConfig, name: str) -> Path:
    return config.state_path / "data" / name


def _need_user(user: str, what: str) -> str | None:
    """The user to run ``what`` as: ``None`` (ourselves) if we are ``user``,
    ``user`` if we are root; else raise :class:`Unavailable`."""
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        raise Unavailable(f"cannot start {what}: OS user {user!r} does not exist (is the package installed?)") from None
    if os.geteuid() == uid:
        return None
    if os.geteuid() == 0:
        return user
    raise Unavailable(f"starting {what} needs root (or user {user!r}); start it yourself and run gridmesh again")


# -- MariaDB / MySQL ------------------------------------------------------------


def ensure_secret(path: Path) -> str:
    """The password in ``path``, made (random, 0600, in a 0700 directory) if
    it is not there yet. Hosts sharing ``path`` that make it at once agree:
    the first link wins and every maker reads that one back."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24) + "\n")
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()


@dataclass(frozen=True)
class MySQLAccount:
    """A component's own MySQL account and what it may do."""

    name: str
    password_file: Path
    grants: tuple[tuple[str, str], ...]
    """(privileges, database pattern) pairs: the account's rights, and no
    others (in a pattern, ``_`` and ``%`` are wildcards, ``\\_`` is ``_``)."""

    def password(self) -> str | None:
        try:
            return self.password_file.read_text().strip()
        except FileNotFoundError:
            return None


def mysql_accounts(config: MeshConfig) -> list[MySQLAccount]:
    """One account per component with a database (config.mysql_login),
    allowed that database alone; the Scheduler also reads the analytics
    job's statistics, and the replication bench makes databases of its own."""

    def own(component: str) -> str:
        return config.database(component).replace("_", "\\_")

    grants = {
        "scheduler": [("ALL PRIVILEGES", own("scheduler")), ("SELECT", own("analytics"))],
        "storekeeper": [("ALL PRIVILEGES", own("storekeeper"))],
        "analytics": [("ALL PRIVILEGES", own("analytics"))],
        "auth": [("ALL PRIVILEGES", own("auth"))],
        "demo_customers": [("ALL PRIVILEGES", own("demo_customers"))],
        "demo_orders": [("ALL PRIVILEGES", own("demo_orders"))],
        "bench": [("ALL PRIVILEGES", own("bench") + "\\_%")],
    }
    accounts = []
    for component, rights in grants.items():
        name = config.mysql_account(component)
        accounts.append(MySQLAccount(name, config.secrets_path / mysql_secret(name), tuple(rights)))
    return accounts


@dataclass
class MySQL(BackingService):
    """MariaDB / MySQL, reached with pymysql; up when every component's
    account logs in."""

    host: str
    port: int
    accounts: Sequence[MySQLAccount]
    apt: AptInstaller = field(default_factory=AptInstaller)
    binaries: Sequence[str] = ("/usr/sbin/mariadbd", "/usr/sbin/mysqld")
    """Server programs, first found wins."""
    runtime_dir: Path = Path("/run/mysqld")
    """Directory of the socket and pid file, which the package expects."""

    name: ClassVar[str] = "mysql"
    start_timeout_s: ClassVar[float] = SLOW_START_TIMEOUT_S
    stop_timeout_s: ClassVar[float] = SLOW_STOP_TIMEOUT_S

    @classmethod
    def from_config(cls, config: MeshConfig, apt: AptInstaller) -> MySQL:
        """The service as configured in ``config.mysql``."""
        return cls(config.mysql.host, config.mysql.port, mysql_accounts(config), apt)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _connect_error(self) -> tuple[int, str] | None:
        """``None`` if every account logs in and ``SELECT 1`` works, else
        ``(MySQL error code, message)``: :data:`_NOT_LISTENING` when nothing
        accepts TCP connections (said at once, not after a driver timeout),
        :data:`_NO_PASSWORD` for an account without its password file, 0
        for any other failure."""
        closed = _tcp_open(self.host, self.port)
        if closed:
            return _NOT_LISTENING, closed
        for account in self.accounts:
            password = account.password()
            if password is None:
                return _NO_PASSWORD, f"no password file {account.password_file} for the account {account.name!r}"
            error = self._login_error(account.name, password)
            if error is not None:
                return error
        return None

    def _login_error(self, user: str, password: str) -> tuple[int, str] | None:
        import pymysql

        try:
            conn = pymysql.connect(
                host=self.host,
                port=self.port,
                user=user,
                password=password,
                connect_timeout=PROBE_TIMEOUT_S,
                read_timeout=PROBE_TIMEOUT_S,
                write_timeout=PROBE_TIMEOUT_S,
            )
        except pymysql.err.MySQLError as e:
            code = e.args[0] if e.args and isinstance(e.args[0], int) else 0
            return code, str(e.args[1] if len(e.args) > 1 else e)
        except OSError as e:
            return 0, str(e)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                if cur.fetchone() != (1,):
                    return 0, "SELECT 1 returned something else"
        except pymysql.err.MySQLError as e:
            return 0, f"SELECT 1 failed: {e}"
        finally:
            conn.close()
        return None

    def check(self) -> str | None:
        error = self._connect_error()
        if error is None:
            return None
        return error[1] if error[0] == _NOT_LISTENING else f"MySQL error {error[0]}: {error[1]}"

    def accepting(self) -> bool:
        """The server answers, even if it refuses our credentials (yet)."""
        error = self._connect_error()
        return error is None or error[0] in _MYSQL_AUTH_ERRORS

    def _binary(self) -> str | None:
        return next((b for b in self.binaries if os.access(b, os.X_OK)), None)

    def ensure_installed(self, progress: ProgressLog) -> bool:
        if self._binary():
            return False
        self.apt.install("mariadb-server", progress)
        if not self._binary():
            raise Unavailable("mariadb-server was installed but no mariadbd/mysqld program was found")
        return True

    def spec(self, config: MeshConfig) -> procs.ProcessSpec:
        binary = self._binary()
        if binary is None:
            raise Unavailable("MariaDB is not installed (no /usr/sbin/mariadbd)")
        if os.geteuid() != 0:
            raise Unavailable("starting MariaDB needs root; start it yourself and run gridmesh again")
        mysql = pwd.getpwnam("mysql")
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        os.chown(self.runtime_dir, mysql.pw_uid, mysql.pw_gid)
        return procs.ProcessSpec(
            name=self.name,
            argv=[binary, "--user=mysql", f"--bind-address={self.host}", f"--port={self.port}"],
        )

    def _refused(self) -> bool:
        """The server answers but refuses our credentials."""
        error = self._connect_error()
        return error is not None and error[0] in _MYSQL_AUTH_ERRORS

    def provision(self, progress: ProgressLog) -> bool:
        """Create each component's account through the local server's unix socket.

        A fresh Debian MariaDB has only ``root@localhost`` with unix-socket
        authentication. As the OS root user on the server's own machine,
        gridmesh logs in that way and creates every account (for
        ``localhost`` and ``127.0.0.1``, or ``%`` when the server listens
        beyond loopback) with a random password, kept in its 0600 file, and
        the account's own rights and nothing else. Does nothing where that
        is not possible: a remote server, not root, no ``mariadb`` client,
        or accounts that already log in.
        """
        client = shutil.which("mariadb") or shutil.which("mysql")
        if client is None or os.geteuid() != 0 or not _is_local(self.host) or not self._refused():
            return False
        progress(f"creating the MariaDB accounts {', '.join(a.name for a in self.accounts)}")
        sql = "".join(f"{statement};\n" for statement in self.account_statements())
        # On stdin: the passwords stay out of argv.
        _run_admin([client, "--protocol=socket", "-u", "root"], ADMIN_COMMAND_TIMEOUT_S, given=sql)
        return True

    def account_statements(self) -> list[str]:
        """SQL that creates (or resets) every account with its rights; the
        passwords are made where missing."""
        hosts = ["localhost", "127.0.0.1", "::1"] if _is_loopback(self.host) else ["%"]
        statements = []
        for a in self.accounts:
            password = _sql_string(ensure_secret(a.password_file))
            for host in hosts:
                account = f"{_sql_string(a.name)}@{_sql_string(host)}"
                statements += [
                    f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {password}",
                    f"ALTER USER {account} IDENTIFIED BY {password}",
                ]
                statements += [f"GRANT {rights} ON `{pattern}`.* TO {account}" for rights, pattern in a.grants]
        return statements

    def log_hint(self, log_dir: Path) -> str:
        """Our log and MariaDB's own error log (``log-error`` of its config)."""
        ours = super().log_hint(log_dir)
        tool = shutil.which("my_print_defaults")
        if tool is None:
            return ours
        try:
            out = subprocess.run(
                [tool, "--mysqld"], capture_output=True, text=True, timeout=ADMIN_COMMAND_TIMEOUT_S, check=False
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ours
        errlog = next((line.split("=", 1)[1] for line in out.splitlines() if line.startswith("--log-error=")), None)
        return f"{ours} and {errlog}" if errlog else ours


# -- RabbitMQ ---------------------------------------------------------------------


@dataclass
class RabbitMQ(BackingService):
    """RabbitMQ, reached with pika (an AMQP handshake and a clean close)."""

    host: str
    port: int
    user: str
    password_file: Path
    vhost: str
    apt: AptInstaller = field(default_factory=AptInstaller)
    server: str = "/usr/lib/rabbitmq/bin/rabbitmq-server"
    """The foreground server script of the Debian package."""
    ctl: str = "/usr/lib/rabbitmq/bin/rabbitmqctl"
    os_user: str = "rabbitmq"
    """The OS user the server runs as."""

    name: ClassVar[str] = "rabbitmq"
    start_timeout_s: ClassVar[float] = SLOW_START_TIMEOUT_S
    stop_timeout_s: ClassVar[float] = SLOW_STOP_TIMEOUT_S

    @classmethod
    def from_config(cls, config: MeshConfig, apt: AptInstaller) -> RabbitMQ:
        """The service as configured in ``config.rabbitmq``."""
        c = config.rabbitmq
        return cls(c.host, c.port, c.user, config.secrets_path / RABBITMQ_SECRET, c.vhost, apt)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def check(self) -> str | None:
        refused = self._refusal()
        return refused[1] if refused else None

    def _refusal(self) -> tuple[bool, str] | None:
        """``None`` if gridmesh's user opens its vhost, else (whether the
        server answers and refused only the user or vhost, why)."""
        closed = _tcp_open(self.host, self.port)
        if closed:
            return False, closed
        if not self.password_file.exists():
            return True, f"no password file {self.password_file} for the user {self.user!r}"
        import pika
        import pika.exceptions

        params = pika.ConnectionParameters(
            host=self.host,
            port=self.port,
            virtual_host=self.vhost,
            credentials=pika.PlainCredentials(self.user, self.password_file.read_text().strip()),
            connection_attempts=1,
            socket_timeout=PROBE_TIMEOUT_S,
            stack_timeout=2 * PROBE_TIMEOUT_S,
            blocked_connection_timeout=PROBE_TIMEOUT_S,
        )
        try:
            pika.BlockingConnection(params).close()
        except (pika.exceptions.ProbableAuthenticationError, pika.exceptions.ProbableAccessDeniedError) as e:
            return True, f"AMQP login refused: {e!r}"
        except (pika.exceptions.AMQPError, OSError) as e:
            return False, f"AMQP connection failed: {e!r}"
        return None

    def accepting(self) -> bool:
        """The server answers, even if it refuses our user (yet)."""
        refused = self._refusal()
        return refused is None or refused[0]

    def provision(self, progress: ProgressLog) -> bool:
        """Create gridmesh's user, its vhost and its rights there, on the
        local server, as root: a definitions import (the password hashed,
        on stdin: out of argv) through ``rabbitmqctl`` as the ``rabbitmq``
        user. ``guest`` is left as it is, unused."""
        refused = self._refusal()
        if os.geteuid() != 0 or not _is_local(self.host) or refused is None or not refused[0]:
            return False
        progress(f"creating the RabbitMQ user {self.user!r} with the vhost {self.vhost!r}")
        definitions = rabbitmq_definitions(self.user, ensure_secret(self.password_file), self.vhost)
        home = pwd.getpwnam(self.os_user).pw_dir
        as_rabbitmq = ["runuser", "-u", self.os_user, "--", "env", f"HOME={home}"]
        argv = [*as_rabbitmq, self.ctl, "import_definitions", "--format", "json"]
        _run_admin(argv, ADMIN_COMMAND_TIMEOUT_S, given=definitions)
        # The import finishes on the node after the command returns.
        procs.wait_until(self.probe, ADMIN_COMMAND_TIMEOUT_S, self.name, "the RabbitMQ log")
        return True

    def ensure_installed(self, progress: ProgressLog) -> bool:
        if os.access(self.server, os.X_OK):
            return False
        self.apt.install("rabbitmq-server", progress)
        if not os.access(self.server, os.X_OK):
            raise Unavailable(f"rabbitmq-server was installed but {self.server} was not found")
        return True

    def spec(self, config: MeshConfig) -> procs.ProcessSpec:
        user = _need_user(self.os_user, "RabbitMQ")
        home = pwd.getpwnam(self.os_user).pw_dir  # /var/lib/rabbitmq: the Erlang cookie lives there
        return procs.ProcessSpec(
            name=self.name,
            argv=[self.server],
            env={"HOME": home},
            cwd=home,
            user=user,
        )

    def log_hint(self, log_dir: Path) -> str:
        return f"{super().log_hint(log_dir)} and /var/log/rabbitmq/"


def rabbitmq_definitions(user: str, password: str, vhost: str) -> str:
    """A RabbitMQ definitions document (JSON, for ``rabbitmqctl
    import_definitions``) that makes ``user`` with every right on ``vhost``
    and on no other. The password goes in as RabbitMQ's
    ``rabbit_password_hashing_sha256`` form: base64 of a 4-byte salt and
    SHA-256 of the salt and the password."""
    salt = os.urandom(4)
    password_hash = base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()
    return json.dumps(
        {
            "users": [
                {
                    "name": user,
                    "password_hash": password_hash,
                    "hashing_algorithm": "rabbit_password_hashing_sha256",
                    "tags": [],
                }
            ],
            "vhosts": [{"name": vhost}],
            "permissions": [{"user": user, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}],
        }
    )


# -- ZooKeeper ----------------------------------------------------------------------


@dataclass
class ZooKeeper(BackingService):
    """ZooKeeper, checked with the ``srvr`` four-letter command (the only one
    Debian's ZooKeeper 3.8 allows by default)."""

    hosts: str
    apt: AptInstaller = field(default_factory=AptInstaller)
    server_id: int = 0
    """This host's place in ``hosts`` when it is a server of an ensemble
    (0: one standalone server at the first of ``hosts``)."""
    peer_port: int = 2888
    election_port: int = 3888
    server_script: str = "/usr/share/zookeeper/bin/zkServer.sh"
    """Debian's start script."""
    java_dir: Path = Path("/usr/share/java")
    """Where Debian keeps ZooKeeper's jars and the logging bridge."""

    name: ClassVar[str] = "zookeeper"

    @classmethod
    def from_config(cls, config: MeshConfig, apt: AptInstaller) -> ZooKeeper:
        """The service as configured in ``config.zookeeper``."""
        z = config.zookeeper
        return cls(z.hosts, apt, z.server_id, z.peer_port, z.election_port)

    @property
    def _servers(self) -> list[tuple[str, int]]:
        return [_host_port(entry, 2181) for entry in self.hosts.split(",")]

    @property
    def host(self) -> str:
        """Host of this server: the first of ``hosts``, or this host's entry of an ensemble."""
        return self._servers[max(self.server_id - 1, 0)][0]

    @property
    def port(self) -> int:
        """Client port of this server."""
        return self._servers[max(self.server_id - 1, 0)][1]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def check(self) -> str | None:
        if ports.nothing_listens(self.host, self.port):
            return f"nothing listens on {self.address}"
        try:
            with socket.create_connection((self.host, self.port), timeout=PROBE_TIMEOUT_S) as sock:
                sock.sendall(b"srvr")
                reply = b""
                while len(reply) < 4096:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
        except OSError as e:
            return f"cannot query {self.address}: {e.strerror or e}"
        if reply.startswith(b"Zookeeper version"):
            return None  # a server of an ensemble answers so only once a quorum has formed
        first = reply.decode(errors="replace").strip().splitlines()[:1]
        return f"unexpected answer to srvr: {first[0] if first else '(nothing)'}"

    def ensure_installed(self, progress: ProgressLog) -> bool:
        if os.access(self.server_script, os.X_OK) and shutil.which("java"):
            return False
        self.apt.install("zookeeper", progress)
        if not os.access(self.server_script, os.X_OK):
            raise Unavailable(f"zookeeper was installed but {self.server_script} was not found")
        return True

    def spec(self, config: MeshConfig) -> procs.ProcessSpec:
        """Writes ``zoo.cfg`` and ``log4j.properties`` under the data directory."""
        root = _data_dir(config, self.name)
        data = root / "data"
        data.mkdir(parents=True, exist_ok=True)
        ensemble = ""
        if self.server_id:
            (data / "myid").write_text(f"{self.server_id}\n")
            ensemble = "".join(  # every server of the ensemble, this one included
                f"server.{i}={host}:{self.peer_port}:{self.election_port}\n"
                for i, (host, _) in enumerate(self._servers, start=1)
            )
        cfg = root / "zoo.cfg"
        cfg.write_text(
            "# written by gridmesh; rewritten on every start\n"
            "tickTime=2000\n"
            "initLimit=10\n"
            "syncLimit=5\n"
            f"dataDir={data}\n"
            f"clientPort={self.port}\n"
            f"clientPortAddress={self.host}\n"
            "maxClientCnxns=0\n"
            "admin.enableServer=false\n"
            "4lw.commands.whitelist=srvr,ruok,mntr\n"
            "autopurge.snapRetainCount=3\n"
            "autopurge.purgeInterval=1\n"
            f"{ensemble}"
        )
        log4j = root / "log4j.properties"
        log4j.write_text(
            "log4j.rootLogger=INFO, CONSOLE\n"
            "log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} - %-5p [%t:%C{1}@%L] - %m%n\n"
        )
        # Debian's zkEnv.sh fixes the class path to zookeeper.jar alone, which
        # has no SLF4J binding, so the server would log nothing at all. The
        # last -cp on the java command line wins, and JVMFLAGS comes after
        # the script's own -cp: add the log4j bridge there.
        jvm_flags = [ZOOKEEPER_HEAP, f"-Dlog4j.configuration=file:{log4j}"]
        bridge = [self.java_dir / "slf4j-log4j12.jar", self.java_dir / "log4j-1.2.jar"]
        if all(jar.is_file() for jar in bridge):
            class_path = [self.java_dir / "zookeeper.jar", *bridge]
            jvm_flags += ["-cp", ":".join(str(p) for p in class_path)]
        return procs.ProcessSpec(
            name=self.name,
            argv=[self.server_script, "start-foreground", str(cfg)],
            env={"JMXDISABLE": "true", "JVMFLAGS": " ".join(jvm_flags)},
            cwd=root,
        )


# -- Kafka (Apache Kafka, KRaft) ---------------------------------------------------------

KAFKA_HEAP = "-Xmx512m"
"""JVM heap limit of a Kafka broker started by gridmesh."""
KAFKA_CLUSTER_ID_FILE = "cluster-id"
"""Under the broker's data directory: the id its log was formatted with."""


@dataclass
class Kafka(BackingService):
    """Apache Kafka, checked with a metadata request (confluent-kafka).

    Started as a single KRaft node (broker and controller in one JVM) with
    its log under ``<state_dir>/data/kafka``, so a restarted broker keeps
    every event. Its jars come from Maven Central (:data:`gridmesh.jvm.KAFKA_BROKER`).
    """

    bootstrap_servers: str
    cache: Path
    """Where fetched jars are kept (``cache_dir`` of the config)."""
    controller_port: int = 0
    """The KRaft controller's port (0 = a free one at each start)."""
    apt: AptInstaller = field(default_factory=AptInstaller)
    node_id: int = 0
    """This host's place in ``bootstrap_servers`` when it is a broker of a
    cluster, every one of them also a controller (0: a single node)."""
    cluster_id: str = ""
    """The cluster's KRaft id (a single node makes its own)."""
    min_insync_replicas: int = 1
    tls: Path | None = None
    """The mesh's TLS directory when Kafka is reached over mutual TLS: the
    broker presents the ``kafka`` certificate and asks clients for one of
    the mesh's CA; the probe presents ``admin``'s."""

    name: ClassVar[str] = "kafka"

    @classmethod
    def from_config(cls, config: MeshConfig, apt: AptInstaller | None = None) -> Kafka:
        """The service as configured in ``config.kafka``."""
        k = config.kafka
        return cls(
            k.bootstrap_servers,
            config.cache_path,
            k.controller_port,
            apt or AptInstaller(),
            k.node_id,
            k.cluster_id,
            k.min_insync_replicas,
            config.tls_path if config.kafka_tls else None,
        )

    @property
    def _brokers(self) -> list[tuple[str, int]]:
        return [_host_port(entry, 9092) for entry in self.bootstrap_servers.split(",")]

    @property
    def host(self) -> str:
        """Host of this broker: the first bootstrap server, or this host's entry of a cluster."""
        return self._brokers[max(self.node_id - 1, 0)][0]

    @property
    def port(self) -> int:
        """Port of this broker."""
        return self._brokers[max(self.node_id - 1, 0)][1]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}" if self.node_id else self.bootstrap_servers

    def check(self) -> str | None:
        # Without a listener librdkafka would retry until the timeout.
        closed = _tcp_open(self.host, self.port)
        if closed:
            return closed
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        from gridmesh.adapters.kafka import tls_settings

        conf: dict[str, Any] = {
            "bootstrap.servers": self.address,
            "socket.timeout.ms": int(PROBE_TIMEOUT_S * 1000),
            "logger": log,  # librdkafka's messages go to logging, not stderr
        }
        if self.tls is not None:
            conf |= tls_settings(self.tls, PeerRole.ADMIN)
        admin = AdminClient(conf)
        try:
            metadata = admin.list_topics(timeout=PROBE_TIMEOUT_S)
        except KafkaException as e:
            return f"metadata request failed: {e}"
        return None if metadata.brokers else "metadata lists no broker"

    def ensure_installed(self, progress: ProgressLog) -> bool:
        fetched = fetch_jars(KAFKA_BROKER, self.cache, progress, self.apt)
        if shutil.which("java") is None:
            self.apt.install("openjdk-17-jre-headless", progress)
            fetched = True
        return fetched

    def spec(self, config: MeshConfig) -> procs.ProcessSpec:
        """Writes ``server.properties`` and ``log4j2.properties`` and formats
        the log directory on the first start (``kafka.tools.StorageTool``)."""
        java = shutil.which("java")
        if java is None or not KAFKA_BROKER.present(self.cache):
            raise Unavailable("Apache Kafka is not installed (no java, or its jars were not fetched)")
        root = _data_dir(config, self.name)
        logs = root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        controller = self.controller_port or _free_port(self.host)
        if self.node_id:  # every broker of the cluster is a controller too
            node = self.node_id
            voters = ",".join(f"{i}@{host}:{controller}" for i, (host, _) in enumerate(self._brokers, start=1))
        else:
            node, voters = 1, f"1@{self.host}:{controller}"
        replicas = min(3, len(self._brokers)) if self.node_id else 1  # of Kafka's own internal topics
        min_isr = min(self.min_insync_replicas, replicas)
        protocol = "PLAINTEXT" if self.tls is None else "SSL"
        props = root / "server.properties"
        props.write_text(
            "# written by gridmesh; rewritten on every start\n"
            "process.roles=broker,controller\n"
            f"node.id={node}\n"
            f"controller.quorum.voters={voters}\n"
            f"listeners={protocol}://{self.host}:{self.port},CONTROLLER://{self.host}:{controller}\n"
            f"advertised.listeners={protocol}://{self.host}:{self.port}\n"
            "controller.listener.names=CONTROLLER\n"
            f"inter.broker.listener.name={protocol}\n"
            f"listener.security.protocol.map=CONTROLLER:{protocol},{protocol}:{protocol}\n"
            + self._tls_properties()
            + f"log.dirs={logs}\n"
            "num.partitions=1\n"
            f"min.insync.replicas={min_isr}\n"
            f"offsets.topic.replication.factor={replicas}\n"
            f"transaction.state.log.replication.factor={replicas}\n"
            f"transaction.state.log.min.isr={min_isr}\n"
            f"share.coordinator.state.topic.replication.factor={replicas}\n"
            f"share.coordinator.state.topic.min.isr={min_isr}\n"
            "unclean.leader.election.enable=false\n"
            # Followers fetch up to 64 KiB or 100 ms at a time instead of
            # record by record: half the brokers' CPU per task on a cluster
            # (W6), for at most 100 ms more before an event counts as
            # acknowledged (no task waits for it).
            "replica.fetch.min.bytes=65536\n"
            "replica.fetch.wait.max.ms=100\n"
            "group.initial.rebalance.delay.ms=0\n"
        )
        log4j = root / "log4j2.properties"
        log4j.write_text(
            "rootLogger.level=INFO\n"
            "rootLogger.appenderRef.console.ref=console\n"
            "logger.kafka.name=kafka\n"
            "logger.kafka.level=INFO\n"
            "logger.request.name=kafka.request.logger\n"
            "logger.request.level=WARN\n"
            "appender.console.type=Console\n"
            "appender.console.name=console\n"
            "appender.console.layout.type=PatternLayout\n"
            "appender.console.layout.pattern=[%d] %p %m (%c)%n\n"
        )
        class_path = str(KAFKA_BROKER.directory(self.cache) / "*")
        jvm = [java, KAFKA_HEAP, "-XX:+UseG1GC", f"-Dlog4j2.configurationFile={log4j}", "-cp", class_path]
        if not (logs / "meta.properties").is_file():
            cluster_file = root / KAFKA_CLUSTER_ID_FILE
            if self.cluster_id:
                cluster_file.write_text(self.cluster_id)
            elif not cluster_file.is_file():
                cluster_file.write_text(kafka_cluster_id())
            format_argv = ["kafka.tools.StorageTool", "format", "--ignore-formatted"]
            cluster = cluster_file.read_text().strip()
            _run_admin([*jvm, *format_argv, "-t", cluster, "-c", str(props)], ADMIN_COMMAND_TIMEOUT_S)
        return procs.ProcessSpec(name=self.name, argv=[*jvm, "kafka.Kafka", str(props)], cwd=root)

    def _tls_properties(self) -> str:
        """The broker's side of mutual TLS, on every listener (clients,
        brokers and controllers alike): its ``kafka`` certificate, and only
        clients with a certificate of the mesh's CA."""
        if self.tls is None:
            return ""
        from gridmesh.adapters.kafka import java_tls_settings

        settings = {"ssl.client.auth": "required", **java_tls_settings(self.tls, PeerRole.KAFKA)}
        return "".join(f"{name}={value}\n" for name, value in settings.items())


def kafka_cluster_id() -> str:
    """A new KRaft cluster id: 16 random bytes, URL-safe base64 without
    padding, never starting with '-' (the storage tool would read it as an
    option; Kafka's own ``Uuid.randomUuid`` draws again likewise)."""
    while (cluster := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"):
        pass
    return cluster


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# -- orchestration ---------------------------------------------------------------------


def backing_services(config: MeshConfig, apt: AptInstaller | None = None) -> list[BackingService]:
    """The four backing services of ``config``, in start order:
    MySQL, RabbitMQ, ZooKeeper, Kafka."""
    apt = apt or AptInstaller()
    return [
        MySQL.from_config(config, apt),
        RabbitMQ.from_config(config, apt),
        ZooKeeper.from_config(config, apt),
        Kafka.from_config(config, apt),
    ]


def ensure_backing(
    config: MeshConfig,
    run_dir: Path,
    log_dir: Path,
    progress: Callable[[str, str], None],
    services: Sequence[BackingService] | None = None,
) -> dict[str, str]:
    """Make every backing service reachable; return service name → how.

    For each service in order: if its probe succeeds it is used as it is
    ("external (already running)") and nothing is recorded; otherwise it is
    installed if missing, started under supervision (recorded in
    ``run_dir``, so :func:`stop_backing` and ``gridmesh down`` stop exactly
    what was started here) and waited for until its probe succeeds
    ("started"). ``progress(name, message)`` receives human-readable steps.

    Raises :class:`Unavailable` naming the service and its log when one cannot
    be installed or started; a process started for it is stopped again, those
    started for earlier services stay recorded.
    """
    result: dict[str, str] = {}
    for svc in services if services is not None else backing_services(config):
        result[svc.name] = _ensure_one(svc, config, run_dir, log_dir, progress)
    return result


def _ensure_one(
    svc: BackingService,
    config: MeshConfig,
    run_dir: Path,
    log_dir: Path,
    progress: Callable[[str, str], None],
) -> str:
    def say(message: str) -> None:
        progress(svc.name, message)

    ours = procs.alive(svc.name, run_dir)
    reason = svc.check()
    if reason is None:
        how = HOW_RUNNING if ours else HOW_EXTERNAL
        say(f"{how} at {svc.address}" + (f" (pid {ours})" if ours else ""))
        return how
    if ours is None:
        if _tcp_open(*_host_port(svc.address, 0)) is None:
            if svc.provision(say) and svc.probe():
                say(f"{HOW_EXTERNAL} at {svc.address}")
                return HOW_EXTERNAL
            raise Unavailable(
                f"{svc.name}: {svc.address} is in use, but the {svc.name} probe fails ({reason}); "
                "fix that service or configure another address"
            )
        if svc.ensure_installed(say) and svc.accepting():
            svc.provision(say)
            if svc.probe():
                say(f"{HOW_EXTERNAL_INSTALLED} at {svc.address}")
                return HOW_EXTERNAL_INSTALLED
    spec = svc.spec(config)
    pid = procs.start(spec, run_dir, log_dir)
    say(f"starting (pid {pid}) at {svc.address}")

    def up() -> bool:
        if procs.alive(svc.name, run_dir) is None:
            raise Unavailable(f"{svc.name} exited during start-up; see {svc.log_hint(log_dir)}")
        return svc.accepting()

    try:
        procs.wait_until(up, svc.start_timeout_s, svc.name, svc.log_hint(log_dir))
        svc.provision(say)
        if not svc.probe():
            raise Unavailable(f"{svc.name} started but does not accept us: {svc.check()}")
    except BaseException:
        procs.stop(svc.name, run_dir, svc.stop_timeout_s)
        raise
    say(f"{HOW_STARTED} at {svc.address}")
    return HOW_STARTED


def ensure_spark_kafka(config: MeshConfig, progress: Callable[[str, str], None]) -> None:
    """Fetch Spark's Kafka source for the analytics job, unless it is there."""
    fetch_jars(SPARK_KAFKA, config.cache_path, lambda message: progress("analytics", message), AptInstaller())


def fetch_jars(jar_set: JarSet, cache: Path, progress: ProgressLog, apt: AptInstaller) -> bool:
    """Copy ``jar_set``'s jars from Maven Central into ``cache`` unless they
    are there; returns whether it fetched. Maven comes from Debian's
    ``maven`` where ``mvn`` is missing. The copy goes to a temporary
    directory that is renamed into place once complete, so two processes may
    race harmlessly."""
    if jar_set.present(cache):
        return False
    if shutil.which("mvn") is None:
        apt.install("maven", progress)
    mvn = shutil.which("mvn")
    if mvn is None:
        raise Unavailable("Maven (mvn) is needed to fetch the Java dependencies and was not found")
    target = jar_set.directory(cache)
    target.parent.mkdir(parents=True, exist_ok=True)
    progress(f"fetching {target.name} jars from Maven Central (once)")
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        argv = [mvn, "--batch-mode", "--quiet", "--file", str(jar_set.pom_path), "dependency:copy-dependencies"]
        argv += ["-DincludeScope=runtime", f"-DoutputDirectory={staging}"]
        _run_admin(argv, MVN_TIMEOUT_S, cwd=staging)
        (staging / COMPLETE).write_text("")
        try:
            os.rename(staging, target)
        except OSError:
            if not jar_set.present(cache):  # another process finished first: keep its copy
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def stop_backing(
    config: MeshConfig,
    run_dir: Path,
    progress: Callable[[str, str], None],
    services: Sequence[BackingService] | None = None,
) -> list[str]:
    """Stop the backing services that :func:`ensure_backing` started (and only
    those), in reverse start order, each with its own stop allowance.

    Returns the names of the services that were running and are now stopped.
    """
    by_name = {s.name: s for s in (services if services is not None else backing_services(config))}
    stopped = []
    for name in reversed(procs.recorded(run_dir)):
        svc = by_name.get(name)
        if svc is None:
            continue
        progress(name, "stopping")
        if procs.stop(name, run_dir, svc.stop_timeout_s):
            stopped.append(name)
        progress(name, "stopped")
    return stopped
