// Replication: the subscription map kept in ZooKeeper (publisher → entity
// type → subscribers), each subscriber's queue depth and dead letters, and
// subscribe / unsubscribe.
import { useState } from "preact/hooks";
import { api, get } from "../api.js";
import { ErrorNote, usePoll } from "../components/common.jsx";
import { MetricChart } from "../components/MetricChart.jsx";
import { FieldError, invalid, showError } from "../components/SchemaForm.jsx";
import { time } from "../format.js";

async function loadMap() {
  const { subscriptions } = await get("/v1/subscriptions");
  const subscribers = [...new Set(subscriptions.map((s) => s.subscriber))];
  const queues = Object.fromEntries(
    await Promise.all(
      subscribers.map(async (name) => {
        try {
          return [name, await get(`/v1/subscribers/${encodeURIComponent(name)}/queue`)];
        } catch (e) {
          return [name, { error: e.message }];
        }
      }),
    ),
  );
  return { subscriptions, queues };
}

// publisher → entity type → subscriptions, sorted by name at every level.
function group(subscriptions) {
  const map = new Map();
  for (const s of [...subscriptions].sort((a, b) =>
    `${a.publisher}/${a.entity_type}/${a.subscriber}`.localeCompare(`${b.publisher}/${b.entity_type}/${b.subscriber}`),
  )) {
    if (!map.has(s.publisher)) map.set(s.publisher, new Map());
    const types = map.get(s.publisher);
    if (!types.has(s.entity_type)) types.set(s.entity_type, []);
    types.get(s.entity_type).push(s);
  }
  return map;
}

export function ReplicationPage() {
  const { data, error, refresh } = usePoll(loadMap, 3000);
  const [actionError, setActionError] = useState(null);
  const unsubscribe = async (s) => {
    setActionError(null);
    try {
      await api("DELETE", `/v1/subscriptions/${[s.subscriber, s.publisher, s.entity_type].map(encodeURIComponent).join("/")}`);
      refresh();
    } catch (e) {
      setActionError(e);
    }
  };
  const map = group(data?.subscriptions || []);
  return (
    <div class="replication-page">
      <section class="panel submit">
        <h2>Subscribe</h2>
        <SubscribeForm onDone={refresh} />
      </section>
      <section class="panel">
        <div class="table-head">
          <h2>Subscription map</h2>
          <span class="muted">{data ? `${data.subscriptions.length} subscriptions` : ""}</span>
        </div>
        <ErrorNote error={error || actionError} />
        <table class="subscriptions">
          <thead>
            <tr>
              <th>publisher</th><th>entity type</th><th>subscriber</th><th>queue depth</th><th>consumers</th>
              <th>dead letters</th><th>snapshot</th><th>since</th><th></th>
            </tr>
          </thead>
          <tbody>
            {[...map].flatMap(([publisher, types]) =>
              [...types].flatMap(([entityType, subs]) =>
                subs.map((s, i) => {
                  const q = data.queues[s.subscriber] || {};
                  const id = `${s.publisher}/${s.entity_type}/${s.subscriber}`;
                  return (
                    <tr key={id} data-subscription={id}>
                      <td>{i === 0 ? publisher : ""}</td>
                      <td>{i === 0 ? entityType : ""}</td>
                      <td>{s.subscriber}</td>
                      <td class="num">{q.error ? "?" : q.messages}</td>
                      <td class="num">{q.error ? "?" : q.consumers}</td>
                      <td class={`num ${Number(q.dead_letters) ? "warn" : ""}`}>{q.error ? "?" : q.dead_letters}</td>
                      <td>{s.snapshot ? "yes" : "no"}</td>
                      <td>{time(s.created_at)}</td>
                      <td><button class="secondary" onClick={() => unsubscribe(s)}>Unsubscribe</button></td>
                    </tr>
                  );
                }),
              ),
            )}
            {data && !data.subscriptions.length ? (
              <tr><td colspan="9" class="empty">No subscriptions yet.</td></tr>
            ) : null}
          </tbody>
        </table>
      </section>
      <section class="panel">
        <h3>Over time</h3>
        <MetricChart title="Waiting events per subscriber (lag)" unit="events" queries={LAG} />
        <MetricChart title="Dead letters per subscriber" unit="events" queries={DEAD_LETTERS} />
      </section>
    </div>
  );
}

const LAG = [["", "max by (subscriber) (gridmesh_subscriber_queue_messages)", "subscriber"]];
const DEAD_LETTERS = [["", "max by (subscriber) (gridmesh_subscriber_dead_letters)", "subscriber"]];

const FIELDS = ["subscriber", "publisher", "entity_type"];

function SubscribeForm({ onDone }) {
  const [form, setForm] = useState({ subscriber: "", publisher: "", entity_type: "", snapshot: false });
  const [errors, setErrors] = useState({});
  const [formError, setFormError] = useState(null);
  const [done, setDone] = useState(null);
  const set = (key) => (e) => setForm({ ...form, [key]: key === "snapshot" ? e.currentTarget.checked : e.currentTarget.value });
  const submit = async (e) => {
    e.preventDefault();
    setErrors({});
    setFormError(null);
    setDone(null);
    try {
      setDone(await api("POST", "/v1/subscriptions", form));
      onDone();
    } catch (err) {
      showError(err, FIELDS, setErrors, setFormError);
    }
  };
  return (
    <form onSubmit={submit} novalidate aria-label="subscribe" class="row">
      {FIELDS.map((key) => (
        <label class="field" key={key}>
          <span>{key.replace("_", " ")}</span>
          <input name={key} type="text" value={form[key]} onInput={set(key)} aria-invalid={invalid(errors, key)} />
          <FieldError error={errors[key]} field={key} />
        </label>
      ))}
      <label class="field check">
        <input name="snapshot" type="checkbox" checked={form.snapshot} onChange={set("snapshot")} />
        <span>first deliver every entity's current state</span>
      </label>
      <button type="submit">Subscribe</button>
      <ErrorNote error={formError} />
      {done ? (
        <p class="ok" role="status">
          {done.subscriber} now receives {done.publisher}'s {done.entity_type} events (queue {done.queue}).
        </p>
      ) : null}
    </form>
  );
}
