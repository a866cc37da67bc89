// Tasks: submit any registered task type, and a live table of tasks fed by
// the WatchTasks stream (GET /v1/tasks:watch), with filters and paging.
import { useEffect, useRef, useState } from "preact/hooks";
import { api, get, keepStreaming, query } from "../api.js";
import { ErrorNote, Live, StateBadge, useTick } from "../components/common.jsx";
import { FieldError, invalid, paramFields, paramsFrom, SchemaFields, showError } from "../components/SchemaForm.jsx";
import { duration, ms, shortId, time } from "../format.js";

const STATES = ["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"];
const PRIORITIES = ["NORMAL", "HIGH", "LOW"];
const PAGE_SIZE = 20;

export function TasksPage() {
  const [types, setTypes] = useState(null);
  const [typesError, setTypesError] = useState(null);
  useEffect(() => {
    get("/v1/task-types").then((r) => setTypes(r.task_types), setTypesError);
  }, []);
  return (
    <div class="tasks-page">
      <section class="panel submit">
        <h2>Submit a task</h2>
        <ErrorNote error={typesError} />
        {types ? <SubmitForm types={types} /> : null}
      </section>
      <section class="panel">
        <TaskTable types={types || []} />
      </section>
    </div>
  );
}

function SubmitForm({ types }) {
  const [typeName, setTypeName] = useState(types.some((t) => t.name === "word_count") ? "word_count" : types[0]?.name);
  const [values, setValues] = useState({});
  const [resultDir, setResultDir] = useState("console");
  const [priority, setPriority] = useState("NORMAL");
  const [maxAttempts, setMaxAttempts] = useState("");
  const [errors, setErrors] = useState({});
  const [formError, setFormError] = useState(null);
  const [submitted, setSubmitted] = useState(null);
  const [busy, setBusy] = useState(false);
  const type = types.find((t) => t.name === typeName);

  const chooseType = (name) => {
    setTypeName(name);
    setValues({});
    setErrors({});
    setFormError(null);
  };

  const submit = async (e) => {
    e.preventDefault();
    setErrors({});
    setFormError(null);
    setSubmitted(null);
    let params;
    try {
      params = paramsFrom(type?.params_schema, values);
    } catch (err) {
      setErrors({ [err.field]: err.message });
      return;
    }
    const body = { task_type: typeName || "", params, result_dir: resultDir, priority };
    if (maxAttempts.trim()) body.max_attempts = Number(maxAttempts);
    setBusy(true);
    try {
      setSubmitted(await api("POST", "/v1/tasks", body));
    } catch (err) {
      const params = paramFields(type?.params_schema).map(({ name }) => `params.${name}`);
      showError(err, ["task_type", "result_dir", "priority", "max_attempts", "params", ...params], setErrors, setFormError);
    } finally {
      setBusy(false);
    }
  };

  return (
    <form onSubmit={submit} novalidate aria-label="submit a task">
      <label class="field">
        <span>task type</span>
        <select name="task_type" value={typeName} aria-invalid={invalid(errors, "task_type")} onChange={(e) => chooseType(e.currentTarget.value)}>
          {types.map((t) => (
            <option value={t.name} key={t.name}>{t.name}</option>
          ))}
        </select>
        {type?.description ? <small class="hint">{type.description}</small> : null}
        <FieldError error={errors.task_type} field="task_type" />
      </label>
      {paramFields(type?.params_schema).length ? <FieldError error={errors.params} field="params" /> : null}
      <SchemaFields
        schema={type?.params_schema}
        values={values}
        errors={errors}
        onChange={(name, value) => setValues({ ...values, [name]: value })}
      />
      <div class="row">
        <label class="field">
          <span>result directory</span>
          <input name="result_dir" type="text" value={resultDir} aria-invalid={invalid(errors, "result_dir")} onInput={(e) => setResultDir(e.currentTarget.value)} />
          <FieldError error={errors.result_dir} field="result_dir" />
        </label>
        <label class="field">
          <span>priority</span>
          <select name="priority" value={priority} onChange={(e) => setPriority(e.currentTarget.value)}>
            {PRIORITIES.map((p) => (
              <option value={p} key={p}>{p}</option>
            ))}
          </select>
        </label>
        <label class="field narrow">
          <span>max attempts</span>
          <input name="max_attempts" type="text" inputmode="numeric" placeholder="default" value={maxAttempts} aria-invalid={invalid(errors, "max_attempts")} onInput={(e) => setMaxAttempts(e.currentTarget.value)} />
          <FieldError error={errors.max_attempts} field="max_attempts" />
        </label>
      </div>
      <ErrorNote error={formError} />
      <button type="submit" disabled={busy}>Submit</button>
      {submitted ? (
        <p class="ok" role="status">
          Submitted <a href={`#/tasks/${submitted.task_id}`}>{submitted.task_id}</a> ({submitted.state})
        </p>
      ) : null}
    </form>
  );
}

function matches(task, filter) {
  return (!filter.state || task.state === filter.state) && (!filter.task_type || task.task_type === filter.task_type);
}

const newestFirst = (a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0);

function TaskTable({ types }) {
  const [filter, setFilter] = useState({ state: "", task_type: "" });
  const [pages, setPages] = useState([""]); // page tokens: pages[i] loads page i
  const [rows, setRows] = useState([]);
  const [next, setNext] = useState("");
  const [error, setError] = useState(null);
  const [live, setLive] = useState("reconnecting");
  const view = useRef({ filter, firstPage: true });
  view.current = { filter, firstPage: pages.length === 1 };
  useTick(1000);

  const load = async () => {
    try {
      const r = await get(`/v1/tasks${query({ ...filter, page_size: PAGE_SIZE, page_token: pages[pages.length - 1] })}`);
      setRows(r.tasks);
      setNext(r.next_page_token);
      setError(null);
    } catch (e) {
      setError(e);
    }
  };
  useEffect(() => {
    load();
  }, [filter, pages]);
  const reload = useRef(load);
  reload.current = load; // the stream's reconnect reloads what is in view now

  // Every committed change of every task (of the chosen type: the Scheduler
  // filters by type, the state filter is applied here); applied to the rows in view.
  useEffect(
    () =>
      keepStreaming(
        `/v1/tasks:watch${query({ task_type: filter.task_type })}`,
        ({ task }) => {
          const { filter: f, firstPage } = view.current;
          setRows((current) => {
            const i = current.findIndex((t) => t.task_id === task.task_id);
            if (i >= 0) {
              if (!matches(task, f)) return current.filter((t) => t.task_id !== task.task_id);
              const copy = current.slice();
              copy[i] = task;
              return copy;
            }
            if (!firstPage || !matches(task, f)) return current;
            return [task, ...current].sort(newestFirst).slice(0, PAGE_SIZE);
          });
        },
        { onState: setLive, onReconnect: () => reload.current() },
      ),
    [filter.task_type],
  );

  const setFilterKey = (key) => (e) => {
    setFilter({ ...filter, [key]: e.currentTarget.value });
    setPages([""]);
  };

  return (
    <>
      <div class="table-head">
        <h2>Tasks</h2>
        <Live state={live} />
        <label>
          state{" "}
          <select name="filter_state" value={filter.state} onChange={setFilterKey("state")}>
            <option value="">any</option>
            {STATES.map((s) => (
              <option value={s} key={s}>{s}</option>
            ))}
          </select>
        </label>
        <label>
          type{" "}
          <select name="filter_type" value={filter.task_type} onChange={setFilterKey("task_type")}>
            <option value="">any</option>
            {types.map((t) => (
              <option value={t.name} key={t.name}>{t.name}</option>
            ))}
          </select>
        </label>
      </div>
      <ErrorNote error={error} />
      <table class="tasks">
        <thead>
          <tr>
            <th>task</th>
            <th>type</th>
            <th>state</th>
            <th>priority</th>
            <th>attempt</th>
            <th>worker</th>
            <th>wait</th>
            <th>run</th>
            <th>submitted</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((t) => (
            <tr key={t.task_id} data-task-id={t.task_id}>
              <td class="mono"><a href={`#/tasks/${t.task_id}`} title={t.task_id}>{shortId(t.task_id)}</a></td>
              <td>{t.task_type}</td>
              <td><StateBadge state={t.state} /></td>
              <td>{t.priority}</td>
              <td>{t.attempt}/{t.max_attempts}</td>
              <td class="mono">{t.worker_id || "–"}</td>
              <td>{duration(ms(t.created_at, t.started_at || t.finished_at))}</td>
              <td>{t.started_at ? duration(ms(t.started_at, t.finished_at)) : "–"}</td>
              <td>{time(t.created_at)}</td>
            </tr>
          ))}
          {!rows.length ? (
            <tr>
              <td colspan="9" class="empty">No tasks{filter.state || filter.task_type ? " match these filters" : " yet"}.</td>
            </tr>
          ) : null}
        </tbody>
      </table>
      <div class="pager">
        <button disabled={pages.length === 1} onClick={() => setPages(pages.slice(0, -1))}>← newer</button>
        <span>page {pages.length}</span>
        <button disabled={!next} onClick={() => setPages([...pages, next])}>older →</button>
      </div>
    </>
  );
}
