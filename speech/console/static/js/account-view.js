// The account view: the key's balance, usage per day as charts, and the most
// recent usage records.
//
// Per-day totals come from GET /api/core/account/usage/daily, which sums in
// the ledger, so the charts stay exact for accounts with many records. Kinds
// this page does not know (the gateway may bill new kinds) are left out of
// the minutes and characters charts and shown as "other" in the OMCU chart.

import { api, credentials, explain } from "./api.js";
import { barChart, dayRange } from "./chart.js";
import { $, banner, el, formatNumber, formatOmcu, formatTime, status } from "./ui.js";

const COST_SERIES = [
  { name: "asr", cls: "asr" },
  { name: "tts", cls: "tts" },
  { name: "other", cls: "other" },
];

function perDay(days, rows, pick) {
  const index = new Map(days.map((d, i) => [d, i]));
  const values = new Array(days.length).fill(0);
  for (const row of rows) {
    const i = index.get(row.day);
    const v = pick(row);
    if (i !== undefined && Number.isFinite(v)) values[i] += v;
  }
  return values;
}

function quantity(record) {
  if (record.quantity === null || record.quantity === undefined) return "";
  if (record.unit === "second") return `${formatNumber(record.quantity, 2)} s`;
  if (record.unit === "character") return `${formatNumber(record.quantity, 0)} chars`;
  return `${formatNumber(record.quantity, 2)} ${record.unit || ""}`.trim();
}

export function initAccountView() {
  const line = $("#account-status");
  const daysSel = $("#usage-days");

  function renderCharts(data) {
    const days = dayRange(data.first_day, data.last_day);
    const rows = data.daily;
    const minutes = perDay(days, rows, (r) => (r.kind === "asr" && r.unit === "second" ? r.quantity / 60 : 0));
    const chars = perDay(days, rows, (r) => (r.kind === "tts" && r.unit === "character" ? r.quantity : 0));
    const known = new Set(["asr", "tts"]);
    const costs = COST_SERIES.map((s) => ({
      ...s,
      values: perDay(days, rows, (r) => ((s.name === "other" ? !known.has(r.kind) : r.kind === s.name) ? r.cost : 0)),
    }));
    const total = (values) => values.reduce((a, b) => a + b, 0);
    const charts = [
      ["#chart-asr", "ASR minutes per day", [{ name: "asr", cls: "asr", values: minutes }], (v) => formatNumber(v, 2)],
      ["#chart-tts", "TTS characters per day", [{ name: "tts", cls: "tts", values: chars }], (v) => formatNumber(v, 0)],
      ["#chart-cost", "OMCU spent per day", costs, (v) => formatOmcu(Number(v.toPrecision(6)))],
    ];
    for (const [sel, label, series, format] of charts) {
      const box = $(sel);
      const sum = total(series.flatMap((s) => s.values));
      box.querySelector(".chart-total").textContent = `total ${format(sum)}`;
      box.querySelector(".chart-total").dataset.total = sum;
      box.querySelector(".chart-body").replaceChildren(barChart({ label, days, series, format }));
    }
    $("#chart-range").textContent = `${data.first_day} to ${data.last_day} (UTC days)`;
  }

  function renderRecords(records) {
    const body = $("#usage-rows");
    body.replaceChildren(
      ...records.map((r) =>
        el(
          "tr",
          { dataset: { kind: r.kind } },
          el("td", {}, formatTime(r.created)),
          el("td", {}, r.kind),
          el("td", {}, r.provider),
          el("td", {}, r.engine),
          el("td", { class: "num" }, quantity(r)),
          el("td", { class: "num" }, formatOmcu(r.cost)),
        ),
      ),
    );
    $("#usage-empty").hidden = records.length > 0;
  }

  async function refresh() {
    if (!credentials.apiKey) {
      status(line, "idle", "Enter an API key above to see its account.");
      return;
    }
    status(line, "loading", "Loading…");
    try {
      const [balance, daily, usage] = await Promise.all([
        api.balance(),
        api.daily(Number(daysSel.value)),
        api.usage(20),
      ]);
      $("#balance-amount").textContent = formatOmcu(balance.balance_omcu);
      $("#balance-amount").dataset.uomcu = balance.balance_uomcu;
      $("#balance-key").textContent = `${balance.name} · key ${balance.key_id} · account ${balance.account_id}`;
      $("#balance-card").dataset.low = balance.balance_uomcu <= 0 ? "true" : "false";
      renderCharts(daily);
      renderRecords(usage.usage);
      status(line, "ready", `Updated ${new Date().toLocaleTimeString()}`);
    } catch (err) {
      const message = explain(err);
      status(line, "failed", message);
      banner("error", message);
    }
  }

  daysSel.addEventListener("change", refresh);
  $("#account-refresh").addEventListener("click", refresh);
  return { refresh };
}
