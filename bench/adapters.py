#!/usr/bin/env python3
"""Per-stream overhead of each cloud adapter, measured through the real gateway.

Three processes, all on loopback:

* **fakes**: this script with ``--serve-fakes``. It runs the test suite's
  loopback fakes of Riva (gRPC), Google Speech-to-Text v1 (gRPC) and ElevenLabs
  (HTTP). They answer as fast as they can: the synthesized tone (and the
  ElevenLabs fake's real MP3) is memoized, as the bench repeats one sentence.
* **gateway**: ``python -m speech serve`` with a generated TOML. Each route
  goes to exactly one cloud engine, so no local model is loaded. It has its own
  SQLite ledger and one API key. Its CPU time (utime+stime from
  ``/proc/<pid>/stat``) is read before and after each run, so the clients' and
  the fakes' CPU is not counted.
* **clients**: this process. ASR runs use real websockets carrying OM1 JSON
  frames (200 ms of 16 kHz PCM16LE each, paced at real time unless ``--fast``),
  then ``{"type": "CloseStream"}``. TTS runs POST ``/api/core/{route}/tts``
  with httpx.

Every number has a **direct** baseline. The same client process drives the
adapter class (``RivaRecognizer``, ``GoogleRecognizer``, ``RivaSynthesizer``,
``ElevenLabsSynthesizer``) against the same fake, with the same audio, pacing
and concurrency. The gap between the two is what the gateway adds: the
websocket/HTTP edge, auth, VAD, metering and encoding.

    /work/venv/bin/python bench/adapters.py            # full run, under ~3 minutes
    /work/venv/bin/python bench/adapters.py --quick    # smoke run, ~40 s

Results: a table on stdout and ``bench/results/adapters.json`` (git-ignored).
See bench/README.md for what each column means.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import websockets  # noqa: E402

from speech.audio.resample import resample  # noqa: E402
from speech.metering.sqlite import SqliteLedger  # noqa: E402
from speech.providers.base import RecognitionConfig, SynthesisRequest  # noqa: E402
from speech.providers.registry import ASR_FACTORIES, TTS_FACTORIES  # noqa: E402
from speech.settings import load_settings  # noqa: E402

SAMPLES = ROOT / "samples"
DEFAULT_OUT = HERE / "results" / "adapters.json"

RATE = 16000
CHUNK_S = 0.2  # OM1 sends ~200 ms frames
CHUNK_BYTES = int(RATE * CHUNK_S) * 2
LEAD_S = 0.2  # speech kept before the first voiced 10 ms
TAIL_S = 0.1  # and after the last: far below silence_ms (500), so CloseStream ends the last utterance
CLOSE_STREAM = json.dumps({"type": "CloseStream"})
GOOGLE_KEY = "AIza-bench-google-key-0123456789"
TTS_TEXT = "Turn left at the next door, then stop."
TTS_FORMATS = {"riva": "wav_22050", "elevenlabs": "mp3_44100_128"}
STREAM_TIMEOUT_S = 60.0


# ------------------------------------------------------------------ machine and processes


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model or platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads, living and exited)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used (from /proc/stat)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = Path("/proc/stat").read_text().split()[1:9]
    return sum(int(x) for x in (user, nice, system, irq, softirq, steal)) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            name, value = line.split(":", 1)
            out[name] = int(value.split()[0]) / 1024
    return out


class Meter:
    """CPU seconds of the gateway, the fakes and this client process over one
    window, and the window's wall time."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.start = self._read()

    def _read(self) -> tuple[float, ...]:
        c = self.ctx
        gw, fakes = cpu_seconds(c.gateway_pid), cpu_seconds(c.fakes_pid)
        return gw, fakes, time.process_time(), machine_busy_seconds(), time.perf_counter()

    def stop(self) -> dict[str, float]:
        end = self._read()
        gw, fakes, client, busy, wall = (b - a for a, b in zip(self.start, end, strict=True))
        return {
            "gateway_cpu_s": gw,
            "fakes_cpu_s": fakes,
            "client_cpu_s": client,
            # CPU used by anything else on the machine: other work skews the numbers.
            "other_cpu_s": max(0.0, busy - gw - fakes - client),
            "window_s": wall,
        }


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def to_toml(overrides: dict[str, Any]) -> str:
    """Dotted overrides -> TOML tables (``routes.asr.riva`` -> ``[routes.asr] riva = ...``)."""
    tables: dict[str, list[str]] = {}
    for dotted, value in overrides.items():
        table, _, key = dotted.rpartition(".")
        tables.setdefault(table, []).append(f"{key} = {toml_value(value)}")
    return "\n".join(f"[{t}]\n" + "\n".join(lines) + "\n" for t, lines in tables.items())


def gateway_overrides(fakes: dict[str, str], db: str) -> dict[str, Any]:
    return {
        "server.host": "127.0.0.1",
        "server.port": 0,
        "server.db": db,
        "riva.url": fakes["riva"],
        "google.url": fakes["google"],
        "google.tls": False,
        "google.api_key": GOOGLE_KEY,
        "elevenlabs.url": fakes["elevenlabs"],
        "elevenlabs.api_key": fakes["elevenlabs_key"],
        # One cloud engine per route and no local fallback, so no model is loaded.
        "routes.asr.riva": ["riva"],
        "routes.asr.google": ["google"],
        "routes.asr.local": ["riva"],
        "routes.tts.riva": ["riva"],
        "routes.tts.elevenlabs": ["elevenlabs"],
        "routes.tts.local": ["riva"],
    }


def serve_fakes() -> int:
    """``--serve-fakes``: run the three loopback fakes until stdin closes."""
    import functools

    from tests.providers.elevenlabs import fake_elevenlabs
    from tests.providers.elevenlabs.fake_elevenlabs import GATEWAY_KEY, FakeElevenLabs
    from tests.providers.google.fake_google import running_fake_google
    from tests.providers.riva import fake_riva
    from tests.providers.riva.fake_riva import fake_riva_in_thread

    # The fakes synthesize (and ElevenLabs' encodes to MP3) on every request;
    # the bench sends one sentence over and over, so memoize that work and the
    # fakes answer in near-constant time with the same real audio.
    fake_riva.tone = functools.lru_cache(maxsize=8)(fake_riva.tone)
    fake_elevenlabs.tone = functools.lru_cache(maxsize=8)(fake_elevenlabs.tone)
    fake_elevenlabs.encode = functools.lru_cache(maxsize=8)(fake_elevenlabs.encode)

    eleven = FakeElevenLabs()
    eleven.start()
    try:
        with fake_riva_in_thread() as riva, running_fake_google(keep_audio=False) as google:
            urls = {"riva": riva.url, "google": google.url, "elevenlabs": eleven.url, "elevenlabs_key": GATEWAY_KEY}
            print(json.dumps(urls), flush=True)
            sys.stdin.read()  # the bench closes our stdin when it is done
    finally:
        eleven.stop()
    return 0


class Processes:
    """The fakes and the gateway as child processes, with their logs in ``tmp``."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SPEECH_")}
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), self.env.get("PYTHONPATH")]))
        self.fakes: subprocess.Popen[str] | None = None
        self.gateway: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start_fakes(self) -> dict[str, str]:
        log = (self.tmp / "fakes.log").open("w")
        self.fakes = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve-fakes"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=ROOT,
            env=self.env,
        )
        assert self.fakes.stdout is not None
        line = self.fakes.stdout.readline()
        if not line:
            raise SystemExit("the fakes did not start:\n" + (self.tmp / "fakes.log").read_text()[-3000:])
        return json.loads(line)

    def start_gateway(self, config: Path) -> int:
        log_path = self.tmp / "gateway.log"
        self.gateway = subprocess.Popen(
            [sys.executable, "-m", "speech", "serve", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log_path.open("w"),
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=self.env,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", log_path.read_text())
            if m:
                self.port = int(m.group(1))
                break
            if self.gateway.poll() is not None:
                break
            time.sleep(0.05)
        if not self.port:
            raise SystemExit("the gateway did not start:\n" + log_path.read_text()[-3000:])
        while time.monotonic() < deadline:  # engines are built after the socket opens
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).status_code == 200:
                    return self.port
            time.sleep(0.05)
        raise SystemExit("the gateway never became ready:\n" + log_path.read_text()[-3000:])

    def stop(self) -> None:
        if self.gateway is not None and self.gateway.poll() is None:
            self.gateway.terminate()
            try:
                self.gateway.wait(10)
            except subprocess.TimeoutExpired:
                self.gateway.kill()
        if self.fakes is not None and self.fakes.poll() is None:
            assert self.fakes.stdin is not None
            with contextlib.suppress(OSError):
                self.fakes.stdin.close()
            try:
                self.fakes.wait(15)
            except subprocess.TimeoutExpired:
                self.fakes.kill()


# ------------------------------------------------------------------ audio


@dataclass
class Sample:
    name: str
    pcm: bytes  # 16 kHz PCM16LE mono, trimmed to the speech
    utterances: int

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / RATE

    def chunks(self) -> list[bytes]:
        return [self.pcm[i : i + CHUNK_BYTES] for i in range(0, len(self.pcm), CHUNK_BYTES)]

    def frames(self) -> list[str]:
        """OM1 JSON text frames, one per 200 ms chunk."""
        return [json.dumps({"audio": base64.b64encode(c).decode("ascii"), "rate": RATE}) for c in self.chunks()]


def load_samples() -> list[Sample]:
    """The project's samples at 16 kHz, cut to LEAD_S before the first and
    TAIL_S after the last 10 ms whose RMS is over 300 (of 32767)."""
    out = []
    for entry in json.loads((SAMPLES / "manifest.json").read_text()):
        with wave.open(str(SAMPLES / entry["file"])) as w:
            rate, raw = w.getframerate(), w.readframes(w.getnframes())
        x = resample(np.frombuffer(raw, dtype="<i2"), rate, RATE)
        win = RATE // 100
        rms = np.sqrt(np.mean(x[: len(x) // win * win].reshape(-1, win).astype(np.float64) ** 2, axis=1))
        voiced = np.flatnonzero(rms > 300)
        start = max(0, voiced[0] * win - int(LEAD_S * RATE))
        end = min(len(x), (voiced[-1] + 1) * win + int(TAIL_S * RATE))
        out.append(Sample(entry["file"], x[start:end].astype("<i2").tobytes(), len(entry["utterances"])))
    return out


# ------------------------------------------------------------------ statistics


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def summary(latencies: list[float]) -> dict[str, Any]:
    return {
        "n": len(latencies),
        "p50_s": pct(latencies, 50),
        "p95_s": pct(latencies, 95),
        "max_s": max(latencies) if latencies else None,
    }


# ------------------------------------------------------------------ ASR


@dataclass
class StreamResult:
    sample: str
    audio_s: float
    latency_s: float | None = None  # CloseStream / end of audio -> last final
    replies: int = 0
    expected: int = 0
    errors: list[str] = field(default_factory=list)
    close_code: int | None = None
    slip_s: float = 0.0  # how far the client fell behind its real-time schedule

    @property
    def ok(self) -> bool:
        return not self.errors and self.replies == self.expected and self.latency_s is not None


async def paced(items: list[Any], sample: Sample, pace: bool, result: StreamResult) -> Any:
    """Yield ``items`` (one per 200 ms chunk), each when its audio would have
    finished being captured (or at once with ``pace`` False)."""
    chunk_ends = np.cumsum([len(c) / 2 / RATE for c in sample.chunks()])
    start = time.perf_counter()
    for item, due in zip(items, chunk_ends, strict=True):
        if pace:
            wait = start + due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            result.slip_s = max(result.slip_s, time.perf_counter() - start - due)
        yield item


async def gateway_stream(url: str, sample: Sample, pace: bool, delay: float) -> StreamResult:
    await asyncio.sleep(delay)
    res = StreamResult(sample.name, sample.seconds, expected=sample.utterances)
    frames = sample.frames()
    last: float | None = None
    end_of_audio = 0.0
    async with websockets.connect(url, max_size=None, open_timeout=30, compression=None) as ws:

        async def receive() -> None:
            nonlocal last
            with contextlib.suppress(websockets.ConnectionClosed):
                async for message in ws:
                    reply = json.loads(message)
                    if "asr_reply" in reply:
                        res.replies += 1
                        last = time.perf_counter()
                    elif "error" in reply:
                        res.errors.append(reply["error"])

        reader = asyncio.create_task(receive())
        async for frame in paced(frames, sample, pace, res):
            await ws.send(frame)
        end_of_audio = time.perf_counter()
        await ws.send(CLOSE_STREAM)
        await asyncio.wait_for(reader, STREAM_TIMEOUT_S)
        res.close_code = ws.close_code
    if res.close_code != 1000:
        res.errors.append(f"close code {res.close_code}")
    if last is not None and last > end_of_audio:
        res.latency_s = last - end_of_audio
    return res


async def direct_stream(recognizer: Any, sample: Sample, pace: bool, delay: float) -> StreamResult:
    await asyncio.sleep(delay)
    res = StreamResult(sample.name, sample.seconds, expected=1)  # the whole file is one utterance here
    chunks = sample.chunks()
    end_of_audio = 0.0

    async def audio() -> Any:
        nonlocal end_of_audio
        n = 0
        async for chunk in paced(chunks, sample, pace, res):
            n += 1
            if n == len(chunks):
                end_of_audio = time.perf_counter()
            yield chunk

    last: float | None = None
    try:
        async with asyncio.timeout(STREAM_TIMEOUT_S):
            async for transcript in recognizer.recognize(audio(), RecognitionConfig()):
                if transcript.is_final and transcript.text:
                    res.replies += 1
                    last = time.perf_counter()
    except Exception as exc:  # reported, not raised: one failed stream must not hide the others
        res.errors.append(f"{type(exc).__name__}: {exc}")
    if last is not None and end_of_audio and last > end_of_audio:
        res.latency_s = last - end_of_audio
    return res


async def asr_level(
    path: str, adapter: str, n: int, rounds: int, samples: list[Sample], pace: bool, ctx: Context
) -> dict[str, Any]:
    results: list[StreamResult] = []
    meter, t0 = Meter(ctx), time.perf_counter()
    for r in range(rounds):
        jobs = []
        for i in range(n):
            sample = samples[(r * n + i) % len(samples)]
            delay = i * CHUNK_S / n  # spread the streams over one frame period
            if path == "gateway":
                url = f"ws://127.0.0.1:{ctx.port}/api/core/{adapter}/asr?api_key={ctx.key}"
                jobs.append(gateway_stream(url, sample, pace, delay))
            else:
                jobs.append(direct_stream(ctx.recognizers[adapter], sample, pace, delay))
        for outcome in await asyncio.gather(*jobs, return_exceptions=True):
            if isinstance(outcome, BaseException):
                bad = StreamResult("?", 0.0, errors=[f"{type(outcome).__name__}: {outcome}"])
                results.append(bad)
            else:
                results.append(outcome)
    wall = time.perf_counter() - t0
    await asyncio.sleep(0.1)  # let the gateway finish its per-session log line
    cpu = meter.stop()
    audio = sum(r.audio_s for r in results)
    lat = [r.latency_s for r in results if r.latency_s is not None]
    out = {
        "kind": "asr",
        "adapter": adapter,
        "path": path,
        "streams": n,
        "rounds": rounds,
        "audio_s": audio,
        "wall_s": wall,
        "ok": sum(r.ok for r in results),
        "total": len(results),
        "errors": sorted({e for r in results for e in r.errors})[:5],
        "max_send_slip_s": max((r.slip_s for r in results), default=0.0),
        "latency": summary(lat),
        "latencies_s": [round(x, 6) for x in lat],
        **cpu,
    }
    if path == "gateway":
        out["gateway_rss_mb"] = rss_mb(ctx.gateway_pid)
    return out


# ------------------------------------------------------------------ TTS


async def closed_loop(call: Any, concurrency: int, seconds: float, max_requests: int) -> dict[str, Any]:
    """``concurrency`` workers issue ``call()`` back to back until ``seconds``
    pass or ``max_requests`` have been started."""
    latencies: list[float] = []
    errors: list[str] = []
    started = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds

    async def worker() -> None:
        nonlocal started
        while time.perf_counter() < deadline and started < max_requests:
            started += 1
            s = time.perf_counter()
            try:
                await call()
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(time.perf_counter() - s)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    return {
        "requests": len(latencies),
        "failed": len(errors),
        "errors": sorted(set(errors))[:5],
        "wall_s": wall,
        "rps": len(latencies) / wall if wall else None,
        "latency": summary(latencies),
    }


async def tts_level(path: str, adapter: str, concurrency: int, seconds: float, ctx: Context) -> dict[str, Any]:
    fmt = TTS_FORMATS[adapter]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ctx.port}", timeout=30, limits=limits) as client:
        if path == "gateway":

            async def call() -> None:
                r = await client.post(
                    f"/api/core/{adapter}/tts",
                    json={"text": TTS_TEXT, "output_format": fmt},
                    headers={"x-api-key": ctx.key},
                )
                if r.status_code != 200 or not r.json().get("response"):
                    raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")

        else:
            synth = ctx.synthesizers[adapter]
            request = SynthesisRequest(text=TTS_TEXT, output_format=fmt)

            async def call() -> None:
                if not [c async for c in synth.synthesize(request) if c.data]:
                    raise RuntimeError("no audio")

        for _ in range(3):  # warm: connections open, first-call paths taken
            await call()
        meter = Meter(ctx)
        out = await closed_loop(call, concurrency, seconds, max_requests=50_000)
        await asyncio.sleep(0.05)
        out.update(meter.stop())
    out.update({"kind": "tts", "adapter": adapter, "path": path, "format": fmt, "in_flight": concurrency})
    return out


def net_of_idle(rows: list[dict[str, Any]], idle_per_s: float) -> None:
    """Gateway CPU of each gateway run less what it burns idle over the same window."""
    for row in rows:
        if row["path"] != "gateway":
            continue
        net = max(0.0, row["gateway_cpu_s"] - idle_per_s * row["window_s"])
        row["gateway_cpu_net_s"] = net
        row["gateway_core_share"] = row["gateway_cpu_s"] / row["window_s"]
        if row["kind"] == "asr":
            row["gateway_cpu_net_per_audio_s"] = net / row["audio_s"] if row["audio_s"] else None
        else:
            row["gateway_cpu_net_per_request_s"] = net / row["requests"] if row["requests"] else None


# ------------------------------------------------------------------ the run


@dataclass
class Context:
    port: int
    gateway_pid: int
    fakes_pid: int
    key: str
    recognizers: dict[str, Any]
    synthesizers: dict[str, Any]


async def run(args: argparse.Namespace, proc: Processes, tmp: Path) -> dict[str, Any]:
    samples = load_samples()
    fakes = proc.start_fakes()
    db = str(tmp / "ledger.db")
    over = gateway_overrides(fakes, db)
    ledger = await SqliteLedger.open(db)
    try:
        key, _ = await ledger.create_key("bench", 10**15)
    finally:
        await ledger.close()
    config = tmp / "gateway.toml"
    config.write_text(to_toml(over))
    port = proc.start_gateway(config)
    assert proc.gateway is not None and proc.fakes is not None
    pid = proc.gateway.pid

    # The direct baselines: the same adapter classes, same settings, in this process.
    settings = load_settings(environ={}, overrides=over)
    ctx = Context(
        port,
        pid,
        proc.fakes.pid,
        key,
        {a: ASR_FACTORIES[a](settings) for a in args.asr},
        {a: TTS_FACTORIES[a](settings) for a in args.tts},
    )
    meter = Meter(ctx)
    await asyncio.sleep(args.idle_s)
    idle_windows = [meter.stop()]

    pace = not args.fast
    rows: list[dict[str, Any]] = []
    try:
        for adapter in args.asr:
            for path in ("gateway", "direct"):  # warm-up: channels connect, first-call paths taken
                await asr_level(path, adapter, 1, 1, samples[:1], False, ctx)
            for n in args.levels:
                rounds = max(1, math.ceil(args.min_samples / n))
                for path in ("gateway", "direct"):
                    row = await asr_level(path, adapter, n, rounds, samples, pace, ctx)
                    rows.append(row)
                    print(progress(row), flush=True)
        for adapter in args.tts:
            for c in args.tts_in_flight:
                for path in ("gateway", "direct"):
                    row = await tts_level(path, adapter, c, args.tts_seconds, ctx)
                    rows.append(row)
                    print(progress(row), flush=True)
    finally:
        for engine in [*ctx.recognizers.values(), *ctx.synthesizers.values()]:
            with contextlib.suppress(Exception):
                await engine.aclose()
    # The gateway is idle during the direct runs too: together with the idle
    # window they give its idle CPU rate, which the gateway runs are net of.
    idle_windows += [r for r in rows if r["path"] == "direct"]
    idle = sum(w["gateway_cpu_s"] for w in idle_windows) / sum(w["window_s"] for w in idle_windows)
    net_of_idle(rows, idle)
    other = sum(r["other_cpu_s"] for r in rows) / max(1e-9, sum(r["window_s"] for r in rows))
    return {"idle_cpu_per_s": idle, "other_cpu_per_s": other, "gateway_rss_mb": rss_mb(pid), "rows": rows}


def progress(row: dict[str, Any]) -> str:
    lat = row["latency"]
    if row["kind"] == "asr":
        what = f"asr {row['adapter']:<7} {row['path']:<7} N={row['streams']:<3} ok {row['ok']}/{row['total']}"
    else:
        what = f"tts {row['adapter']:<10} {row['path']:<7} in-flight={row['in_flight']:<3} {row['requests']} req"
    busy = box_busy(row, len(os.sched_getaffinity(0))) * 100
    timing = f"p50 {ms(lat['p50_s'])} ms  p95 {ms(lat['p95_s'])} ms"
    return f"  {what}  {timing}  ({row['wall_s']:.1f} s, box {busy:.0f}% busy)"


def find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    return next(r for r in rows if all(r.get(k) == v for k, v in match.items()))


def box_busy(row: dict[str, Any], nproc: int) -> float:
    """Share of the machine's CPUs the gateway, the fakes and the client used together."""
    return (row["gateway_cpu_s"] + row["fakes_cpu_s"] + row["client_cpu_s"]) / (row["window_s"] * nproc)


def tables(result: dict[str, Any], nproc: int) -> str:
    rows = result["rows"]
    lines = []
    if any(r["kind"] == "asr" for r in rows):
        lines += [
            "| ASR adapter | streams | audio s | gw CPU ms / stream-s | RT streams / core "
            "| gw p50 / p95 ms | direct p50 / p95 ms | added p50 ms | ok gw / direct |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for g in (r for r in rows if r["kind"] == "asr" and r["path"] == "gateway"):
            d = find(rows, kind="asr", adapter=g["adapter"], path="direct", streams=g["streams"])
            gl, dl = g["latency"], d["latency"]
            per = g["gateway_cpu_net_per_audio_s"]
            added = gl["p50_s"] - dl["p50_s"] if gl["p50_s"] is not None and dl["p50_s"] is not None else None
            lines.append(
                f"| {g['adapter']} | {g['streams']} | {g['audio_s']:.0f} | {per * 1000:.1f} "
                f"| {1 / per if per else float('inf'):.0f} | {ms(gl['p50_s'])} / {ms(gl['p95_s'])} "
                f"| {ms(dl['p50_s'])} / {ms(dl['p95_s'])} | {ms(added)} "
                f"| {g['ok']}/{g['total']} / {d['ok']}/{d['total']} |"
            )
        lines.append("")
    if any(r["kind"] == "tts" for r in rows):
        lines += [
            "| TTS adapter | format | in flight | gw req/s | gw p50 / p95 ms | direct req/s "
            "| direct p50 / p95 ms | added p50 / p95 ms | gw CPU ms / req | gw core % | box CPU % |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for g in (r for r in rows if r["kind"] == "tts" and r["path"] == "gateway"):
            d = find(rows, kind="tts", adapter=g["adapter"], path="direct", in_flight=g["in_flight"])
            gl, dl = g["latency"], d["latency"]
            a50 = gl["p50_s"] - dl["p50_s"] if gl["n"] and dl["n"] else None
            a95 = gl["p95_s"] - dl["p95_s"] if gl["n"] and dl["n"] else None
            fails = g["failed"] + d["failed"]
            cpu = g["gateway_cpu_net_per_request_s"]
            lines.append(
                f"| {g['adapter']} | {g['format']} | {g['in_flight']} | {g['rps']:.0f} "
                f"| {ms(gl['p50_s'])} / {ms(gl['p95_s'])} | {d['rps']:.0f} | {ms(dl['p50_s'])} / {ms(dl['p95_s'])} "
                f"| {ms(a50)} / {ms(a95)} | {ms(cpu)}{f' ({fails} failed)' if fails else ''} "
                f"| {g['gateway_core_share'] * 100:.0f} | {box_busy(g, nproc) * 100:.0f} |"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: N in 1,10; short TTS windows (~40 s)")
    p.add_argument("--fast", action="store_true", help="send audio as fast as possible instead of real time")
    p.add_argument("--levels", help="concurrent ASR streams, comma-separated (default 1,10,50; quick 1,10)")
    p.add_argument("--min-samples", type=int, help="latency samples per level at least (default 6; quick 1)")
    p.add_argument("--tts-in-flight", help="concurrent TTS requests, comma-separated (default 1,10)")
    p.add_argument("--tts-seconds", type=float, help="length of each TTS window (default 4; quick 0.5)")
    p.add_argument("--asr", default="riva,google", help="ASR adapters to run (default riva,google; '' for none)")
    p.add_argument("--tts", default="riva,elevenlabs", help="TTS adapters to run (default riva,elevenlabs)")
    p.add_argument("--idle-s", type=float, default=1.0, help="extra idle window for the gateway's idle CPU (default 1)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    p.add_argument("--serve-fakes", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x.strip()]

    args.levels = ints(args.levels or ("1,10" if args.quick else "1,10,50"))
    args.min_samples = args.min_samples if args.min_samples is not None else (1 if args.quick else 6)
    args.tts_in_flight = ints(args.tts_in_flight or "1,10")
    args.tts_seconds = args.tts_seconds if args.tts_seconds is not None else (0.5 if args.quick else 4.0)
    args.asr = [a for a in args.asr.split(",") if a]
    args.tts = [a for a in args.tts.split(",") if a]
    for a in args.asr:
        if a not in ("riva", "google"):
            p.error(f"--asr: unknown adapter {a!r}")
    for a in args.tts:
        if a not in TTS_FORMATS:
            p.error(f"--tts: unknown adapter {a!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_fakes:
        return serve_fakes()
    info = machine()
    mode = "as fast as possible (--fast)" if args.fast else "real time"
    print(f"# adapters bench: {info['nproc']} CPUs ({info['cpu_model']}), Python {info['python']}")
    print(f"# ASR streams {args.levels}, audio paced {mode}; TTS in flight {args.tts_in_flight}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-adapters-") as name:
        tmp = Path(name)
        proc = Processes(tmp)
        try:
            result = asyncio.run(run(args, proc, tmp))
        finally:
            proc.stop()
    elapsed = time.perf_counter() - started
    mem = result["gateway_rss_mb"]
    print(
        f"# gateway idle CPU {result['idle_cpu_per_s'] * 1000:.1f} ms/s, RSS {mem.get('VmRSS', 0):.0f} MB "
        f"(peak {mem.get('VmHWM', 0):.0f} MB); other processes {result['other_cpu_per_s'] * 100:.0f}% of a CPU; "
        f"run took {elapsed:.0f} s\n"
    )
    print(tables(result, info["nproc"]))
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "serve_fakes")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"machine": info, "settings": settings, "elapsed_s": elapsed, "tts_text": TTS_TEXT, **result},
            indent=1,
            default=str,
        )
    )
    print(f"\nwrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    other = result["other_cpu_per_s"]
    if other > 0.1:
        print(
            f"warning: other processes used {other * 100:.0f}% of a CPU meanwhile; numbers are skewed", file=sys.stderr
        )
    bad = [r for r in result["rows"] if (r["kind"] == "asr" and r["ok"] < r["total"]) or r.get("failed")]
    for r in bad:
        print(f"warning: {r['kind']} {r['adapter']} {r['path']}: errors {r['errors']}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
