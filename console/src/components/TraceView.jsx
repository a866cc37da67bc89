// A task's trace (with tracing on: `gridmesh up --tracing`): its spans as a
// waterfall, read through the edge from the Jaeger `up` runs
// (GET /v1/traces: Jaeger's trace search, by the task's id). Shows nothing
// when the mesh keeps no traces.
import { useEffect, useState } from "preact/hooks";
import { get, query } from "../api.js";
import { duration } from "../format.js";

async function traceOf(task) {
  const start = (Date.parse(task.created_at) - 60_000) * 1000; // Jaeger's times are µs
  const tags = JSON.stringify({ "gridmesh.task_id": task.task_id });
  const found = await get(`/v1/traces${query({ service: "gridmesh-scheduler", tags, start, end: Date.now() * 1000, limit: 1 })}`);
  return found.data && found.data[0];
}

// Spans in tree order (each after its parent, siblings by start), with depth.
function ordered(trace) {
  const parent = (s) => (s.references.find((r) => r.refType === "CHILD_OF") || {}).spanID;
  const ids = new Set(trace.spans.map((s) => s.spanID));
  const children = new Map();
  for (const s of trace.spans) {
    const p = ids.has(parent(s)) ? parent(s) : null;
    children.set(p, [...(children.get(p) || []), s]);
  }
  const out = [];
  const walk = (p, depth) => {
    for (const s of (children.get(p) || []).sort((a, b) => a.startTime - b.startTime)) {
      out.push({ span: s, depth });
      walk(s.spanID, depth + 1);
    }
  };
  walk(null, 0);
  return out;
}

export function TraceView({ task, finished }) {
  const [trace, setTrace] = useState(undefined); // undefined: loading; null: none kept
  useEffect(() => {
    const load = () =>
      traceOf(task).then(
        (t) => setTrace(t || null),
        () => setTrace(null), // no trace store behind the edge (tracing off), or it refused
      );
    load();
    // Each process sends its spans in batches: the last ones arrive a moment after the end.
    const again = finished ? setTimeout(load, 2500) : null;
    return () => clearTimeout(again);
  }, [task.task_id, finished]);
  if (!trace) return null;
  const begin = Math.min(...trace.spans.map((s) => s.startTime));
  const end = Math.max(...trace.spans.map((s) => s.startTime + s.duration));
  const total = Math.max(end - begin, 1);
  return (
    <section class="panel trace" data-trace-id={trace.traceID}>
      <h3>Trace <span class="mono muted">{trace.traceID}</span></h3>
      <table class="spans">
        <thead>
          <tr><th>span</th><th>process</th><th>duration</th><th class="bar-cell" /></tr>
        </thead>
        <tbody>
          {ordered(trace).map(({ span, depth }) => (
            <tr key={span.spanID} data-span={span.operationName}>
              <td style={{ paddingLeft: `${8 + depth * 14}px` }}>{span.operationName}</td>
              <td class="mono">{trace.processes[span.processID].serviceName.replace(/^gridmesh-/, "")}</td>
              <td>{duration(span.duration / 1000)}</td>
              <td class="bar-cell">
                <span class="span-bar" style={{ marginLeft: `${(100 * (span.startTime - begin)) / total}%`, width: `${Math.max((100 * span.duration) / total, 0.5)}%` }} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
