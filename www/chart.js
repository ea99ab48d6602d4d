// Small SVG line charts with axes, ticks and labels, for the training curves (loss per step,
// dev WER per epoch). Redrawn whole on each update; a few hundred points at most.
const NS = "http://www.w3.org/2000/svg";

// About `count` round tick values (1, 2 or 5 × 10^k apart) covering [lo, hi].
export function ticks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function el(name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

const label = (v) => (Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(1) : String(Number(v.toPrecision(4))));

/**
 * Draws `series` ([{ name, points: [[x, y], …], color, dashed?, markers? }]) into the <svg>
 * `svg`, with x and y axes, tick labels, axis titles and a legend.
 */
export function lineChart(svg, { title, xLabel, yLabel, series, integerX = false }) {
  const W = 480, H = 220, m = { l: 56, r: 12, t: 24, b: 40 };
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const pts = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  svg.append(el("text", { x: m.l, y: 15, class: "chart-title" }, title));
  if (pts.length === 0) return;
  let [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) [y0, y1] = [y0 - Math.abs(y0 || 1) * 0.05, y1 + Math.abs(y1 || 1) * 0.05];
  const pad = (y1 - y0) * 0.05;
  [y0, y1] = [y0 - pad, y1 + pad];
  const X = (x) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
  const Y = (y) => H - m.b - ((y - y0) / (y1 - y0)) * (H - m.t - m.b);
  const axes = el("g", { class: "chart-axes" });
  axes.append(el("line", { x1: m.l, y1: H - m.b, x2: W - m.r, y2: H - m.b }), el("line", { x1: m.l, y1: m.t, x2: m.l, y2: H - m.b }));
  for (const v of ticks(x0, x1, 6).filter((v) => !integerX || Number.isInteger(v))) {
    axes.append(el("line", { x1: X(v), y1: H - m.b, x2: X(v), y2: H - m.b + 4 }), el("text", { x: X(v), y: H - m.b + 15, "text-anchor": "middle" }, label(v)));
  }
  for (const v of ticks(y0, y1, 5)) {
    axes.append(el("line", { x1: m.l - 4, y1: Y(v), x2: m.l, y2: Y(v) }), el("line", { x1: m.l, y1: Y(v), x2: W - m.r, y2: Y(v), class: "chart-grid" }));
    axes.append(el("text", { x: m.l - 6, y: Y(v) + 4, "text-anchor": "end" }, label(v)));
  }
  axes.append(el("text", { x: (m.l + W - m.r) / 2, y: H - 6, "text-anchor": "middle", class: "chart-label" }, xLabel));
  axes.append(el("text", { x: 12, y: (m.t + H - m.b) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${(m.t + H - m.b) / 2})`, class: "chart-label" }, yLabel));
  svg.append(axes);
  series.forEach((s, i) => {
    const p = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    if (p.length === 0) return;
    const d = p.map(([x, y], j) => `${j ? "L" : "M"}${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join("");
    svg.append(el("path", { d, fill: "none", stroke: s.color, "stroke-width": 1.5, ...(s.dashed ? { "stroke-dasharray": "5 4" } : {}) }));
    if (s.markers) for (const [x, y] of p) svg.append(el("circle", { cx: X(x), cy: Y(y), r: 3, fill: s.color }));
    svg.append(el("text", { x: W - m.r - 4, y: m.t + 12 + 14 * i, "text-anchor": "end", fill: s.color, class: "chart-legend" }, s.name));
  });
}
