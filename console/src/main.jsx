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

const NAV = [
  ["#/tasks", "Tasks"],
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
  if (parts[0] === "stats") return <StatsPage />;
  if (parts[0] === "replication") return <ReplicationPage />;
  return <TasksPage />;
}

function App() {
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
      </header>
      <main>{route(hash)}</main>
    </>
  );
}

render(<App />, document.getElementById("app"));
