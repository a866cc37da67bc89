"""The analytics job's status file, ``<state_dir>/analytics/status.json``.

The job rewrites it (atomically) every second while it runs; ``gridmesh
status`` reads it to tell whether the job is healthy, when it last stored a
micro-batch and how far behind the topics it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gridmesh.config import MeshConfig

__all__ = ["FRESH_S", "JobStatus", "describe", "health", "read_status", "status_path", "write_status"]

FRESH_S = 15.0
"""A status older than this belongs to a job that hangs or is gone."""


@dataclass(frozen=True, slots=True)
class JobStatus:
    state: str
    """``starting``, ``running``, ``restarting`` (the query failed and is
    restarted from its checkpoint), ``stopped`` or ``failed``."""
    pid: int
    master: str
    updated_at: str
    """ISO 8601, UTC."""
    query_id: str = ""
    batches: int = 0
    """Micro-batches stored since the job started."""
    last_batch_id: int = -1
    last_batch_at: str = ""
    last_batch_records: int = 0
    lag_records: int | None = None
    """Records on the topics not read yet (None: not known yet)."""
    stalled_s: float = 0.0
    """How long records have waited with no micro-batch stored, once past
    ``analytics.stall_after_s`` (0: not stalled)."""
    error: str = ""


def status_path(config: MeshConfig) -> Path:
    return config.analytics_dir / "status.json"


def write_status(path: Path, status: JobStatus) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(status), indent=2) + "\n")
    os.replace(tmp, path)


def read_status(path: Path) -> JobStatus | None:
    with contextlib.suppress(OSError, ValueError, TypeError):
        return JobStatus(**json.loads(path.read_text()))
    return None


def _age_s(iso: str, now: datetime) -> float | None:
    try:
        return (now - datetime.fromisoformat(iso)).total_seconds()
    except ValueError:
        return None


def health(status: JobStatus | None, alive: bool, now: datetime) -> str:
    """``healthy`` when the job runs its query and keeps its status fresh."""
    if not alive:
        return "DOWN"
    if status is None:
        return "starting"
    age = _age_s(status.updated_at, now)
    if age is None or age > FRESH_S:
        return "not responding"
    if status.stalled_s:
        return f"stalled: {status.lag_records} records wait, no micro-batch stored for {status.stalled_s:.0f} s"
    return "healthy" if status.state == "running" else status.state


def describe(status: JobStatus | None, now: datetime | None = None) -> str:
    """One line for people, e.g. ``last micro-batch 3 s ago (batch 17, 42 records), lag 0 records``."""
    if status is None:
        return "no status yet"
    now = now or datetime.now(UTC)
    age = _age_s(status.last_batch_at, now) if status.last_batch_at else None
    batch = (
        "no micro-batch stored yet"
        if age is None
        else f"last micro-batch {age:.0f} s ago (batch {status.last_batch_id}, {status.last_batch_records} records)"
    )
    lag = "lag unknown" if status.lag_records is None else f"lag {status.lag_records} records"
    error = f"; last error: {status.error}" if status.error else ""
    return f"{batch}, {lag}{error}"
