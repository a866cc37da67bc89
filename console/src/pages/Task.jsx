// One task: its life-cycle as it happens (WatchTask stream), its error, and
// its result (info and a download link) once stored.
import { useEffect, useState } from "preact/hooks";
import { api, fetchWithKey, get, keepStreaming } from "../api.js";
import { ErrorNote, Live, StateBadge, useTick } from "../components/common.jsx";
import { bytes, duration, ms, time } from "../format.js";

const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);
const PREVIEW_BYTES = 64 * 1024;

export function TaskPage({ taskId }) {
  const [task, setTask] = useState(null);
  const [seen, setSeen] = useState([]); // [{state, attempt, worker_id, at}] as observed
  const [error, setError] = useState(null);
  const [live, setLive] = useState("reconnecting");
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
            if (TERMINAL.has(t.state)) stop();
          },
          { onState: setLive },
        );
      },
      setError,
    );
    return () => stop();
  }, [taskId]);

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
        <h3>Life-cycle</h3>
        <ol class="lifecycle">
          <li><StateBadge state="QUEUED" /> submitted {time(task.created_at)}</li>
          {task.started_at ? (
            <li>
              <StateBadge state="RUNNING" /> started {time(task.started_at)} on <span class="mono">{task.worker_id}</span>
              {" "}(attempt {task.attempt}) after {duration(ms(task.created_at, task.started_at))} in the queue
            </li>
          ) : null}
          {finished ? (
            <li>
              <StateBadge state={task.state} /> {time(task.finished_at)}
              {task.started_at ? ` after ${duration(ms(task.started_at, task.finished_at))} of running` : ""}
            </li>
          ) : null}
        </ol>
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
      {task.state === "SUCCEEDED" ? <Result taskId={task.task_id} /> : null}
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

function Result({ taskId }) {
  const [info, setInfo] = useState(null);
  const [preview, setPreview] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    get(`/v1/results/${taskId}/info`).then(async (i) => {
      setInfo(i);
      if (Number(i.size_bytes) <= PREVIEW_BYTES) {
        const text = await (await fetchWithKey(`/v1/results/${taskId}`)).text();
        try {
          setPreview(JSON.stringify(JSON.parse(text), null, 2));
        } catch {
          setPreview(text);
        }
      }
    }, setError);
  }, [taskId]);
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

// Why a task ended FAILED or CANCELLED (TIMEOUT, CRASHED, …); empty otherwise.
function reasonOf(task) {
  const reason = task.failure_reason;
  return reason && reason !== "FAILURE_REASON_UNSPECIFIED" ? reason : "";
}
