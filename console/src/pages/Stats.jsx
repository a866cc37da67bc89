// Statistics: per-window figures the analytics job (Spark over the Kafka
// life-cycle topics) stored in MySQL, read through GET /v1/stats.
import { useEffect, useState } from "preact/hooks";
import { get, query } from "../api.js";
import { ErrorNote, usePoll } from "../components/common.jsx";
import { Chart } from "../components/Chart.jsx";
import { ago, duration, time } from "../format.js";

const RANGES = [
  ["15m", "last 15 minutes", 15 * 60],
  ["1h", "last hour", 3600],
  ["6h", "last 6 hours", 6 * 3600],
  ["24h", "last 24 hours", 24 * 3600],
  ["custom", "custom range", 0],
];

const toInput = (date) => new Date(date.getTime() - date.getTimezoneOffset() * 60000).toISOString().slice(0, 16);

export function StatsPage() {
  const [range, setRange] = useState("1h");
  const [custom, setCustom] = useState(() => ({ start: toInput(new Date(Date.now() - 3600e3)), end: toInput(new Date()) }));
  const [taskType, setTaskType] = useState("");
  const [types, setTypes] = useState([]);
  useEffect(() => {
    get("/v1/task-types").then((r) => setTypes(r.task_types.map((t) => t.name)), () => {});
  }, []);

  const timeRange = () => {
    if (range === "custom") {
      return { start_time: new Date(custom.start).toISOString(), end_time: new Date(custom.end).toISOString() };
    }
    const seconds = RANGES.find(([key]) => key === range)[2];
    const now = Date.now();
    return { start_time: new Date(now - seconds * 1000).toISOString(), end_time: new Date(now).toISOString() };
  };
  // A sliding range is refreshed every few seconds; a custom one stays put.
  const { data, error } = usePoll(
    async () => {
      const span = timeRange();
      const report = await get(`/v1/stats${query({ ...span, task_type: taskType })}`);
      return { ...report, span: [Date.parse(span.start_time) / 1000, Date.parse(span.end_time) / 1000] };
    },
    range === "custom" ? 3_600_000 : 5000,
    [range, custom.start, custom.end, taskType],
  );

  return (
    <div class="stats-page">
      <section class="panel">
        <div class="table-head">
          <h2>Statistics</h2>
          <label>
            range{" "}
            <select name="range" value={range} onChange={(e) => setRange(e.currentTarget.value)}>
              {RANGES.map(([key, label]) => (
                <option value={key} key={key}>{label}</option>
              ))}
            </select>
          </label>
          {range === "custom" ? (
            <>
              <label>from <input type="datetime-local" name="start" value={custom.start} onChange={(e) => setCustom({ ...custom, start: e.currentTarget.value })} /></label>
              <label>to <input type="datetime-local" name="end" value={custom.end} onChange={(e) => setCustom({ ...custom, end: e.currentTarget.value })} /></label>
            </>
          ) : null}
          <label>
            type{" "}
            <select name="stats_type" value={taskType} onChange={(e) => setTaskType(e.currentTarget.value)}>
              <option value="">every type</option>
              {types.map((t) => (
                <option value={t} key={t}>{t}</option>
              ))}
            </select>
          </label>
        </div>
        <ErrorNote error={error} />
        {data ? <Freshness report={data} /> : null}
      </section>
      {data ? <Charts windows={data.windows} span={data.span} /> : null}
      {data ? <WindowTable windows={data.windows} /> : null}
    </div>
  );
}

function Freshness({ report }) {
  return (
    <p class="muted">
      Analytics last stored a batch {report.last_batch_at ? ago(report.last_batch_at) : "never"}
      {report.watermark ? `; watermark ${time(report.watermark)}` : ""}; late events {report.late_events}, malformed
      records {report.malformed_records}.
    </p>
  );
}

const startOf = (w) => Date.parse(w.window_start) / 1000;

// The x axis of every chart: each window start once, in order, and where each sits.
function axis(windows) {
  const xs = [...new Set(windows.map(startOf))].sort((a, b) => a - b);
  return { xs, at: new Map(xs.map((x, i) => [x, i])) };
}

// Rows of (window start, type) into aligned columns for uPlot: x = window
// starts, one y array per task type (null where that type had no window).
function columns(windows, pick) {
  const { xs, at } = axis(windows);
  const types = [...new Set(windows.map((w) => w.task_type))].sort();
  const ys = types.map(() => xs.map(() => null));
  for (const w of windows) {
    const v = pick(w);
    if (v != null) ys[types.indexOf(w.task_type)][at.get(startOf(w))] = v;
  }
  return { series: types, data: [xs, ...ys] };
}

// One y array per field, summed over the task types of each window.
function sumColumns(windows, fields) {
  const { xs, at } = axis(windows);
  const ys = fields.map(() => xs.map(() => 0));
  for (const w of windows) {
    fields.forEach((f, j) => {
      ys[j][at.get(startOf(w))] += Number(w[f]);
    });
  }
  return { series: fields, data: [xs, ...ys] };
}

function Charts({ windows, span: requested }) {
  // Show the whole of the newest window, even where it ends after "now".
  const span = [requested[0], Math.max(requested[1], ...windows.map((w) => Date.parse(w.window_end) / 1000))];
  const throughput = columns(windows, (w) => Number(w.completed));
  const wait = columns(windows, (w) => (Number(w.queue_wait_count) ? w.queue_wait_mean_ms : null));
  const waitP95 = columns(windows, (w) => (Number(w.queue_wait_count) ? w.queue_wait_p95_ms : null));
  const run = columns(windows, (w) => (Number(w.run_time_count) ? w.run_time_mean_ms : null));
  const trouble = sumColumns(windows, ["failed", "retried"]);
  return (
    <section class="panel charts">
      <Chart title="Completed tasks per window, by type" unit="tasks" span={span} {...throughput} bars />
      <Chart title="Queue wait, mean per window" unit="ms" span={span} {...wait} />
      <Chart title="Queue wait, p95 per window" unit="ms" span={span} {...waitP95} />
      <Chart title="Run time, mean per window" unit="ms" span={span} {...run} />
      <Chart title="Failures and retries per window" unit="tasks" span={span} {...trouble} bars />
    </section>
  );
}

function WindowTable({ windows }) {
  const rows = [...windows].sort((a, b) => (a.window_start < b.window_start ? 1 : -1)).slice(0, 50);
  return (
    <section class="panel">
      <h3>Windows</h3>
      <table class="windows">
        <thead>
          <tr>
            <th>window</th><th>type</th><th>pending</th><th>started</th><th>completed</th><th>failed</th>
            <th>retried</th><th>wait p50</th><th>wait p95</th><th>run mean</th><th>run max</th><th>final</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((w) => (
            <tr key={`${w.window_start}-${w.task_type}`}>
              <td>{time(w.window_start)}</td>
              <td>{w.task_type}</td>
              <td>{w.pending}</td>
              <td>{w.started}</td>
              <td>{w.completed}</td>
              <td>{w.failed}</td>
              <td>{w.retried}</td>
              <td>{Number(w.queue_wait_count) ? duration(w.queue_wait_p50_ms) : "–"}</td>
              <td>{Number(w.queue_wait_count) ? duration(w.queue_wait_p95_ms) : "–"}</td>
              <td>{Number(w.run_time_count) ? duration(w.run_time_mean_ms) : "–"}</td>
              <td>{Number(w.run_time_count) ? duration(w.run_time_max_ms) : "–"}</td>
              <td>{w.final ? "yes" : "open"}</td>
            </tr>
          ))}
          {!rows.length ? (
            <tr><td colspan="12" class="empty">No statistics in this range yet: submit some tasks, the analytics job stores a window within seconds.</td></tr>
          ) : null}
        </tbody>
      </table>
    </section>
  );
}
