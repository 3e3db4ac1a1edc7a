// The text-to-speech view: text, route ("voice") and format in; the audio
// plays, with the time from the click to the first sound.

import { api, credentials, explain } from "./api.js";
import { $, banner, clearBanner, formatOmcu, status } from "./ui.js";

function decodeBase64(text) {
  const bin = atob(text);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

export function initTtsView({ onSpoken }) {
  const form = $("#tts-form");
  const text = $("#tts-text");
  const route = $("#tts-route");
  const format = $("#tts-format");
  const voice = $("#tts-voice");
  const button = $("#tts-speak");
  const audio = $("#tts-audio");
  const line = $("#tts-status");
  const count = $("#tts-count");
  let url = null;

  const updateCount = () => {
    count.textContent = `${text.value.length} characters`;
  };
  text.addEventListener("input", updateCount);
  updateCount();

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!credentials.apiKey) {
      banner("error", "Enter an API key above first.");
      return;
    }
    if (!text.value.trim()) {
      status(line, "failed", "Type some text to speak.");
      return;
    }
    clearBanner();
    button.disabled = true;
    status(line, "working", "Synthesizing…");
    audio.dataset.state = "loading";
    const started = performance.now();
    const body = { text: text.value, output_format: format.value };
    if (voice.value.trim()) body.voice_id = voice.value.trim();
    let res;
    let data;
    try {
      res = await api.tts(route.value, body);
      data = await res.json();
    } catch (err) {
      const message = explain(err);
      status(line, "failed", message);
      banner("error", message);
      audio.dataset.state = "failed";
      button.disabled = false;
      return;
    }
    const received = performance.now() - started;
    if (url) URL.revokeObjectURL(url);
    url = URL.createObjectURL(new Blob([decodeBase64(data.response)], { type: data.content_type }));
    const chars = res.headers.get("x-usage-characters");
    const cost = Number(res.headers.get("x-usage-cost-uomcu") || 0) / 1e6;
    const engine = res.headers.get("x-engine") || route.value;
    const bill = `${chars} characters, ${formatOmcu(cost)} OMCU, engine ${engine}`;
    audio.addEventListener(
      "playing",
      () => {
        const first = performance.now() - started;
        audio.dataset.firstAudioMs = first.toFixed(0);
        status(
          line,
          "playing",
          `First audio after ${first.toFixed(0)} ms (synthesis and transfer ${received.toFixed(0)} ms). ${bill}.`,
        );
      },
      { once: true },
    );
    audio.src = url;
    audio.dataset.state = "ready";
    button.disabled = false;
    onSpoken();
    try {
      await audio.play();
    } catch (err) {
      // Autoplay refused (no user gesture) or a format the browser cannot play.
      status(line, "ready", `Audio ready (${bill}); press play. (${err.message})`);
    }
  });

  audio.addEventListener("ended", () => {
    audio.dataset.state = "ended";
  });
  audio.addEventListener("error", () => {
    audio.dataset.state = "failed";
    status(line, "failed", `The browser cannot play ${format.value}: ${audio.error && audio.error.message}`);
  });
}
