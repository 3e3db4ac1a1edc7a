// The console's entry point: the API key form, the views (by URL hash) and
// the routes the gateway serves.

import { initAccountView } from "./account-view.js";
import { initAdminView } from "./admin-view.js";
import { api, credentials, explain } from "./api.js";
import { initMicView } from "./mic-view.js";
import { initTtsView } from "./tts-view.js";
import { $, banner, clearBanner, shortKey, status } from "./ui.js";

const VIEWS = ["mic", "tts", "account", "admin"];

const account = initAccountView();
const admin = initAdminView({ useKey: (key) => useKey(key, "account") });
initMicView({ onStopped: () => refreshBalance() });
initTtsView({ onSpoken: () => refreshBalance() });

// After spending: the header's balance, and the account view if it is open.
function refreshBalance() {
  checkKey();
  if (document.body.dataset.view === "account") account.refresh();
}

function show(view) {
  const name = VIEWS.includes(view) ? view : "mic";
  for (const v of VIEWS) {
    $(`#view-${v}`).hidden = v !== name;
    $(`nav a[href="#${v}"]`).classList.toggle("current", v === name);
  }
  document.body.dataset.view = name;
  if (name === "account") account.refresh();
  if (name === "admin") admin.refresh();
}

// The header's key line; ``fresh``: a key was just entered, so earlier errors go.
async function checkKey(fresh = false) {
  const line = $("#key-status");
  if (!credentials.apiKey) {
    status(line, "none", "No key entered");
    return;
  }
  status(line, "checking", "Checking…");
  try {
    const b = await api.balance();
    status(line, "ok", `${shortKey(credentials.apiKey)} · ${b.name} · ${b.balance_omcu} OMCU`);
    if (fresh) clearBanner("error");
  } catch (err) {
    status(line, "bad", err.status === 401 ? "Key refused" : "Could not check the key");
    banner("error", explain(err));
  }
}

function useKey(key, view) {
  credentials.apiKey = key;
  checkKey(true);
  if (view) location.hash = `#${view}`;
  else if (document.body.dataset.view === "account") account.refresh();
}

$("#key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const key = $("#api-key").value.trim();
  $("#api-key").value = "";
  if (!key) {
    banner("error", "Paste an API key (sk_…) to use the console.");
    return;
  }
  useKey(key);
});
$("#key-forget").addEventListener("click", () => {
  credentials.apiKey = "";
  checkKey();
  if (document.body.dataset.view === "account") account.refresh();
});
$("#banner-close").addEventListener("click", () => clearBanner());

// The routes this gateway serves, from /healthz (kept as they are if it fails).
async function loadRoutes() {
  const health = await api.health();
  const line = $("#gateway-status");
  if (!health) {
    status(line, "down", "Gateway unreachable");
    return;
  }
  status(line, health.status === "ok" ? "ok" : "loading", health.status === "ok" ? "Gateway ready" : "Engines loading…");
  if (health.status !== "ok") {
    setTimeout(loadRoutes, 2000);
    return;
  }
  for (const [sel, routes] of [
    ["#asr-route", Object.keys(health.asr || {})],
    ["#tts-route", Object.keys(health.tts || {})],
  ]) {
    const select = $(sel);
    const current = select.value;
    if (!routes.length) continue;
    select.replaceChildren(
      ...routes.map((r) => {
        const opt = document.createElement("option");
        opt.value = r;
        opt.textContent = `${r} (${health[sel === "#asr-route" ? "asr" : "tts"][r].join(" → ")})`;
        return opt;
      }),
    );
    select.value = routes.includes(current) ? current : routes.includes("local") ? "local" : routes[0];
  }
}

window.addEventListener("hashchange", () => show(location.hash.slice(1)));
show(location.hash.slice(1));
checkKey();
loadRoutes();
