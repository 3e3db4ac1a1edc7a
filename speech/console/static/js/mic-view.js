// The microphone view: live interim and final text, a level meter, the bill.

import { asrUrl, credentials } from "./api.js";
import { AsrSocket } from "./asr-socket.js";
import { Microphone } from "./mic.js";
import { $, banner, clearBanner, el, formatNumber, status } from "./ui.js";

const FAILURES = {
  key: (reason) => `The API key was refused: ${reason}. Enter a valid key above and press Start again.`,
  balance: (reason) =>
    `Balance exhausted: ${reason}. The stream was stopped; top up the account ` +
    "(Admin view, or speech accounts top-up) and press Start again.",
  route: (reason) => `This route is not served: ${reason}.`,
  protocol: (reason) => `The gateway closed the stream: ${reason}.`,
};

export function initMicView({ onStopped }) {
  const startBtn = $("#mic-start");
  const stopBtn = $("#mic-stop");
  const routeSel = $("#asr-route");
  const line = $("#mic-status");
  const meter = $("#mic-level-bar");
  const meterBox = $("#mic-level");
  const transcript = $("#transcript");
  const interim = $("#interim");
  const billed = $("#mic-billed");
  let mic = null;
  let socket = null;

  function setLevel(rms) {
    const db = rms > 0 ? 20 * Math.log10(rms) : -100;
    const pct = Math.max(0, Math.min(100, ((db + 60) / 60) * 100));
    meter.style.width = `${pct.toFixed(0)}%`;
    meterBox.dataset.level = pct.toFixed(0);
    meterBox.title = `${db.toFixed(0)} dBFS`;
  }

  function onEvent(event, connection) {
    switch (event.type) {
      case "speech_started":
        interim.textContent = "…";
        interim.hidden = false;
        break;
      case "interim":
        interim.dataset.count = String(Number(interim.dataset.count || 0) + 1);
        interim.textContent = event.text;
        interim.hidden = false;
        break;
      case "final":
        interim.hidden = true;
        interim.textContent = "";
        transcript.append(
          el(
            "p",
            { class: "final", dataset: { connection, utterance: event.utterance } },
            el("span", { class: "stamp" }, `${formatNumber(event.start, 1)} s`),
            el("span", { class: "text" }, event.asr_reply),
          ),
        );
        transcript.scrollTop = transcript.scrollHeight;
        break;
      case "utterance_end":
        if (!interim.textContent || interim.textContent === "…") interim.hidden = true;
        break;
      case "usage":
        billed.textContent = `This connection: ${formatNumber(event.session_seconds, 1)} s of speech billed, ${event.session_cost_omcu} OMCU`;
        break;
      case "summary":
        billed.textContent = `Stream closed: ${event.utterances} utterance(s), ${formatNumber(event.seconds, 1)} s billed, ${event.cost_omcu} OMCU`;
        break;
      case "error":
        status(line, "warn", `Gateway: ${event.error}`);
        break;
      default:
        break; // events this page does not know are ignored
    }
  }

  function onState(state, detail) {
    if (state === "connecting") status(line, "connecting", "Connecting…");
    else if (state === "connected") {
      status(line, "connected", detail.connection > 1 ? "Listening (reconnected)" : "Listening — speak now");
      clearBanner("warn");
    } else if (state === "reconnecting" && detail.delay !== undefined) {
      const why = detail.reason ? `: ${detail.reason}` : "";
      const text = `Connection lost (code ${detail.code}${why}). Reconnecting in ${(detail.delay / 1000).toFixed(1)} s (attempt ${detail.attempt})…`;
      status(line, "reconnecting", text);
      banner("warn", text);
    } else if (state === "failed") {
      const reason = detail.reason || `close code ${detail.code}`;
      const message = (FAILURES[detail.kind] || FAILURES.protocol)(reason);
      status(line, "failed", `Stopped: ${reason}`);
      banner("error", message);
      stop(false);
    } else if (state === "closed") {
      status(line, "idle", "Stopped");
    }
  }

  async function start() {
    if (!credentials.apiKey) {
      banner("error", "Enter an API key above first.");
      return;
    }
    clearBanner();
    startBtn.disabled = true;
    routeSel.disabled = true;
    status(line, "starting", "Starting the microphone…");
    socket = new AsrSocket({ url: () => asrUrl(routeSel.value, { events: "true" }), onEvent, onState });
    mic = new Microphone({
      onChunk: (pcm, level) => {
        setLevel(level.rms);
        if (socket) socket.send(pcm);
      },
      onEnded: (err) => {
        banner("error", err.message);
        stop(true);
      },
    });
    try {
      await mic.start();
    } catch (err) {
      socket = null;
      mic = null;
      status(line, "failed", "The microphone is not available.");
      banner("error", err.message);
      startBtn.disabled = false;
      routeSel.disabled = false;
      return;
    }
    stopBtn.disabled = false;
    billed.textContent = "";
    socket.open();
  }

  async function stop(graceful = true) {
    const m = mic;
    const s = socket;
    mic = null;
    socket = null;
    if (m) m.stop();
    setLevel(0);
    stopBtn.disabled = true;
    if (s && graceful) {
      status(line, "stopping", "Finishing the last utterance…");
      await s.close();
    } else if (s) {
      s.stopping = true;
    }
    startBtn.disabled = false;
    routeSel.disabled = false;
    interim.hidden = true;
    onStopped();
  }

  startBtn.addEventListener("click", start);
  stopBtn.addEventListener("click", () => stop(true));
  $("#mic-clear").addEventListener("click", () => {
    transcript.replaceChildren();
    billed.textContent = "";
  });
  status(line, "idle", "Press Start and allow the microphone.");
}
