"""An extra worker node for a test: started beside the session mesh's own
node (which other tests rely on), so a test may drain or kill it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from gridmesh.cli import mesh, procs
from gridmesh.config import MeshConfig
from tests.conftest import free_port
from tests.helpers import http_json, wait_for


@dataclass(frozen=True)
class ExtraNode:
    name: str  # its process name in the mesh's run directory
    port: int
    worker_id: str
    address: str


def listed_workers(edge: str) -> dict[str, dict]:
    return {w["worker_id"]: w for w in http_json(edge, "GET", "/v1/workers")[1]["workers"]}


@contextmanager
def extra_node(config: MeshConfig, env: dict[str, str], edge: str, slots: int = 1) -> Iterator[ExtraNode]:
    """A worker node of its own process, registered (ListWorkers shows it) before it is yielded."""
    port = free_port()
    name = f"worker-extra-{port}"
    spec = procs.ProcessSpec(
        name=name,
        argv=[sys.executable, "-m", "gridmesh.worker", "--port", str(port), "--slots", str(slots)],
        env=env,
    )
    runs, logs = mesh.run_dir(config), mesh.log_dir(config)
    procs.start(spec, runs, logs)
    try:
        joined = wait_for("the node to join", lambda: [w for w in listed_workers(edge) if w.endswith(f"-{port}")])
        (worker_id,) = joined
        yield ExtraNode(name, port, worker_id, f"{config.worker.host}:{port}")
    finally:
        procs.stop(name, runs)


def exited(config: MeshConfig, node: ExtraNode) -> bool:
    return procs.alive(node.name, mesh.run_dir(config)) is None
