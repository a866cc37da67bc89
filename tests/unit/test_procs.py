"""Process supervision by recorded pid (``gridmesh up/down/status``, SPEC §4)."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from gridmesh.cli import procs
from gridmesh.common.errors import Unavailable

WAIT_S = 10.0

# A child that starts a grandchild (optionally in a session of its own),
# writes the grandchild's pid to a file, and then waits; both may ignore SIGTERM.
_FAMILY = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    pidfile, stubborn, escape = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1"
    grandchild_code = (
        "import signal, time\\n"
        + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n" if stubborn else "")
        + "time.sleep(600)\\n"
    )
    gc = subprocess.Popen([sys.executable, "-c", grandchild_code], start_new_session=escape)
    if stubborn:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(pidfile + ".tmp", "w") as f:
        f.write(str(gc.pid))
    import os
    os.replace(pidfile + ".tmp", pidfile)
    time.sleep(600)
    """
)


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    run_dir, log_dir = tmp_path / "run", tmp_path / "log"
    yield run_dir, log_dir
    for name in procs.recorded(run_dir):  # never leave a process behind
        procs.stop(name, run_dir, timeout=2.0)


def _sleeper(name: str, *extra: str, env: dict[str, str] | None = None) -> procs.ProcessSpec:
    return procs.ProcessSpec(name, [sys.executable, "-c", "import time; time.sleep(600)", *extra], env=env)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _start_family(dirs: tuple[Path, Path], *, stubborn: bool, escape: bool) -> tuple[int, int]:
    run_dir, log_dir = dirs
    pidfile = run_dir.parent / "grandchild.pid"
    spec = procs.ProcessSpec(
        "family", [sys.executable, "-c", _FAMILY, str(pidfile), str(int(stubborn)), str(int(escape))]
    )
    pid = procs.start(spec, run_dir, log_dir)
    procs.wait_until(pidfile.exists, WAIT_S, "grandchild", procs.log_path("family", log_dir))
    return pid, int(pidfile.read_text())


def test_start_runs_the_process_detached_records_it_and_logs_its_output(dirs: tuple[Path, Path]) -> None:
    run_dir, log_dir = dirs
    spec = procs.ProcessSpec(
        "talker",
        [sys.executable, "-c", "import os, sys, time; print(os.environ['GREETING'], flush=True); time.sleep(600)"],
        env={"GREETING": "hello from the child"},
    )

    pid = procs.start(spec, run_dir, log_dir)

    proc = psutil.Process(pid)
    assert os.getsid(pid) == pid  # leads its own session, so its own group
    record = json.loads((run_dir / "talker.json").read_text())
    assert record["pid"] == pid
    assert record["create_time"] == pytest.approx(proc.create_time())
    assert record["argv"] == list(spec.argv)
    assert record["started_at"]
    assert procs.alive("talker", run_dir) == pid
    log_file = procs.log_path("talker", log_dir)
    procs.wait_until(lambda: "hello from the child" in log_file.read_text(), WAIT_S, "output", log_file)


def test_start_is_idempotent_while_the_recorded_process_lives(dirs: tuple[Path, Path]) -> None:
    run_dir, log_dir = dirs
    first = procs.start(_sleeper("svc"), run_dir, log_dir)

    second = procs.start(_sleeper("svc"), run_dir, log_dir)

    assert second == first
    assert procs.recorded(run_dir) == ["svc"]

    def sleepers() -> list[int]:
        # A child just forked may not have exec'd its program yet: its command line is still ours.
        return [
            p.pid
            for p in psutil.Process().children()
            if not _gone(p.pid) and "time.sleep(600)" in " ".join(p.cmdline())
        ]

    deadline = time.monotonic() + WAIT_S
    while sleepers() != [first] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sleepers() == [first]


def test_start_of_a_missing_program_raises_unavailable(dirs: tuple[Path, Path]) -> None:
    run_dir, log_dir = dirs
    with pytest.raises(Unavailable, match="cannot start ghost"):
        procs.start(procs.ProcessSpec("ghost", ["/nonexistent/program"]), run_dir, log_dir)
    assert procs.recorded(run_dir) == []


def test_stop_terminates_the_whole_group_including_a_grandchild(dirs: tuple[Path, Path]) -> None:
    run_dir, _ = dirs
    pid, grandchild = _start_family(dirs, stubborn=False, escape=False)

    assert procs.stop("family", run_dir, timeout=WAIT_S) is True

    assert _gone(pid) and _gone(grandchild)
    assert procs.recorded(run_dir) == []
    assert procs.alive("family", run_dir) is None


def test_stop_kills_what_ignores_sigterm_and_what_left_the_session(dirs: tuple[Path, Path]) -> None:
    run_dir, _ = dirs
    pid, grandchild = _start_family(dirs, stubborn=True, escape=True)
    assert os.getsid(grandchild) != pid

    assert procs.stop("family", run_dir, timeout=0.5) is True

    assert _gone(pid) and _gone(grandchild)
    assert procs.recorded(run_dir) == []


def test_stop_of_nothing_recorded_returns_false(dirs: tuple[Path, Path]) -> None:
    run_dir, _ = dirs
    assert procs.stop("nothing", run_dir) is False


def test_a_record_of_an_exited_process_is_stale_and_removed(dirs: tuple[Path, Path]) -> None:
    run_dir, log_dir = dirs
    pid = procs.start(procs.ProcessSpec("brief", [sys.executable, "-c", "pass"]), run_dir, log_dir)

    procs.wait_until(lambda: procs.alive("brief", run_dir) is None, WAIT_S, "exit of the short-lived process")

    assert _gone(pid)
    assert not (run_dir / "brief.json").exists()
    assert procs.stop("brief", run_dir) is False


def test_a_reused_pid_is_not_taken_for_the_recorded_process(dirs: tuple[Path, Path]) -> None:
    # Given a record whose pid now belongs to another process (this test's own)
    run_dir, _ = dirs
    run_dir.mkdir(parents=True)
    me = psutil.Process()
    record = {"pid": me.pid, "create_time": me.create_time() - 100.0, "argv": ["x"], "started_at": "2020"}
    (run_dir / "old.json").write_text(json.dumps(record))

    # Then it is not alive, the record is dropped, and stop signals nothing
    assert procs.alive("old", run_dir) is None
    assert not (run_dir / "old.json").exists()
    (run_dir / "old.json").write_text(json.dumps(record))
    assert procs.stop("old", run_dir) is False
    assert me.is_running()


def test_recorded_lists_names_in_start_order(dirs: tuple[Path, Path]) -> None:
    run_dir, log_dir = dirs
    for name in ("zeta", "alpha", "mid"):
        procs.start(_sleeper(name), run_dir, log_dir)

    assert procs.recorded(run_dir) == ["zeta", "alpha", "mid"]

    procs.stop("alpha", run_dir, timeout=WAIT_S)
    assert procs.recorded(run_dir) == ["zeta", "mid"]


def test_wait_until_returns_once_the_condition_holds() -> None:
    calls = []

    def third_time() -> bool:
        calls.append(1)
        return len(calls) >= 3

    procs.wait_until(third_time, WAIT_S, "thing")
    assert len(calls) == 3


def test_wait_until_raises_unavailable_naming_the_log(tmp_path: Path) -> None:
    with pytest.raises(Unavailable) as raised:
        procs.wait_until(lambda: False, 0.2, "zookeeper", tmp_path / "zookeeper.log")
    assert str(raised.value) == f"zookeeper did not become healthy within 0.2s; see {tmp_path / 'zookeeper.log'}"


def test_process_names_must_be_safe_file_names() -> None:
    with pytest.raises(ValueError):
        procs.ProcessSpec("../etc", ["true"])
