"""The TypeScript client (clients/ts): code buf generates from the protos,
called with Connect over real gRPC and TLS, runs the example every
language's client runs against a live mesh."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.client_programs import ROOT, build_client, check_steps, program_env, run_program

pytestmark = pytest.mark.e2e

CLIENT = ROOT / "clients/ts"


@pytest.fixture(scope="module")
def ts_program() -> Path:
    """clients/ts/build.sh's entry script (npm packages, generated code and
    tsc's output are made only when missing or out of date)."""
    return build_client(CLIENT)


def test_the_ts_client_runs_a_task_reads_a_bad_request_and_replicates_an_event(mesh_config, edge, ts_program):
    mesh = program_env(mesh_config, edge, "ts")
    check_steps(run_program(["node", str(ts_program)], mesh, cwd=CLIENT), mesh)
