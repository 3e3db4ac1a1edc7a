"""``speech transcribe FILE``: stream a recording to a running gateway the way
an OM1 robot does (JSON frames of ~200 ms, paced in real time) and print each
transcript as it arrives. Ends with ``{"type": "CloseStream"}`` so the last
utterance is flushed before the server closes normally."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from pathlib import Path

import websockets

from speech.errors import ConfigError

CHUNK_MS = 200


def read_pcm16_mono(path: str) -> tuple[bytes, int]:
    """Decode any file PyAV reads to PCM16LE mono at its own sample rate."""
    import av

    if not Path(path).is_file():
        raise ConfigError(f"no such file: {path}")
    try:
        with av.open(path) as container:
            stream = container.streams.audio[0]
            rate = stream.rate
            resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
            out = bytearray()
            for frame in container.decode(stream):
                for res in resampler.resample(frame):
                    out += res.to_ndarray().tobytes()
            for res in resampler.resample(None):
                out += res.to_ndarray().tobytes()
    except (av.FFmpegError, IndexError) as exc:
        raise ConfigError(f"cannot read audio from {path}: {exc}") from exc
    return bytes(out), rate


async def transcribe(path: str, url: str, api_key: str, speed: float = 1.0) -> int:
    pcm, rate = read_pcm16_mono(path)
    if not api_key and "api_key=" not in url:
        raise ConfigError("no API key: pass --api-key, set SPEECH_API_KEY or add ?api_key= to the URL")
    if speed <= 0:
        raise ConfigError("--speed must be above 0")
    step = rate * 2 * CHUNK_MS // 1000
    headers = {"x-api-key": api_key} if api_key else {}
    failed = False
    try:
        async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:

            async def sender() -> None:
                start = time.monotonic()
                for n, off in enumerate(range(0, len(pcm), step)):
                    frame = {"audio": base64.b64encode(pcm[off : off + step]).decode(), "rate": rate}
                    await ws.send(json.dumps(frame))
                    due = start + (n + 1) * CHUNK_MS / 1000 / speed
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                await ws.send(json.dumps({"type": "CloseStream"}))

            send_task = asyncio.create_task(sender())
            async for message in ws:
                reply = json.loads(message)
                if "asr_reply" in reply:
                    print(reply["asr_reply"], flush=True)
                elif "error" in reply:
                    print(f"error: {reply['error']}", file=sys.stderr, flush=True)
                    failed = True
            send_task.cancel()
            code = ws.close_code
    except (OSError, websockets.InvalidURI, websockets.InvalidHandshake) as exc:
        print(f"speech: cannot stream to {url}: {exc}", file=sys.stderr)
        return 1
    if code not in (1000, None):
        print(f"speech: server closed the stream with code {code} ({ws.close_reason})", file=sys.stderr)
        return 1
    return 1 if failed else 0
