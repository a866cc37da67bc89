"""``gridmesh stats``: the analytics job's figures per time window, as tables.

Asks ``GetStats`` through the edge. Text output is one row per window and
task type (counts, queue wait and run time in ms), then one row per window
and worker, then one line on the job (last micro-batch, watermark, skipped
records). ``--json`` prints the response as one JSON object.
"""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf import timestamp_pb2

from gridmesh.cli import mesh
from gridmesh.cli.tasks import NOT_SET, format_age, format_time, json_line, table
from gridmesh.clients import TaskError
from gridmesh.common.errors import InvalidArgument
from gridmesh.config import MeshConfig
from gridmesh.grpc_support.probe import to_edge
from gridmesh.v1 import scheduler_pb2, scheduler_pb2_grpc

__all__ = ["build_request", "cmd_stats", "register", "stats_text"]

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|min|h|d)$")
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
TIMEOUT_S = 30.0
WINDOW_COLUMNS = (
    "window_start", "end", "type", "pending", "started", "completed", "failed", "retried",
    "wait_mean_ms", "wait_p50_ms", "wait_p95_ms", "wait_max_ms", "run_mean_ms", "run_max_ms",
)  # fmt: skip


def parse_duration(text: str, option: str = "--since") -> timedelta:
    """``90s``, ``30m``, ``2h``, ``1d``."""
    match = _DURATION_RE.match(text.strip())
    if not match:
        raise InvalidArgument(f"{option} {text!r} is not a duration such as 90s, 30m, 2h or 1d")
    return timedelta(seconds=float(match[1]) * _UNITS[match[2]])


def parse_time(text: str, option: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(f"{option} {text!r} is not a time such as 2026-03-01T12:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _ts(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def build_request(args: argparse.Namespace, now: datetime) -> scheduler_pb2.GetStatsRequest:
    end = parse_time(args.end, "--end") if args.end else now
    start = parse_time(args.start, "--start") if args.start else end - parse_duration(args.since)
    return scheduler_pb2.GetStatsRequest(start_time=_ts(start), end_time=_ts(end), task_type=args.type)


def _ms(value: float, count: int) -> str:
    return f"{value:.1f}" if count else NOT_SET


def stats_text(response: scheduler_pb2.GetStatsResponse, now: datetime) -> str:
    parts = []
    if response.windows:
        parts.append(
            table(
                WINDOW_COLUMNS,
                (
                    (
                        format_time(w.window_start) + ("" if w.final else " *"),
                        w.window_end.ToDatetime(tzinfo=UTC).strftime("%H:%M:%S"),
                        w.task_type,
                        str(w.pending),
                        str(w.started),
                        str(w.completed),
                        str(w.failed),
                        str(w.retried),
                        _ms(w.queue_wait_mean_ms, w.queue_wait_count),
                        _ms(w.queue_wait_p50_ms, w.queue_wait_count),
                        _ms(w.queue_wait_p95_ms, w.queue_wait_count),
                        _ms(w.queue_wait_max_ms, w.queue_wait_count),
                        _ms(w.run_time_mean_ms, w.run_time_count),
                        _ms(w.run_time_max_ms, w.run_time_count),
                    )
                    for w in response.windows
                ),
            )
        )
    else:
        parts.append("no statistics in this range (is the analytics job running? see 'gridmesh status')")
    if response.workers:
        parts.append(
            table(
                ("window_start", "worker", "completed", "busy_s"),
                (
                    (format_time(w.window_start), w.worker_id, str(w.completed), f"{w.busy_ms / 1000:.2f}")
                    for w in response.workers
                ),
            )
        )
    if response.HasField("last_batch_at"):
        age = (now - response.last_batch_at.ToDatetime(tzinfo=UTC)).total_seconds()
        job = f"last micro-batch {format_time(response.last_batch_at)} ({format_age(age)})"
    else:
        job = "no micro-batch stored yet"
    job += f", watermark {format_time(response.watermark)}"
    job += f"; skipped: {response.malformed_records} malformed, {response.late_events} late"
    if response.windows and any(not w.final for w in response.windows):
        job += "\n* open window: late events may still change it"
    parts.append(f"analytics job: {job}")
    return "\n\n".join(parts)


def cmd_stats(config: MeshConfig, args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    request = build_request(args, now)
    with to_edge(config.edge_ca_file)(config.edge_address) as channel:
        try:
            response = scheduler_pb2_grpc.SchedulerStub(channel).GetStats(
                request, timeout=TIMEOUT_S, metadata=mesh.key_metadata(config)
            )
        except grpc.RpcError as e:
            raise TaskError.from_rpc_error(e) from None
    print(json_line(response) if args.json else stats_text(response, now), flush=True)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "stats",
        help="task statistics per time window (from the analytics job)",
        description="Counts per event type, queue wait and run time per window and task type, and completed "
        "tasks and busy time per worker, as the analytics job stored them. A window marked * is still open: "
        "late events may still change it.",
    )
    p.add_argument("--since", default="1h", metavar="DURATION", help="from this long ago (30m, 2h, 1d; default 1h)")
    p.add_argument("--start", metavar="TIME", help="start of the range, e.g. 2026-03-01T12:00:00Z (overrides --since)")
    p.add_argument("--end", metavar="TIME", help="end of the range (default now)")
    p.add_argument("--type", default="", metavar="TYPE", help="only this task type")
    p.add_argument("--json", action="store_true", help="the GetStats response as one JSON object")
    p.set_defaults(func=cmd_stats)
