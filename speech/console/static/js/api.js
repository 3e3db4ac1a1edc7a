// The gateway's HTTP API as the page uses it, and where the credentials live.
//
// Both the API key and the admin token are kept in sessionStorage only: they
// last as long as the tab, are never written to localStorage or cookies, and
// are sent only to this origin in request headers (the websocket, which cannot
// carry headers in a browser, takes the key as ?api_key=, which the gateway's
// logs redact).

const KEY_ITEM = "speech.apiKey";
const ADMIN_ITEM = "speech.adminToken";

export const credentials = {
  get apiKey() {
    return sessionStorage.getItem(KEY_ITEM) || "";
  },
  set apiKey(value) {
    if (value) sessionStorage.setItem(KEY_ITEM, value);
    else sessionStorage.removeItem(KEY_ITEM);
  },
  get adminToken() {
    return sessionStorage.getItem(ADMIN_ITEM) || "";
  },
  set adminToken(value) {
    if (value) sessionStorage.setItem(ADMIN_ITEM, value);
    else sessionStorage.removeItem(ADMIN_ITEM);
  },
};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// What a person should read for a failed request.
export function explain(err, who = "key") {
  if (!(err instanceof ApiError)) return `The gateway could not be reached (${err.message}). Is it running?`;
  const detail = err.message;
  if (err.status === 401 && who === "admin") return `The admin token was refused (${detail}).`;
  if (err.status === 401) return `The API key was refused: ${detail}. Enter a valid key above.`;
  if (err.status === 402) return `Balance exhausted: ${detail}.`;
  if (err.status === 429) return `Limit reached: ${detail}.`;
  if (err.status === 503 && who === "admin") return `Admin API unavailable: ${detail}.`;
  return `${detail} (HTTP ${err.status})`;
}

async function request(path, { method = "GET", body, auth = "key", headers = {} } = {}) {
  const h = { ...headers };
  if (auth === "key") {
    if (!credentials.apiKey) throw new ApiError(401, "no API key entered");
    h["x-api-key"] = credentials.apiKey;
  } else if (auth === "admin") {
    if (!credentials.adminToken) throw new ApiError(401, "no admin token entered");
    h.authorization = `Bearer ${credentials.adminToken}`;
  }
  if (body !== undefined) h["content-type"] = "application/json";
  const res = await fetch(path, {
    method,
    headers: h,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  if (!res.ok) throw new ApiError(res.status, await errorText(res));
  return res;
}

async function errorText(res) {
  try {
    const data = await res.json();
    const e = data.error;
    if (typeof e === "string") return e;
    if (e && typeof e.message === "string") return e.message; // OpenAI's shape
  } catch {
    // not JSON: fall through
  }
  return res.statusText || "request failed";
}

export async function getJson(path, opts) {
  return (await request(path, opts)).json();
}

export async function postJson(path, body, opts = {}) {
  return request(path, { ...opts, method: "POST", body });
}

export const api = {
  health: () => getJson("/healthz", { auth: "none" }).catch(() => null),
  balance: () => getJson("/api/core/account/balance"),
  usage: (limit = 20) => getJson(`/api/core/account/usage?limit=${limit}`),
  daily: (days) => getJson(`/api/core/account/usage/daily?days=${days}`),
  tts: (route, body) => postJson(`/api/core/${encodeURIComponent(route)}/tts`, body),
  admin: {
    accounts: () => getJson("/api/admin/accounts", { auth: "admin" }),
    keys: () => getJson("/api/admin/keys", { auth: "admin" }),
    createAccount: (name, balance) =>
      postJson("/api/admin/accounts", { name, balance }, { auth: "admin" }).then((r) => r.json()),
    createKey: (accountId, name) =>
      postJson(`/api/admin/accounts/${encodeURIComponent(accountId)}/keys`, { name }, { auth: "admin" }).then((r) =>
        r.json(),
      ),
    topUp: (accountId, amount) =>
      postJson(`/api/admin/accounts/${encodeURIComponent(accountId)}/top_up`, { amount }, { auth: "admin" }).then(
        (r) => r.json(),
      ),
    revoke: (keyId) =>
      postJson(`/api/admin/keys/${encodeURIComponent(keyId)}/revoke`, undefined, { auth: "admin" }).then((r) =>
        r.json(),
      ),
  },
};

// ws:// or wss:// URL of an ASR route on this origin, with the key and options.
export function asrUrl(route, options = {}) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = new URLSearchParams({ ...options, api_key: credentials.apiKey });
  return `${scheme}//${location.host}/api/core/${encodeURIComponent(route)}/asr?${query}`;
}
