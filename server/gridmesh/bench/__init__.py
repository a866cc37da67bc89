"""``gridmesh bench``: the SPEC §5 workloads, measured as ``../shared/peers``
measures Celery, Ray, raw pika and raw gRPC, with records in the peers' schema.

Only the pure parts are exported here, so that importing the package (as a
worker's task process does for the ``logged_burn`` plugin) stays cheap; the
runner lives in :mod:`gridmesh.bench.runner`.
"""

from gridmesh.bench.stats import latency_metrics, percentile
from gridmesh.bench.workloads import WORKLOADS, CrashVerdict, Workload, crash_verdict, parse_exec_lines

__all__ = [
    "WORKLOADS",
    "CrashVerdict",
    "Workload",
    "crash_verdict",
    "latency_metrics",
    "parse_exec_lines",
    "percentile",
]
