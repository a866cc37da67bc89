// The console's only way to the mesh: the public HTTP/JSON API behind Envoy
// (same origin), with the API key signed in with (kept in this tab's
// sessionStorage only). Errors come back as ApiError with the gRPC status
// message and, for a bad field, which field it concerns; a 401 asks the
// page to sign in again.

const KEY = "gridmesh.apiKey";
export const apiKey = () => sessionStorage.getItem(KEY) || "";
export function signIn(key) {
  sessionStorage.setItem(KEY, key.trim());
}
export function signOut() {
  sessionStorage.removeItem(KEY);
  dispatchEvent(new Event("gridmesh:signed-out"));
}

function withKey(headers = {}) {
  const key = apiKey();
  return key ? { ...headers, Authorization: `Bearer ${key}` } : headers;
}

function refused(response) {
  if (response.status === 401) dispatchEvent(new Event("gridmesh:signed-out"));
}

// A raw response (e.g. a result's bytes) fetched with the key.
export async function fetchWithKey(path, init = {}) {
  const response = await fetch(path, { ...init, headers: withKey(init.headers) });
  refused(response);
  return response;
}

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.code;
    // google.rpc.BadRequest field violations: {"params.text": "params.text: ..."}
    this.fields = {};
    for (const detail of body?.details || []) {
      for (const v of detail.field_violations || []) this.fields[v.field] = v.description;
    }
  }
}

async function parse(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { message: text.trim() };
  }
}

export async function api(method, path, body) {
  const init = { method, headers: withKey() };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, { message: `the mesh did not answer (${e.message})` });
  }
  const data = await parse(response);
  refused(response);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const get = (path) => api("GET", path);

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v != null) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

// Reads a newline-delimited JSON stream (a gRPC server stream through the
// transcoder), calling onItem for each object, until it ends or `signal` aborts.
export async function stream(path, onItem, signal) {
  const response = await fetchWithKey(path, { signal });
  if (!response.ok) throw new ApiError(response.status, await parse(response));
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      if (line) onItem(JSON.parse(line));
    }
  }
}

// Keeps a stream open: reconnects with backoff when it breaks, calling
// onState("live" | "reconnecting") and onReconnect() so callers can reload
// what they may have missed. A stream of TaskEvents resumes after the last
// event's position (resume_after), so the Scheduler replays what changed
// meanwhile. Returns a function that stops it.
export function keepStreaming(path, onItem, { onState = () => {}, onReconnect = () => {} } = {}) {
  const controller = new AbortController();
  (async () => {
    let delay = 500;
    let first = true;
    let position = 0;
    while (!controller.signal.aborted) {
      try {
        if (!first) onReconnect();
        first = false;
        onState("live");
        const resumed = position ? `${path}${path.includes("?") ? "&" : "?"}resume_after=${position}` : path;
        await stream(resumed, (item) => {
          delay = 500;
          if (item.position) position = Math.max(position, Number(item.position));
          onItem(item);
        }, controller.signal);
      } catch (e) {
        if (controller.signal.aborted) return;
      }
      onState("reconnecting");
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 5000);
    }
  })();
  return () => controller.abort();
}
