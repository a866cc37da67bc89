// One task: its timeline as it happens (WatchTask stream), its error, and
// its result (info and a download link) once stored.
import { useEffect, useState } from "preact/hooks";
import { api, fetchWithKey, get, keepStreaming } from "../api.js";
import { ErrorNote, Live, StateBadge, useTick } from "../components/common.jsx";
import { TraceView } from "../components/TraceView.jsx";
import { bytes, duration, ms, time } from "../format.js";

const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);
const PREVIEW_BYTES = 64 * 1024;

export function TaskPage({ taskId }) {
  const [task, setTask] = useState(null);
  const [seen, setSeen] = useState([]); // [{state, attempt, worker_id, at}] as observed
  const [error, setError] = useState(null);
  const [live, setLive] = useState("reconnecting");
  const [noticedAt, setNoticedAt] = useState(null); // when the final notice reached this page's watch
  const [info, setInfo] = useState(null); // the stored result's (its stored_at is a step of the timeline)
  useTick(1000);

  useEffect(() => {
    let stop = () => {};
    get(`/v1/tasks/${encodeURIComponent(taskId)}`).then(
      (first) => {
        setTask(first);
        if (TERMINAL.has(first.state)) return;
        stop = keepStreaming(
          `/v1/tasks/${encodeURIComponent(taskId)}:watch`,
          ({ task: t, occurred_at }) => {
            setTask(t);
            setSeen((s) => {
              const last = s[s.length - 1];
              if (last && last.state === t.state && last.attempt === t.attempt) return s;
              return [...s, { state: t.state, attempt: t.attempt, worker_id: t.worker_id, at: occurred_at }];
            });
            if (TERMINAL.has(t.state)) {
              setNoticedAt(occurred_at);
              stop();
            }
          },
          { onState: setLive },
        );
      },
      setError,
    );
    return () => stop();
  }, [taskId]);
  const succeeded = task && task.state === "SUCCEEDED";
  useEffect(() => {
    if (succeeded) get(`/v1/results/${encodeURIComponent(taskId)}/info`).then(setInfo, setError);
  }, [taskId, succeeded]);

  if (error) return <section class="panel"><h2>Task {taskId}</h2><ErrorNote error={error} /></section>;
  if (!task) return <section class="panel">Loading…</section>;
  const finished = TERMINAL.has(task.state);
  return (
    <div class="task-page">
      <section class="panel">
        <div class="table-head">
          <h2>
            Task <span class="mono">{task.task_id}</span>
          </h2>
          <StateBadge state={task.state} />
          {finished ? null : <Live state={live} />}
          {finished ? null : <CancelButton task={task} onDone={setTask} />}
        </div>
        <dl class="facts">
          <dt>type</dt><dd>{task.task_type}</dd>
          <dt>priority</dt><dd>{task.priority}</dd>
          <dt>attempt</dt><dd>{task.attempt} of {task.max_attempts}</dd>
          {task.run_timeout ? <><dt>run timeout</dt><dd>{task.run_timeout}</dd></> : null}
          {task.not_before ? <><dt>due</dt><dd>{time(task.not_before)}{task.state === "QUEUED" && Date.parse(task.not_before) > Date.now() ? " (waiting)" : ""}</dd></> : null}
          {task.deadline ? <><dt>deadline</dt><dd>{time(task.deadline)}</dd></> : null}
          <dt>worker</dt><dd class="mono">{task.worker_id || "–"}</dd>
          <dt>result directory</dt><dd class="mono">{task.result_dir}</dd>
          <dt>params</dt><dd><pre>{JSON.stringify(task.params, null, 2)}</pre></dd>
          {task.idempotency_key ? <><dt>idempotency key</dt><dd class="mono">{task.idempotency_key}</dd></> : null}
        </dl>
      </section>
      <section class="panel">
        <h3>Timeline</h3>
        <Timeline task={task} storedAt={info && info.stored_at} noticedAt={noticedAt} />
        {seen.length > 1 ? (
          <>
            <h4>Changes seen while this page was open</h4>
            <ul class="seen">
              {seen.map((s, i) => (
                <li key={i}>
                  {time(s.at)} <StateBadge state={s.state} /> attempt {s.attempt}
                  {s.worker_id ? <> on <span class="mono">{s.worker_id}</span></> : null}
                </li>
              ))}
            </ul>
          </>
        ) : null}
        {task.error ? (
          <>
            <h3>Error{reasonOf(task) ? <> <span class="failure-reason">{reasonOf(task)}</span></> : null}</h3>
            <pre class="task-error">{task.error}</pre>
          </>
        ) : null}
      </section>
      {succeeded ? <Result taskId={task.task_id} info={info} /> : null}
      <TraceView task={task} finished={finished} />
    </div>
  );
}

function CancelButton({ task, onDone }) {
  const [error, setError] = useState(null);
  const cancel = async () => {
    try {
      onDone(await api("POST", `/v1/tasks/${task.task_id}:cancel`, {}));
    } catch (e) {
      setError(e);
    }
  };
  return (
    <>
      <button class="secondary" onClick={cancel}>Cancel task</button>
      <ErrorNote error={error} />
    </>
  );
}

// A link cannot carry the API key: fetch the bytes with it, then save them.
async function download(taskId) {
  const response = await fetchWithKey(`/v1/results/${taskId}`);
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  const url = URL.createObjectURL(await response.blob());
  const link = Object.assign(document.createElement("a"), { href: url, download: `${taskId}.json` });
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function Result({ taskId, info }) {
  const [preview, setPreview] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    if (!info || Number(info.size_bytes) > PREVIEW_BYTES) return;
    fetchWithKey(`/v1/results/${taskId}`)
      .then((response) => response.text())
      .then((text) => {
        try {
          setPreview(JSON.stringify(JSON.parse(text), null, 2));
        } catch {
          setPreview(text);
        }
      }, setError);
  }, [taskId, info]);
  return (
    <section class="panel">
      <h3>Result</h3>
      <ErrorNote error={error} />
      {info ? (
        <>
          <dl class="facts">
            <dt>path</dt><dd class="mono">{info.path}</dd>
            <dt>size</dt><dd>{bytes(info.size_bytes)}</dd>
            <dt>sha256</dt><dd class="mono">{info.sha256}</dd>
            <dt>content type</dt><dd>{info.content_type}</dd>
            <dt>stored</dt><dd>{time(info.stored_at)}</dd>
          </dl>
          <button class="button" onClick={() => download(taskId).catch(setError)}>Download result</button>
          {preview != null ? <pre class="preview">{preview}</pre> : null}
        </>
      ) : null}
    </section>
  );
}

// The steps of the task's current attempt, each with when it happened and how
// long after the step before; a bar shows the share of each gap. Times come
// from the process that took the step (the Scheduler, the node, the
// StoreKeeper), so a gap between processes includes their clocks' skew.
function Timeline({ task, storedAt, noticedAt }) {
  const steps = [
    ["submitted", task.created_at, "accepted by the Scheduler"],
    ["dispatched", task.dispatched_at, task.worker_id ? `handed to ${task.worker_id}` : ""],
    ["started", task.started_at !== task.dispatched_at ? task.started_at : null, "its task process took it (the node's clock)"],
    ["stored", storedAt, "its result written durably (the StoreKeeper's clock)"],
    [task.state.toLowerCase(), TERMINAL.has(task.state) ? task.finished_at : null, "committed by the Scheduler"],
    ["notified", noticedAt, "the notice reached this page's watch"],
  ].filter(([, at]) => at);
  const total = ms(task.created_at, steps[steps.length - 1][1]) || 1;
  return (
    <>
      <div class="timeline-bar" aria-hidden="true">
        {steps.slice(1).map(([name, at], i) => (
          <span key={name} class={`segment step-${i % 6}`} style={{ width: `${(100 * ms(steps[i][1], at)) / total}%` }} title={`${steps[i][0]} → ${name}`} />
        ))}
      </div>
      <table class="timeline">
        <thead>
          <tr><th>step</th><th>at</th><th>after the step before</th><th>since submitted</th><th /></tr>
        </thead>
        <tbody>
          {steps.map(([name, at, note], i) => (
            <tr key={name} data-step={name}>
              <td>{i ? <span class={`swatch step-${(i - 1) % 6}`} /> : null}{name}</td>
              <td>{time(at)}</td>
              <td class="gap">{i ? duration(ms(steps[i - 1][1], at)) : "–"}</td>
              <td>{duration(ms(task.created_at, at))}</td>
              <td class="note">{note}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <p class="note">Attempt {task.attempt} of {task.max_attempts}{task.state === "RUNNING" ? `; running for ${duration(ms(task.started_at, null))}` : ""}.</p>
    </>
  );
}

// Why a task ended FAILED or CANCELLED (TIMEOUT, CRASHED, …); empty otherwise.
function reasonOf(task) {
  const reason = task.failure_reason;
  return reason && reason !== "FAILURE_REASON_UNSPECIFIED" ? reason : "";
}
