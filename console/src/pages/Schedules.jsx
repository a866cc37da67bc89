// Schedules: every schedule with its cadence, task template, next and last
// tick (GET /v1/schedules, polled), and pause, resume and delete buttons.
import { useState } from "preact/hooks";
import { api, get } from "../api.js";
import { ErrorNote, usePoll, useTick } from "../components/common.jsx";
import { shortId, time } from "../format.js";

export function SchedulesPage() {
  const { data, error, refresh } = usePoll(() => get("/v1/schedules"), 2000);
  useTick(1000);
  const schedules = data?.schedules || [];
  return (
    <section class="panel">
      <div class="table-head">
        <h2>Schedules</h2>
        <span class="muted">{schedules.length} schedule{schedules.length === 1 ? "" : "s"}</span>
      </div>
      <ErrorNote error={error} />
      <table class="schedules">
        <thead>
          <tr>
            <th>schedule</th>
            <th>when</th>
            <th>task</th>
            <th>catch-up</th>
            <th>next tick</th>
            <th>last tick</th>
            <th></th>
          </tr>
        </thead>
        <tbody>
          {schedules.map((s) => (
            <tr key={s.schedule_id} data-schedule-id={s.schedule_id}>
              <td class="mono" title={s.schedule_id}>{shortId(s.schedule_id)}</td>
              <td>{s.cron ? <><code>{s.cron}</code> {s.time_zone}</> : `every ${s.interval}`}</td>
              <td>{s.task.task_type} → <span class="mono">{s.task.result_dir}</span></td>
              <td>{s.catch_up === "CATCH_UP_UNSPECIFIED" ? "SKIP" : s.catch_up}</td>
              <td>{s.paused ? <span class="muted">paused</span> : time(s.next_tick)}</td>
              <td>
                {s.last_tick ? <>{time(s.last_tick)} <a href={`#/tasks/${s.last_task_id}`}>{shortId(s.last_task_id)}</a></> : "–"}
              </td>
              <td><Actions schedule={s} onDone={refresh} /></td>
            </tr>
          ))}
          {!schedules.length && data ? (
            <tr>
              <td colspan="7" class="empty">No schedule. Create one with <code>gridmesh schedules create</code> or <code>POST /v1/schedules</code>.</td>
            </tr>
          ) : null}
        </tbody>
      </table>
    </section>
  );
}

function Actions({ schedule, onDone }) {
  const [error, setError] = useState(null);
  const id = encodeURIComponent(schedule.schedule_id);
  const act = (method, path) => async () => {
    try {
      await api(method, path, method === "DELETE" ? undefined : {});
      setError(null);
      onDone();
    } catch (e) {
      setError(e);
    }
  };
  return (
    <span class="actions">
      {schedule.paused
        ? <button onClick={act("POST", `/v1/schedules/${id}:resume`)}>Resume</button>
        : <button onClick={act("POST", `/v1/schedules/${id}:pause`)}>Pause</button>}
      <button onClick={act("DELETE", `/v1/schedules/${id}`)}>Delete</button>
      <ErrorNote error={error} />
    </span>
  );
}
