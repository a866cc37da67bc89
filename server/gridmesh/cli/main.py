"""The ``gridmesh`` command line."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence

from gridmesh.cli import mesh
from gridmesh.config import MeshConfig, load_config
from gridmesh.core.errors import ConfigError, GridmeshError

Command = Callable[[MeshConfig, argparse.Namespace], int]


def _progress(component: str, what: str) -> None:
    print(f"  {component:<14} {what}", flush=True)


def cmd_up(config: MeshConfig, args: argparse.Namespace) -> int:
    started = time.perf_counter()
    print(f"gridmesh up (state: {config.state_path}, namespace: {config.namespace or '-'})", flush=True)
    env = mesh.child_env(os.environ, args.config)
    mesh.up(config, workers=args.workers, env=env, progress=_progress)
    edge = f"{config.envoy.host}:{config.envoy.port}"
    print(f"\nthe mesh is up in {time.perf_counter() - started:.1f} s:")
    print(f"  edge (gRPC + HTTP/JSON)  {edge}        e.g. curl {edge}/v1/task-types")
    print(f"  envoy admin              {config.envoy.host}:{config.envoy.admin_port}")
    print(f"  scheduler                {config.scheduler.host}:{config.scheduler.port}")
    print(f"  storekeeper              {config.storekeeper.host}:{config.storekeeper.port}")
    print(f"  eventmanager             {config.eventmanager.host}:{config.eventmanager.port}")
    print(f"  logs                     {mesh.log_dir(config)}")
    return 0


def cmd_down(config: MeshConfig, args: argparse.Namespace) -> int:
    print("gridmesh down", flush=True)
    mesh.down(config, _progress)
    return 0


def cmd_status(config: MeshConfig, args: argparse.Namespace) -> int:
    rows = mesh.status(config)
    widths = [max(len(r[i]) for r in [*rows, ("component", "address", "pid", "health")]) for i in range(4)]
    header = ("component", "address", "pid", "health")
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0 if all(r[3] in ("healthy", "standby") for r in rows) else 1


def cmd_worker_start(config: MeshConfig, args: argparse.Namespace) -> int:
    from gridmesh.worker.app import run

    run(config, args.port, args.slots)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gridmesh", description="A gRPC mesh for compute tasks and replication.")
    parser.add_argument("--config", help="TOML config file (default: $GRIDMESH_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("up", help="start the whole mesh on this machine")
    p.add_argument("--workers", type=int, default=1, help="worker nodes to start (default 1)")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", help="stop what 'up' started")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("status", help="health of every component")
    p.set_defaults(func=cmd_status)

    worker = sub.add_parser("worker", help="worker nodes")
    worker_sub = worker.add_subparsers(dest="worker_command", required=True, metavar="ACTION")
    p = worker_sub.add_parser("start", help="run a worker node in the foreground")
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--slots", type=int, default=None)
    p.set_defaults(func=cmd_worker_start)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(os.environ, args.config)
        if getattr(args, "workers", 1) < 0:
            raise ConfigError("--workers must be 0 or more")
        code = args.func(config, args)
    except GridmeshError as e:
        print(f"gridmesh: {e.message}", file=sys.stderr)
        code = 2 if isinstance(e, ConfigError) else 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
