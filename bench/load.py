"""The ASR load generator: N concurrent real-time websocket streams from one
asyncio process, against the gateway or the echo relay.

Audio. Every stream loops the same real speech clips from ``../shared/samples``
(by default ``goforward.wav`` and ``librivox-0880.wav``, about 3 s each), each
followed by digital silence padded so that clip + gap is at least
``gap_s`` long and a multiple of 600 ms (three 200 ms frames = twenty 30 ms
VAD frames, so every cycle meets the VAD on the same grid). Streams differ by
a lead-in of silence (a multiple of 600 ms) and by a phase of 0-190 ms in
10 ms steps, so their utterances do not end in lockstep.

Frames. Every distinct 200 ms chunk is turned once into an OM1 JSON text
frame (``{"audio": "<base64 PCM16LE>", "rate": 16000}``), masked and framed
(:mod:`bench.wsclient`); sending is one ``transport.write``. One ticker task
wakes every 10 ms and writes the frames due in that phase slot: frame k of a
stream leaves when its audio would have finished being captured.

Expectations. Before the run, each stream script is fed offline to the
gateway's own Sans-I/O ``AsrSession`` (same VAD settings). That gives, for
every utterance, the frame on whose arrival the VAD ends it (the *deciding
frame*: the silence window is complete) and the frame holding the end of its
last voiced audio. For the echo relay the same is computed from its rule
(third all-zero frame after speech). Replies come in utterance order, so the
k-th ``asr_reply`` of a stream belongs to its k-th expected utterance.

Per utterance:

* **added** = reply arrival - send time of the deciding frame - the
  upstream's own time (the fake writes it into the transcript as
  ``up_us=N``). The VAD silence window is therefore *not* in it: it is what
  the gateway adds once it has all the audio it needs to decide.
* **end of speech** = reply arrival - send time of the frame holding the last
  voiced audio: what a user waits, silence window included.

A level is *sustained* when every stream connected and closed normally,
every expected reply came, the generator kept its schedule, no send backlog
built up (the server kept reading), p99 added latency stayed under
``lag_bound_s`` and the median added latency of the last third of the window
is at most ``growth_bound_s`` above the first third's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import wsclient
from bench.echo_relay import SILENT_FRAMES

RATE = 16000
CHUNK_S = 0.2
CHUNK_SAMPLES = int(RATE * CHUNK_S)
ALIGN = 3  # chunks: 600 ms = 20 VAD frames of 30 ms
SLOTS = 20  # phase slots of 10 ms inside one 200 ms frame period
TICK_S = CHUNK_S / SLOTS
KEEPALIVE = wsclient.text_frame(json.dumps({"type": "KeepAlive"}))
CLOSE_STREAM = wsclient.text_frame(json.dumps({"type": "CloseStream"}))
DEFAULT_CLIPS = ("goforward.wav", "librivox-0880.wav")


# ------------------------------------------------------------------ audio and scripts


def load_clip(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        rate, raw, ch = w.getframerate(), w.readframes(w.getnframes()), w.getnchannels()
    x = np.frombuffer(raw, dtype="<i2")
    if ch == 2:
        x = x.reshape(-1, 2).mean(axis=1).astype("<i2")
    if rate != RATE:
        from speech.audio.resample import resample

        x = resample(x, rate, RATE)
    return np.asarray(x, dtype="<i2")


@dataclass
class Utt:
    decide: int  # index of the chunk whose arrival ends the utterance
    speech_end: int  # index of the chunk holding the end of its last voiced audio


@dataclass
class Script:
    lead: int  # chunks of silence before the first clip
    ids: list[int]  # chunk ids (into Plan.texts / Plan.wire), one per 200 ms
    expect: dict[str, list[Utt]] = field(default_factory=dict)  # target -> utterances


@dataclass
class Plan:
    texts: list[str]  # JSON text of each distinct chunk; id 0 is silence
    wire: list[bytes]  # the same, framed and masked
    scripts: list[Script]
    chunks: int  # chunks per stream
    clips: list[str]
    cycle_s: float
    speech_s_per_cycle: float


def build_plan(samples: Path, clip_names: tuple[str, ...], gap_s: float, duration_s: float) -> Plan:
    silence = bytes(CHUNK_SAMPLES * 2)
    texts = [json.dumps({"audio": base64.b64encode(silence).decode("ascii"), "rate": RATE})]
    cycle: list[int] = []
    speech_chunks = 0
    for name in clip_names:
        x = load_clip(samples / name)
        n = math.ceil(len(x) / CHUNK_SAMPLES)
        x = np.concatenate([x, np.zeros(n * CHUNK_SAMPLES - len(x), dtype="<i2")])
        for i in range(n):
            pcm = x[i * CHUNK_SAMPLES : (i + 1) * CHUNK_SAMPLES].tobytes()
            if pcm.count(0) == len(pcm):
                cycle.append(0)
                continue
            texts.append(json.dumps({"audio": base64.b64encode(pcm).decode("ascii"), "rate": RATE}))
            cycle.append(len(texts) - 1)
        speech_chunks += n
        gap = math.ceil(gap_s / CHUNK_S)
        total = math.ceil((n + gap) / ALIGN) * ALIGN
        cycle += [0] * (total - n)
    chunks = max(ALIGN, math.ceil(duration_s / CHUNK_S))
    scripts = []
    for lead in range(0, len(cycle), ALIGN):
        body = [0] * lead
        while len(body) < chunks:
            body += cycle
        scripts.append(Script(lead, body[:chunks]))
    wire = [wsclient.text_frame(t) for t in texts]
    return Plan(texts, wire, scripts, chunks, list(clip_names), len(cycle) * CHUNK_S, speech_chunks * CHUNK_S)


def expect_gateway(plan: Plan, query: dict[str, str] | None = None) -> None:
    """Replay every script through the gateway's own Sans-I/O session."""
    from starlette.datastructures import QueryParams

    from speech.api.asr_ws import session_config
    from speech.pipeline.session import AsrSession, SpeechEnded
    from speech.settings import load_settings

    settings = load_settings(environ={}, overrides={})
    config = session_config(settings, QueryParams(query or {}))
    tail_ms = config.vad.tail_ms
    for script in plan.scripts:
        session = AsrSession(config)
        utts: list[Utt] = []
        for i, cid in enumerate(script.ids):
            for ev in session.receive_text(plan.texts[cid]):
                if isinstance(ev, SpeechEnded):
                    voiced_end = max(ev.start_ms, ev.end_ms - tail_ms)
                    utts.append(Utt(i, min(i, max(0, (voiced_end * RATE // 1000 - 1) // CHUNK_SAMPLES))))
        script.expect["gateway"] = utts


def expect_echo(plan: Plan) -> None:
    """The echo relay's rule: the SILENT_FRAMES-th all-zero chunk after speech."""
    for script in plan.scripts:
        utts: list[Utt] = []
        speaking, silent, last = False, 0, 0
        for i, cid in enumerate(script.ids):
            if cid:
                speaking, silent, last = True, 0, i
            elif speaking:
                silent += 1
                if silent == SILENT_FRAMES:
                    speaking = False
                    utts.append(Utt(i, last))
        script.expect["echo"] = utts


# ------------------------------------------------------------------ the run


class Stream:
    __slots__ = ("index", "script", "slot", "client", "sent_at", "replies", "errors", "extra", "connect_error")

    def __init__(self, index: int, script: Script, slot: int) -> None:
        self.index = index
        self.script = script
        self.slot = slot
        self.client: wsclient.WsClient | None = None
        self.sent_at: list[float] = []
        self.replies: list[tuple[float, float]] = []  # (arrival, upstream seconds)
        self.errors: list[str] = []
        self.extra = 0
        self.connect_error = ""

    def on_text(self, _client: wsclient.WsClient, payload: bytes, t: float) -> None:
        try:
            msg = json.loads(payload)
        except ValueError:
            self.errors.append(f"bad reply {payload[:80]!r}")
            return
        if "asr_reply" in msg:
            text = msg["asr_reply"]
            up = 0.0
            i = text.find("up_us=")
            if i >= 0:
                with contextlib.suppress(ValueError):
                    up = int(text[i + 6 :].split()[0]) / 1e6
            self.replies.append((t, up))
        elif "error" in msg:
            self.errors.append(str(msg["error"])[:200])


@dataclass
class Probe:
    """What the runner samples from outside: the server's CPU and RSS."""

    cpu_s: Callable[[], float]
    rss_mb: Callable[[], float]


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50_ms": None if not values else round(pct(values, 50) * 1000, 3),  # type: ignore[operator]
        "p99_ms": None if not values else round(pct(values, 99) * 1000, 3),  # type: ignore[operator]
        "max_ms": None if not values else round(max(values) * 1000, 3),
    }


async def run_level(
    *,
    target: str,
    host: str,
    port: int,
    path: str,
    plan: Plan,
    n: int,
    probe: Probe,
    warmup_s: float = 3.0,
    connect_concurrency: int = 64,
    lag_bound_s: float = 1.0,
    growth_bound_s: float = 0.02,
    backlog_per_stream: int = 16 * 1024,
    log: Callable[[str], None] = print,
    on_window_start: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """N streams for the plan's duration against one server. ``target`` names
    the expectation set ("gateway" or "echo")."""
    streams = [Stream(i, plan.scripts[(i // SLOTS) % len(plan.scripts)], i % SLOTS) for i in range(n)]
    by_slot: list[list[Stream]] = [[] for _ in range(SLOTS)]
    for s in streams:
        by_slot[s.slot].append(s)

    # --- ramp: connect everyone (KeepAlive every 5 s while waiting)
    rss_before = probe.rss_mb()
    cpu_ramp0, t_ramp0 = probe.cpu_s(), time.perf_counter()
    sem = asyncio.Semaphore(connect_concurrency)
    keepalive_stop = asyncio.Event()

    async def open_one(s: Stream) -> None:
        async with sem:
            try:
                s.client = await asyncio.wait_for(wsclient.connect(host, port, path, s.on_text), 30)
            except Exception as exc:
                s.connect_error = f"{type(exc).__name__}: {exc}"[:200]

    async def keepalive() -> None:
        while not keepalive_stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(keepalive_stop.wait(), 5)
            if not keepalive_stop.is_set():
                for s in streams:
                    if s.client is not None:
                        s.client.write(KEEPALIVE)

    ka = asyncio.create_task(keepalive())
    await asyncio.gather(*(open_one(s) for s in streams))
    keepalive_stop.set()
    await ka
    ramp_s = time.perf_counter() - t_ramp0
    ramp_cpu = probe.cpu_s() - cpu_ramp0
    connected = [s for s in streams if s.client is not None]
    log(f"    {target} N={n}: {len(connected)} connected in {ramp_s:.1f} s")

    # --- stream: one ticker for everyone
    t0 = time.perf_counter() + 0.3
    window_start = t0 + warmup_s
    window_end = t0 + plan.chunks * CHUNK_S
    lateness: list[float] = []
    cpu_marks: dict[str, tuple[float, float]] = {}
    rss_samples: list[float] = []
    backlog_samples: list[int] = []
    next_sample = window_start
    total_ticks = (plan.chunks + 1) * SLOTS
    for tick in range(total_ticks):
        due = t0 + tick * TICK_S
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        k = tick // SLOTS - 1  # frame k is due one period after its start
        if k >= 0:
            for s in by_slot[tick % SLOTS]:
                c = s.client
                if c is not None and k < len(s.script.ids):
                    c.write(plan.wire[s.script.ids[k]])
                    s.sent_at.append(time.perf_counter())
        now = time.perf_counter()
        lateness.append(now - due)
        if "start" not in cpu_marks and now >= window_start:
            cpu_marks["start"] = (probe.cpu_s(), now)
            if on_window_start is not None:
                on_window_start()
        if now >= next_sample and now < window_end:
            next_sample += 1.0
            rss_samples.append(probe.rss_mb())
            backlog_samples.append(sum(s.client.backlog() for s in connected if s.client is not None))
    end_now = time.perf_counter()
    cpu_marks["end"] = (probe.cpu_s(), end_now)
    rss_samples.append(probe.rss_mb())
    final_backlog = sum(s.client.backlog() for s in connected if s.client is not None)
    backlog_samples.append(final_backlog)

    # --- close: CloseStream, wait for the server's close
    for s in connected:
        assert s.client is not None
        s.client.write(CLOSE_STREAM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(
            asyncio.gather(*(s.client.closed for s in connected if s.client is not None)), 30 + n / 100
        )
    for s in connected:
        assert s.client is not None
        if not s.client.closed.done() and s.client.transport is not None:
            s.client.transport.abort()
    await asyncio.sleep(0)

    # --- numbers
    added: list[tuple[float, float]] = []  # (deciding frame send time, added)
    e2e: list[float] = []
    upstream: list[float] = []
    missing = 0
    replies = 0
    for s in connected:
        exp = [u for u in s.script.expect[target] if u.decide < len(s.sent_at)]
        replies += min(len(s.replies), len(exp))
        s.extra = max(0, len(s.replies) - len(exp))
        missing += max(0, len(exp) - len(s.replies))
        for u, (t, up) in zip(exp, s.replies, strict=False):
            sent = s.sent_at[u.decide]
            if sent < window_start:
                continue
            added.append((sent, t - sent - up))
            e2e.append(t - s.sent_at[u.speech_end])
            upstream.append(up)
    added.sort()
    values = [a for _, a in added]
    third = len(values) // 3
    first_med = pct(values[:third], 50) if third else None
    last_med = pct(values[-third:], 50) if third else None
    (c0, w0), (c1, w1) = cpu_marks.get("start", cpu_marks["end"]), cpu_marks["end"]
    window = max(1e-9, w1 - w0)
    cpu = c1 - c0
    audio_s = len(connected) * window
    close_codes: dict[str, int] = {}
    for s in connected:
        assert s.client is not None
        key = str(s.client.close_code)
        close_codes[key] = close_codes.get(key, 0) + 1
    errors = sorted({e for s in streams for e in ([s.connect_error] if s.connect_error else []) + s.errors})
    lat_sorted = sorted(lateness)
    gen_p99 = lat_sorted[int(0.99 * (len(lat_sorted) - 1))] if lat_sorted else 0.0
    gen_max = lat_sorted[-1] if lat_sorted else 0.0
    rss_peak = max(rss_samples) if rss_samples else rss_before
    p99 = pct(values, 99)
    checks = {
        "all_connected": len(connected) == n,
        "closed_normally": close_codes.get("1000", 0) == len(connected),
        "every_reply": missing == 0 and not errors,
        "generator_on_time": gen_p99 <= 0.05 and gen_max <= 0.25,
        "server_kept_reading": final_backlog <= backlog_per_stream * max(1, len(connected)),
        "p99_under_bound": p99 is not None and p99 <= lag_bound_s,
        "no_growth": first_med is None or last_med is None or last_med - first_med <= growth_bound_s,
    }
    return {
        "target": target,
        "streams": n,
        "connected": len(connected),
        "sustained": all(checks.values()),
        "checks": checks,
        "ramp_s": round(ramp_s, 3),
        "connect_cpu_ms_per_stream": round(ramp_cpu * 1000 / max(1, len(connected)), 3),
        "window_s": round(window, 3),
        "audio_s": round(audio_s, 1),
        "cpu_s": round(cpu, 3),
        "cpu_cores": round(cpu / window, 3),
        "cpu_ms_per_audio_s": round(cpu * 1000 / audio_s, 4) if audio_s else None,
        "cpu_s_per_stream_min": round(cpu / (audio_s / 60), 5) if audio_s else None,
        "rss_before_mb": round(rss_before, 1),
        "rss_peak_mb": round(rss_peak, 1),
        "mb_per_stream": round((rss_peak - rss_before) / max(1, len(connected)), 4),
        "added": summary(values),
        "added_first_third_p50_ms": None if first_med is None else round(first_med * 1000, 3),
        "added_last_third_p50_ms": None if last_med is None else round(last_med * 1000, 3),
        "end_of_speech": summary(e2e),
        "upstream_own": summary(upstream),
        "replies": replies,
        "missing_replies": missing,
        "extra_replies": sum(s.extra for s in connected),
        "errors": errors[:5],
        "close_codes": close_codes,
        "generator_lateness_ms": {"p99": round(gen_p99 * 1000, 2), "max": round(gen_max * 1000, 2)},
        "send_backlog_bytes": {"max": max(backlog_samples), "final": final_backlog},
    }
