// Small pieces every page uses.
import { useEffect, useRef, useState } from "preact/hooks";

export function StateBadge({ state }) {
  return <span class={`badge state-${(state || "").toLowerCase()}`}>{state || "?"}</span>;
}

// An API error shown where it concerns the user: next to a field, or on top of a form.
export function ErrorNote({ error, id }) {
  if (!error) return null;
  return (
    <div class="error" role="alert" id={id}>
      {typeof error === "string" ? error : error.message}
    </div>
  );
}

export function Live({ state }) {
  return <span class={`live ${state}`}>{state === "live" ? "● live" : "○ reconnecting…"}</span>;
}

// Calls load() now and every `everyMs` while the page is shown.
export function usePoll(load, everyMs, deps = []) {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const generation = useRef(0);
  const refresh = async () => {
    const mine = ++generation.current;
    try {
      const value = await load();
      if (mine === generation.current) {
        setData(value);
        setError(null);
      }
    } catch (e) {
      if (mine === generation.current) setError(e);
    }
  };
  useEffect(() => {
    refresh();
    const timer = setInterval(refresh, everyMs);
    return () => {
      clearInterval(timer);
      generation.current++;
    };
  }, deps);
  return { data, error, refresh };
}

// Forces a re-render every `everyMs` so "x s ago" and running times move.
export function useTick(everyMs = 1000) {
  const [, setTick] = useState(0);
  useEffect(() => {
    const timer = setInterval(() => setTick((t) => t + 1), everyMs);
    return () => clearInterval(timer);
  }, [everyMs]);
}
