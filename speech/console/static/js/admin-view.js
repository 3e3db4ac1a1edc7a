// The admin view (admin token): accounts with their balances and keys with
// their limits; top up an account, revoke a key, create an account or a key.

import { api, credentials, explain } from "./api.js";
import { $, banner, clearBanner, el, formatOmcu, formatTime, status } from "./ui.js";

function keyState(key) {
  if (key.revoked) return "revoked";
  if (key.expires && new Date(key.expires) <= new Date()) return "expired";
  return "active";
}

const limit = (v) => (v === null || v === undefined ? "—" : String(v));

export function initAdminView({ useKey }) {
  const line = $("#admin-status");
  const tokenForm = $("#admin-token-form");
  const tokenInput = $("#admin-token");
  const panel = $("#admin-panel");
  const secretBox = $("#admin-secret");

  function fail(err) {
    const message = explain(err, "admin");
    status(line, "failed", message);
    banner("error", message);
  }

  // A new key's secret is shown once, here, with a button to use it in this tab.
  function showSecret(label, secret) {
    secretBox.hidden = false;
    $("#admin-secret-label").textContent = label;
    $("#admin-secret-value").textContent = secret;
    $("#admin-secret-use").onclick = () => useKey(secret);
  }

  function keyRow(key) {
    const state = keyState(key);
    const revoke = el("button", { type: "button", class: "danger small", disabled: state !== "active" }, "Revoke");
    revoke.addEventListener("click", async () => {
      if (revoke.dataset.confirm !== "yes") {
        revoke.dataset.confirm = "yes";
        revoke.textContent = "Really revoke?";
        setTimeout(() => {
          revoke.dataset.confirm = "";
          revoke.textContent = "Revoke";
        }, 4000);
        return;
      }
      try {
        await api.admin.revoke(key.key_id);
        status(line, "ready", `Revoked ${key.key_id}.`);
        await load();
      } catch (err) {
        fail(err);
      }
    });
    return el(
      "tr",
      { class: `key ${state}`, dataset: { keyId: key.key_id, state } },
      el("td", {}, el("code", {}, key.key_id)),
      el("td", {}, key.name),
      el("td", {}, el("span", { class: `pill ${state}` }, state)),
      el("td", {}, key.expires ? formatTime(key.expires) : "never"),
      el("td", { class: "num" }, limit(key.max_streams)),
      el("td", { class: "num" }, limit(key.rpm)),
      el("td", {}, formatTime(key.created)),
      el("td", {}, revoke),
    );
  }

  function accountBlock(account, keys) {
    const amount = el("input", {
      type: "text",
      inputmode: "decimal",
      placeholder: "OMCU",
      size: 8,
      "aria-label": `top-up amount for ${account.name}`,
      class: "topup-amount",
    });
    const topUp = el("form", { class: "inline topup" }, amount, el("button", { type: "submit" }, "Top up"));
    topUp.addEventListener("submit", async (e) => {
      e.preventDefault();
      const value = amount.value.trim();
      if (!/^-?\d+(\.\d{1,6})?$/.test(value) || Number(value) === 0) {
        status(line, "failed", "A top-up is a non-zero amount of OMCU, e.g. 100 or 2.5 (negative corrects).");
        return;
      }
      try {
        const res = await api.admin.topUp(account.account_id, value);
        status(line, "ready", `${account.name}: balance now ${formatOmcu(res.balance_omcu)} OMCU.`);
        await load();
      } catch (err) {
        fail(err);
      }
    });
    const newKey = el("button", { type: "button", class: "small" }, "New key");
    newKey.addEventListener("click", async () => {
      try {
        const key = await api.admin.createKey(account.account_id, `${account.name} key`);
        showSecret(`New key ${key.key_id} for ${account.name}`, key.api_key);
        await load();
      } catch (err) {
        fail(err);
      }
    });
    return el(
      "article",
      { class: "account", dataset: { accountId: account.account_id } },
      el(
        "header",
        {},
        el("h3", {}, account.name),
        el("code", {}, account.account_id),
        el(
          "span",
          { class: "balance", dataset: { uomcu: account.balance_uomcu } },
          `${formatOmcu(account.balance_omcu)} OMCU`,
        ),
        topUp,
        newKey,
      ),
      el(
        "table",
        { class: "keys" },
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            ...["key", "name", "state", "expires", "max streams", "rpm", "created", ""].map((h) =>
              el("th", { class: h === "max streams" || h === "rpm" ? "num" : undefined }, h),
            ),
          ),
        ),
        el("tbody", {}, ...keys.map(keyRow)),
      ),
    );
  }

  async function load() {
    if (!credentials.adminToken) {
      panel.hidden = true;
      status(line, "idle", "Enter the admin token (admin.token in the gateway's settings).");
      return;
    }
    status(line, "loading", "Loading…");
    try {
      const [{ accounts }, { api_keys: keys }] = await Promise.all([api.admin.accounts(), api.admin.keys()]);
      const byAccount = new Map(accounts.map((a) => [a.account_id, []]));
      for (const k of keys) if (byAccount.has(k.account_id)) byAccount.get(k.account_id).push(k);
      $("#admin-accounts").replaceChildren(...accounts.map((a) => accountBlock(a, byAccount.get(a.account_id))));
      $("#admin-count").textContent = `${accounts.length} account(s), ${keys.length} key(s)`;
      panel.hidden = false;
      if (line.dataset.state === "loading") status(line, "ready", "Signed in as admin.");
      clearBanner("error");
    } catch (err) {
      panel.hidden = true;
      fail(err);
      if (err.status === 401 || err.status === 503) credentials.adminToken = "";
    }
  }

  tokenForm.addEventListener("submit", (e) => {
    e.preventDefault();
    credentials.adminToken = tokenInput.value.trim();
    tokenInput.value = "";
    load();
  });
  $("#admin-signout").addEventListener("click", () => {
    credentials.adminToken = "";
    secretBox.hidden = true;
    load();
  });
  $("#admin-create").addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = $("#admin-new-name").value.trim();
    const balance = $("#admin-new-balance").value.trim() || "0";
    if (!name) {
      status(line, "failed", "Give the new account a name.");
      return;
    }
    try {
      const res = await api.admin.createAccount(name, balance);
      showSecret(`New account ${res.account.name} (${res.account.account_id}), first key ${res.key.key_id}`, res.key.api_key);
      $("#admin-new-name").value = "";
      $("#admin-new-balance").value = "";
      await load();
    } catch (err) {
      fail(err);
    }
  });
  return { refresh: load };
}
