// Workers: every node with its slots, busy slots, state, last heartbeat and
// running tasks (GET /v1/workers, polled), and a drain button
// (POST /v1/workers/{id}:drain: the node finishes what it runs and leaves).
import { useState } from "preact/hooks";
import { api, get } from "../api.js";
import { ErrorNote, StateBadge, usePoll, useTick } from "../components/common.jsx";
import { MetricChart } from "../components/MetricChart.jsx";
import { ago, shortId, time } from "../format.js";

export function WorkersPage() {
  const { data, error, refresh } = usePoll(() => get("/v1/workers"), 2000);
  useTick(1000);
  const workers = data?.workers || [];
  const slots = workers.reduce((n, w) => n + w.slots, 0);
  const busy = workers.reduce((n, w) => n + w.busy_slots, 0);
  return (
    <section class="panel">
      <div class="table-head">
        <h2>Workers</h2>
        <span class="muted">
          {workers.length} node{workers.length === 1 ? "" : "s"}, {busy} of {slots} slots busy
        </span>
      </div>
      <ErrorNote error={error} />
      <table class="workers">
        <thead>
          <tr>
            <th>worker</th>
            <th>address</th>
            <th>state</th>
            <th>slots</th>
            <th>busy</th>
            <th>last heartbeat</th>
            <th>running tasks</th>
            <th>joined</th>
            <th></th>
          </tr>
        </thead>
        <tbody>
          {workers.map((w) => (
            <tr key={w.worker_id} data-worker-id={w.worker_id}>
              <td class="mono">{w.worker_id}</td>
              <td class="mono">{w.address}</td>
              <td><StateBadge state={w.state} /></td>
              <td>{w.slots}</td>
              <td>
                <meter min="0" max={w.slots} value={w.busy_slots} /> {w.busy_slots}
              </td>
              <td>{ago(w.last_heartbeat)}</td>
              <td class="mono">
                {w.running_task_ids.length
                  ? w.running_task_ids.map((id) => (
                      <a href={`#/tasks/${id}`} key={id} title={id}>{shortId(id)} </a>
                    ))
                  : "–"}
              </td>
              <td>{time(w.registered_at)}</td>
              <td><DrainButton worker={w} onDone={refresh} /></td>
            </tr>
          ))}
          {!workers.length && data ? (
            <tr>
              <td colspan="9" class="empty">No worker node is registered. Start one with <code>gridmesh worker start</code>.</td>
            </tr>
          ) : null}
        </tbody>
      </table>
      <h3>Slot use over time</h3>
      <MetricChart title="Slots" unit="slots" queries={SLOTS} />
    </section>
  );
}

const SLOTS = [
  ["busy", "sum(gridmesh_worker_busy_slots)"],
  ["total", "sum(gridmesh_worker_slots)"],
];

function DrainButton({ worker, onDone }) {
  const [asking, setAsking] = useState(false);
  const [error, setError] = useState(null);
  if (worker.state !== "ACTIVE") return null;
  const drain = async () => {
    try {
      await api("POST", `/v1/workers/${encodeURIComponent(worker.worker_id)}:drain`, {});
      setAsking(false);
      onDone();
    } catch (e) {
      setError(e);
    }
  };
  return (
    <div class="drain">
      {asking ? (
        <>
          <span>Finish its tasks and leave?</span>
          <button class="danger" onClick={drain}>Drain {worker.worker_id}</button>
          <button class="secondary" onClick={() => setAsking(false)}>Keep</button>
        </>
      ) : (
        <button class="secondary" onClick={() => setAsking(true)}>Drain</button>
      )}
      <ErrorNote error={error} />
    </div>
  );
}
