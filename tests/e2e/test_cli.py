"""SPEC §4 / issue 3: `gridmesh up` starts the mesh (twice is harmless),
`status` shows every component, `down` stops exactly what `up` started, and
a wrong config value stops `up` with one line naming the key."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil

from gridmesh.cli import backing, mesh, procs
from gridmesh.config import load_config
from tests.conftest import WORKER_PORTS, free_port, mesh_env
from tests.helpers import http_json, wait_for

GRIDMESH = str(Path(sys.executable).parent / "gridmesh")


def still_running(record: dict) -> bool:
    """The recorded process exists and is not a zombie (nothing reaps orphans on some machines)."""
    try:
        process = psutil.Process(record["pid"])
        return process.create_time() == record["create_time"] and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def gridmesh(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRIDMESH, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_wrong_config_value_stops_up_with_one_line_naming_the_key(tmp_path):
    env = mesh_env(tmp_path, GRIDMESH_STOREKEEPER_PORT="not-a-port")
    result = gridmesh(env, "up")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "gridmesh: config key 'storekeeper.port' (GRIDMESH_STOREKEEPER_PORT) must be an integer, got 'not-a-port'"
    ]
    assert not (tmp_path / "run").exists()


def test_an_unbuilt_console_stops_up_with_one_line_saying_how_to_build_it(tmp_path):
    env = mesh_env(tmp_path, GRIDMESH_CONSOLE_ASSETS_DIR=str(tmp_path / "no-dist"))
    result = gridmesh(env, "up")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "the console is not built" in line and "./dev up" in line
    assert not (tmp_path / "run").exists()


def test_unknown_config_key_stops_up(tmp_path):
    env = mesh_env(tmp_path, GRIDMESH_ENVOY_PROT="8080")
    result = gridmesh(env, "up")
    assert result.returncode == 2
    assert "unknown config key 'envoy.prot'" in result.stderr
    assert not (tmp_path / "run").exists()


def test_up_twice_is_harmless_and_status_shows_every_component_healthy(mesh_config, mesh_environment):
    before = {name: procs.alive(name, mesh.run_dir(mesh_config)) for name in procs.recorded(mesh.run_dir(mesh_config))}
    again = gridmesh(mesh_environment, "up", "--workers", "1")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    after = {name: procs.alive(name, mesh.run_dir(mesh_config)) for name in procs.recorded(mesh.run_dir(mesh_config))}
    assert after == before

    status = gridmesh(mesh_environment, "status")
    assert status.returncode == 0, status.stdout
    lines = status.stdout.splitlines()
    for component in (
        "mysql",
        "rabbitmq",
        "zookeeper",
        "kafka",
        "scheduler",
        "storekeeper",
        "eventmanager",
        "worker-1",
        "console",
        "authz",
        "envoy",
    ):
        assert any(line.startswith(component) and line.endswith("healthy") for line in lines), status.stdout
    # Every gridmesh process serves its metrics and status lists where.
    endpoints = {line.split()[0]: line.split()[1] for line in lines[lines.index("") + 2 :]}
    prefixes = sorted({name.rsplit("-", 1)[0] for name in endpoints})
    assert prefixes == ["authz", "eventmanager", "scheduler", "storekeeper", "worker"], status.stdout
    scheduler_metrics = next(url for name, url in endpoints.items() if name.startswith("scheduler"))
    with urllib.request.urlopen(scheduler_metrics, timeout=5) as response:
        text = response.read().decode()
    pulls = [
        line
        for line in text.splitlines()
        if line.startswith("grpc_server_msg_received_total{") and 'grpc_method="PullTasks"' in line
    ]
    assert pulls and float(pulls[0].split()[-1]) > 0, text[:2000]  # the worker's credit reached it


def test_down_stops_exactly_what_up_started(backing_services, tmp_path):
    env = mesh_env(tmp_path)
    config = load_config(env)
    runs = mesh.run_dir(config)
    up = gridmesh(env, "up", "--workers", "2")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        started = {name: procs.alive(name, runs) for name in procs.recorded(runs)}
        assert set(started) == {
            "scheduler", "storekeeper", "eventmanager", "worker-1", "worker-2", "console", "authz", "envoy",
        }  # fmt: skip
        edge = f"https://{config.envoy.host}:{config.envoy.port}/"
        assert f"web console              {edge}" in up.stdout
        opened = gridmesh(env, "console", "--print-url")
        assert opened.returncode == 0 and opened.stdout.strip() == edge, opened.stderr
        records = [json.loads((runs / f"{name}.json").read_text()) for name in started]
    except BaseException:
        mesh.down(config, lambda *_: None)  # a failed check must not leave the mesh running
        raise

    down = gridmesh(env, "down")
    assert down.returncode == 0, down.stderr
    assert not [record["argv"] for record in records if still_running(record)]
    assert procs.recorded(runs) == []
    # The backing services it found running are left alone.
    assert all(service.probe() for service in backing.backing_services(config))
    gone = gridmesh(env, "console", "--print-url")
    assert gone.returncode == 1 and "gridmesh up" in gone.stderr


def test_up_only_worker_joins_a_node_to_a_running_mesh_and_down_stops_only_that_node(
    mesh_config, mesh_environment, tmp_path
):
    # A second "host": its own state directory, only the worker role, the mesh's addresses.
    host = {
        **mesh_environment,
        "GRIDMESH_STATE_DIR": str(tmp_path / "host"),
        "GRIDMESH_WORKER_BASE_PORT": str(free_port(WORKER_PORTS)),
    }
    edge = f"{mesh_config.envoy.host}:{mesh_config.envoy.port}"
    before = {w["worker_id"] for w in http_json(edge, "GET", "/v1/workers")[1]["workers"]}

    up = gridmesh(host, "up", "--only", "worker")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        runs = mesh.run_dir(load_config(host))
        assert procs.recorded(runs) == ["worker-1"]  # no backing service, no other component
        joined = wait_for(
            "the node to join",
            lambda: {w["worker_id"] for w in http_json(edge, "GET", "/v1/workers")[1]["workers"]} - before or None,
        )
        assert len(joined) == 1
        status = gridmesh(host, "status")
        assert status.returncode == 0, status.stdout
        table = status.stdout.split("\n\n")[0]  # then where its processes serve metrics
        rows = [line.split()[0] for line in table.splitlines()[1:]]
        assert rows == ["worker-1"], status.stdout  # the host shows what it runs
    finally:
        down = gridmesh(host, "down")
    assert down.returncode == 0, down.stderr
    wait_for(
        "the node to leave",
        lambda: not joined & {w["worker_id"] for w in http_json(edge, "GET", "/v1/workers")[1]["workers"]},
    )
    assert before <= {w["worker_id"] for w in http_json(edge, "GET", "/v1/workers")[1]["workers"]}


def test_up_only_with_an_unknown_role_names_the_known_ones(tmp_path):
    result = gridmesh(mesh_env(tmp_path), "up", "--only", "worker,queue")
    assert result.returncode == 2
    assert "--only takes roles among mysql, rabbitmq" in result.stderr and "'worker,queue'" in result.stderr
    assert not (tmp_path / "run").exists()
