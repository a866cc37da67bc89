"""The ``gridmesh bench`` command: its arguments and what it runs."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

from gridmesh.bench.workloads import DEFAULT_WORKLOADS, WORKLOADS
from gridmesh.cli.args import positive_int
from gridmesh.common.errors import InvalidArgument
from gridmesh.config import MeshConfig

DESCRIPTION = """\
Measure the SPEC §5 workloads against a running mesh, defined and timed exactly as
../shared/peers measures Celery, Ray, raw pika and raw gRPC, and print one
'RESULT {json}' line per repetition in the peers' record schema (system "gridmesh",
profile "edge" or "direct"), then a table of medians and min..max over the repetitions.
If no mesh answers, one is started (one worker node with 2 slots) and stopped again.

workloads:
  W1  throughput: 5,000 noop tasks (100-byte param) submitted at once; tasks/s to the last completion notice
  W2  latency: 500 noop tasks one at a time; p50/p90/p99 submit -> completion notice
  W3  CPU: 200 burn(1) tasks on 2 slots; makespan / ideal
  W4  crash: 200 logged_burn(2) tasks; kill -9 one task process after 50 finished; lost / duplicates / recovery
  E1  edge overhead: GetTask p50/p99 direct gRPC vs Envoy gRPC vs Envoy HTTP/JSON
  R1  replication throughput: 10,000 entity events (EventClient.publish_batch, 500 per call) to 2 replica
      applier processes, each writing its own MySQL database; events/s until both hold every last version
  R2  replication lag: 500 events/s for 20 s (paced); p50/p99 publish -> applied in both replicas

Compare with the peers:  python ../shared/peers/report.py PEERS.jsonl GRIDMESH.jsonl
"""


def _workload(text: str) -> str:
    name = text.upper()
    if name not in WORKLOADS:
        raise argparse.ArgumentTypeError(f"unknown workload {text!r} (choose from {', '.join(WORKLOADS)})")
    return name


def add_bench_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench`` to the ``gridmesh`` subcommands."""
    p = sub.add_parser(
        "bench",
        help="measure the SPEC §5 workloads (as the peers are measured)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "workloads",
        nargs="*",
        type=_workload,
        metavar="WORKLOAD",
        help=f"workloads to run, in order (default: {' '.join(DEFAULT_WORKLOADS)})",
    )
    p.add_argument("--reps", type=positive_int, default=3, metavar="N", help="repetitions of each workload (default 3)")
    p.add_argument(
        "--w4-reps", type=positive_int, default=5, metavar="N", help="repetitions of W4 when --reps > 1 (default 5)"
    )
    p.add_argument("--out", type=Path, metavar="FILE", help="append every record to FILE (JSON lines)")
    p.add_argument("--direct", action="store_true", help="talk straight to the Scheduler, not through Envoy")
    p.add_argument("--quick", action="store_true", help="small N, for a smoke test (numbers meaningless)")
    p.add_argument(
        "--gate",
        choices=["case", "rep", "off"],
        default="case",
        help="wait for a quiet machine (load1 < 1 and others' CPU < 10%%) before each workload (case, the "
        "default) or each repetition (rep); off: never, and no re-runs for foreign CPU",
    )
    p.add_argument("--gate-timeout", type=float, default=600.0, metavar="SECONDS", help="longest wait of one gate")
    p.add_argument(
        "--foreign-max",
        type=float,
        default=5.0,
        metavar="PCT",
        help="re-run a repetition during which other processes used more than PCT%% of a core (default 5)",
    )
    p.set_defaults(func=cmd_bench)


def cmd_bench(config: MeshConfig, args: argparse.Namespace) -> int:
    from gridmesh.bench.runner import BenchOptions, run
    from gridmesh.cli.mesh import child_env

    if args.out is not None:
        try:
            args.out.open("a").close()
        except OSError as e:
            raise InvalidArgument(f"cannot write {args.out}: {e.strerror or e}") from None
    options = BenchOptions(
        workloads=tuple(dict.fromkeys(args.workloads)) or DEFAULT_WORKLOADS,
        reps=args.reps,
        w4_reps=args.w4_reps,
        direct=args.direct,
        quick=args.quick,
        out=args.out,
        gate=args.gate,
        gate_timeout_s=args.gate_timeout,
        foreign_max_pct=args.foreign_max,
    )

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds: samplers and what the bench started are stopped

    signal.signal(signal.SIGTERM, stop)
    records = run(config, options, child_env(os.environ, args.config))
    return 0 if records and all(r["ok"] for r in records if not r.get("discarded")) else 1
