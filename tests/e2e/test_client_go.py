"""The Go client (clients/go): code buf generates from the protos with
protoc-gen-go and protoc-gen-go-grpc, called with grpc-go over TLS, runs the
example every language's client runs against a live mesh."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.client_programs import ROOT, build_client, check_steps, program_env, run_program

pytestmark = pytest.mark.e2e

CLIENT = ROOT / "clients/go"


@pytest.fixture(scope="module")
def go_program() -> Path:
    """clients/go/build.sh's program (modules, generated code and the build
    are made only when missing or out of date; `go vet` runs every time)."""
    return build_client(CLIENT)


def test_the_go_client_runs_a_task_reads_a_bad_request_and_replicates_an_event(mesh_config, edge, go_program):
    mesh = program_env(mesh_config, edge, "go")
    check_steps(run_program([str(go_program)], mesh, cwd=CLIENT), mesh)


def test_the_go_helpers_pass_their_unit_tests(go_program):
    """Struct <-> map, the API key's credentials and reading a BadRequest,
    without a mesh (after the build, which fetched the modules)."""
    done = subprocess.run(["go", "test", "./gridmesh"], cwd=CLIENT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"go test exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
