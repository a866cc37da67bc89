"""The ``gridmesh`` command line."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import sys
import time
import webbrowser
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from google.protobuf import message

from gridmesh.adapters import prometheus
from gridmesh.bench.cli import add_bench_command
from gridmesh.cli import events, keys, logs, mesh, schedules, stats, tasks
from gridmesh.cli.args import positive_int
from gridmesh.clients import TaskClient, TaskError, is_terminal
from gridmesh.common.errors import ConfigError, GridmeshError, InvalidArgument
from gridmesh.config import MeshConfig, load_config
from gridmesh.edge.envoy import descriptor_set_path, render_envoy_config
from gridmesh.edge.openapi import build_openapi
from gridmesh.observability import jaeger
from gridmesh.observability import server as prometheus_server
from gridmesh.v1 import scheduler_pb2

Command = Callable[[MeshConfig, argparse.Namespace], int]
DRAIN_POLL_S = 0.2
"""How often ``gridmesh worker drain --wait`` asks whether the node has left."""


def _progress(component: str, what: str) -> None:
    print(f"  {component:<14} {what}", flush=True)


def cmd_up(config: MeshConfig, args: argparse.Namespace) -> int:
    started = time.perf_counter()
    print(f"gridmesh up (state: {config.state_path}, namespace: {config.namespace or '-'})", flush=True)
    env = mesh.child_env(os.environ, args.config)
    if args.demo:  # the replication demo: CustomerService and OrderService
        config, env = mesh.with_demo(config, env)
    if args.tracing:  # spans from every process (and Envoy), to Jaeger unless tracing.endpoint names a collector
        config, env = mesh.with_tracing(config, env)
    roles = mesh.parse_roles(args.only) if args.only else frozenset(mesh.ROLES)
    mesh.up(config, workers=args.workers, env=env, progress=_progress, roles=roles)
    if args.only:
        took = time.perf_counter() - started
        print(f"\nthis host's part of the mesh ({', '.join(sorted(roles))}) is up in {took:.1f} s")
        print(f"  logs                     {mesh.log_dir(config)}")
        return 0
    edge, url = config.edge_address, config.edge_url
    ca = config.edge_ca_file
    curl = f"curl --cacert {ca}" if ca else "curl"
    print(f"\nthe mesh is up in {time.perf_counter() - started:.1f} s:")
    if config.console.enabled:
        print(f"  web console              {mesh.console_url(config)}   (gridmesh console opens it)")
    print(f"  edge (gRPC + HTTP/JSON)  {url}")
    if ca:
        print(f"  edge CA certificate      {ca}   (clients trust it: export GRIDMESH_CA_FILE={ca})")
    if config.auth.enabled:
        print(f"  admin API key            {config.credentials_path}   (the CLI uses it; gridmesh keys makes more)")
        print(f'  e.g.                     {curl} -H "Authorization: Bearer $(cat {config.credentials_path})" \\')
        print(f"                                {url}/v1/task-types")
        grpcurl = f"grpcurl -cacert {ca}" if ca else "grpcurl -plaintext"
        print(f'                           {grpcurl} -H "authorization: Bearer $(cat {config.credentials_path})" \\')
        print(f"                                {edge} list")
    else:
        print(f"  e.g.                     {curl} {url}/v1/task-types")
    print(f"  envoy admin              {config.envoy.host}:{config.envoy.admin_port}")
    if mesh.prometheus_enabled(config):
        query = "sum by (kind, task_type) (gridmesh_task_events_total)"
        print(f"  prometheus               {prometheus_server.url(config)}   e.g. {query}")
    if jaeger.runs_jaeger(config):
        api = f"{jaeger.url(config)}/api/traces?service=gridmesh-scheduler"
        print(f"  traces (Jaeger)          on each task's console page; API {api}")
    elif config.tracing.enabled:
        print(f"  traces                   sent over OTLP/gRPC to {config.tracing.collector}")
    print(f"  scheduler                {config.scheduler.host}:{config.scheduler.port}")
    print(f"  storekeeper              {config.storekeeper.host}:{config.storekeeper.port}")
    print(f"  eventmanager             {config.eventmanager.host}:{config.eventmanager.port}")
    if config.demo.enabled:
        print(
            f"  demo                     {config.demo.host}:{config.demo.customers_port} (customers), "
            f":{config.demo.orders_port} (orders); e.g. {curl} {url}/demo/v1/customers"
        )
    print(f"  logs                     {mesh.log_dir(config)}")
    return 0


def cmd_down(config: MeshConfig, args: argparse.Namespace) -> int:
    print("gridmesh down", flush=True)
    mesh.down(config, _progress)
    return 0


def cmd_logs(config: MeshConfig, args: argparse.Namespace) -> int:
    every = logs.log_files(mesh.log_dir(config))
    files = [f for f in every if f.stem == args.component] if args.component else every
    if not files and args.component:
        known = ", ".join(f.stem for f in every) or "none yet"
        print(f"gridmesh logs: no log of {args.component!r} on this host (known: {known})", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):  # how -f ends
        logs.show(files, args.lines, args.follow)
    return 0


def cmd_status(config: MeshConfig, args: argparse.Namespace) -> int:
    rows = mesh.status(config)
    widths = [max(len(r[i]) for r in [*rows, ("component", "address", "pid", "health")]) for i in range(4)]
    header = ("component", "address", "pid", "health")
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    endpoints = prometheus.targets(config)
    if endpoints:
        print(f"\nmetrics (Prometheus file_sd: {config.metrics_targets}/*.json)")
        for target in endpoints:
            print(f"  {target.name}  {target.url}")
    return 0 if all(r[3] in ("healthy", "standby") for r in rows) else 1


def cmd_edge_config(config: MeshConfig, args: argparse.Namespace) -> int:
    """Envoy's bootstrap for this config, for running the edge under a
    supervisor of one's own (see docs/deploy.md)."""
    text = render_envoy_config(config)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
    return 0


def cmd_openapi(config: MeshConfig, args: argparse.Namespace) -> int:
    """The OpenAPI document the edge serves at /v1/openapi.json."""
    document = build_openapi(descriptor_set_path().read_bytes(), config.edge_url)
    sys.stdout.write(json.dumps(document, indent=2) + "\n")
    return 0


def cmd_console(config: MeshConfig, args: argparse.Namespace) -> int:
    url = mesh.console_url(config)
    if not config.console.enabled:
        raise ConfigError("the console is disabled (console.enabled = false)")
    if not mesh.http_ok(url, config.edge_ca_file):
        print(f"gridmesh: nothing answers at {url}; start the mesh with: gridmesh up", file=sys.stderr)
        return 1
    if args.print_url or not webbrowser.open(url):
        print(url)
    return 0


def cmd_worker_start(config: MeshConfig, args: argparse.Namespace) -> int:
    from gridmesh.worker import join
    from gridmesh.worker.app import run

    if args.join and not join.has_certificate(config):
        join.join(config, join.JoinToken.parse(args.join))
        print(f"joined the mesh: worker certificate in {config.tls_path}", file=sys.stderr)
    run(config, args.port, args.slots)
    return 0


def cmd_worker_join_token(config: MeshConfig, args: argparse.Namespace) -> int:
    from gridmesh.adapters import pki
    from gridmesh.edge.keys import KeyStore
    from gridmesh.worker.join import JoinToken

    expires = datetime.now(UTC) + stats.parse_duration(args.expires, "--expires")
    ca = pki.fingerprint((config.tls_path / pki.CA_CERT).read_bytes())
    store = KeyStore.open(config)
    try:
        record, key = store.create_join_token(expires, note=args.note)
    finally:
        store.close()
    token = JoinToken(args.edge or config.edge_address, ca, key)
    print(f"gridmesh worker start --join {token}")
    print(
        f"(join token {record.key_id}: valid once, until {expires:%Y-%m-%d %H:%M:%S} UTC; run that on the new "
        "host, with its own config naming the mesh's Scheduler, StoreKeeper and backing services)",
        file=sys.stderr,
    )
    return 0


# -- task commands: each talks to the edge through a TaskClient ----------------------


def _time_or_delay(text: str, option: str) -> datetime:
    """``--deadline``, ``--not-before``: a time, or a delay from now (``90s``)."""
    if text[:1].isdigit() and not any(c in text for c in "-:T"):
        return datetime.now(UTC) + stats.parse_duration(text, option)
    return stats.parse_time(text, option)


def _client(config: MeshConfig) -> TaskClient:
    return mesh.task_client(config)


def cmd_worker_drain(config: MeshConfig, args: argparse.Namespace) -> int:
    with _client(config) as client:
        info = client.drain_worker(args.worker_id)
        running = len(info.running_task_ids)
        _emit(
            args,
            info,
            f"{info.worker_id}  {tasks.worker_state_name(info.state)}: finishing {running} running "
            f"task{'' if running == 1 else 's'}, then it leaves",
        )
        if not args.wait:
            return 0
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        while any(w.worker_id == info.worker_id for w in client.workers()):
            if deadline is not None and time.monotonic() > deadline:
                print(f"gridmesh: {info.worker_id} is still draining after {args.timeout:g} s", file=sys.stderr)
                return 1
            time.sleep(DRAIN_POLL_S)
    if not args.json:
        print(f"{info.worker_id} left", flush=True)
    return 0


def _emit(args: argparse.Namespace, msg: message.Message, text: str) -> None:
    print(tasks.json_line(msg) if args.json else text, flush=True)


def cmd_submit(config: MeshConfig, args: argparse.Namespace) -> int:
    if args.from_file is not None:
        return _submit_from(config, args)
    params = tasks.parse_params(args.params)
    with _client(config) as client:
        task = client.submit(
            args.task_type,
            params,
            args.result_dir,
            priority=args.priority,
            idempotency_key=args.idempotency_key,
            max_attempts=args.max_attempts,
            run_timeout=stats.parse_duration(args.run_timeout, "--run-timeout") if args.run_timeout else None,
            deadline=_time_or_delay(args.deadline, "--deadline") if args.deadline else None,
            not_before=_time_or_delay(args.not_before, "--not-before") if args.not_before else None,
            retry=tasks.parse_json_object(args.retry, "--retry") if args.retry else None,
            result_ttl=stats.parse_duration(args.result_ttl, "--result-ttl") if args.result_ttl else None,
        )
        _emit(args, task, tasks.submitted_line(task))
        if not args.wait:
            return 0
        final = client.wait(task.task_id, timeout=args.timeout)
        _emit(args, final, tasks.outcome_block(final))
        return tasks.outcome_exit_code(final)


def _submit_from(config: MeshConfig, args: argparse.Namespace) -> int:
    """``submit --from FILE``: every line one task, sent in SubmitTasks
    batches; each line is answered on its own (a refused line names its
    number on stderr and makes the exit status 1; the others are accepted)."""
    with contextlib.ExitStack() as stack:
        source = sys.stdin if args.from_file == "-" else stack.enter_context(open(args.from_file, encoding="utf-8"))
        lines = [(n, line) for n, line in enumerate(source, 1) if line.strip()]
    requests, line_of, refused = [], [], 0
    for number, line in lines:
        try:
            requests.append(tasks.parse_submit_line(line, args.result_dir))
            line_of.append(number)
        except InvalidArgument as e:
            print(f"gridmesh: line {number}: INVALID_ARGUMENT: {e.message}", file=sys.stderr)
            refused += 1
    accepted = []
    with _client(config) as client:
        for number, answer in zip(line_of, client.submit_many(requests), strict=True):
            if isinstance(answer, TaskError):
                print(f"gridmesh: line {number}: {answer}", file=sys.stderr)
                refused += 1
            else:
                _emit(args, answer, tasks.submitted_line(answer))
                accepted.append(answer)
        failed = 0
        if args.wait:
            for task in accepted:
                final = client.wait(task.task_id, timeout=args.timeout)
                _emit(args, final, tasks.outcome_block(final))
                failed += tasks.outcome_exit_code(final) != 0
    return 1 if refused or failed else 0


def cmd_get(config: MeshConfig, args: argparse.Namespace) -> int:
    with _client(config) as client:
        task = client.get(args.task_id)
    _emit(args, task, tasks.task_block(task))
    return 0


def cmd_cancel(config: MeshConfig, args: argparse.Namespace) -> int:
    with _client(config) as client:
        task = client.cancel(args.task_id)
    _emit(args, task, tasks.submitted_line(task))
    return 0


def cmd_rerun(config: MeshConfig, args: argparse.Namespace) -> int:
    with _client(config) as client:
        if args.task_id:
            task = client.rerun(args.task_id)
            _emit(args, task, tasks.submitted_line(task))
            return 0
        request = scheduler_pb2.RerunTasksRequest(
            state=args.state or "TASK_STATE_UNSPECIFIED",
            task_type=args.task_type,
            failure_reason=args.reason or "FAILURE_REASON_UNSPECIFIED",
            limit=args.limit,
            dry_run=args.dry_run,
        )
        if args.since:
            request.created_after.FromDatetime(datetime.now(UTC) - stats.parse_duration(args.since, "--since"))
        response = client.rerun_many(request)
    if args.json:
        print(tasks.json_line(response), flush=True)
    elif args.dry_run:
        print(f"{response.matched} tasks match; --dry-run: none rerun")
    else:
        print(f"{response.matched} tasks match; rerun as:")
        for task in response.tasks:
            print(f"  {tasks.submitted_line(task)}  (rerun of {task.rerun_of})")
    return 0


def cmd_watch(config: MeshConfig, args: argparse.Namespace) -> int:
    with _client(config) as client:
        events = (
            client.watch(args.task_id)
            if args.task_id
            else client.watch_all(terminal_only=args.terminal_only, task_type=args.type or "")
        )
        last = None
        with contextlib.closing(events):
            for event in events:
                last = event.task
                if args.terminal_only and not is_terminal(event.task.state):
                    continue
                _emit(args, event, tasks.event_line(event))
    return tasks.outcome_exit_code(last) if last is not None else 0


def cmd_result(config: MeshConfig, args: argparse.Namespace) -> int:
    with _client(config) as client:
        if args.info:
            info = client.result_info(args.task_id)
            _emit(args, info, tasks.result_info_block(info))
        elif args.output and args.output != "-":
            try:
                download = client.result_to(args.task_id, args.output)
            except OSError as e:
                raise GridmeshError(f"cannot write {args.output}: {e.strerror or e}") from None
            summary = {"task_id": args.task_id, "path": str(download.path)}
            summary |= {"size_bytes": download.size_bytes, "sha256": download.sha256}
            if args.json:
                print(tasks.json_object(summary), flush=True)
            else:
                print(f"wrote {download.size_bytes} bytes to {download.path} (sha256 {download.sha256})", flush=True)
        else:
            out = sys.stdout.buffer
            for chunk in client.iter_result(args.task_id):
                out.write(chunk)
            out.flush()
    return 0


def cmd_tasks(config: MeshConfig, args: argparse.Namespace) -> int:
    with _client(config) as client:
        listed = client.list(state=args.state, task_type=args.type, page_size=min(args.limit, 100))
        found = list(itertools.islice(listed, args.limit))
    if args.json:
        for task in found:
            print(tasks.json_line(task))
    else:
        print(tasks.tasks_table(found))
    return 0


def cmd_task_types(config: MeshConfig, args: argparse.Namespace) -> int:
    with _client(config) as client:
        types = client.task_types()
    if args.json:
        for info in types:
            print(tasks.json_line(info))
    else:
        print(tasks.task_types_table(types))
    return 0


def cmd_workers(config: MeshConfig, args: argparse.Namespace) -> int:
    with _client(config) as client:
        workers = client.workers()
    if args.json:
        for worker in workers:
            print(tasks.json_line(worker))
    else:
        print(tasks.workers_table(workers, datetime.now(UTC)))
    return 0


def _add_task_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument(
        "--json", action="store_true", help="one JSON object per line (proto field names) instead of text"
    )
    states = ["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"]
    schedules.register(sub, as_json)

    p = sub.add_parser(
        "submit",
        parents=[as_json],
        help="submit a task (or many: --from FILE)",
        description="Submit a task and print its id and state. With --wait, follow it to the end and print "
        "how it ended (exit 0 if it SUCCEEDED, 1 if it FAILED or was CANCELLED); "
        "with --json that is a second line, the final task. "
        "With --from FILE (- = stdin), submit one task per line of FILE, each a JSON object like the body of "
        "POST /v1/tasks, in batches (SubmitTasks); a refused line is reported with its number and the others "
        "are accepted (exit 1 if any line was refused).",
    )
    p.add_argument("task_type", metavar="TYPE", nargs="?", help="task type (see 'gridmesh task-types')")
    p.add_argument("--params", default="{}", metavar="JSON", help="params as a JSON object (default {})")
    p.add_argument(
        "--result-dir", default="", metavar="DIR", help="relative directory for the result (with --from: the default)"
    )
    p.add_argument("--from", dest="from_file", metavar="FILE", help="submit every line of FILE (JSON Lines)")
    p.add_argument("--priority", type=str.upper, choices=["LOW", "NORMAL", "HIGH"], default="NORMAL")
    p.add_argument("--idempotency-key", default="", metavar="KEY", help="submitting KEY again answers the same task")
    p.add_argument("--max-attempts", type=positive_int, default=0, metavar="N", help="default: the Scheduler's")
    p.add_argument(
        "--run-timeout",
        default="",
        metavar="DURATION",
        help="kill an attempt that runs longer (90s, 5m, 1h): it ends FAILED, TIMEOUT (default: the type's)",
    )
    p.add_argument(
        "--deadline",
        default="",
        metavar="TIME",
        help="if it has not started by then, it ends FAILED, EXPIRED: a time (2026-03-01T12:00:00Z) or a delay (90s)",
    )
    p.add_argument(
        "--not-before",
        default="",
        metavar="TIME",
        help="delay the task: stored now, run from then on: a time (2026-03-01T12:00:00Z) or a delay (90s)",
    )
    p.add_argument(
        "--retry",
        default="",
        metavar="JSON",
        help='retry policy, e.g. \'{"max_attempts": 5, "initial_backoff": "1s"}\' (default: the type\'s)',
    )
    p.add_argument(
        "--result-ttl",
        default="",
        metavar="DURATION",
        help="keep the finished task and its result this long (1h, 30d; default: the mesh's, 7 days)",
    )
    p.add_argument("--wait", action="store_true", help="wait until the task has ended")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="give up waiting after SECONDS")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("get", parents=[as_json], help="show a task")
    p.add_argument("task_id", metavar="ID")
    p.set_defaults(func=cmd_get)

    p = sub.add_parser(
        "watch",
        parents=[as_json],
        help="follow a task, or every task",
        description="One line per task event. With ID, ends when the task has ended (exit 0 if it SUCCEEDED, "
        "else 1); without, follows every task until Ctrl-C.",
    )
    p.add_argument("task_id", metavar="ID", nargs="?", default="")
    p.add_argument("--terminal-only", action="store_true", help="only SUCCEEDED, FAILED and CANCELLED events")
    p.add_argument("--type", metavar="TYPE", help="without ID: only tasks of this type")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser(
        "result",
        parents=[as_json],
        help="fetch a task's result",
        description="Write a task's stored result to stdout or, with -o, to FILE (--json then describes the "
        "file written). --info shows where and what the result is instead.",
    )
    p.add_argument("task_id", metavar="ID")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (replaced only once complete)")
    p.add_argument("--info", action="store_true", help="show path, size, sha256 and content type")
    p.set_defaults(func=cmd_result)

    p = sub.add_parser("cancel", parents=[as_json], help="cancel a queued or running task")
    p.add_argument("task_id", metavar="ID")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser(
        "rerun", parents=[as_json], help="run a FAILED or CANCELLED task again, or every one a filter matches"
    )
    p.add_argument("task_id", metavar="ID", nargs="?", default="", help="the task (or give a filter instead)")
    p.add_argument("--state", type=str.upper, choices=["FAILED", "CANCELLED"], help="default: both")
    p.add_argument("--type", dest="task_type", default="", metavar="TYPE")
    p.add_argument(
        "--reason", type=str.upper, choices=["ERROR", "TIMEOUT", "EXPIRED", "CRASHED", "CANCELLED"], default=None
    )
    p.add_argument("--since", default="", metavar="DURATION", help="created within this long (90s, 30m, 2h, 1d)")
    p.add_argument("--limit", type=int, default=0, metavar="N", help="at most N, oldest first (default 100)")
    p.add_argument("--dry-run", action="store_true", help="only count what matches")
    p.set_defaults(func=cmd_rerun)

    p = sub.add_parser("tasks", parents=[as_json], help="list tasks, newest first")
    p.add_argument("--state", type=str.upper, choices=states, help="only tasks in this state")
    p.add_argument("--type", metavar="TYPE", help="only tasks of this type")
    p.add_argument("--limit", type=positive_int, default=50, metavar="N", help="at most N tasks (default 50)")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("task-types", parents=[as_json], help="the task types the mesh runs")
    p.set_defaults(func=cmd_task_types)

    p = sub.add_parser("workers", parents=[as_json], help="the worker nodes and their slots")
    p.set_defaults(func=cmd_workers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gridmesh", description="A gRPC mesh for compute tasks and replication.")
    parser.add_argument("--config", help="TOML config file (default: $GRIDMESH_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("up", help="start the whole mesh on this machine")
    p.add_argument("--workers", type=int, default=1, help="worker nodes to start (default 1)")
    p.add_argument("--demo", action="store_true", help="also start the replication demo (Customer/OrderService)")
    p.add_argument(
        "--tracing",
        action="store_true",
        help="trace every task and replicated event (OpenTelemetry), stored in a Jaeger it runs "
        "(built once with Go) unless tracing.endpoint names a collector",
    )
    p.add_argument(
        "--only",
        metavar="ROLE[,ROLE...]",
        help="start only these roles on this host, joining the mesh the config names elsewhere; roles: "
        + ", ".join(mesh.ROLES),
    )
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", help="stop what 'up' started")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("status", help="health of every component")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("logs", help="the logs of what 'up' started on this host (text or JSON lines, see log_format)")
    p.add_argument("component", nargs="?", help="one component, e.g. scheduler, worker-1, kafka (default: all)")
    p.add_argument("-n", "--lines", type=int, default=20, help="lines from the end of each log (default 20)")
    p.add_argument("-f", "--follow", action="store_true", help="go on printing what is appended (Ctrl-C ends)")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("edge-config", help="print Envoy's configuration for this mesh (to run the edge yourself)")
    p.add_argument("-o", "--output", default="-", metavar="FILE", help="write it to FILE (default: stdout)")
    p.set_defaults(func=cmd_edge_config)

    p = sub.add_parser("openapi", help="print the OpenAPI document of the edge's HTTP/JSON API (GET /v1/openapi.json)")
    p.set_defaults(func=cmd_openapi)

    p = sub.add_parser("console", help="open the web console in a browser")
    p.add_argument("--print-url", action="store_true", help="only print its URL")
    p.set_defaults(func=cmd_console)

    worker = sub.add_parser("worker", help="worker nodes")
    worker_sub = worker.add_subparsers(dest="worker_command", required=True, metavar="ACTION")
    p = worker_sub.add_parser("start", help="run a worker node in the foreground")
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--slots", type=int, default=None)
    p.add_argument(
        "--join",
        metavar="TOKEN",
        help="first get this host's worker certificate with a join token (gridmesh worker join-token); "
        "skipped when the host has one",
    )
    p.set_defaults(func=cmd_worker_start)
    p = worker_sub.add_parser(
        "join-token",
        help="make a token with which one new worker host joins the mesh (valid once)",
        description="Print the command that makes a new host a worker node of this mesh: `gridmesh worker start "
        "--join TOKEN`. The token holds a key valid for one join (until --expires), the edge's address and "
        "the fingerprint of the mesh's CA. Run this where the mesh's tls.dir and MySQL credentials are.",
    )
    p.add_argument("--expires", default="1h", metavar="DURATION", help="how long the token may be used (default 1h)")
    p.add_argument("--edge", metavar="HOST:PORT", help="the edge's address as the new host reaches it")
    p.add_argument("--note", default="", help="kept with the token in `gridmesh keys list`")
    p.set_defaults(func=cmd_worker_join_token)
    p = worker_sub.add_parser(
        "drain",
        help="drain a worker node: it takes no new work, finishes what it runs and leaves",
        description="Ask the Scheduler to drain node ID (see gridmesh workers): no new task goes to it, it "
        "finishes the tasks it runs, deregisters and exits. With --wait, return once it has left.",
    )
    p.add_argument("worker_id", metavar="ID")
    p.add_argument("--wait", action="store_true", help="wait until the node has left")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="give up waiting after SECONDS")
    p.add_argument("--json", action="store_true", help="the node as one JSON object (proto field names)")
    p.set_defaults(func=cmd_worker_drain)

    _add_task_commands(sub)
    events.register(sub)
    add_bench_command(sub)
    stats.register(sub)
    keys.register(sub)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, with the usage rules argparse cannot express
    (a usage error exits 2 with a message, as argparse's own do)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is cmd_watch and args.task_id and args.type:
        parser.error("watch: --type filters the watch of every task; leave it out when naming a task ID")
    if func is cmd_submit and args.from_file is None and (args.task_type is None or not args.result_dir):
        parser.error("submit: TYPE and --result-dir are required (or --from FILE)")
    if func is cmd_submit and args.from_file is not None and args.task_type is not None:
        parser.error("submit: give TYPE or --from FILE, not both")
    return args


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> None:
    """Runs one command and exits with its code; ``env`` defaults to ``os.environ``."""
    args = parse_args(argv)
    try:
        config = load_config(os.environ if env is None else env, args.config)
        if getattr(args, "workers", 1) < 0:
            raise ConfigError("--workers must be 0 or more")
        code = args.func(config, args)
    except GridmeshError as e:
        print(f"gridmesh: {e.message}", file=sys.stderr)
        code = 2 if isinstance(e, ConfigError | InvalidArgument) else 1
    except TaskError as e:
        print(tasks.error_line(e), file=sys.stderr)
        code = tasks.error_exit_code(e)
    except BrokenPipeError:
        # The reader went away (e.g. `gridmesh watch | head`): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
