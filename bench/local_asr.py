#!/usr/bin/env python3
"""Benchmark of the local ASR engine (faster-whisper tiny.en) behind the real gateway.

Starts the gateway in-process (uvicorn on a free loopback port, in a thread,
with a temporary SQLite ledger and one API key), then measures:

1. rtf      - real-time factor of the engine alone: each shared sample decoded
              whole with ``WhisperRecognizer.transcribe_pcm``, one at a time.
2. latency  - end of speech -> final ``asr_reply`` over the websocket, streaming
              each sample at real-time pace in OM1 JSON frames (200 ms chunks).
3. streams  - how many concurrent real-time streams of real speech the gateway
              sustains before the reply lag grows or passes a bound.

Everything is real: the real engine, real recordings, real websockets over
loopback. Every loop is bounded. See bench/README.md for what each number means.

    /work/venv/bin/python bench/local_asr.py            # full run (~6 min on 2 cores)
    /work/venv/bin/python bench/local_asr.py --quick    # smoke run (~1 min)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import platform
import re
import sys
import tempfile
import threading
import time
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from starlette.datastructures import QueryParams

from speech.api.app import create_app
from speech.api.asr_ws import session_config
from speech.audio.resample import resample
from speech.metering.sqlite import SqliteLedger
from speech.pipeline.session import AsrSession, SpeechAudio, SpeechEnded, SpeechStarted
from speech.pipeline.vad import webrtc_scorer
from speech.providers.local.asr import WhisperRecognizer
from speech.providers.registry import Engines
from speech.settings import Settings, load_settings

HERE = Path(__file__).resolve().parent
DEFAULT_SAMPLES = HERE.parent.parent / "shared" / "samples"
DEFAULT_OUT = HERE / "results" / "local_asr.json"

RATE = 16000
CHUNK_MS = 200  # OM1 sends ~200 ms frames
CHUNK_SAMPLES = RATE * CHUNK_MS // 1000
# Speech segments are padded to a multiple of this, so every file starts on a
# chunk boundary and a VAD frame boundary (30 ms) wherever it sits in a stream.
ALIGN_SAMPLES = RATE * 600 // 1000
LEAD_MS = 600  # silence before the first file of a stream (a mic is open before anyone speaks)
CLOSE_TIMEOUT_S = 60.0  # longest wait for the server's normal close after CloseStream

QUICK_LATENCY_FILES = ("goforward.wav", "librivox-0880.wav", "librivox-0890.wav")


# ------------------------------------------------------------------ audio


@dataclass
class Sample:
    name: str
    pcm: bytes  # 16 kHz PCM16LE mono
    native_rate: int
    transcript: str

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / RATE


def load_samples(folder: Path) -> list[Sample]:
    manifest = json.loads((folder / "manifest.json").read_text())
    out = []
    for entry in manifest:
        with wave.open(str(folder / entry["file"])) as w:
            if w.getsampwidth() != 2 or w.getnchannels() != 1:
                raise SystemExit(f"{entry['file']}: expected 16-bit mono WAV")
            rate = w.getframerate()
            raw = w.readframes(w.getnframes())
        samples = np.frombuffer(raw, dtype="<i2")
        if rate != RATE:  # jfk.wav is 44.1 kHz: soxr (HQ), the gateway's own resampler
            samples = resample(samples, rate, RATE)
        out.append(Sample(entry["file"], samples.astype("<i2").tobytes(), rate, entry["transcript"]))
    return out


def silence(n_samples: int) -> bytes:
    return bytes(2 * n_samples)


# ------------------------------------------------------------ word errors

_NUMBERS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
).split()


def normalise(text: str) -> list[str]:
    words = re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()
    return [_NUMBERS[int(w)] if w.isdigit() and int(w) < len(_NUMBERS) else w for w in words]


def wer(ref: str, hyp: str) -> float:
    r, h = normalise(ref), normalise(hyp)
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
            prev, d[j] = d[j], cur
    return d[len(h)] / max(1, len(r))


# ------------------------------------------------------------------ stats


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summary(values: list[float]) -> dict[str, float | int | None]:
    return {
        "n": len(values),
        "p50": pct(values, 50),
        "p95": pct(values, 95),
        "max": max(values) if values else None,
    }


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(out)


class CpuMeter:
    """CPU used while measuring, in cores: by this process (gateway + clients)
    and by everything else on the machine (from /proc/stat). Other work on a
    2-core machine changes the results, so every measurement records it."""

    def __init__(self) -> None:
        self._t = time.monotonic()
        self._own = self._own_s()
        self._busy = self._busy_s()

    @staticmethod
    def _own_s() -> float:
        t = os.times()
        return t.user + t.system

    @staticmethod
    def _busy_s() -> float | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    def read(self) -> dict[str, float | None]:
        wall = max(1e-9, time.monotonic() - self._t)
        own = (self._own_s() - self._own) / wall
        busy = self._busy_s()
        other = None if busy is None or self._busy is None else max(0.0, (busy - self._busy) / wall - own)
        return {"own_cores": round(own, 2), "other_cores": None if other is None else round(other, 2)}


def warn_if_busy(cpu: dict[str, float | None], what: str) -> None:
    other = cpu.get("other_cores")
    if other is not None and other > 0.2:
        print(f"    ! other processes used {other:.2f} cores during {what}; its numbers are disturbed", flush=True)


# ---------------------------------------------------------------- server


@dataclass
class Server:
    settings: Settings
    port: int
    server: uvicorn.Server
    thread: threading.Thread
    key: str = ""

    def url(self, **query: object) -> str:
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        return f"ws://127.0.0.1:{self.port}/api/core/local/asr" + (f"?{qs}" if qs else "")


def start_server(settings: Settings, engines: Engines) -> Server:
    config = uvicorn.Config(
        create_app(settings, engines=engines),
        host="127.0.0.1",
        port=0,
        ws="websockets-sansio",
        ws_max_size=settings.server.ws_max_size,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not server.started:
        raise SystemExit("uvicorn did not start")
    port = server.servers[0].sockets[0].getsockname()[1]
    return Server(settings, port, server, thread)


def stop_server(srv: Server) -> None:
    srv.server.should_exit = True
    srv.thread.join(timeout=15)


async def make_key(db: str) -> str:
    ledger = await SqliteLedger.open(db)
    try:
        key, _ = await ledger.create_key("bench", 1_000_000_000_000)
    finally:
        await ledger.close()
    return key


# ------------------------------------------------------- stream planning


@dataclass
class Segment:
    name: str
    start: int  # stream positions in 16 kHz samples
    speech_end: int  # end of the file's own audio
    end: int  # end of the padded silence after it


@dataclass
class Plan:
    pcm: bytes
    segments: list[Segment]
    frames: list[str] = field(default_factory=list)  # OM1 JSON text frames
    frame_end_s: list[float] = field(default_factory=list)  # audio time at each frame's end

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / RATE

    def chunk_of(self, sample_pos: int) -> int:
        """Index of the frame holding the sample just before ``sample_pos``."""
        return max(0, min(len(self.frames) - 1, (sample_pos - 1) // CHUNK_SAMPLES))


def build_plan(files: list[Sample], lead_ms: int, gap_ms: int) -> Plan:
    lead = -(-RATE * lead_ms // 1000 // ALIGN_SAMPLES) * ALIGN_SAMPLES
    parts = [silence(lead)]
    pos = lead
    segments = []
    for s in files:
        n = len(s.pcm) // 2
        total = -(-(n + RATE * gap_ms // 1000) // ALIGN_SAMPLES) * ALIGN_SAMPLES
        parts += [s.pcm, silence(total - n)]
        segments.append(Segment(s.name, pos, pos + n, pos + total))
        pos += total
    pcm = b"".join(parts)
    plan = Plan(pcm, segments)
    step = 2 * CHUNK_SAMPLES
    for off in range(0, len(pcm), step):
        chunk = pcm[off : off + step]
        plan.frames.append(json.dumps({"audio": base64.b64encode(chunk).decode("ascii"), "rate": RATE}))
        plan.frame_end_s.append((off + len(chunk)) / 2 / RATE)
    return plan


@dataclass
class Expected:
    """One utterance as the gateway's own segmenter will cut it."""

    index: int
    segment: int
    start_ms: int
    end_ms: int
    reason: str
    voice_end_ms: int  # end of its last voiced VAD frame
    voice_chunk: int  # frame carrying that audio
    end_chunk: int | None  # frame whose arrival ends the utterance (None: only at CloseStream)
    text: str = ""  # what the engine makes of exactly the audio the gateway forwards


class Replica:
    """Runs the gateway's Sans-I/O session (same code, same settings, same frames)
    offline, to know where each utterance ends and the exact audio it forwards,
    and decodes that audio with the same engine to know each expected reply."""

    def __init__(self, settings: Settings, engine: WhisperRecognizer) -> None:
        self.settings = settings
        self.engine = engine
        self._texts: dict[str, str] = {}
        self.decodes = 0

    def expect(self, plan: Plan, query: dict[str, str]) -> list[Expected]:
        config = session_config(self.settings, QueryParams(query))
        score = webrtc_scorer(config.vad.mode)
        voiced: list[bool] = []

        def is_speech(frame: bytes) -> bool:
            v = score(frame)
            voiced.append(v)
            return v

        session = AsrSession(config, is_speech=is_speech)
        pcm: dict[int, list[bytes]] = {}
        ended: list[tuple[SpeechEnded, int | None]] = []

        def take(events: list[Any], chunk: int | None) -> None:
            for ev in events:
                if isinstance(ev, SpeechStarted):
                    pcm[ev.utterance] = []
                elif isinstance(ev, SpeechAudio):
                    pcm[ev.utterance].append(ev.pcm)
                elif isinstance(ev, SpeechEnded):
                    ended.append((ev, chunk))

        for k, frame in enumerate(plan.frames):
            take(session.receive_text(frame), k)
        take(session.end(close_requested=True), None)

        frame_ms = config.vad.frame_ms
        out = []
        for ev, chunk in ended:
            last = max(
                (i for i in range(ev.start_ms // frame_ms, min(len(voiced), -(-ev.end_ms // frame_ms))) if voiced[i]),
                default=None,
            )
            voice_end_ms = (last + 1) * frame_ms if last is not None else ev.end_ms
            voice_end_ms = min(voice_end_ms, ev.end_ms)
            pos = voice_end_ms * RATE // 1000
            # The file an utterance belongs to: the segment holding its last voiced audio.
            seg = next((i for i, s in enumerate(plan.segments) if s.start < pos <= s.end), len(plan.segments) - 1)
            exp = Expected(
                ev.utterance, seg, ev.start_ms, ev.end_ms, ev.reason, voice_end_ms, plan.chunk_of(pos), chunk
            )
            exp.text = self._decode(b"".join(pcm[ev.utterance]))
            out.append(exp)
        return out

    def _decode(self, pcm: bytes) -> str:
        digest = hashlib.sha1(pcm).hexdigest()
        if digest not in self._texts:
            self.decodes += 1
            # The same steps as WhisperRecognizer.recognize + Connection._recognize.
            self._texts[digest] = self.engine.transcribe_pcm(pcm, "en-US").text.strip() if pcm else ""
        return self._texts[digest]


# ------------------------------------------------------------- streaming


@dataclass
class StreamRun:
    send_times: list[float]
    t0: float
    replies: list[tuple[float, str]]
    errors: list[str]
    close_code: int | None
    timed_out: bool
    max_slip_s: float


async def stream(srv: Server, plan: Plan, query: dict[str, str], *, paced: bool = True) -> StreamRun:
    """Send every frame of ``plan`` at real-time pace (frame k leaves when its
    audio has been "captured": t0 + end of its audio), then CloseStream, and
    collect replies until the server's normal close."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    loop = asyncio.get_running_loop()
    replies: list[tuple[float, str]] = []
    errors: list[str] = []
    send_times: list[float] = []
    max_slip = 0.0
    async with connect(
        srv.url(**query),
        additional_headers={"x-api-key": srv.key},
        compression=None,
        proxy=None,
        max_size=2**22,
        open_timeout=30,
    ) as ws:

        async def reader() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for message in ws:
                    now = loop.time()
                    msg = json.loads(message)
                    if "asr_reply" in msg:
                        replies.append((now, msg["asr_reply"]))
                    else:
                        errors.append(str(msg.get("error", msg)))

        task = asyncio.create_task(reader())
        t0 = loop.time()
        for frame, end_s in zip(plan.frames, plan.frame_end_s, strict=True):
            if paced:
                target = t0 + end_s
                delay = target - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                max_slip = max(max_slip, loop.time() - target)
            await ws.send(frame)
            send_times.append(loop.time())
        await ws.send(json.dumps({"type": "CloseStream"}))
        timed_out = False
        try:
            await asyncio.wait_for(task, CLOSE_TIMEOUT_S)
        except TimeoutError:
            timed_out = True
        return StreamRun(send_times, t0, replies, errors, ws.close_code, timed_out, max_slip)


@dataclass
class Matched:
    exp: Expected
    t: float | None  # arrival of its reply (None: never arrived)
    text_ok: bool


def match(expected: list[Expected], run: StreamRun) -> tuple[list[Matched], int]:
    """Pair replies, in order, with the expected non-empty utterances (replies
    leave in utterance order; an utterance whose text is empty gets none)."""
    exp = [e for e in expected if e.text]
    out: list[Matched] = []
    extra = 0
    i = 0
    for t, text in run.replies:
        j = next((j for j in range(i, min(i + 4, len(exp))) if exp[j].text == text), None)
        ok = j is not None
        if j is None:
            if i >= len(exp):
                extra += 1
                continue
            j = i
        out += [Matched(e, None, False) for e in exp[i:j]]
        out.append(Matched(exp[j], t, ok))
        i = j + 1
    out += [Matched(e, None, False) for e in exp[i:]]
    return out, extra


# ------------------------------------------------------------ section 1


def bench_rtf(engine: WhisperRecognizer, samples: list[Sample]) -> dict[str, Any]:
    engine.transcribe_pcm(samples[0].pcm[: 2 * RATE * 2])  # warm-up, not counted
    rows = []
    meter = CpuMeter()
    for s in samples:
        t = time.perf_counter()
        tr = engine.transcribe_pcm(s.pcm, "en-US")
        dt = time.perf_counter() - t
        rows.append(
            {
                "file": s.name,
                "audio_s": round(s.seconds, 3),
                "decode_s": round(dt, 4),
                "rtf": round(dt / s.seconds, 4),
                "wer": round(wer(s.transcript, tr.text), 4),
                "text": tr.text,
            }
        )
    audio = sum(r["audio_s"] for r in rows)
    dec = sum(r["decode_s"] for r in rows)
    ref_words = [len(normalise(s.transcript)) for s in samples]
    pooled = sum(r["wer"] * n for r, n in zip(rows, ref_words, strict=True)) / sum(ref_words)
    return {
        "files": rows,
        "overall": {"audio_s": round(audio, 3), "decode_s": round(dec, 4), "rtf": round(dec / audio, 4)},
        "wer_pooled": round(pooled, 4),
        "cpu": meter.read(),
    }


def print_rtf(res: dict[str, Any], threads: int) -> None:
    print(f"\n[1] Real-time factor, engine alone (1 decode at a time, {threads} CPU thread(s) per decode)")
    rows = [
        [r["file"], fmt(r["audio_s"]), fmt(r["decode_s"], 3), fmt(r["rtf"], 3), fmt(r["wer"])] for r in res["files"]
    ]
    o = res["overall"]
    rows.append(["overall", fmt(o["audio_s"]), fmt(o["decode_s"], 3), fmt(o["rtf"], 3), fmt(res["wer_pooled"])])
    print(table(["file", "audio s", "decode s", "RTF", "WER"], rows))
    warn_if_busy(res["cpu"], "the RTF decodes")


# ------------------------------------------------------------ section 2


async def bench_latency(
    srv: Server, replica: Replica, files: list[Sample], runs: int, query: dict[str, str], gap_ms: int
) -> dict[str, Any]:
    plan = build_plan(files, LEAD_MS, gap_ms)
    expected = replica.expect(plan, query)
    per_file: dict[str, list[float]] = {s.name: [] for s in files}
    post_vad: list[float] = []
    problems: list[str] = []
    slip = 0.0
    meter = CpuMeter()
    for _ in range(runs):
        run = await stream(srv, plan, query)
        slip = max(slip, run.max_slip_s)
        matched, extra = match(expected, run)
        if extra or run.errors or run.timed_out or run.close_code != 1000:
            problems.append(f"extra={extra} errors={run.errors} timed_out={run.timed_out} close={run.close_code}")
        for m in matched:
            if m.t is not None and m.exp.end_chunk is not None:
                post_vad.append(m.t - run.send_times[m.exp.end_chunk])
        for si, seg in enumerate(plan.segments):
            mine = [m for m in matched if m.exp.segment == si]
            if not mine or mine[-1].t is None:
                problems.append(f"{seg.name}: final reply missing")
                continue
            per_file[seg.name].append(mine[-1].t - run.send_times[plan.chunk_of(seg.speech_end)])
    files_out = []
    for si, seg in enumerate(plan.segments):
        utts = [e for e in expected if e.segment == si]
        last_voice = max((e.voice_end_ms for e in utts), default=None)
        files_out.append(
            {
                "file": seg.name,
                "utterances": len(utts),
                "replies_expected": sum(1 for e in utts if e.text),
                "trailing_silence_ms": (
                    None if last_voice is None else round(seg.speech_end * 1000 / RATE - last_voice)
                ),
                "latency_s": [round(x, 4) for x in per_file[seg.name]],
                **{k: v for k, v in summary(per_file[seg.name]).items() if k != "n"},
            }
        )
    pooled = [x for xs in per_file.values() for x in xs]
    return {
        "query": query,
        "runs": runs,
        "silence_after_file_ms": gap_ms,
        "files": files_out,
        "latency": summary(pooled),
        "after_vad_end": summary(post_vad),
        "max_send_slip_s": round(slip, 4),
        "problems": problems,
        "cpu": meter.read(),
    }


def print_latency(results: list[dict[str, Any]], settings: Settings) -> None:
    print("\n[2] End of speech -> final asr_reply over the websocket (real-time 200 ms frames)")
    print("    from the send of the frame holding the file's last sample to the arrival of its last reply;")
    print("    includes the VAD silence window (silence_ms) and the 200 ms frame granularity")
    rows = []
    for res in results:
        sil = res["query"].get("silence_ms", str(settings.vad.silence_ms))
        lat, post = res["latency"], res["after_vad_end"]
        rows.append(
            [
                sil,
                str(res["runs"]),
                str(lat["n"]),
                fmt(lat["p50"]),
                fmt(lat["p95"]),
                fmt(lat["max"]),
                fmt(post["p50"]),
                fmt(post["p95"]),
                fmt(res["cpu"]["other_cores"]),
                "ok" if not res["problems"] else f"{len(res['problems'])} problem(s)",
            ]
        )
    print(
        table(
            [
                "silence_ms",
                "runs",
                "n",
                "p50 s",
                "p95 s",
                "max s",
                "after-VAD p50",
                "after-VAD p95",
                "other cpu",
                "status",
            ],
            rows,
        )
    )
    base = results[0]
    print(
        "    per file (silence_ms default): "
        + ", ".join(
            f"{f['file']} {fmt(f['p50'])}s (trailing silence in file {f['trailing_silence_ms']} ms)"
            for f in base["files"]
        )
    )
    for res in results:
        for p in res["problems"]:
            print(f"    ! {p}")
        warn_if_busy(res["cpu"], f"the latency run with {res['query'] or 'default settings'}")


# ------------------------------------------------------------ section 3


async def bench_streams(
    srv: Server,
    replica: Replica,
    samples: list[Sample],
    levels: list[int],
    duration_s: float,
    gap_ms: int,
    lag_bound: float,
    growth_bound: float,
    keep_going: bool,
) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    largest = 0
    for n in levels:
        plans, expects = [], []
        for i in range(n):
            # Each stream starts at another file and after another lead-in, so
            # utterances end at different moments on different streams.
            order: list[Sample] = []
            k, total = i, 0.0
            while not order or total + samples[k % len(samples)].seconds / 2 < duration_s:
                s = samples[k % len(samples)]
                order.append(s)
                total += s.seconds + gap_ms / 1000
                k += 1
            plan = build_plan(order, LEAD_MS * (1 + i % 3), gap_ms)
            plans.append(plan)
            expects.append(replica.expect(plan, {}))
        meter = CpuMeter()
        runs = await asyncio.gather(*(stream(srv, p, {}) for p in plans))
        cpu = meter.read()
        lags: list[float] = []
        post: list[float] = []
        first: list[float] = []
        last: list[float] = []
        missing = mismatched = extra_total = errors = unclean = 0
        slip = 0.0
        utts: list[dict[str, Any]] = []
        for i, (plan, expected, run) in enumerate(zip(plans, expects, runs, strict=True)):
            matched, extra = match(expected, run)
            extra_total += extra
            errors += len(run.errors)
            unclean += int(run.timed_out or run.close_code != 1000)
            slip = max(slip, run.max_slip_s)
            for m in matched:
                if m.t is None:
                    missing += 1
                    continue
                mismatched += int(not m.text_ok)
                lag = m.t - run.send_times[m.exp.voice_chunk]
                lags.append(lag)
                after = None if m.exp.end_chunk is None else m.t - run.send_times[m.exp.end_chunk]
                if after is not None:
                    post.append(after)
                utts.append(
                    {
                        "stream": i,
                        "file": plan.segments[m.exp.segment].name,
                        "audio_s": round((m.exp.end_ms - m.exp.start_ms) / 1000, 2),
                        "voice_end_s": round(run.send_times[m.exp.voice_chunk] - run.t0, 3),
                        "lag_s": round(lag, 3),
                        "after_vad_s": None if after is None else round(after, 3),
                    }
                )
                at = m.exp.voice_end_ms / 1000 / plan.seconds
                if at < 1 / 3:
                    first.append(lag)
                elif at >= 2 / 3:
                    last.append(lag)
        growth = (float(np.median(last)) - float(np.median(first))) if first and last else None
        p95 = pct(lags, 95)
        reasons = []
        if missing or errors or unclean:
            reasons.append(f"missing={missing} errors={errors} unclean_close={unclean}")
        if p95 is None or p95 > lag_bound:
            reasons.append(f"p95 lag {fmt(p95)} s > {lag_bound} s")
        if growth is not None and growth > growth_bound:
            reasons.append(f"lag grew {growth:.2f} s > {growth_bound} s")
        sustained = not reasons
        out.append(
            {
                "streams": n,
                "seconds_per_stream": round(sum(p.seconds for p in plans) / n, 2),
                "replies_expected": sum(1 for e in (x for ex in expects for x in ex) if e.text),
                "replies_matched": len(lags),
                "missing": missing,
                "text_mismatches": mismatched,
                "extra_replies": extra_total,
                "errors": errors,
                "unclean_closes": unclean,
                "lag": summary(lags),
                "after_vad_end": summary(post),
                "lag_median_first_third": pct(first, 50),
                "lag_median_last_third": pct(last, 50),
                "lag_growth_s": growth,
                "max_send_slip_s": round(slip, 4),
                "sustained": sustained,
                "cpu": cpu,
                "why_not": reasons,
                "utterances": sorted(utts, key=lambda u: (u["stream"], u["voice_end_s"])),
            }
        )
        print(
            f"    N={n:>2}: lag p50 {fmt(pct(lags, 50))} s p95 {fmt(p95)} s, "
            f"{len(lags)}/{len(lags) + missing} replies, growth {fmt(growth)} s, "
            f"cpu {cpu['own_cores']} cores (+{cpu['other_cores']} other) -> "
            f"{'sustained' if sustained else 'NOT sustained (' + '; '.join(reasons) + ')'}",
            flush=True,
        )
        warn_if_busy(cpu, f"N={n}")
        if sustained:
            largest = max(largest, n)
        elif not keep_going:
            break
    return {
        "levels": out,
        "largest_sustained": largest,
        # False when every level tried was sustained: the limit lies above them.
        "limit_found": any(not lv["sustained"] for lv in out),
        "lag_bound_s": lag_bound,
        "growth_bound_s": growth_bound,
        "gap_ms": gap_ms,
    }


def print_streams(res: dict[str, Any], settings: Settings) -> None:
    print(
        f"\n[3] Concurrent real-time streams (asr_workers={settings.local.asr_workers}, "
        f"asr_threads={settings.local.asr_threads}); lag = last voiced frame sent -> its reply"
    )
    rows = []
    for lv in res["levels"]:
        rows.append(
            [
                str(lv["streams"]),
                f"{lv['replies_matched']}/{lv['replies_expected']}",
                fmt(lv["lag"]["p50"]),
                fmt(lv["lag"]["p95"]),
                fmt(lv["lag"]["max"]),
                fmt(lv["after_vad_end"]["p95"]),
                fmt(lv["lag_median_first_third"]),
                fmt(lv["lag_median_last_third"]),
                fmt(lv["cpu"]["other_cores"]),
                "yes" if lv["sustained"] else "no",
            ]
        )
    print(
        table(
            [
                "N",
                "replies",
                "lag p50",
                "lag p95",
                "lag max",
                "after-VAD p95",
                "1st third",
                "last third",
                "other cpu",
                "sustained",
            ],
            rows,
        )
    )
    print(
        f"    largest N sustained: {res['largest_sustained']} "
        f"(p95 lag <= {res['lag_bound_s']} s, growth <= {res['growth_bound_s']} s, every reply arrived)"
    )
    if not res["limit_found"]:
        print("    every level tried was sustained: the limit is higher (try e.g. --levels 16,20,24)")


# ------------------------------------------------------------------ main


def machine() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    from importlib.metadata import version

    versions = {}
    for pkg in ("faster-whisper", "ctranslate2", "websockets", "uvicorn", "webrtcvad-wheels"):
        with contextlib.suppress(Exception):
            versions[pkg] = version(pkg)
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run (~1 min): fewer files, runs, levels, seconds")
    p.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES, help="folder with manifest.json + WAVs")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--runs", type=int, default=None, help="latency runs over every file (default 3, quick 1)")
    p.add_argument("--alt-silence-ms", type=int, default=300, help="second latency run with ?silence_ms= (0: skip)")
    p.add_argument("--levels", default=None, help="concurrent stream counts (default 1,2,4,8,12,16; quick 1,4)")
    p.add_argument(
        "--duration", type=float, default=None, help="seconds of speech loop per stream (default 20, quick 8)"
    )
    p.add_argument("--gap-ms", type=int, default=1200, help="silence between files in the stream loop")
    p.add_argument("--lag-bound", type=float, default=2.0, help="p95 reply lag (s) a sustained level stays under")
    p.add_argument("--growth-bound", type=float, default=0.5, help="allowed rise (s) of median lag, first->last third")
    p.add_argument("--keep-going", action="store_true", help="try every level even after one is not sustained")
    p.add_argument("--asr-workers", type=int, default=None, help="decodes at once (default: settings)")
    p.add_argument("--asr-threads", type=int, default=None, help="CPU threads per decode (default: settings)")
    p.add_argument("--skip", default="", help="comma list of sections to skip: rtf,latency,streams")
    p.add_argument(
        "--latency-files", default="", help="comma list of sample files for the latency section (default: all)"
    )
    a = p.parse_args(argv)
    a.runs = a.runs if a.runs is not None else (1 if a.quick else 3)
    a.levels = [int(x) for x in (a.levels or ("1,4" if a.quick else "1,2,4,8,12,16")).split(",") if x.strip()]
    a.duration = a.duration if a.duration is not None else (8.0 if a.quick else 20.0)
    a.skip = {x.strip() for x in a.skip.split(",") if x.strip()}
    if a.runs < 1 or not a.levels or min(a.levels) < 1 or a.duration <= 0:
        p.error("--runs, --levels and --duration must be positive")
    return a


async def run_network(args: argparse.Namespace, srv: Server, replica: Replica, samples: list[Sample]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    settings = srv.settings
    srv.key = await make_key(settings.server.db)
    # Warm-up: one short unpaced utterance per worker, so every pool thread has decoded once.
    short = min(samples, key=lambda s: s.seconds)
    warm = build_plan([short], LEAD_MS, 1200)
    await asyncio.gather(*(stream(srv, warm, {}, paced=False) for _ in range(settings.local.asr_workers)))

    if "latency" not in args.skip:
        chosen = {x.strip() for x in args.latency_files.split(",") if x.strip()}
        if not chosen and args.quick:
            chosen = set(QUICK_LATENCY_FILES)
        files = [s for s in samples if not chosen or s.name in chosen] or samples
        print(f"\n... latency: {len(files)} files x {args.runs} run(s) at real-time pace", flush=True)
        results = [await bench_latency(srv, replica, files, args.runs, {}, 1500)]
        if args.alt_silence_ms:
            print(f"... latency with ?silence_ms={args.alt_silence_ms} (1 run)", flush=True)
            alt = {"silence_ms": str(args.alt_silence_ms)}
            results.append(await bench_latency(srv, replica, files, 1, alt, 1500))
        out["latency"] = results
        print_latency(results, settings)

    if "streams" not in args.skip:
        print(f"\n... streams: levels {args.levels}, ~{args.duration:g} s of speech loop each", flush=True)
        res = await bench_streams(
            srv,
            replica,
            samples,
            args.levels,
            args.duration,
            args.gap_ms,
            args.lag_bound,
            args.growth_bound,
            args.keep_going,
        )
        out["streams"] = res
        print_streams(res, settings)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    started = time.monotonic()
    samples = load_samples(args.samples)
    with tempfile.TemporaryDirectory(prefix="speech-bench-") as tmp:
        overrides = {
            "server.db": str(Path(tmp) / "ledger.db"),
            "local.asr_workers": args.asr_workers,
            "local.asr_threads": args.asr_threads,
        }
        settings = load_settings(environ={}, overrides=overrides)
        mach = machine()
        print(f"machine: nproc={mach['nproc']} cpu={mach['cpu_model']!r} python {mach['python']}")
        print(
            f"engine: faster-whisper tiny.en int8, asr_workers={settings.local.asr_workers} "
            f"asr_threads={settings.local.asr_threads} beam_size={settings.local.beam_size}; "
            f"VAD silence_ms={settings.vad.silence_ms} tail_ms={settings.vad.tail_ms}",
            flush=True,
        )
        t = time.perf_counter()
        engine = WhisperRecognizer(settings.local)
        load_s = time.perf_counter() - t
        # Only the ASR engine is loaded: the benchmark never touches TTS.
        engines = Engines(settings, asr={"local": engine})
        result: dict[str, Any] = {
            "mode": "quick" if args.quick else "full",
            "command": " ".join([Path(sys.executable).as_posix(), *sys.argv]),
            "machine": mach,
            "settings": {"local": asdict(settings.local), "vad": asdict(settings.vad)},
            "model_load_s": round(load_s, 3),
        }
        try:
            if "rtf" not in args.skip:
                result["rtf"] = bench_rtf(engine, samples)
                print_rtf(result["rtf"], settings.local.asr_threads)
            if not {"latency", "streams"} <= args.skip:
                replica = Replica(settings, engine)
                srv = start_server(settings, engines)
                try:
                    result.update(asyncio.run(run_network(args, srv, replica, samples)))
                finally:
                    stop_server(srv)
                result["replica_decodes"] = replica.decodes
        finally:
            engines.close()
    result["wall_s"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwall time {result['wall_s']} s; results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
