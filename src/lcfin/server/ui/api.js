// The API, as any client calls it: same-origin fetches with JSON bodies and a Bearer key.
// Keys live in sessionStorage (this tab only) and travel only in the Authorization header.

const API_KEY = "lcfin.apiKey";
const ADMIN_KEY = "lcfin.adminKey";
// The console is served at <root>/ui/, so the API root is one level up (a proxy's path prefix
// is kept).
const ROOT = new URL("../", window.location.href);

export const keys = {
  get api() {
    return sessionStorage.getItem(API_KEY) || "";
  },
  get admin() {
    return sessionStorage.getItem(ADMIN_KEY) || "";
  },
  save(api, admin) {
    for (const [name, value] of [[API_KEY, api], [ADMIN_KEY, admin]]) {
      if (value) sessionStorage.setItem(name, value);
      else sessionStorage.removeItem(name);
    }
  },
  forget() {
    this.save("", "");
  },
};

/** An error answer of the API: its status and the OpenAI envelope's message and code. */
export class ApiError extends Error {
  constructor(status, message, code = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }

  get unauthorized() {
    return this.status === 401;
  }

  get forbidden() {
    return this.status === 403;
  }
}

async function errorOf(response) {
  let error = {};
  try {
    error = (await response.json()).error || {};
  } catch {
    // not JSON (a proxy's page): the status says enough
  }
  const message = error.message || `${response.status} ${response.statusText || "error"}`;
  return new ApiError(response.status, message, error.code || null);
}

/**
 * Call the API; throws ApiError on an error status. `admin` prefers the admin key; a 401 on
 * any other call asks for a key, unless `prompt` is false (background refreshes).
 */
export async function call(path, { method = "GET", body, admin = false, signal, prompt = true } = {}) {
  const headers = { Accept: "application/json" };
  const key = admin ? keys.admin || keys.api : keys.api || keys.admin;
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(new URL(path, ROOT), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    cache: "no-store",
    credentials: "omit",
    redirect: "error",
  });
  if (!response.ok) {
    const error = await errorOf(response);
    if (error.unauthorized && !admin && prompt) {
      window.dispatchEvent(new CustomEvent("lcfin:unauthorized", { detail: error.message }));
    }
    throw error;
  }
  return response;
}

export async function json(path, options) {
  return (await call(path, options)).json();
}

/** The `data:` payloads of a server-sent event stream, parsed, until `[DONE]`. */
export async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true }).replaceAll("\r\n", "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const lines = buffer.slice(0, end).split("\n");
        buffer = buffer.slice(end + 2);
        const data = lines
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).trimStart())
          .join("\n");
        if (data === "[DONE]") return;
        if (data) yield JSON.parse(data);
      }
    }
  } finally {
    reader.releaseLock();
  }
}

/** Whether the keys in use open the admin routes (GET /metrics answers 200). */
export async function metricsText() {
  return (await call("metrics", { admin: true })).text();
}
