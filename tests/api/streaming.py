"""Client-side helpers for the websocket tests: OM1-shaped streaming and WER."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from typing import Any

import jiwer
import websockets

CHUNK_MS = 200

_SMALL = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ABBREV = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint"}


def number_words(n: int) -> str:
    if n < 20:
        return _SMALL[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _SMALL[n % 10])
    if n < 1000:
        rest = n % 100
        return _SMALL[n // 100] + " hundred" + ("" if rest == 0 else " " + number_words(rest))
    return str(n)


def normalize(text: str) -> str:
    """Lower case, no punctuation, numbers spelled out ("10" -> "ten"), common abbreviations."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"\d+", lambda m: f" {number_words(int(m.group()))} ", text)
    words = re.sub(r"[^a-z' ]+", " ", text).replace("'", "").split()
    return " ".join(_ABBREV.get(w, w) for w in words)


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalize(reference), normalize(hypothesis)))


def om1_frames(pcm: bytes, rate: int, chunk_ms: int = CHUNK_MS, **extra: Any) -> list[str]:
    """JSON text frames exactly as OM1's AudioInputStream sends them."""
    step = rate * 2 * chunk_ms // 1000
    return [
        json.dumps(
            {
                "audio": base64.b64encode(pcm[i : i + step]).decode("ascii"),
                "rate": rate,
                "language_code": "en-US",
                "alternative_language_codes": [],
                **extra,
            }
        )
        for i in range(0, len(pcm), step)
    ]


async def stream(
    url: str,
    frames: list[str | bytes],
    *,
    realtime: bool = False,
    chunk_ms: int = CHUNK_MS,
    close_stream: bool = True,
    headers: dict[str, str] | None = None,
    deadline_s: float = 120.0,
) -> tuple[list[dict[str, Any]], int | None, str]:
    """Send the frames (paced in real time when asked), then CloseStream, and
    return every message received until the server closes, with the close code."""
    messages: list[dict[str, Any]] = []
    async with websockets.connect(url, additional_headers=headers or {}, max_size=None) as ws:

        async def send() -> None:
            start = time.monotonic()
            for n, frame in enumerate(frames):
                await ws.send(frame)
                if realtime:
                    await asyncio.sleep(max(0.0, start + (n + 1) * chunk_ms / 1000 - time.monotonic()))
            if close_stream:
                await ws.send(json.dumps({"type": "CloseStream"}))

        sender = asyncio.create_task(send())

        async def receive() -> None:
            try:
                async for message in ws:
                    messages.append(json.loads(message))
            except websockets.ConnectionClosed:
                pass

        await asyncio.wait_for(receive(), deadline_s)
        sender.cancel()
        try:
            await sender
        except (asyncio.CancelledError, websockets.ConnectionClosed):
            pass
        return messages, ws.close_code, ws.close_reason or ""


def replies(messages: list[dict[str, Any]]) -> list[str]:
    return [m["asr_reply"] for m in messages if "asr_reply" in m]


def errors(messages: list[dict[str, Any]]) -> list[str]:
    return [m["error"] for m in messages if "error" in m]
