"""A Scheduler killed with kill -9 and started again by ``gridmesh up``, as a
user would: the new process sees in ZooKeeper the election node of the dead
one, knows that process is gone from this machine, removes the node and
leads at once, instead of standing by for the dead session's timeout while
submits get 503. How long submits were refused is logged (measured, not
asserted). A client's watch resumes across that restart.

This module runs its own mesh (no standby), so the kill disturbs no other test.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from gridmesh.cli import mesh, procs
from gridmesh.clients import TaskClient
from gridmesh.config import MeshConfig, load_config
from tests.conftest import mesh_env
from tests.e2e.watching import NdjsonNotices, TerminalNotices, submit_noops
from tests.helpers import http_json, wait_for

log = logging.getLogger("tests.restart")


@dataclass(frozen=True)
class Mesh:
    config: MeshConfig
    env: dict[str, str]
    edge: str


@pytest.fixture(scope="module")
def lone_scheduler_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    env = mesh_env(tmp_path_factory.mktemp("restart"))
    config = load_config(env)
    try:
        mesh.up(config, workers=1, env=env, progress=lambda *_: None)
        yield Mesh(config, env, f"{config.envoy.host}:{config.envoy.port}")
    finally:
        mesh.down(config, lambda *_: None)


def submit(m: Mesh) -> tuple[int, dict]:
    return http_json(m.edge, "POST", "/v1/tasks", {"task_type": "noop", "result_dir": "restart"})


def test_a_scheduler_killed_and_started_again_leads_at_once_without_waiting_out_the_dead_session(lone_scheduler_mesh):
    m = lone_scheduler_mesh
    runs = mesh.run_dir(m.config)
    status, before = submit(m)
    assert status == 200, before
    dead = procs.alive("scheduler", runs)
    assert dead is not None

    os.kill(dead, signal.SIGKILL)
    wait_for("the Scheduler to die", lambda: procs.alive("scheduler", runs) is None)
    restarted = time.monotonic()
    mesh.up(m.config, workers=1, env=m.env, progress=lambda *_: None)  # starts what is down

    def accepted() -> dict | None:
        status, task = submit(m)
        assert status in (200, 503), task
        return task if status == 200 else None

    task = wait_for("a submit to be accepted again", accepted, timeout=60, interval=0.05)
    refused_s = time.monotonic() - restarted
    log.warning("after kill -9 and gridmesh up, submits were accepted again after %.2f s", refused_s)
    scheduler_log = procs.log_path("scheduler", mesh.log_dir(m.config)).read_text()
    assert f":{dead}:" in scheduler_log and "is dead on this machine: removed its election node" in scheduler_log
    for task_id in (before["task_id"], task["task_id"]):
        done = wait_for(f"task {task_id} to end", functools.partial(_ended, m, task_id), timeout=60)
        assert done["state"] == "SUCCEEDED"


def _ended(m: Mesh, task_id: str) -> dict | None:
    status, task = http_json(m.edge, "GET", f"/v1/tasks/{task_id}")
    # A 503 is fine while the edge has not seen the restarted Scheduler healthy yet: ask again.
    return task if status == 200 and task["state"] in ("SUCCEEDED", "FAILED", "CANCELLED") else None


def test_a_watch_resumes_across_a_kill_9_and_restart_of_the_only_scheduler(lone_scheduler_mesh):
    """No standby: the watches break off while the Scheduler is dead and
    resume from MySQL once ``gridmesh up`` started it again; every terminal
    notice arrives exactly once, over gRPC and over HTTP/JSON."""
    m = lone_scheduler_mesh
    runs = mesh.run_dir(m.config)
    with TerminalNotices(m.edge) as grpc_notices, NdjsonNotices(m.edge) as http_notices, TaskClient(m.edge) as client:
        ids = submit_noops(client, 250, "restart") or []
        os.kill(procs.alive("scheduler", runs) or 0, signal.SIGKILL)
        wait_for("the Scheduler to die", lambda: procs.alive("scheduler", runs) is None)
        mesh.up(m.config, workers=1, env=m.env, progress=lambda *_: None)
        ids += wait_for("submits to be accepted again", lambda: submit_noops(client, 250, "restart"), timeout=60)
        grpc_notices.wait_for_all(ids)
        http_notices.wait_for_all(ids)
    print(
        f"kill -9 and restart of the only Scheduler: the latest notice came {grpc_notices.catch_up_s(ids):.2f} s "
        f"(gRPC), {http_notices.catch_up_s(ids):.2f} s (HTTP) after its task finished"
    )
    assert sorted(grpc_notices.of(ids)) == sorted(ids)  # none missed, none repeated
    assert sorted(http_notices.of(ids)) == sorted(ids)
    assert http_notices.reconnects >= 1
