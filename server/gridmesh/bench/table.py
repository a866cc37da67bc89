"""The readable summary of a bench run: one markdown table per workload
(median and min..max over the repetitions that count) and one of memory.

Pure: records in, text out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from gridmesh.bench.records import kept
from gridmesh.bench.stats import median, numbers, spread
from gridmesh.bench.workloads import WORKLOADS

Record = Mapping[str, Any]
Cell = Callable[[list[Record]], str]


def fmt(x: float | None, digits: int = 1) -> str:
    """A number for a table: thousands without decimals, small ones with more."""
    if x is None:
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.{digits}f}"
    if abs(x) >= 1:
        return f"{x:.{max(digits, 2)}f}"
    return f"{x:.3f}"


def _metric(key: str) -> Callable[[Record], Any]:
    return lambda r: r.get("metrics", {}).get(key)


def med(get: Callable[[Record], Any], digits: int = 1) -> Cell:
    return lambda rs: fmt(median(get(r) for r in rs), digits)


def minmax(get: Callable[[Record], Any], digits: int = 1) -> Cell:
    def cell(rs: list[Record]) -> str:
        s = spread(get(r) for r in rs)
        return "-" if s is None else f"{fmt(s[1], digits)}..{fmt(s[2], digits)}"

    return cell


def total(key: str) -> Cell:
    return lambda rs: str(round(sum(numbers(r["metrics"].get(key) for r in rs))))


def each(key: str, digits: int = 2) -> Cell:
    def cell(rs: list[Record]) -> str:
        values = (r["metrics"].get(key) for r in rs)
        return ", ".join(fmt(v, digits) if isinstance(v, float) else "-" if v is None else str(v) for v in values)

    return cell


def conditions(rs: Sequence[Record]) -> str:
    """The load the repetitions ran under."""
    parts = []
    gates = numbers(r.get("gate", {}).get("load1") for r in rs if r.get("gate", {}).get("gate") != "off")
    if gates:
        parts.append(f"gate load1 {min(gates):.2f}..{max(gates):.2f}")
    unmet = sum(1 for r in rs if not r.get("gate", {}).get("gate_ok", True))
    if unmet:
        parts.append(f"gate NOT met in {unmet}/{len(rs)}")
    starts = numbers(r.get("load1_start") for r in rs)
    if starts:
        parts.append(f"load1@start {min(starts):.2f}..{max(starts):.2f}")
    foreign = numbers(r.get("foreign_cpu_pct") for r in rs)
    if foreign:
        parts.append(f"foreign CPU ≤{max(foreign):.0f}%")
    return "; ".join(parts)


COLUMNS: dict[str, list[tuple[str, Cell]]] = {
    "W1": [
        ("tasks/s median", med(_metric("tasks_per_s"))),
        ("min..max", minmax(_metric("tasks_per_s"))),
        ("submit/s", med(_metric("submit_per_s"))),
        ("elapsed s", med(_metric("elapsed_s"), 2)),
    ],
    "W2": [
        ("p50 ms median", med(_metric("p50_ms"), 2)),
        ("p50 min..max", minmax(_metric("p50_ms"), 2)),
        ("p90 ms", med(_metric("p90_ms"), 2)),
        ("p99 ms median", med(_metric("p99_ms"), 2)),
        ("p99 min..max", minmax(_metric("p99_ms"), 2)),
    ],
    "W3": [
        ("makespan/ideal median", med(_metric("ratio_vs_ideal"), 2)),
        ("min..max", minmax(_metric("ratio_vs_ideal"), 2)),
        ("makespan s", med(_metric("makespan_s"), 2)),
        ("burn unit ms today", med(_metric("burn_unit_ms_today"), 2)),
        ("makespan/(n·unit/2)", med(_metric("ratio_vs_today_ideal"), 2)),
    ],
    "W4": [
        ("recovery s median", med(_metric("recovery_s"), 2)),
        ("min..max", minmax(_metric("recovery_s"), 2)),
        ("recovery s each rep", each("recovery_s")),
        ("completed (each rep)", each("completed")),
        ("lost", total("lost")),
        ("duplicate effects", total("duplicate_effects")),
        ("re-executed", total("reexecuted")),
        ("exactly-once reps", lambda rs: f"{sum(1 for r in rs if r['metrics'].get('exactly_once'))}/{len(rs)}"),
        ("makespan s", med(_metric("makespan_s"), 2)),
    ],
    "R1": [
        ("events/s median", med(_metric("events_per_s"))),
        ("min..max", minmax(_metric("events_per_s"))),
        ("publish/s", med(_metric("publish_per_s"))),
        ("elapsed s", med(_metric("elapsed_s"), 2)),
        ("replicas match", lambda rs: f"{sum(1 for r in rs if r['metrics'].get('replicas_match'))}/{len(rs)}"),
    ],
    "R2": [
        ("p50 ms median", med(_metric("p50_ms"), 2)),
        ("p50 min..max", minmax(_metric("p50_ms"), 2)),
        ("p99 ms median", med(_metric("p99_ms"), 2)),
        ("p99 min..max", minmax(_metric("p99_ms"), 2)),
        ("rate ev/s", med(_metric("achieved_rate_per_s"))),
        ("replicas match", lambda rs: f"{sum(1 for r in rs if r['metrics'].get('replicas_match'))}/{len(rs)}"),
    ],
    "E1": [
        ("direct gRPC p50 / p99 ms", lambda rs: _pair(rs, "direct_grpc")),
        ("Envoy gRPC p50 / p99 ms", lambda rs: _pair(rs, "envoy_grpc")),
        ("Envoy JSON p50 / p99 ms", lambda rs: _pair(rs, "envoy_json")),
        ("JSON minus direct p50 ms median", med(_metric("envoy_json_overhead_p50_ms"), 2)),
        ("min..max", minmax(_metric("envoy_json_overhead_p50_ms"), 2)),
    ],
}


def _pair(rs: list[Record], path: str) -> str:
    p50 = median(r["metrics"].get(f"{path}_p50_ms") for r in rs)
    p99 = median(r["metrics"].get(f"{path}_p99_ms") for r in rs)
    return f"{fmt(p50, 2)} / {fmt(p99, 2)}"


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _groups(records: Iterable[Record]) -> dict[tuple[str, str], list[Record]]:
    groups: dict[tuple[str, str], list[Record]] = {}
    for r in kept(records):
        groups.setdefault((r["workload"], r["profile"]), []).append(r)
    return groups


def render(records: Iterable[Record]) -> str:
    """Markdown tables of every workload in ``records``, then memory."""
    groups = _groups(records)
    out: list[str] = []
    for workload in WORKLOADS.values():
        columns = COLUMNS.get(workload.id)
        keys = sorted(k for k in groups if k[0] == workload.id)
        if not keys or columns is None:
            continue
        out += ["", f"### {workload.id} {workload.title}", ""]
        header = ["profile", *(title for title, _ in columns), "reps ok", "conditions"]
        out += [_row(header), _row("---" for _ in header)]
        for key in keys:
            rs = groups[key]
            ok = [r for r in rs if r.get("ok")]
            reps = f"{len(ok)}/{len(rs)}"
            if not ok:
                error = str(rs[-1].get("error") or "failed").splitlines()[0][:100]
                out.append(_row([key[1], f"failed: {error}", *[""] * (len(columns) - 1), reps, conditions(rs)]))
                continue
            out.append(_row([key[1], *(cell(ok) for _, cell in columns), reps, conditions(rs)]))
    for extra in (render_cpu(groups), render_messages(groups), render_memory(groups)):
        if extra:
            out += ["", *extra]
    return "\n".join(out).lstrip("\n")


def render_cpu(groups: Mapping[tuple[str, str], list[Record]]) -> list[str]:
    """W1's CPU per task of each process (ms, medians over the repetitions):
    gridmesh's own parts, then the backing services."""
    rows = []
    for key in sorted(k for k in groups if k[0] == "W1"):
        ok = [r for r in groups[key] if r.get("ok") and r.get("ours_cpu_parts_s")]
        if not ok:
            continue
        parts: dict[str, list[float]] = {}
        for r in ok:
            n = r["metrics"]["n"]
            for name, seconds in {**r["ours_cpu_parts_s"], **r.get("services_cpu_s", {})}.items():
                parts.setdefault(name, []).append(1000.0 * seconds / n)
        ours = [name for name in parts if name in ok[0]["ours_cpu_parts_s"]]
        mesh = median(sum(1000.0 * r["ours_cpu_parts_s"].get(p, 0.0) for p in ours) / r["metrics"]["n"] for r in ok)
        cells = ", ".join(
            f"{name} {median(v) or 0.0:.2f}" for name, v in sorted(parts.items(), key=lambda kv: -(median(kv[1]) or 0))
        )
        rows.append(_row([f"W1 {key[1]}", fmt(mesh, 2), cells]))
    if not rows:
        return []
    header = ["run", "gridmesh CPU ms per task", "per process, ms per task (backing services included)"]
    return [
        "### CPU per W1 task: CPU time each process used in the run ÷ tasks",
        "",
        _row(header),
        _row("---" for _ in header),
        *rows,
    ]


def render_messages(groups: Mapping[tuple[str, str], list[Record]]) -> list[str]:
    """W1's gRPC messages per task, received and sent by the mesh's servers
    (medians over the repetitions), with the methods that carry them."""
    rows = []
    for key in sorted(k for k in groups if k[0] == "W1"):
        ok = [r for r in groups[key] if r.get("ok") and r.get("grpc_messages")]
        if not ok:
            continue
        per_method: dict[str, list[float]] = {}
        for r in ok:
            for method, count in r["grpc_messages"].items():
                per_method.setdefault(method, []).append(count / r["metrics"]["n"])
        total = median(sum(r["grpc_messages"].values()) / r["metrics"]["n"] for r in ok)
        shown = sorted(((median(v) or 0.0, m) for m, v in per_method.items()), reverse=True)
        cells = ", ".join(f"{m} {v:.2f}" for v, m in shown if v >= 0.01)
        rows.append(_row([f"W1 {key[1]}", fmt(total, 2), cells]))
    if not rows:
        return []
    header = ["run", "gRPC messages per task", "by method and direction (in = received by the server)"]
    return [
        "### gRPC messages per W1 task: messages the mesh's gRPC servers received and sent in the run ÷ tasks",
        "",
        _row(header),
        _row("---" for _ in header),
        *rows,
    ]


def render_memory(groups: Mapping[tuple[str, str], list[Record]]) -> list[str]:
    """Peak RSS of gridmesh's own processes (with the largest parts) and,
    apart, of the backing services; medians over the repetitions."""
    rows = []
    services: list[str] = []
    for rs in groups.values():
        for r in rs:
            services += [s for s in r.get("services_rss_peak_mb", {}) if s not in services]
    for workload in WORKLOADS:
        for key in sorted(k for k in groups if k[0] == workload):
            ok = [r for r in groups[key] if r.get("ok") and r.get("rss_peak_mb") is not None]
            if not ok:
                continue
            parts: dict[str, list[float]] = {}
            for r in ok:
                for name, mb in r.get("rss_peak_parts_mb", {}).items():
                    parts.setdefault(name, []).append(mb)
            biggest = sorted(((median(v) or 0.0, name) for name, v in parts.items()), reverse=True)[:4]
            cells = [
                f"{key[0]} {key[1]}",
                fmt(median(r["rss_peak_mb"] for r in ok), 0),
                minmax(lambda r: r["rss_peak_mb"], 0)(ok),
                ", ".join(f"{name} {mb:.0f}" for mb, name in biggest),
                *(fmt(median(r.get("services_rss_peak_mb", {}).get(s) for r in ok), 0) for s in services),
            ]
            rows.append(_row(cells))
    if not rows:
        return []
    header = ["run", "gridmesh peak RSS MB", "min..max", "largest parts (MB)", *(f"{s} MB" for s in services)]
    return [
        "### Memory: peak RSS of gridmesh's processes (bench client, services, workers with their task "
        "processes, Envoy) and, apart, of the backing services (the analytics job is its Spark application)",
        "",
        _row(header),
        _row("---" for _ in header),
        *rows,
    ]
