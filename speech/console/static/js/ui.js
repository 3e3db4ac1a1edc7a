// Small DOM helpers shared by the views.

export const $ = (selector, root = document) => root.querySelector(selector);

// el("td", {class: "num", dataset: {day: "2026-01-02"}}, "text", childNode)
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.flat().filter((c) => c !== undefined && c !== null));
  return node;
}

// The page-wide message under the header: kind "error" | "warn" | "info".
export function banner(kind, text) {
  const box = $("#banner");
  box.className = `banner ${kind}`;
  $("#banner-text").textContent = text;
  box.dataset.kind = kind;
  box.hidden = false;
}

export function clearBanner(kind) {
  const box = $("#banner");
  if (kind && box.dataset.kind !== kind) return;
  box.hidden = true;
  box.dataset.kind = "";
  $("#banner-text").textContent = "";
}

// A status line of one view, with a state for styling (and for tests).
export function status(node, state, text) {
  node.dataset.state = state;
  node.textContent = text;
}

export function formatOmcu(value) {
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  return n.toLocaleString("en-US", { maximumFractionDigits: 6 });
}

export function formatNumber(n, digits = 2) {
  return Number(n).toLocaleString("en-US", { maximumFractionDigits: digits });
}

export function formatTime(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

export function shortKey(key) {
  // sk_<key id>_<secret>: show the public key id only.
  const parts = key.split("_");
  return parts.length >= 3 ? `${parts[0]}_${parts[1]}_…` : "…";
}
