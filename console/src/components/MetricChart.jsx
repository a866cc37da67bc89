// A chart of Prometheus range queries over the last `minutes`, read through
// the edge (GET /v1/metrics/query_range: the Prometheus server `gridmesh up`
// runs), refreshed every 15 s. Each query is [label, PromQL, seriesLabel]:
// one line per series of its result, named by `seriesLabel` (a label of the
// series, e.g. "subscriber"), or by `label` alone.
import { get, query } from "../api.js";
import { Chart } from "./Chart.jsx";
import { ErrorNote, usePoll } from "./common.jsx";

const REFRESH_MS = 15_000;

async function rangeOf(queries, minutes) {
  const end = Math.floor(Date.now() / 1000);
  const start = end - minutes * 60;
  const step = Math.max(5, Math.round((minutes * 60) / 240));
  const results = await Promise.all(
    queries.map(([, promql]) => get(`/v1/metrics/query_range${query({ query: promql, start, end, step })}`)),
  );
  const series = [];
  results.forEach((answer, i) => {
    const [label, , by] = queries[i];
    for (const s of answer.data.result) {
      series.push({ name: by ? `${label} ${s.metric[by] || ""}`.trim() : label, values: s.values });
    }
  });
  const times = [...new Set(series.flatMap((s) => s.values.map(([t]) => t)))].sort((a, b) => a - b);
  const data = [times, ...series.map((s) => {
    const at = new Map(s.values.map(([t, v]) => [t, Number(v)]));
    return times.map((t) => (at.has(t) ? at.get(t) : null));
  })];
  return { names: series.map((s) => s.name), data, span: [start, end] };
}

export function MetricChart({ title, unit, queries, minutes = 15 }) {
  const { data, error } = usePoll(() => rangeOf(queries, minutes), REFRESH_MS, [JSON.stringify(queries), minutes]);
  if (error) {
    const off = error.status === 404 || error.status === 503;
    return off ? <p class="empty">{title}: Prometheus is not running (it is off in this mesh's config).</p> : <ErrorNote error={error} />;
  }
  if (!data) return <p class="empty">{title}: loading…</p>;
  return <Chart title={title} unit={unit} series={data.names} data={data.data} span={data.span} />;
}
