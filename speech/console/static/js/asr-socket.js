// The ASR websocket, as a robot uses it, plus what a person needs: automatic
// reconnection when the connection drops, and a clear stop on errors that a
// retry cannot fix (wrong key, no balance, unknown route).
//
// Audio sent while the socket is down is kept (up to BUFFER_MS) and sent
// first after the reconnect, so a short drop loses no words.

// Close codes after which reconnecting would fail the same way.
const PERMANENT = {
  4400: "protocol",
  4401: "key",
  4402: "balance",
  4404: "route",
};
const BUFFER_MS = 5000;
const CHUNK_MS = 100;

export class AsrSocket {
  // url(): a fresh URL for each connection (it carries the current key).
  // onEvent(event, connection number); onState(state, detail).
  // States: "connecting", "connected", "reconnecting", "failed", "closed".
  constructor({ url, onEvent, onState }) {
    this.url = url;
    this.onEvent = onEvent;
    this.onState = onState;
    this.ws = null;
    this.connections = 0;
    this.attempt = 0;
    this.pending = [];
    this.stopping = false;
    this.timer = null;
    this.lastError = "";
  }

  open() {
    this.stopping = false;
    this.connect();
  }

  connect() {
    this.timer = null;
    const ws = new WebSocket(this.url());
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.lastError = "";
    const connection = ++this.connections;
    this.onState(this.attempt ? "reconnecting" : "connecting", { attempt: this.attempt });
    ws.onopen = () => {
      this.attempt = 0;
      this.onState("connected", { connection });
      for (const chunk of this.pending.splice(0)) ws.send(chunk);
    };
    ws.onmessage = (e) => {
      let event;
      try {
        event = JSON.parse(e.data);
      } catch {
        return;
      }
      if (event.type === "error" || (event.error && !event.type)) this.lastError = event.error;
      this.onEvent(event, connection);
    };
    ws.onclose = (e) => this.closed(ws, e);
  }

  closed(ws, e) {
    if (ws !== this.ws) return;
    this.ws = null;
    const reason = this.lastError || e.reason || "";
    if (this.stopping) {
      this.onState("closed", { code: e.code, reason });
      return;
    }
    if (PERMANENT[e.code]) {
      this.pending = [];
      this.onState("failed", { code: e.code, kind: PERMANENT[e.code], reason });
      return;
    }
    // Dropped: the network, a gateway restart (1012), overload (1013), an
    // idle or session-length close (4408, 4409), a per-key limit (4429).
    const base = e.code === 4429 ? 5000 : 500;
    const delay = Math.min(10000, base * 2 ** this.attempt);
    this.attempt += 1;
    this.onState("reconnecting", { code: e.code, reason, delay, attempt: this.attempt });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  send(chunk) {
    if (this.stopping) return;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(chunk);
      return;
    }
    this.pending.push(chunk);
    if (this.pending.length > BUFFER_MS / CHUNK_MS) this.pending.shift();
  }

  // Ask for the last reply and a summary, then close (CloseStream); resolves
  // once the gateway has closed, or after a few seconds.
  async close() {
    this.stopping = true;
    this.pending = [];
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const ws = this.ws;
    if (!ws) {
      this.onState("closed", {});
      return;
    }
    if (ws.readyState === WebSocket.CONNECTING) {
      ws.close();
      return;
    }
    const done = new Promise((resolve) => ws.addEventListener("close", resolve, { once: true }));
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "CloseStream" }));
    const timeout = new Promise((resolve) => setTimeout(resolve, 8000));
    await Promise.race([done, timeout]);
    if (ws.readyState !== WebSocket.CLOSED) ws.close();
  }
}
