"""Supervision of the processes ``gridmesh up`` starts: by recorded pid, never by name.

Each started process is the leader of its own session (and so of its own
process group). Its record, ``<run_dir>/<name>.json``, holds the pid and the
process's create time; a pid whose create time differs is a different
process that happens to reuse the number, and is never touched. Output of a
process is appended to ``<log_dir>/<name>.log``.

Nothing here reads the environment at import time or keeps global state: the
run and log directories are passed in by the caller.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pwd
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from gridmesh.common.backoff import Backoff
from gridmesh.common.errors import Unavailable

__all__ = [
    "ProcessSpec",
    "alive",
    "log_path",
    "recorded",
    "start",
    "stop",
    "wait_until",
]

log = logging.getLogger(__name__)

DEFAULT_STOP_TIMEOUT_S = 15.0
"""How long :func:`stop` waits after SIGTERM before it sends SIGKILL."""
KILL_TIMEOUT_S = 5.0
"""How long :func:`stop` waits for processes to vanish after SIGKILL."""
POLL = Backoff(initial_s=0.02, max_s=0.5)
"""The pauses between two checks of a condition: quick at first, for what
comes up at once, then no busier than twice a second."""
CREATE_TIME_TOLERANCE_S = 0.01
"""Create times closer than this are the same process (float rounding)."""

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_LOCK_FILE = ".procs.lock"
_RECORD_SUFFIX = ".json"


@dataclass(frozen=True)
class ProcessSpec:
    """How to start one supervised process."""

    name: str
    """Unique name of the process, e.g. ``zookeeper`` or ``worker-1``; names
    its record and log file, so ``[a-z0-9][a-z0-9_.-]*``."""
    argv: Sequence[str]
    """Program and arguments; the program is looked up on ``PATH``."""
    env: Mapping[str, str] | None = None
    """Variables set on top of the caller's environment (``None``: inherit it
    unchanged)."""
    cwd: str | Path | None = None
    """Working directory (``None``: the caller's)."""
    user: str | None = None
    """Run as this OS user (with its groups and ``HOME``); needs root.
    ``None``: the caller's user."""

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"process name {self.name!r} must match {_NAME_RE.pattern}")
        if not self.argv:
            raise ValueError(f"process {self.name!r} needs a program to run")


# -- public API ---------------------------------------------------------------


def log_path(name: str, log_dir: Path) -> Path:
    """The file the output of process ``name`` is appended to."""
    return log_dir / f"{name}.log"


def start(spec: ProcessSpec, run_dir: Path, log_dir: Path) -> int:
    """Start ``spec`` detached, record it in ``run_dir`` and return its pid.

    Idempotent: if the process recorded under ``spec.name`` is still alive
    (same pid and create time), nothing is started and its pid is returned.
    The new process leads its own session, reads nothing (stdin is
    ``/dev/null``) and appends stdout and stderr to :func:`log_path`. It does
    not wait for the process to become healthy: see :func:`wait_until`.

    Raises :class:`Unavailable` if the program cannot be executed.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    with _locked(run_dir):
        existing = _live_process(spec.name, run_dir)
        if existing is not None:
            log.info("%s already runs as pid %d", spec.name, existing.pid)
            return existing.pid
        out_path = log_path(spec.name, log_dir)
        started_at = datetime.now(UTC)
        with out_path.open("ab") as out:
            out.write(f"--- gridmesh: starting {spec.name} at {started_at.isoformat()}: {list(spec.argv)}\n".encode())
            out.flush()
            try:
                child = subprocess.Popen(
                    list(spec.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=spec.cwd,
                    env=_environment(spec),
                    start_new_session=True,
                    close_fds=True,
                    **_identity(spec.user),
                )
            except OSError as e:
                raise Unavailable(f"cannot start {spec.name} ({spec.argv[0]}): {e.strerror or e}") from None
        # The Popen object is dropped on purpose: the process outlives this
        # one. Mark it collected so that its finalizer neither warns nor
        # tracks it; alive() and stop() reap it if it dies while we run.
        child.returncode = 0
        try:
            create_time = psutil.Process(child.pid).create_time()
        except psutil.Error:
            create_time = 0.0  # vanished already; alive() will say so
        record = {
            "name": spec.name,
            "pid": child.pid,
            "create_time": create_time,
            "argv": list(spec.argv),
            "started_at": started_at.isoformat(timespec="microseconds"),
            "log": str(out_path),
        }
        _write_record(run_dir, spec.name, record)
        log.info("started %s as pid %d (log: %s)", spec.name, child.pid, out_path)
        return child.pid


def alive(name: str, run_dir: Path) -> int | None:
    """The pid of process ``name`` if its recorded process still runs, else ``None``.

    A record whose process is gone (or whose pid now belongs to another
    process) is stale: it is removed.
    """
    with _locked(run_dir):
        proc = _live_process(name, run_dir)
        return None if proc is None else proc.pid


def stop(name: str, run_dir: Path, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> bool:
    """Stop the process recorded as ``name`` and everything it started.

    SIGTERM goes to the recorded process group; after at most ``timeout``
    seconds every process of it still alive, and every remaining descendant
    (also those that moved to a session of their own), is killed with
    SIGKILL, by pid. Then the record is removed. Only processes recorded here
    and their descendants are signalled.

    Returns ``True`` if a recorded process was running, ``False`` if there was
    nothing to stop. Idempotent.
    """
    with _locked(run_dir):
        record = _read_record(run_dir, name)
        if record is None:
            return False
        pid, create_time = record["pid"], record["create_time"]
        leader = _same_process(pid, create_time)
        members = _group_members(pid, create_time, leader)
        if leader is None and not members:
            _remove_record(run_dir, name)
            return False
        tracked = _with_descendants(([leader] if leader else []) + members)
        log.info("stopping %s (pid %d, %d process(es))", name, pid, len(tracked))
        if leader is not None:
            _signal_group(pid, signal.SIGTERM)
        for proc in tracked:
            if proc is not leader and _pgid(proc) != pid:
                _send(proc, signal.SIGTERM)  # left the group: tell it directly
        survivors = _wait_gone(tracked, timeout)
        if survivors:
            survivors = _with_descendants(survivors)
            log.warning(
                "%s did not stop within %gs; killing pid(s) %s",
                name,
                timeout,
                ", ".join(str(p.pid) for p in survivors),
            )
            for proc in survivors:
                _send(proc, signal.SIGKILL)
            left = _wait_gone(survivors, KILL_TIMEOUT_S)
            if left:
                log.error("%s: pid(s) %s survived SIGKILL", name, ", ".join(str(p.pid) for p in left))
        _remove_record(run_dir, name)
        return True


def recorded(run_dir: Path) -> list[str]:
    """Names of every recorded process, in the order they were started.

    Records are returned whether or not their process still runs (see
    :func:`alive`); unreadable records are skipped with a warning.
    """
    if not run_dir.is_dir():
        return []
    records = []
    for path in run_dir.glob(f"*{_RECORD_SUFFIX}"):
        record = _read_record(run_dir, path.name[: -len(_RECORD_SUFFIX)])
        if record is not None:
            records.append(record)
    records.sort(key=lambda r: (r["started_at"], r["create_time"], r["name"]))
    return [r["name"] for r in records]


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    log_file: Path | str | None = None,
) -> None:
    """Return as soon as ``predicate()`` is true; poll it with a short backoff.

    Raises :class:`Unavailable` ("<what> did not become healthy within
    <timeout>s; see <log_file>") if it is still false after ``timeout``
    seconds. The predicate is checked at least once, and once more at the
    deadline; an exception it raises propagates (so a predicate can give up
    early, e.g. when the process it waits for has exited).
    """
    deadline = time.monotonic() + timeout
    pauses = POLL.pauses()
    while True:
        if predicate():
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(next(pauses), remaining))
    hint = f"; see {log_file}" if log_file else ""
    raise Unavailable(f"{what} did not become healthy within {timeout:g}s{hint}")


# -- records --------------------------------------------------------------------


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """Serialize record changes between concurrent ``gridmesh`` commands."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / _LOCK_FILE).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _record_path(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}{_RECORD_SUFFIX}"


def _write_record(run_dir: Path, name: str, record: Mapping[str, Any]) -> None:
    path = _record_path(run_dir, name)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def _read_record(run_dir: Path, name: str) -> dict[str, Any] | None:
    path = _record_path(run_dir, name)
    try:
        record = json.loads(path.read_text())
        if not (isinstance(record["pid"], int) and isinstance(record["create_time"], int | float)):
            raise ValueError("pid or create_time has the wrong type")
        record.setdefault("started_at", "")
        record["name"] = name
        return dict(record)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("ignoring unreadable process record %s: %s", path, e)
        return None


def _remove_record(run_dir: Path, name: str) -> None:
    _record_path(run_dir, name).unlink(missing_ok=True)


def _live_process(name: str, run_dir: Path) -> psutil.Process | None:
    """The recorded process if it still runs; removes a stale record."""
    record = _read_record(run_dir, name)
    if record is None:
        return None
    proc = _same_process(record["pid"], record["create_time"])
    if proc is None:
        log.info("%s (pid %d) is no longer running; removing its record", name, record["pid"])
        _remove_record(run_dir, name)
    return proc


# -- processes ------------------------------------------------------------------


def _environment(spec: ProcessSpec) -> dict[str, str] | None:
    if spec.env is None and spec.user is None:
        return None
    env = dict(os.environ)
    if spec.user is not None:
        home = pwd.getpwnam(spec.user).pw_dir
        env.update(HOME=home, USER=spec.user, LOGNAME=spec.user)
    env.update(spec.env or {})
    return env


def _identity(user: str | None) -> dict[str, Any]:
    """Popen arguments that run the child as ``user`` with its groups."""
    if user is None:
        return {}
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise Unavailable(f"OS user {user!r} does not exist") from None
    if os.geteuid() == entry.pw_uid:
        return {}
    if os.geteuid() != 0:
        raise Unavailable(f"only root can start a process as user {user!r}")
    return {
        "user": entry.pw_uid,
        "group": entry.pw_gid,
        "extra_groups": os.getgrouplist(user, entry.pw_gid),
    }


def _running(proc: psutil.Process) -> bool:
    """``proc`` still exists and is not a zombie (zombies of ours are reaped)."""
    try:
        if not proc.is_running():
            return False
        if proc.status() != psutil.STATUS_ZOMBIE:
            return True
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    with contextlib.suppress(ChildProcessError):
        os.waitpid(proc.pid, os.WNOHANG)  # our own child: collect it
    return False


def _same_process(pid: int, create_time: float) -> psutil.Process | None:
    """The running process ``pid`` if it is the one created at ``create_time``."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > CREATE_TIME_TOLERANCE_S:
            return None
    except psutil.Error:
        return None
    return proc if _running(proc) else None


def _pgid(proc: psutil.Process) -> int | None:
    try:
        return os.getpgid(proc.pid)
    except OSError:
        return None


def _group_members(pgid: int, not_before: float, leader: psutil.Process | None) -> list[psutil.Process]:
    """Running processes of the recorded process group ``pgid``.

    If the leader is gone and its pid now belongs to an unrelated process, the
    group id may be reused: then nothing is returned.
    """
    if leader is None and psutil.pid_exists(pgid):
        with contextlib.suppress(psutil.Error):
            if _running(psutil.Process(pgid)):
                return []
    members = []
    for proc in psutil.process_iter():
        if proc.pid == pgid or (leader is not None and proc.pid == leader.pid):
            continue
        try:
            if _pgid(proc) == pgid and proc.create_time() >= not_before - CREATE_TIME_TOLERANCE_S and _running(proc):
                members.append(proc)
        except psutil.Error:
            continue
    return members


def _with_descendants(procs: Sequence[psutil.Process]) -> list[psutil.Process]:
    """``procs`` and all their running descendants, without duplicates."""
    seen: dict[int, psutil.Process] = {}
    for proc in procs:
        seen.setdefault(proc.pid, proc)
        try:
            for child in proc.children(recursive=True):
                seen.setdefault(child.pid, child)
        except psutil.Error:
            continue
    return [p for p in seen.values() if _running(p)]


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _send(proc: psutil.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(sig)  # psutil checks the pid still is this process


def _wait_gone(procs: Sequence[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process of ``procs`` has exited; return those that have not.

    A zombie counts as gone (on some systems nobody reaps orphans).
    """
    deadline = time.monotonic() + timeout
    pauses = POLL.pauses()
    pending = list(procs)
    while True:
        pending = [p for p in pending if _running(p)]
        remaining = deadline - time.monotonic()
        if not pending or remaining <= 0:
            return pending
        # psutil.wait_procs blocks in waitpid for our own children and polls
        # the others; a zombie orphan would keep it waiting, hence the loop.
        psutil.wait_procs(pending, timeout=min(next(pauses), remaining))
