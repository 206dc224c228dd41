// A model switch (admin): POST /load-model, then follow /loading-status until the new model
// serves or the switch fails with the server's error.

import { ApiError, json } from "./api.js";
import { num, sleep } from "./dom.js";

const POLL_MS = 500;

export class SwitchFailed extends Error {}

/**
 * Switch the server to `name`; `report(text)` hears each step. Resolves with the final
 * /loading-status once `name` serves; rejects with SwitchFailed (or ApiError when the keys in
 * use may not switch).
 */
export async function switchModel(name, report) {
  report(`Asking the server to load ${name}…`);
  const started = await requestSwitch(name);
  report(`${started.message || `Loading ${name}`}…`);
  for (let polls = 1, seenLoading = false; ; polls += 1) {
    await sleep(POLL_MS);
    const status = await json("loading-status");
    seenLoading ||= status.status === "loading";
    if (status.status === "failed") {
      throw new SwitchFailed(`Switch to ${name} failed: ${status.error || "unknown error"}${still(status)}`);
    }
    if (status.status === "ready" && status.current_model === name) {
      report(`${name} serves now (loaded in ${num(status.load_time_seconds, 1)} s).`);
      return status;
    }
    if (status.status !== "loading" && (seenLoading || polls > 4)) {
      throw new SwitchFailed(`Switch to ${name} ended with ${status.current_model} serving`);
    }
    const elapsed = status.elapsed_seconds ?? 0;
    report(`Loading ${status.model || name}… ${num(elapsed, 1)} s (${status.status})`);
  }
}

/**
 * POST /load-model. A switch the server refuses before loading anything (a model that cannot
 * fit answers 422 at once) fails as one that fails later does: its reason, and what still serves.
 */
async function requestSwitch(name) {
  try {
    return await json("load-model", { method: "POST", body: { model_name: name }, admin: true });
  } catch (error) {
    if (!(error instanceof ApiError) || error.unauthorized || error.forbidden) throw error;
    const status = await json("loading-status").catch(() => ({}));
    throw new SwitchFailed(`Switch to ${name} failed: ${error.message}${still(status)}`);
  }
}

function still(status) {
  return status.current_model ? `; ${status.current_model} still serves` : "";
}
