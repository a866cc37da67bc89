"""A full disk under the storage root, for real: the mesh's results go to a
small tmpfs that fills up. A result that does not fit ends its task FAILED on
its first attempt, with an error that names the cause (not retried as if the
task's process had died); the results already stored stay intact, nothing
partial is left, and once space is freed new tasks succeed again. ``gridmesh
status`` shows the free space and warns that it is low.

This module runs its own mesh (its own storage root), so filling the disk
disturbs no other test.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gridmesh.cli import mesh
from gridmesh.config import MeshConfig, load_config
from tests.conftest import mesh_env
from tests.helpers import http, http_json, wait_for

log = logging.getLogger("tests.storage")

DISK_BYTES = 256 * 1024
BLOB_CHARS = 90_000
"""Each result is a little over this many bytes: two fit on the disk, a third does not."""


@dataclass(frozen=True)
class SmallDiskMesh:
    config: MeshConfig
    edge: str
    root: Path


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmallDiskMesh]:
    root = tmp_path_factory.mktemp("small-disk")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(root)], check=True)
    env = mesh_env(tmp_path_factory.mktemp("state"), GRIDMESH_STOREKEEPER_STORAGE_ROOT=str(root))
    config = load_config(env)
    try:
        mesh.up(config, workers=1, env=env, progress=lambda component, what: log.info("%s: %s", component, what))
        yield SmallDiskMesh(config, f"{config.envoy.host}:{config.envoy.port}", root)
    finally:
        mesh.down(config, lambda *_: None)
        subprocess.run(["umount", str(root)], check=True)


def run_echo(fm: SmallDiskMesh, marker: str) -> dict:
    body = {"task_type": "echo", "params": {"blob": marker * BLOB_CHARS}, "result_dir": "big"}
    status, task = http_json(fm.edge, "POST", "/v1/tasks", body)
    assert status == 200, task

    def ended() -> dict | None:
        _, now = http_json(fm.edge, "GET", f"/v1/tasks/{task['task_id']}")
        return now if now["state"] in ("SUCCEEDED", "FAILED", "CANCELLED") else None

    return wait_for(f"task {task['task_id']} to end", ended, timeout=60)


def files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_a_result_that_does_not_fit_fails_its_task_at_once_naming_no_space_and_harms_nothing_stored(small_disk):
    fm = small_disk
    stored = [run_echo(fm, marker) for marker in "ab"]
    assert [t["state"] for t in stored] == ["SUCCEEDED", "SUCCEEDED"]

    full = run_echo(fm, "c")

    assert full["state"] == "FAILED"
    assert full["attempt"] == 1  # not retried as a crash: retrying cannot make room
    assert "no space left on device" in full["error"] and str(fm.root) in full["error"], full["error"]
    assert files(fm.root) == sorted(f"big/{t['task_id']}.json" for t in stored)  # nothing partial left
    for task in stored:
        status, body = http(fm.edge, "GET", f"/v1/results/{task['task_id']}")
        assert status == 200 and hashlib.sha256(body).hexdigest() == task["result_sha256"]

    # The operator frees space: new results are stored again.
    (fm.root / stored[0]["result_path"]).unlink()
    again = run_echo(fm, "d")
    assert again["state"] == "SUCCEEDED", again["error"]


def test_status_shows_the_free_space_under_the_storage_root_and_warns_when_it_is_low(small_disk):
    fm = small_disk
    (row,) = [r for r in mesh.status(fm.config) if r[0] == "storekeeper"]
    _, address, _, health = row
    assert f"free under {fm.root}" in address and "results will soon fail to store" in address, address
    assert health == "low disk"  # 256 KiB is below the default 1 GiB warning
    assert mesh.storage_space(fm.config).free_bytes <= DISK_BYTES
