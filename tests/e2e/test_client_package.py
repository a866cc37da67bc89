"""gridmesh-client on its own (issue 18): ``pip install ./clients`` into an
empty virtualenv gives a working client, without any of the server's
dependencies, that runs the example every language's client runs against a
live mesh."""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

import pytest

from tests.e2e.client_programs import ROOT, check_steps, program_env, run_program

pytestmark = pytest.mark.e2e

SERVER_ONLY = ("pyspark", "pika", "kazoo", "confluent_kafka", "psutil", "prometheus_client", "envoy", "pymysql")
"""Modules the server needs and a client must not pull in (pymysql only comes with the ``outbox`` extra)."""


def site_packages_bytes(env_dir: Path) -> int:
    return sum(p.stat().st_size for p in env_dir.glob("lib/python*/site-packages/**/*") if p.is_file())


@pytest.fixture(scope="module")
def client_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a fresh virtualenv holding gridmesh-client alone."""
    env_dir = tmp_path_factory.mktemp("client-venv")
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(ROOT / "clients")], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"gridmesh-client installed: {site_packages_bytes(env_dir) / 1e6:.1f} MB in site-packages")
    return python


def clean_env() -> dict[str, str]:
    """The test's environment without anything that would reach this checkout's own packages."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def test_the_client_installs_without_the_servers_dependencies(client_python: Path):
    probe = (
        "import importlib.util, json, sys; "
        "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}))"
    )
    server, client = ("gridmesh.core", "gridmesh.scheduler"), ("gridmesh.clients", "gridmesh.v1", "gridmesh.common")
    modules = [*SERVER_ONLY, *server, *client]
    done = subprocess.run(
        [str(client_python), "-c", probe, *modules], capture_output=True, text=True, env=clean_env(), cwd="/"
    )
    assert done.returncode == 0, done.stderr
    present = json.loads(done.stdout)
    assert [m for m in SERVER_ONLY if present[m]] == []
    assert [m for m in server if present[m]] == []
    assert all(present[m] for m in client)


def test_without_the_outbox_extra_the_outbox_says_what_to_install(client_python: Path):
    done = subprocess.run(
        [str(client_python), "-c", "from gridmesh.clients import Outbox"],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd="/",
    )
    assert done.returncode != 0
    assert "pip install 'gridmesh-client[outbox]'" in done.stderr


def test_the_client_alone_runs_a_task_reads_a_bad_request_and_replicates_an_event(mesh_config, edge, client_python):
    mesh = program_env(mesh_config, edge, "python")
    example = ROOT / "clients" / "python" / "example.py"
    steps = run_program([str(client_python), str(example)], mesh, cwd=Path("/"), env=clean_env())
    check_steps(steps, mesh)
