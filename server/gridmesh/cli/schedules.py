"""``gridmesh schedules …``: tasks submitted at every tick of a cron
expression or a fixed interval, through the edge."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from gridmesh.cli import mesh, stats, tasks
from gridmesh.cli.tasks import format_time, table
from gridmesh.common.errors import InvalidArgument
from gridmesh.config import MeshConfig
from gridmesh.v1 import scheduler_pb2

__all__ = ["register"]


def _when(schedule: scheduler_pb2.Schedule) -> str:
    if schedule.cron:
        return f"cron '{schedule.cron}' ({schedule.time_zone or 'UTC'})"
    return f"every {schedule.interval.ToTimedelta().total_seconds():g} s"


def _line(schedule: scheduler_pb2.Schedule) -> str:
    state = "paused" if schedule.paused else f"next {format_time(schedule.next_tick)}"
    return f"{schedule.schedule_id}  {schedule.task.task_type}  {_when(schedule)}  {state}"


def _emit(args: argparse.Namespace, schedule: scheduler_pb2.Schedule) -> None:
    print(tasks.json_line(schedule) if args.json else _line(schedule), flush=True)


def cmd_create(config: MeshConfig, args: argparse.Namespace) -> int:
    if bool(args.cron) == bool(args.every):
        raise InvalidArgument("give --cron or --every")
    schedule = scheduler_pb2.Schedule(
        cron=args.cron,
        time_zone=args.time_zone,
        task=scheduler_pb2.SubmitTaskRequest(
            task_type=args.task_type, result_dir=args.result_dir, priority=args.priority
        ),
        catch_up=args.catch_up,
        catch_up_limit=args.catch_up_limit,
    )
    schedule.task.params.update(tasks.parse_params(args.params))
    if args.every:
        schedule.interval.FromTimedelta(stats.parse_duration(args.every, "--every"))
    with mesh.task_client(config) as client:
        _emit(args, client.create_schedule(schedule))
    return 0


def cmd_list(config: MeshConfig, args: argparse.Namespace) -> int:
    with mesh.task_client(config) as client:
        schedules = client.list_schedules()
    if args.json:
        for schedule in schedules:
            print(tasks.json_line(schedule))
        return 0
    rows = [
        (
            s.schedule_id,
            s.task.task_type,
            _when(s),
            scheduler_pb2.Schedule.CatchUp.Name(s.catch_up or scheduler_pb2.Schedule.SKIP),
            "paused" if s.paused else format_time(s.next_tick),
            format_time(s.last_tick),
            s.last_task_id or "-",
        )
        for s in schedules
    ]
    print(table(("schedule_id", "task_type", "when", "catch_up", "next_tick", "last_tick", "last_task"), rows))
    return 0


def _by_id(action: str) -> Callable[[MeshConfig, argparse.Namespace], int]:
    def command(config: MeshConfig, args: argparse.Namespace) -> int:
        with mesh.task_client(config) as client:
            answer = getattr(client, f"{action}_schedule")(args.schedule_id)
        if action == "delete":
            print(f"deleted schedule {args.schedule_id}")
        else:
            _emit(args, answer)
        return 0

    return command


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], as_json: argparse.ArgumentParser) -> None:
    schedules = sub.add_parser("schedules", help="tasks submitted on a cron expression or an interval")
    schedules_sub = schedules.add_subparsers(dest="schedules_command", required=True)
    p = schedules_sub.add_parser("create", parents=[as_json], help="submit a task at every tick")
    p.add_argument("task_type", metavar="TYPE")
    p.add_argument("--params", default="{}", metavar="JSON")
    p.add_argument("--result-dir", required=True, metavar="DIR")
    p.add_argument("--priority", type=str.upper, choices=["LOW", "NORMAL", "HIGH"], default="NORMAL")
    p.add_argument("--cron", default="", metavar="EXPR", help="e.g. '*/5 * * * *' (a sixth field: seconds)")
    p.add_argument("--time-zone", default="UTC", metavar="TZ", help="of --cron, e.g. Europe/Berlin (default UTC)")
    p.add_argument("--every", default="", metavar="DURATION", help="a fixed interval instead: 30s, 5m, 1h")
    p.add_argument(
        "--catch-up",
        type=str.upper,
        choices=["SKIP", "ONCE", "ALL"],
        default="SKIP",
        help="ticks missed while no Scheduler led or paused: skip them (default), run once, or all",
    )
    p.add_argument("--catch-up-limit", type=int, default=0, metavar="N", help="with ALL: at most N (default 100)")
    p.set_defaults(func=cmd_create)
    p = schedules_sub.add_parser("list", parents=[as_json], help="every schedule, oldest first")
    p.set_defaults(func=cmd_list)
    for action, text in (
        ("get", "show one schedule"),
        ("pause", "fire no more ticks until resumed"),
        ("resume", "fire ticks again (missed ones: its catch-up policy)"),
        ("delete", "delete a schedule (its tasks stay)"),
    ):
        p = schedules_sub.add_parser(action, parents=[as_json], help=text)
        p.add_argument("schedule_id", metavar="ID")
        p.set_defaults(func=_by_id(action))
