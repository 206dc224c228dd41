// The operations dashboard: server state, switching (admin), the planner's numbers beside the
// engine's, live gauges from /metrics and charts over /analytics/* (admin key).

import { ApiError, json, metricsText } from "./api.js";
import { barChart, lineChart } from "./charts.js";
import { $, duration, el, facts, num, seconds, usd } from "./dom.js";
import { switchModel } from "./switch.js";

/** Chart bucket per window: about 30 to 50 points each. */
const BUCKETS = { "5m": 10, "15m": 30, "1h": 60, "6h": 300, "24h": 1800, "7d": 21600 };
// [label, names in the planner's figures, names in the engine's figures, digits]. The engine's
// figures are wherever the server reports them: vLLM's KvCapacity (`/models` `kv_cache`:
// engine_tokens, engine_max_concurrency, planned_*) or any object with the plain names.
const QUANTITIES = [
  ["KV cache tokens", ["planned_tokens", "kv_cache_tokens"], ["engine_tokens", "kv_cache_tokens", "num_kv_cache_tokens"], 0],
  ["Max concurrency", ["planned_max_concurrency", "max_concurrency"], ["engine_max_concurrency", "max_concurrency"], 2],
  ["Max model length", ["max_model_len"], ["max_model_len"], 0],
  ["Max sequences", ["max_num_seqs"], ["max_num_seqs"], 0],
  ["KV cache (GiB)", ["kv_cache_gib"], ["kv_cache_gib"], 2],
];
const ENGINE_MARKS = new Set(["engine_tokens", "engine_max_concurrency", "kv_cache_tokens", "num_kv_cache_tokens", "max_concurrency"]);

/** The header's summary; without a key, /health gives only the status (keys on). */
export function stateText(health) {
  const model = health.current_model ? `${health.current_model} · ` : "";
  return `${model}${health.status}${health.loading_model ? ` (loading ${health.loading_model})` : ""}`;
}

function showStatus(health) {
  facts($("status"), [
    ["State", health.status],
    ["Model", health.current_model || "none"],
    ["Backend", health.backend || "—"],
    ["Profile", health.profile || "—"],
    ["GPU", health.gpu_available ? "yes" : "no"],
    ["Loading", health.loading_model || "—"],
    ["Uptime", duration(health.uptime)],
    ["Last error", health.error || "—"],
  ]);
}

/** The first object in `doc` (depth first, skipping keys that match `skip`) with engine figures. */
function findEngine(doc, skip) {
  const stack = [doc];
  while (stack.length) {
    const node = stack.pop();
    if (!node || typeof node !== "object") continue;
    if (Object.keys(node).some((k) => ENGINE_MARKS.has(k))) return node;
    for (const [key, value] of Object.entries(node)) {
      if (!skip.test(key) && value && typeof value === "object") stack.push(value);
    }
  }
  return null;
}

/** The first of `sources` that has one of `names`, and its value (null when none has). */
function pick(sources, names) {
  for (const source of sources) {
    const name = source && names.find((n) => source[n] !== undefined && source[n] !== null);
    if (name) return source[name];
  }
  return null;
}

/**
 * Rows of [quantity, planner, engine]: the planner's figures for the load (`kv_cache.planned_*`,
 * else `/models` `plan`) beside the engine's own wherever the server puts them; a dash where a
 * figure is absent.
 */
export function memoryRows(health, models) {
  const reported = models?.kv_cache ?? health?.kv_cache ?? null;
  const planners = [reported, models?.plan ?? null];
  const engine = findEngine({ health, models }, /^plan/i);
  return QUANTITIES.map(([label, planned, own, digits]) => [
    label,
    num(pick(planners, planned), digits),
    num(pick([engine], own), digits),
  ]);
}

function showMemory(health, models) {
  const body = $("memory").tBodies[0];
  body.replaceChildren(...memoryRows(health, models).map(([label, planned, engine]) =>
    el("tr", {}, el("th", { scope: "row", text: label }), el("td", { text: planned }), el("td", { text: engine }))));
}

function showSwitchChoices(models) {
  const picker = $("switch-model");
  const chosen = picker.value;
  const names = Object.keys(models.available_models || {}).filter((n) => n !== models.current_model);
  picker.replaceChildren(...names.map((n) => el("option", { value: n, text: n })));
  if (names.includes(chosen)) picker.value = chosen;
}

function gauge(text, name) {
  const pattern = new RegExp(`^lcfin:${name}(?:\\{[^}]*\\})?\\s+(\\S+)$`, "gm");
  const values = [...text.matchAll(pattern)].map((m) => Number(m[1]));
  return values.length ? values.reduce((a, b) => a + b, 0) : null;
}

async function showEngine() {
  try {
    const text = await metricsText();
    const kv = gauge(text, "kv_cache_usage_perc");
    facts($("engine"), [
      ["Running", num(gauge(text, "num_requests_running"))],
      ["Waiting", num(gauge(text, "num_requests_waiting"))],
      ["KV cache in use", kv === null ? "—" : `${num(kv * 100, 1)} %`],
    ]);
    return true;
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    facts($("engine"), [["Gauges", `need the admin key (${error.message})`]]);
    return false;
  }
}

function tiles(pairs) {
  $("tiles").replaceChildren(...pairs.flatMap(([key, term, value]) => [
    el("dt", { text: term }), el("dd", { "data-tile": key, text: value })]));
}

function buckets(usage, step) {
  const rows = new Map((usage.by_bucket || usage.by_hour || []).map((b) => [b.start, b]));
  const first = Math.floor(usage.query.since / step) * step;
  const out = [];
  for (let t = first; t <= usage.query.until; t += step) out.push([t, rows.get(t) || null]);
  return out;
}

function charts(perf, usage, costs, step) {
  const filled = buckets(usage, step);
  const { since, until } = usage.query;
  const rate = (field) => filled.map(([t, b]) => [t + step / 2, b ? b[field] / step : 0]);
  const pct = (field) => filled.map(([t, b]) => [t + step / 2, b ? b[field] : null]);
  lineChart($("chart-rps"), { label: "Requests per second", series: [{ name: "requests/s", points: rate("requests") }], since, until, format: (v) => num(v, 2) });
  lineChart($("chart-tps"), { label: "Completion tokens per second", series: [{ name: "tokens/s", points: rate("completion_tokens") }], since, until, format: (v) => num(v, 1) });
  lineChart($("chart-latency"), {
    label: "Latency and TTFT percentiles",
    series: [["latency p50", "latency_p50_s"], ["latency p95", "latency_p95_s"], ["TTFT p50", "ttft_p50_s"], ["TTFT p95", "ttft_p95_s"]]
      .map(([name, field]) => ({ name, points: pct(field) })),
    since, until, format: (v) => num(v, 2),
  });
  barChart($("chart-errors"), { label: "Errors by code", items: Object.entries(perf.error_codes || {}), format: (v) => num(v), none: "no errors in this window" });
  barChart($("chart-cost-model"), { label: "Cost by model", items: Object.entries(costs.by_model || {}).map(([k, c]) => [k, c.total_cost_usd]), format: usd, none: "no cost recorded" });
  barChart($("chart-cost-key"), { label: "Cost by API key id", items: Object.entries(costs.by_key || {}).map(([k, c]) => [k, c.total_cost_usd]), format: usd, none: "no cost recorded" });
}

async function showAnalytics() {
  const span = $("window").value;
  const step = BUCKETS[span] || 60;
  const query = `window=${encodeURIComponent(span)}`;
  const [perf, usage, costs] = await Promise.all([
    json(`analytics/performance?${query}`, { admin: true }),
    json(`analytics/usage?${query}&bucket=${step}s`, { admin: true }),
    json(`analytics/costs?${query}`, { admin: true }),
  ]);
  tiles([
    ["requests", "Requests", num(perf.requests)],
    ["errors", "Errors", num(perf.errors)],
    ["aborted", "Stopped / aborted", num(perf.aborted)],
    ["rps", "Requests/s (active)", num(perf.throughput.requests_per_s, 2)],
    ["tps", "Tokens/s (active)", num(perf.throughput.completion_tokens_per_s, 1)],
    ["latency", "Latency p50 / p95", `${seconds(perf.latency_s.p50)} / ${seconds(perf.latency_s.p95)}`],
    ["ttft", "TTFT p50 / p95", `${seconds(perf.time_to_first_token_s.p50)} / ${seconds(perf.time_to_first_token_s.p95)}`],
    ["cost", "Total cost", usd(costs.total_cost_usd)],
  ]);
  charts(perf, usage, costs, step);
}

/** One refresh of everything the dashboard shows (API errors are shown, not thrown). */
export async function refreshDashboard() {
  const note = $("analytics-note");
  const [health, models] = await Promise.all([json("health"), json("models", { prompt: false }).catch(() => null)]);
  showStatus(health);
  showMemory(health, models);
  if (models) showSwitchChoices(models);
  const admin = await showEngine();
  if (!admin) {
    note.textContent = "Analytics need the admin key: open “API keys”.";
    return health;
  }
  try {
    await showAnalytics();
    note.textContent = "";
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    note.textContent = error.status === 404 ? `Analytics unavailable: ${error.message}` : error.message;
  }
  $("refreshed").textContent = `updated ${new Date().toLocaleTimeString()}`;
  return health;
}

export function setupDashboard({ onSwitched, refresh }) {
  $("switch-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = $("switch-model").value;
    if (!name) return;
    const status = $("switch-status");
    status.classList.remove("error");
    $("switch").disabled = true;
    try {
      await switchModel(name, (text) => { status.textContent = text; });
      await onSwitched();
    } catch (error) {
      status.textContent = error.message;
      status.classList.add("error");
    } finally {
      $("switch").disabled = false;
      refresh(); // the state, the model and the last error changed either way
    }
  });
  $("analytics-form").addEventListener("submit", (event) => event.preventDefault());
  $("window").addEventListener("change", refresh);
  $("refresh").addEventListener("click", refresh);
}
