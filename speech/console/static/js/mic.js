// Microphone capture: getUserMedia -> AudioWorklet -> 16 kHz PCM16 chunks.

export class MicError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind; // "insecure" | "denied" | "missing" | "busy" | "failed"
  }
}

// getUserMedia's exceptions, in words a person can act on.
function micError(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return new MicError(
        "denied",
        "Microphone permission was denied. Allow the microphone for this page " +
          "(the icon at the left of the address bar) and press Start again.",
      );
    case "NotFoundError":
    case "OverconstrainedError":
      return new MicError("missing", "No microphone was found. Connect one and press Start again.");
    case "NotReadableError":
    case "AbortError":
      return new MicError("busy", "The microphone could not be opened: another program may be using it.");
    default:
      return new MicError("failed", `The microphone could not be started: ${err && err.message}`);
  }
}

export class Microphone {
  // onChunk(ArrayBuffer of PCM16LE at 16 kHz, {rms, peak}); onEnded(MicError)
  constructor({ onChunk, onEnded }) {
    this.onChunk = onChunk;
    this.onEnded = onEnded;
    this.stream = null;
    this.context = null;
  }

  async start() {
    if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new MicError(
        "insecure",
        "The browser only allows the microphone on a secure page: open the console over https, " +
          "or on http://localhost / http://127.0.0.1.",
      );
    }
    try {
      // Echo cancellation keeps the console's own TTS out of the transcript;
      // gain control and noise suppression are left to the recognizer.
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: false },
      });
    } catch (err) {
      throw micError(err);
    }
    try {
      this.context = new AudioContext();
      await this.context.audioWorklet.addModule(new URL("./pcm-worklet.js", import.meta.url));
      const node = new AudioWorkletNode(this.context, "pcm16-downsampler", {
        processorOptions: { targetRate: 16000, chunkMs: 100 },
      });
      node.port.onmessage = (e) => this.onChunk(e.data.pcm, { rms: e.data.rms, peak: e.data.peak });
      this.context.createMediaStreamSource(this.stream).connect(node);
      await this.context.resume();
    } catch (err) {
      this.stop();
      throw new MicError("failed", `The audio pipeline could not be started: ${err.message}`);
    }
    const track = this.stream.getAudioTracks()[0];
    track.addEventListener("ended", () => {
      this.stop();
      this.onEnded(new MicError("missing", "The microphone stopped (was it unplugged?)."));
    });
    return this.context.sampleRate;
  }

  stop() {
    if (this.stream) for (const t of this.stream.getTracks()) t.stop();
    if (this.context) this.context.close().catch(() => {});
    this.stream = null;
    this.context = null;
  }
}
