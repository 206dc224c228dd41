// The chat playground: streamed answers rendered as they arrive, Stop aborts the request (the
// server sees the connection close and frees the batch slot). The conversation is this page's
// memory only.

import { ApiError, call, events, json } from "./api.js";
import { $, el, num, usd } from "./dom.js";
import { switchModel } from "./switch.js";

const conversation = [];
let controller = null;
let loadedModel = null;

function settings() {
  const maxTokens = Number.parseInt($("max-tokens").value, 10);
  return {
    model: $("model").value || loadedModel,
    temperature: Number.parseFloat($("temperature").value),
    max_tokens: Number.isFinite(maxTokens) && maxTokens > 0 ? maxTokens : undefined,
    json: $("json-mode").checked,
    system: $("system").value.trim(),
  };
}

function requestBody(options) {
  const messages = options.system ? [{ role: "system", content: options.system }] : [];
  const body = {
    model: options.model,
    messages: [...messages, ...conversation],
    temperature: options.temperature,
    max_tokens: options.max_tokens,
    stream: true,
    stream_options: { include_usage: true },
  };
  if (options.json) body.response_format = { type: "json_object" };
  return body;
}

function bubble(role, text) {
  const content = el("div", { class: "content" }, text);
  const item = el("li", { class: `message ${role}`, "data-state": "done" },
    el("span", { class: "role", text: role === "user" ? "You" : "Assistant" }), content);
  $("messages").append(item);
  item.scrollIntoView({ block: "end" });
  return { item, content };
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

/** The figures under an answer: tokens, time to first token, speed and cost. */
function meta(answer, usage, timing) {
  const parts = [];
  if (usage) {
    parts.push(`${num(usage.prompt_tokens)} prompt + ${num(usage.completion_tokens)} completion tokens`);
  }
  if (timing.ttft !== null) parts.push(`TTFT ${num(timing.ttft)} ms`);
  if (usage && timing.total > 0) {
    parts.push(`${num(usage.completion_tokens / (timing.total / 1000), 1)} tokens/s`);
  }
  if (usage && usage.cost_usd !== undefined) parts.push(`cost ${usd(usage.cost_usd)}`);
  if (!usage) parts.push(`${num(timing.total)} ms, no usage (stopped)`);
  answer.item.append(el("p", { class: "meta", text: parts.join(" · ") }));
}

async function stream(answer, body, signal) {
  const started = performance.now();
  const timing = { ttft: null, total: 0 };
  const text = document.createTextNode("");
  answer.content.append(text);
  let usage = null;
  const response = await call("v1/chat/completions", { method: "POST", body, signal });
  for await (const chunk of events(response)) {
    if (chunk.error) throw new ApiError(500, chunk.error.message, chunk.error.code);
    const delta = chunk.choices?.[0]?.delta?.content;
    if (delta) {
      timing.ttft ??= performance.now() - started;
      text.appendData(delta);
    }
    if (chunk.usage) usage = chunk.usage;
  }
  timing.total = performance.now() - started;
  return { text: text.data, usage, timing };
}

async function send(question) {
  const options = settings();
  conversation.push({ role: "user", content: question });
  bubble("user", question);
  const answer = bubble("assistant", "");
  answer.item.dataset.state = "streaming";
  controller = new AbortController();
  setBusy(true);
  const started = performance.now();
  try {
    const result = await stream(answer, requestBody(options), controller.signal);
    conversation.push({ role: "assistant", content: result.text });
    answer.item.dataset.state = "done";
    meta(answer, result.usage, result.timing);
  } catch (error) {
    if (error.name === "AbortError") {
      const partial = answer.content.textContent;
      if (partial) conversation.push({ role: "assistant", content: partial });
      answer.item.dataset.state = "stopped";
      meta(answer, null, { ttft: null, total: performance.now() - started });
    } else {
      conversation.pop(); // the question was not answered: it leaves the history
      answer.item.dataset.state = "error";
      answer.item.classList.add("error");
      answer.content.append(el("span", { role: "alert", text: error.message }));
    }
  } finally {
    controller = null;
    setBusy(false);
  }
}

/** Fill the model picker: the loaded model, plus the catalog when `admin`. */
export async function refreshModels(admin) {
  const list = await json("v1/models");
  const loaded = list.data.find((card) => card.loaded);
  loadedModel = loaded ? loaded.id : null;
  const picker = $("model");
  const chosen = picker.value;
  const options = [el("option", { value: loadedModel || "", text: loadedModel ? `${loadedModel} (loaded)` : "no model loaded" })];
  if (admin) {
    const others = list.data.filter((card) => !card.loaded);
    const group = el("optgroup", { label: "Catalog: switch the server first (admin)" });
    group.append(...others.map((card) => el("option", { value: card.id, text: card.id })));
    if (others.length) options.push(group);
  }
  picker.replaceChildren(...options);
  if ([...picker.options].some((o) => o.value === chosen)) picker.value = chosen;
  pickerChanged();
  return loadedModel;
}

function pickerChanged() {
  const other = $("model").value && $("model").value !== loadedModel;
  $("model-switch").hidden = !other;
  $("model-note").textContent = other ? `${$("model").value} is not loaded; switch the server to chat with it.` : "";
}

async function switchFromPicker(onSwitched) {
  const name = $("model").value;
  $("model-switch").disabled = true;
  let last = "";
  try {
    await switchModel(name, (text) => { $("model-note").textContent = last = text; });
    await onSwitched(); // refills the picker, which clears the note
    $("model-note").textContent = last;
  } catch (error) {
    $("model-note").textContent = error.message;
  } finally {
    $("model-switch").disabled = false;
  }
}

export function setupChat({ onSwitched }) {
  $("temperature").addEventListener("input", () => {
    $("temperature-value").value = $("temperature").value;
  });
  $("chat-settings").addEventListener("submit", (event) => event.preventDefault());
  $("model").addEventListener("change", pickerChanged);
  $("model-switch").addEventListener("click", () => switchFromPicker(onSwitched));
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const question = $("message").value.trim();
    if (!question || controller) return;
    $("message").value = "";
    send(question);
  });
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => controller?.abort());
  $("new-chat").addEventListener("click", () => {
    controller?.abort();
    conversation.length = 0;
    $("messages").replaceChildren();
    $("message").focus();
  });
}
