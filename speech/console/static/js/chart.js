// A small hand-written SVG bar chart: one bar per day, series stacked.
// Each day is a <g class="day" data-day data-total>, each bar a <rect> with
// data-series and data-value, and a <title> for the tooltip.

const NS = "http://www.w3.org/2000/svg";
const W = 360;
const H = 170;
const M = { top: 10, right: 6, bottom: 20, left: 46 };

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  node.append(...children);
  return node;
}

// The smallest 1, 2 or 5 x 10^k at or above v.
function niceCeil(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// days: ["YYYY-MM-DD", ...]; series: [{name, cls, values: [number per day]}];
// format(number) -> label text.
export function barChart({ label, days, series, format }) {
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;
  const totals = days.map((_, i) => series.reduce((s, ser) => s + (ser.values[i] || 0), 0));
  const top = niceCeil(Math.max(0, ...totals));
  const y = (v) => M.top + plotH - (v / top) * plotH;
  const root = svg("svg", {
    viewBox: `0 0 ${W} ${H}`,
    class: "chart",
    role: "img",
    "aria-label": label,
    "data-max": top,
  });
  let previous = null;
  for (const frac of [0, 0.5, 1]) {
    const gy = y(top * frac);
    const tick = format(top * frac);
    root.append(svg("line", { x1: M.left, x2: W - M.right, y1: gy, y2: gy, class: "grid" }));
    if (tick !== previous) {
      root.append(svg("text", { x: M.left - 6, y: gy + 4, class: "axis", "text-anchor": "end" }, tick));
    }
    previous = tick;
  }
  const slot = plotW / Math.max(1, days.length);
  const barW = Math.max(1, Math.min(22, slot * 0.72));
  days.forEach((day, i) => {
    const g = svg("g", { class: "day", "data-day": day, "data-total": totals[i] });
    const x = M.left + i * slot + (slot - barW) / 2;
    let base = 0;
    for (const ser of series) {
      const v = ser.values[i] || 0;
      if (v <= 0) continue;
      const rect = svg("rect", {
        x: x.toFixed(2),
        y: y(base + v).toFixed(2),
        width: barW.toFixed(2),
        height: Math.max(1, y(base) - y(base + v)).toFixed(2),
        class: `bar ${ser.cls}`,
        "data-series": ser.name,
        "data-value": v,
      });
      rect.append(svg("title", {}, `${day} ${ser.name}: ${format(v)}`));
      g.append(rect);
      base += v;
    }
    root.append(g);
  });
  const labelAt = new Set([0, Math.floor((days.length - 1) / 2), days.length - 1]);
  for (const i of labelAt) {
    if (!days[i]) continue;
    const x = M.left + i * slot + slot / 2;
    root.append(svg("text", { x, y: H - 6, class: "axis", "text-anchor": "middle" }, days[i].slice(5)));
  }
  if (totals.every((t) => t === 0)) {
    root.append(
      svg("text", { x: M.left + plotW / 2, y: M.top + plotH / 2, class: "empty", "text-anchor": "middle" }, "no usage"),
    );
  }
  return root;
}

// Every day from first to last inclusive ("YYYY-MM-DD", UTC).
export function dayRange(first, last) {
  const out = [];
  const d = new Date(`${first}T00:00:00Z`);
  const end = new Date(`${last}T00:00:00Z`);
  while (d <= end && out.length < 400) {
    out.push(d.toISOString().slice(0, 10));
    d.setUTCDate(d.getUTCDate() + 1);
  }
  return out;
}
