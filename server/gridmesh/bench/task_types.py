"""``logged_burn``: the task type W4 runs (a plugin, entry point group
``gridmesh.task_types``), named and done as the peers' ``logged_burn``.

It burns ``units`` x 96,000 iterations of the peers' loop between two lines
appended to an execution log, ``<tag> start <pid> <time>`` and ``<tag> end
<pid> <time>``; the log tells the benchmark which task ran where, how often,
and when it finished. The log is a file named by the client but always in
:func:`exec_log_dir`, so a submit cannot make a worker write anywhere else.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from gridmesh.bench.workloads import log_exec
from gridmesh.core.builtin_tasks import MAX_BURN_UNITS, burn_units
from gridmesh.core.tasktypes import TaskType

EXEC_LOG_DIR_NAME = "gridmesh-bench"
LOG_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


def exec_log_dir(tmp: str | None = None) -> Path:
    """Where execution logs live: ``<temp dir>/gridmesh-bench`` (the same
    for the bench client and the workers of a mesh on the same machine)."""
    return Path(tmp or tempfile.gettempdir()) / EXEC_LOG_DIR_NAME


def ensure_exec_log_dir(tmp: str | None = None) -> Path:
    """Create :func:`exec_log_dir`, writable by every user (sticky, like /tmp)."""
    path = exec_log_dir(tmp)
    path.mkdir(parents=True, exist_ok=True)
    if path.stat().st_uid == os.geteuid():
        path.chmod(0o1777)
    return path


def logged_burn(params: dict[str, Any]) -> dict[str, Any]:
    path = exec_log_dir() / params["log"]
    tag = params["tag"]
    log_exec(path, tag, "start")
    burn_units(params["units"])
    log_exec(path, tag, "end")
    return {"tag": tag}


LOGGED_BURN = TaskType(
    name="logged_burn",
    description="Benchmark W4: burns units x 96,000 loop iterations between 'start' and 'end' lines of a log.",
    params_schema={
        "type": "object",
        "properties": {
            "units": {"type": "integer", "minimum": 0, "maximum": MAX_BURN_UNITS, "description": "units of burn"},
            "tag": {"type": "integer", "minimum": 0, "description": "names the task in the log"},
            "log": {
                "type": "string",
                "pattern": LOG_NAME_PATTERN,
                "description": "file name of the execution log in <temp dir>/gridmesh-bench",
            },
        },
        "required": ["units", "tag", "log"],
        "additionalProperties": False,
        "description": 'give {"units": N, "tag": T, "log": "NAME"}',
    },
    run=logged_burn,
)
