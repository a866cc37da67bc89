"""The Java client (clients/java): code buf generates from the protos with
protoc's Java generator and protoc-gen-grpc-java (both from Maven Central),
called with grpc-java over TLS, runs the example every language's client runs
against a live mesh."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.e2e.client_programs import ROOT, build_client, check_steps, program_env, run_program

pytestmark = pytest.mark.e2e

CLIENT = ROOT / "clients/java"


@pytest.fixture(scope="module")
def java_program() -> Path:
    """clients/java/build.sh's jar (generated code is made only when the
    descriptor set, buf.gen.yaml or pom.xml changed; `mvn package` compiles
    what changed and runs the helpers' unit tests every time)."""
    return build_client(CLIENT)


def test_the_java_client_runs_a_task_reads_a_bad_request_and_replicates_an_event(mesh_config, edge, java_program):
    mesh = program_env(mesh_config, edge, "java")
    check_steps(run_program(["java", "-jar", str(java_program)], mesh, cwd=CLIENT), mesh)


def test_the_java_helpers_passed_their_unit_tests(java_program):
    """The build ran HelpersTest (Structs, Errors, ApiKey, the default
    deadline, Timestamps) without a mesh, and every test of it passed."""
    reports = sorted((CLIENT / "target/surefire-reports").glob("TEST-*.xml"))
    assert reports, "mvn package ran no unit test"
    suites = [ET.parse(report).getroot() for report in reports]
    ran = sum(int(suite.get("tests", 0)) for suite in suites)
    bad = sum(int(suite.get(k, 0)) for suite in suites for k in ("failures", "errors", "skipped"))
    assert ran >= 8 and bad == 0, [(suite.get("name"), suite.attrib) for suite in suites]
