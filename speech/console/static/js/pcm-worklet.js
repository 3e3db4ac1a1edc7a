// AudioWorklet: microphone samples (the AudioContext's rate, usually 44.1 or
// 48 kHz) -> 16 kHz mono PCM16LE chunks, the format the ASR websocket takes
// as binary frames. Runs on the audio rendering thread.
//
// Resampling is band-limited: each output sample is a windowed-sinc (Blackman)
// interpolation of the input around its fractional position, with the
// low-pass cutoff at 0.45 x the output rate, so nothing above 7.2 kHz folds
// back into the speech band. The filter is tabulated for PHASES fractional
// offsets; each table row is normalised to a DC gain of exactly 1.

const HALF = 16; // taps on each side of the output position
const PHASES = 256;

function buildTable(ratio) {
  const cutoff = (0.45 / ratio) * 2; // 2 x cutoff in cycles per input sample
  const table = new Float32Array(PHASES * 2 * HALF);
  for (let p = 0; p < PHASES; p++) {
    const frac = p / PHASES;
    let sum = 0;
    for (let k = 0; k < 2 * HALF; k++) {
      const t = k - (HALF - 1) - frac; // input index offset minus the fractional position
      const x = cutoff * t;
      const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
      const w = 0.42 + 0.5 * Math.cos((Math.PI * t) / HALF) + 0.08 * Math.cos((2 * Math.PI * t) / HALF);
      const h = Math.abs(t) >= HALF ? 0 : sinc * w;
      table[p * 2 * HALF + k] = h;
      sum += h;
    }
    for (let k = 0; k < 2 * HALF; k++) table[p * 2 * HALF + k] /= sum;
  }
  return table;
}

class Pcm16Downsampler extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.outRate = opts.targetRate || 16000;
    this.ratio = sampleRate / this.outRate; // sampleRate: the context's, a worklet global
    this.table = buildTable(Math.max(1, this.ratio));
    this.chunkSamples = Math.round((this.outRate * (opts.chunkMs || 100)) / 1000);
    this.history = new Float32Array(0);
    this.pos = HALF - 1; // position of the next output sample within history
    this.out = new Int16Array(this.chunkSamples);
    this.filled = 0;
    this.sumSquares = 0;
    this.peak = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const frames = channels[0].length;
    // Mono: the average of the channels the microphone delivers.
    const mono = new Float32Array(frames);
    for (const ch of channels) for (let i = 0; i < frames; i++) mono[i] += ch[i] / channels.length;
    const joined = new Float32Array(this.history.length + frames);
    joined.set(this.history);
    joined.set(mono, this.history.length);
    const x = joined;
    const taps = 2 * HALF;
    while (this.pos + HALF < x.length) {
      const base = Math.floor(this.pos);
      const phase = Math.min(PHASES - 1, Math.round((this.pos - base) * PHASES));
      const row = phase * taps;
      const first = base - (HALF - 1);
      let y = 0;
      for (let k = 0; k < taps; k++) y += x[first + k] * this.table[row + k];
      this.emit(y);
      this.pos += this.ratio;
    }
    // Keep what the next outputs still need.
    const keepFrom = Math.max(0, Math.floor(this.pos) - (HALF - 1));
    this.history = x.slice(keepFrom);
    this.pos -= keepFrom;
    return true;
  }

  emit(y) {
    const v = Math.max(-1, Math.min(1, y));
    this.out[this.filled++] = v < 0 ? v * 0x8000 : v * 0x7fff;
    this.sumSquares += v * v;
    this.peak = Math.max(this.peak, Math.abs(v));
    if (this.filled < this.chunkSamples) return;
    const pcm = this.out.buffer;
    const rms = Math.sqrt(this.sumSquares / this.chunkSamples);
    this.port.postMessage({ pcm, rms, peak: this.peak }, [pcm]);
    this.out = new Int16Array(this.chunkSamples);
    this.filled = 0;
    this.sumSquares = 0;
    this.peak = 0;
  }
}

registerProcessor("pcm16-downsampler", Pcm16Downsampler);
