// gridmesh console: a hash-routed single page over the public HTTP/JSON API.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import "uplot/dist/uPlot.min.css";
import "./style.css";
import { TasksPage } from "./pages/Tasks.jsx";
import { TaskPage } from "./pages/Task.jsx";
import { WorkersPage } from "./pages/Workers.jsx";
import { StatsPage } from "./pages/Stats.jsx";
import { ReplicationPage } from "./pages/Replication.jsx";
import { SchedulesPage } from "./pages/Schedules.jsx";
import { api, apiKey, signIn, signOut } from "./api.js";

const NAV = [
  ["#/tasks", "Tasks"],
  ["#/schedules", "Schedules"],
  ["#/workers", "Workers"],
  ["#/stats", "Statistics"],
  ["#/replication", "Replication"],
];

function useHash() {
  const [hash, setHash] = useState(location.hash || "#/tasks");
  useEffect(() => {
    const onChange = () => setHash(location.hash || "#/tasks");
    addEventListener("hashchange", onChange);
    return () => removeEventListener("hashchange", onChange);
  }, []);
  return hash;
}

function route(hash) {
  const [path] = hash.slice(1).split("?");
  const parts = path.split("/").filter(Boolean);
  if (parts[0] === "tasks" && parts[1]) return <TaskPage key={parts[1]} taskId={decodeURIComponent(parts[1])} />;
  if (parts[0] === "workers") return <WorkersPage />;
  if (parts[0] === "schedules") return <SchedulesPage />;
  if (parts[0] === "stats") return <StatsPage />;
  if (parts[0] === "replication") return <ReplicationPage />;
  return <TasksPage />;
}

// The mesh refuses calls without an API key: ask for one (`gridmesh up`
// printed where the admin's is; `gridmesh keys create` makes others).
function SignIn({ onSignedIn }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState("");
  const submit = async (e) => {
    e.preventDefault();
    signIn(key);
    try {
      await api("GET", "/v1/task-types");
      setError("");
      onSignedIn();
    } catch (err) {
      signOut();
      setError(err.message);
    }
  };
  return (
    <main>
      <form class="panel signin" onSubmit={submit}>
        <h2>Sign in</h2>
        <p>Paste an API key (<code>gmk_…</code>). <code>gridmesh up</code> printed where the admin key is;{" "}
          <code>gridmesh keys create --role viewer</code> makes a read-only one.</p>
        <input type="password" name="api_key" autocomplete="off" placeholder="gmk_…" value={key}
          onInput={(e) => setKey(e.currentTarget.value)} />
        <button type="submit">Sign in</button>
        {error ? <p class="error" role="alert">{error}</p> : null}
      </form>
    </main>
  );
}

function App() {
  // null: not known yet (a mesh with auth off needs no key).
  const [signedIn, setSignedIn] = useState(apiKey() ? true : null);
  useEffect(() => {
    const out = () => setSignedIn(false);
    addEventListener("gridmesh:signed-out", out);
    if (signedIn === null) api("GET", "/v1/task-types").then(() => setSignedIn(true), () => setSignedIn(false));
    return () => removeEventListener("gridmesh:signed-out", out);
  }, []);
  if (signedIn === null) return <header class="top"><span class="brand">gridmesh</span></header>;
  if (!signedIn) {
    return (
      <>
        <header class="top"><span class="brand">gridmesh</span></header>
        <SignIn onSignedIn={() => setSignedIn(true)} />
      </>
    );
  }
  return <Console />;
}

function Console() {
  const hash = useHash();
  const section = `#/${hash.slice(2).split(/[/?]/)[0] || "tasks"}`;
  return (
    <>
      <header class="top">
        <a class="brand" href="#/tasks">gridmesh</a>
        <nav>
          {NAV.map(([href, label]) => (
            <a href={href} class={section === href ? "active" : ""} key={href}>
              {label}
            </a>
          ))}
        </nav>
        <button class="signout secondary" onClick={signOut}>Sign out</button>
      </header>
      <main>{route(hash)}</main>
    </>
  );
}

render(<App />, document.getElementById("app"));
