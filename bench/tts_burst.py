"""TTS through the gateway against calling the upstream directly.

Both paths ask the same loopback Riva fake (:mod:`bench.fake_upstream`) for
the same sentence, which it answers from memory:

* **gateway**: ``POST /api/core/riva/tts`` with ``{"text", "output_format"}``
  over a keep-alive HTTP/1.1 connection. The request bytes are built once and
  the reply is read by Content-Length (:class:`RawHttp`), so the client costs
  next to nothing; the gateway authenticates, checks the balance, calls Riva,
  encodes WAV + base64, commits the usage record and answers.
* **direct**: the gateway's own ``RivaSynthesizer`` adapter, in this process,
  against the same fake: what a client calling Riva itself would wait.

Two phases per path: ``sequential`` (one request in flight, for latency) and
``burst`` (``in_flight`` requests at once, for requests per second).
**added** = gateway percentile - direct percentile.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np

TTS_TEXT = "Turn left at the next door, then stop."
TTS_FORMAT = "wav_22050"


class RawHttp:
    """One keep-alive HTTP/1.1 connection that POSTs a prebuilt request."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 22)

    async def post(self, request: bytes) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


def build_request(host: str, port: int, key: str) -> bytes:
    body = json.dumps({"text": TTS_TEXT, "output_format": TTS_FORMAT}).encode()
    return (
        f"POST /api/core/riva/tts HTTP/1.1\r\nHost: {host}:{port}\r\nx-api-key: {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def stats(lat: list[float], wall: float, failed: int) -> dict[str, Any]:
    return {
        "requests": len(lat),
        "failed": failed,
        "rps": round(len(lat) / wall, 1) if wall else None,
        "p50_ms": round(float(np.percentile(lat, 50)) * 1000, 3) if lat else None,
        "p99_ms": round(float(np.percentile(lat, 99)) * 1000, 3) if lat else None,
    }


async def _phase(calls: list[Any], total: int) -> dict[str, Any]:
    """``len(calls)`` workers share ``total`` requests."""
    lat: list[float] = []
    failed = 0
    left = total

    async def worker(call: Any) -> None:
        nonlocal left, failed
        while left > 0:
            left -= 1
            t = time.perf_counter()
            try:
                await call()
            except Exception:
                failed += 1
                continue
            lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in calls))
    return stats(lat, time.perf_counter() - t0, failed)


async def run_tts(
    host: str, port: int, key: str, upstream_url: str, sequential: int, burst: int, in_flight: int
) -> dict[str, Any]:
    from speech.providers.base import SynthesisRequest
    from speech.providers.riva.tts import RivaSynthesizer
    from speech.settings import load_settings

    request = build_request(host, port, key)
    conns = [RawHttp(host, port) for _ in range(in_flight)]
    for c in conns:
        await c.open()

    def gateway_call(conn: RawHttp) -> Any:
        async def call() -> None:
            status, body = await conn.post(request)
            if status != 200 or b'"response"' not in body:
                raise RuntimeError(f"HTTP {status}: {body[:200]!r}")

        return call

    settings = load_settings(environ={}, overrides={"riva.url": upstream_url})
    synth = RivaSynthesizer(settings.riva)
    sreq = SynthesisRequest(text=TTS_TEXT, output_format=TTS_FORMAT)

    async def direct_call() -> None:
        if not [c async for c in synth.synthesize(sreq) if c.data]:
            raise RuntimeError("no audio")

    out: dict[str, Any] = {"text": TTS_TEXT, "format": TTS_FORMAT, "in_flight": in_flight}
    try:
        for _ in range(20):  # warm-up: connections, first-call paths
            await gateway_call(conns[0])()
            await direct_call()
        # Alternate blocks so drift on a shared machine hits both paths alike.
        lat: dict[str, list[float]] = {"gateway": [], "direct": []}
        failed = {"gateway": 0, "direct": 0}
        calls = {"gateway": gateway_call(conns[0]), "direct": direct_call}
        blocks = 5
        for _ in range(blocks):
            for path, call in calls.items():
                for _ in range(max(1, sequential // blocks)):
                    t = time.perf_counter()
                    try:
                        await call()
                    except Exception:
                        failed[path] += 1
                        continue
                    lat[path].append(time.perf_counter() - t)
        out["sequential"] = {p: stats(lat[p], sum(lat[p]), failed[p]) for p in calls}
        out["burst"] = {
            "gateway": await _phase([gateway_call(c) for c in conns], burst),
            "direct": await _phase([direct_call] * in_flight, burst),
        }
    finally:
        await synth.aclose()
        for c in conns:
            await c.close()
    g, d = out["sequential"]["gateway"], out["sequential"]["direct"]
    out["added_p50_ms"] = round(g["p50_ms"] - d["p50_ms"], 3) if g["p50_ms"] and d["p50_ms"] else None
    out["added_p99_ms"] = round(g["p99_ms"] - d["p99_ms"], 3) if g["p99_ms"] and d["p99_ms"] else None
    return out
