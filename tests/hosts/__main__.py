"""Run a mesh on hosts (network namespaces) from the command line, as root:

    .venv/bin/python -m tests.hosts up [--dir DIR] [--workers 1-3] [--no-spark]
    .venv/bin/python -m tests.hosts down [--dir DIR]
    .venv/bin/python -m tests.hosts w6 [--dir DIR] [--tasks 3000] [--reps 3]

``up`` starts every host (tests/hosts/cluster.py has the layout), prints the
edge's address, CA and admin key, and returns; ``down`` stops them all and
removes the namespaces; ``w6`` is workload W6 (docs/benchmarks.md): sleep
tasks on 1, 2 and 3 worker hosts, each started afresh.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from tests.hosts.cluster import Cluster, Layout
from tests.hosts.netns import Network

DEFAULT_DIR = Path("/tmp/gridmesh-hosts")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.hosts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"state of every host (default {DEFAULT_DIR})")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("up")
    p.add_argument("--workers", type=int, default=3, choices=(1, 2, 3))
    p.add_argument("--no-spark", action="store_true", help="no Spark cluster and no analytics job")
    sub.add_parser("down")
    p = sub.add_parser("w6")
    p.add_argument("--tasks", type=int, default=3000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--hosts", default="1,2,3", help="worker host counts to run (default 1,2,3)")
    p.add_argument("--out", type=Path, help="append one JSON record per run to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    if args.command == "up":
        cluster = Cluster(args.dir, Layout(workers=args.workers, spark=not args.no_spark))
        cluster.start()
        print(json.dumps({"edge": cluster.edge, "ca_file": cluster.ca_file, "api_key": cluster.admin_key}))
        return 0
    if args.command == "down":
        Network().destroy()  # kills every process of every host
        return 0
    from tests.hosts.w6 import run_w6

    counts = [int(n) for n in args.hosts.split(",")]
    for record in run_w6(args.dir, counts, args.tasks, args.reps):
        print(json.dumps(record), flush=True)
        if args.out:
            with args.out.open("a") as f:
                f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
