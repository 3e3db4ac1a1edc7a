#!/usr/bin/env python3
"""Time to first audio byte of TTS through the real gateway on the local Piper voice.

Starts the gateway in-process (uvicorn on a loopback port, in a thread, with
the real local engines, a temporary SQLite ledger and one key), then, for a
short, a medium and a long text, measures from the moment the request leaves
the client:

* ``plain``   ``POST /api/core/local/tts`` (OM1's JSON with base64 audio): the
              first byte is usable only when the whole answer has arrived;
* ``stream``  ``POST /api/core/local/tts/stream``: the first body byte, and the
              last one;
* ``ws``      ``/api/core/local/tts/stream-input`` (connection already open):
              the whole text in one message, then ``{"text": ""}``; the first
              audio frame, and ``isFinal``;
* ``ws-llm``  the same text sent as an LLM would produce it, 4 characters
              every 20 ms (~50 tokens/s): first audio counted from the moment
              the first sentence's last character was sent.

Every request asks for ``mp3_44100_128``. Requests run one at a time, so the
numbers are latency, not throughput. Results: a table on stdout and
``bench/results/tts_ttfb.json`` (git-ignored).

    /work/venv/bin/python bench/tts_ttfb.py            # ~1 min on 2 cores
    /work/venv/bin/python bench/tts_ttfb.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import websockets  # noqa: E402

from bench.local_asr import machine, make_key, start_server, stop_server  # noqa: E402
from speech.providers.registry import load_engines  # noqa: E402
from speech.settings import load_settings  # noqa: E402

FORMAT = "mp3_44100_128"
TEXTS = {
    "short": "Turn left at the next door.",
    "medium": "Turn left at the next door. Then stop and wait for me there. "
    "The charging station is on your right, past the blue boxes.",
    "long": " ".join(
        f"Step {i}: walk to the shelf, pick up the box with the red label, and bring it back to the dock."
        for i in range(1, 9)
    ),
}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def plain(client: httpx.AsyncClient, key: str, text: str) -> dict[str, float]:
    t0 = time.perf_counter()
    r = await client.post(
        "/api/core/local/tts", json={"text": text, "output_format": FORMAT}, headers={"x-api-key": key}
    )
    r.raise_for_status()
    done = time.perf_counter() - t0
    return {"first": done, "last": done}


async def stream(client: httpx.AsyncClient, key: str, text: str) -> dict[str, float]:
    t0 = time.perf_counter()
    first = None
    body = {"text": text, "output_format": FORMAT}
    async with client.stream("POST", "/api/core/local/tts/stream", json=body, headers={"x-api-key": key}) as r:
        r.raise_for_status()
        async for chunk in r.aiter_raw():
            if chunk and first is None:
                first = time.perf_counter() - t0
    assert first is not None
    return {"first": first, "last": time.perf_counter() - t0}


async def ws(url: str, text: str, *, llm: bool) -> dict[str, float]:
    async with websockets.connect(url, max_size=None) as sock:
        await sock.send(json.dumps({"text": " "}))
        first_sentence_end = text.index(". ") + 2 if ". " in text else len(text)
        t0 = time.perf_counter()

        async def send() -> None:
            nonlocal t0
            if not llm:
                await sock.send(json.dumps({"text": text}))
            else:
                for i in range(0, len(text), 4):
                    await sock.send(json.dumps({"text": text[i : i + 4]}))
                    if i < first_sentence_end <= i + 4:
                        t0 = time.perf_counter()  # the first sentence is complete now
                    await asyncio.sleep(0.02)
            await sock.send(json.dumps({"text": ""}))

        sender = asyncio.create_task(send())
        first = None
        async for raw in sock:
            msg = json.loads(raw)
            if "audio" in msg and first is None:
                first = time.perf_counter() - t0
            if msg.get("isFinal"):
                break
        last = time.perf_counter() - t0
        await sender
    assert first is not None
    return {"first": first, "last": last}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="tts-ttfb-"))
    settings = load_settings(environ={}, overrides={"server.db": str(tmp / "ledger.db")})
    engines = await asyncio.to_thread(load_engines, settings)
    srv = start_server(settings, engines)
    try:
        key = await make_key(settings.server.db)
        url = f"ws://127.0.0.1:{srv.port}/api/core/local/tts/stream-input?api_key={key}&output_format={FORMAT}"
        rows = []
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{srv.port}", timeout=120) as client:
            await plain(client, key, TEXTS["short"])  # warm up the voice
            for name, text in TEXTS.items():
                modes = {
                    "plain": lambda t=text: plain(client, key, t),
                    "stream": lambda t=text: stream(client, key, t),
                    "ws": lambda t=text: ws(url, t, llm=False),
                    "ws-llm": lambda t=text: ws(url, t, llm=True),
                }
                for mode, call in modes.items():
                    results = [await call() for _ in range(args.repeat)]
                    firsts = [r["first"] for r in results]
                    lasts = [r["last"] for r in results]
                    row = {
                        "text": name,
                        "chars": len(text),
                        "mode": mode,
                        "first_p50_ms": 1000 * statistics.median(firsts),
                        "first_p95_ms": 1000 * pct(firsts, 0.95),
                        "last_p50_ms": 1000 * statistics.median(lasts),
                    }
                    rows.append(row)
                    print(
                        f"{name:>6} {len(text):>4} chars {mode:>7}: first audio p50 {row['first_p50_ms']:6.0f} ms"
                        f" p95 {row['first_p95_ms']:6.0f} ms; complete p50 {row['last_p50_ms']:6.0f} ms",
                        flush=True,
                    )
    finally:
        stop_server(srv)
        engines.close()
    return {"machine": machine(), "format": FORMAT, "repeat": args.repeat, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 repeats instead of 10")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--out", type=Path, default=HERE / "results" / "tts_ttfb.json")
    args = p.parse_args(argv)
    if args.quick:
        args.repeat = 3
    result = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
