"""What the generated clients' example programs (clients/go, clients/ts,
clients/java) are given and must show, for their e2e tests.

Each program reads the mesh from its environment (see :func:`program_env`):
the edge, its CA, a submitter key, and a publisher and a subscriber key of a
subscription made for that language alone. It then prints one JSON object a
line, one per step, which :func:`check_steps` holds against the mesh itself:

    {"step": "submitted", "task_id": "..."}
    {"step": "watched", "states": ["QUEUED", ..., "SUCCEEDED"]}
    {"step": "downloaded", "bytes": N, "sha256": "...", "result": {...}}
    {"step": "refused", "code": "INVALID_ARGUMENT", "field": "params.text", "description": "..."}
    {"step": "published", "entity_id": "...", "version": 1}
    {"step": "consumed", "entity_id": "...", "operation": "CREATE", "payload": {...}}
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridmesh.config import MeshConfig
from gridmesh.edge.keys import KeyStore
from tests.helpers import edge_ca_file, http_json, wait_for

ROOT = Path(__file__).resolve().parents[2]
TEXT = "the quick brown fox jumps over the lazy dog the end"
"""The word_count every program submits (``TEXT_VAR``)."""


@dataclass(frozen=True)
class ProgramMesh:
    """What one language's program is told, and what the test checks it against."""

    edge: str
    env: dict[str, str]
    publisher: str
    subscriber: str


def program_env(mesh_config: MeshConfig, edge: str, language: str) -> ProgramMesh:
    """Keys of the roles a client needs (made as ``gridmesh keys create``
    makes them) and a subscription of this language's own, once the edge
    knows the keys."""
    suffix = uuid.uuid4().hex[:6]
    publisher, subscriber = f"{language}-shop-{suffix}", f"{language}-audit-{suffix}"
    store = KeyStore.open(mesh_config)
    note = f"tests/e2e/test_client_{language}.py"
    try:
        submitter = store.create("submitter", "", note=note)[1]
        publisher_key = store.create("publisher", publisher, note=note)[1]
        subscriber_key = store.create("subscriber", subscriber, note=note)[1]
    finally:
        store.close()
    keys = (submitter, publisher_key, subscriber_key)
    wait_for(
        "the new keys to reach the edge",
        lambda: all(http_json(edge, "GET", "/v1/task-types", key=key)[0] != 401 for key in keys),
    )
    body = {"subscriber": subscriber, "publisher": publisher, "entity_type": "customer"}
    status, answer = http_json(edge, "POST", "/v1/subscriptions", body)
    assert status == 200, answer
    env = {
        "GRIDMESH_EDGE": edge,
        "GRIDMESH_CA_FILE": edge_ca_file(),
        "GRIDMESH_API_KEY": submitter,
        "GRIDMESH_PUBLISHER": publisher,
        "GRIDMESH_PUBLISHER_KEY": publisher_key,
        "GRIDMESH_SUBSCRIBER": subscriber,
        "GRIDMESH_SUBSCRIBER_KEY": subscriber_key,
        "GRIDMESH_TEXT": TEXT,
    }
    return ProgramMesh(edge, env, publisher, subscriber)


def build_client(directory: Path) -> Path:
    """Run a client's ``build.sh`` (it installs, generates and builds only
    what is missing or out of date); the program it prints last."""
    started = time.monotonic()
    done = subprocess.run([str(directory / "build.sh")], cwd=directory, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"build.sh exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    print(f"{directory.relative_to(ROOT)} built in {time.monotonic() - started:.1f} s")
    return Path(done.stdout.strip().splitlines()[-1])


def run_program(
    argv: Sequence[str],
    mesh: ProgramMesh,
    cwd: Path,
    timeout: float = 300,
    env: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Run the program to its end (in ``env``, default this process's, plus
    the mesh's variables); its steps, in order (it must exit 0)."""
    base = os.environ if env is None else env
    done = subprocess.run(
        list(argv), cwd=cwd, env={**base, **mesh.env}, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{argv[0]} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def check_steps(steps: list[dict[str, Any]], mesh: ProgramMesh) -> None:
    """Every step happened, in order, and agrees with what the mesh says."""
    by_step = {s["step"]: s for s in steps}
    assert [s["step"] for s in steps] == ["submitted", "watched", "downloaded", "refused", "published", "consumed"]

    task_id = by_step["submitted"]["task_id"]
    status, task = http_json(mesh.edge, "GET", f"/v1/tasks/{task_id}")
    assert status == 200 and task["task_type"] == "word_count" and task["state"] == "SUCCEEDED", task
    assert by_step["watched"]["states"][-1] == "SUCCEEDED"

    status, info = http_json(mesh.edge, "GET", f"/v1/results/{task_id}/info")
    assert status == 200, info
    downloaded = by_step["downloaded"]
    assert downloaded["sha256"] == info["sha256"] and int(downloaded["bytes"]) == int(info["size_bytes"])
    counts: dict[str, int] = {}
    for word in TEXT.split():
        counts[word] = counts.get(word, 0) + 1
    assert downloaded["result"]["counts"] == counts

    refused = by_step["refused"]
    assert refused["code"] == "INVALID_ARGUMENT" and refused["field"] == "params.text", refused
    assert "not of type 'string'" in refused["description"]

    published, consumed = by_step["published"], by_step["consumed"]
    assert consumed["entity_id"] == published["entity_id"] and consumed["operation"] == "CREATE"
    assert consumed["payload"] == {"name": "Ada", "credit": 42}
    status, stats = http_json(mesh.edge, "GET", f"/v1/subscribers/{mesh.subscriber}/queue")
    assert status == 200 and int(stats.get("messages", 0)) == 0, stats
