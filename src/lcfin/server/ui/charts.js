// Charts drawn as inline SVG built element by element (no library, no HTML strings). Colours
// come from classes in console.css, so nothing needs a style attribute.

const SVG = "http://www.w3.org/2000/svg";
const W = 600;
const H = 180;
const PAD = { left: 54, right: 12, top: 12, bottom: 26 };

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  node.append(...children);
  return node;
}

function title(text) {
  return svg("title", {}, text);
}

function frame(label) {
  return svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, class: "plot" });
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 2.5, 5, 10].map((m) => m * step).find((m) => m >= value);
}

function axes(root, yMax, format, xLabels) {
  const bottom = H - PAD.bottom;
  for (const frac of [0, 0.5, 1]) {
    const y = bottom - frac * (bottom - PAD.top);
    root.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: "gridline" }));
    root.append(svg("text", { x: PAD.left - 6, y: y + 4, class: "tick end" }, format(yMax * frac)));
  }
  xLabels.forEach(([x, text, anchor]) => {
    root.append(svg("text", { x, y: H - 8, class: `tick ${anchor}` }, text));
  });
}

function empty(container, label, message) {
  const root = frame(`${label}: ${message}`);
  root.append(svg("text", { x: W / 2, y: H / 2, class: "tick middle empty" }, message));
  container.replaceChildren(root);
}

function clock(t) {
  return new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/**
 * Line chart of time series over [since, until] (Unix seconds). `series` is a list of
 * {name, points: [[t, value or null], ...]}; a null breaks the line.
 */
export function lineChart(container, { label, series, since, until, format }) {
  const values = series.flatMap((s) => s.points.map((p) => p[1]).filter((v) => v !== null));
  if (!values.length) return empty(container, label, "no requests in this window");
  const yMax = niceMax(Math.max(...values));
  const x = (t) => PAD.left + ((t - since) / Math.max(until - since, 1)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / yMax) * (H - PAD.top - PAD.bottom);
  const peak = Math.max(...values);
  const root = frame(`${label}: peak ${format(peak)}`);
  axes(root, yMax, format, [[PAD.left, clock(since), "start"], [W - PAD.right, clock(until), "end"]]);
  series.forEach((s, i) => {
    let d = "";
    let pen = "M";
    for (const [t, v] of s.points) {
      if (v === null) { pen = "M"; continue; }
      d += `${pen}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      pen = "L";
    }
    if (d) root.append(svg("path", { d, class: `line s${i}` }, title(s.name)));
    s.points.filter((p) => p[1] !== null).forEach(([t, v]) => {
      root.append(svg("circle", { cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 2.5, class: `dot s${i}` },
        title(`${s.name} ${clock(t)}: ${format(v)}`)));
    });
  });
  if (series.length > 1) {
    series.forEach((s, i) => {
      const lx = PAD.left + 8 + i * 130;
      root.append(svg("rect", { x: lx, y: PAD.top, width: 10, height: 10, class: `key s${i}` }));
      root.append(svg("text", { x: lx + 14, y: PAD.top + 9, class: "tick start" }, s.name));
    });
  }
  container.replaceChildren(root);
}

/** Horizontal bar chart of [label, value] pairs, largest first. */
export function barChart(container, { label, items, format, none }) {
  const rows = items.filter(([, v]) => v !== null && v !== undefined).sort((a, b) => b[1] - a[1]).slice(0, 8);
  if (!rows.length) return empty(container, label, none);
  const max = Math.max(...rows.map((r) => r[1])) || 1;
  const rowH = (H - PAD.top - 8) / Math.max(rows.length, 3);
  const left = 150;
  const root = frame(`${label}: ${rows.map(([k, v]) => `${k} ${format(v)}`).join(", ")}`);
  rows.forEach(([name, value], i) => {
    const top = PAD.top + i * rowH;
    const width = Math.max((value / max) * (W - left - 90), value > 0 ? 2 : 0);
    const short = name.length > 22 ? `${name.slice(0, 21)}…` : name;
    root.append(svg("text", { x: left - 8, y: top + rowH / 2 + 4, class: "tick end" }, short, title(name)));
    root.append(svg("rect", { x: left, y: top + 3, width: width.toFixed(1), height: Math.max(rowH - 6, 4), class: `bar s${i % 4}` },
      title(`${name}: ${format(value)}`)));
    root.append(svg("text", { x: left + width + 6, y: top + rowH / 2 + 4, class: "tick start" }, format(value)));
  });
  container.replaceChildren(root);
}
