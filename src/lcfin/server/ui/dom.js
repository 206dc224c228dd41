// Small DOM helpers. Text always goes in through text nodes (never HTML strings): the page's
// CSP enforces Trusted Types with no policy, so an HTML sink would throw.

export const $ = (id) => document.getElementById(id);

/** An element with attributes ("text" sets its text) and children (strings become text). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children);
  return node;
}

/** Fill a <dl> with [term, value] pairs. */
export function facts(dl, pairs) {
  dl.replaceChildren(
    ...pairs.flatMap(([term, value]) => [el("dt", { text: term }), el("dd", { text: value })]),
  );
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

const DASH = "—";

/** A number for people: fixed digits, thousands separators, a dash for nothing. */
export function num(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) return DASH;
  return Number(value).toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

export function seconds(value) {
  if (value === null || value === undefined) return DASH;
  return value < 1 ? `${num(value * 1000)} ms` : `${num(value, 2)} s`;
}

export function usd(value) {
  if (value === null || value === undefined) return DASH;
  if (value === 0) return "$0";
  return value < 0.01 ? `$${value.toPrecision(2)}` : `$${num(value, 2)}`;
}

export function duration(s) {
  if (s === null || s === undefined) return DASH;
  if (s < 60) return `${num(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}
