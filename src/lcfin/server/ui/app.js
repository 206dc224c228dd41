// The console's entry point: tabs, the key dialog, and the refresh loop.

import { ApiError, json, keys, metricsText } from "./api.js";
import { refreshModels, setupChat } from "./chat.js";
import { refreshDashboard, setupDashboard, stateText } from "./dashboard.js";
import { $ } from "./dom.js";

const REFRESH_MS = 5000;
let timer = null;
let inflight = null;
let again = false;

function showTab(name) {
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    const selected = tab.getAttribute("aria-controls") === name;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    $(tab.getAttribute("aria-controls")).hidden = !selected;
  }
  if (name === "dashboard") refresh();
}

function setupTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => showTab(tab.getAttribute("aria-controls")));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      const next = tabs[(i + step + tabs.length) % tabs.length];
      next.focus();
      showTab(next.getAttribute("aria-controls"));
    });
  });
}

function openKeys(reason) {
  $("key-reason").textContent = reason || "";
  if ($("key-dialog").open) return; // keep what the user is typing
  $("api-key").value = keys.api;
  $("admin-key").value = keys.admin;
  $("key-dialog").showModal();
  $("api-key").focus();
}

function setupKeys() {
  $("keys-open").addEventListener("click", () => openKeys(""));
  $("key-close").addEventListener("click", () => $("key-dialog").close());
  $("key-forget").addEventListener("click", () => {
    keys.forget();
    $("api-key").value = "";
    $("admin-key").value = "";
    connect();
  });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault(); // never a form submission: keys must not reach a URL
    keys.save($("api-key").value.trim(), $("admin-key").value.trim());
    $("key-reason").textContent = "Checking…";
    connect();
  });
  window.addEventListener("lcfin:unauthorized", (event) => openKeys(event.detail));
}

async function isAdmin() {
  try {
    await metricsText();
    return true;
  } catch (error) {
    if (error instanceof ApiError) return false;
    throw error; // unreachable server: connect() says so
  }
}

/** Check the keys against the API and fill the model picker; the dialog closes on success. */
async function connect() {
  try {
    await refreshModels(await isAdmin());
    if ($("key-dialog").open) $("key-dialog").close();
  } catch (error) {
    if (!(error instanceof ApiError)) {
      $("model-note").textContent = `Cannot reach the server: ${error.message}`;
    } else if (!error.unauthorized) {
      $("model-note").textContent = error.message;
    }
  }
  refresh(); // /health answers without a key: the header shows the state either way
}

/** Refresh the header (and the dashboard when shown); calls during a refresh queue one more. */
function refresh() {
  if (inflight) {
    again = true;
    return inflight;
  }
  inflight = (async () => {
    do {
      again = false;
      await refreshOnce();
    } while (again);
  })().finally(() => {
    inflight = null;
  });
  return inflight;
}

async function refreshOnce() {
  clearTimeout(timer);
  try {
    const health = $("dashboard").hidden ? await json("health") : await refreshDashboard();
    $("server-state").textContent = stateText(health);
    $("server-state").dataset.status = health.status;
  } catch (error) {
    $("server-state").textContent = `unreachable: ${error.message}`;
    $("server-state").dataset.status = "unreachable";
  } finally {
    if ($("dashboard").hidden || $("auto-refresh").checked) timer = setTimeout(refresh, REFRESH_MS);
  }
}

async function switched() {
  await connect();
}

setupTabs();
setupKeys();
setupChat({ onSwitched: switched });
setupDashboard({ onSwitched: switched, refresh });
$("auto-refresh").addEventListener("change", refresh);
connect();
