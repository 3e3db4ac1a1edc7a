"""Audio sources and helpers shared by the Google adapter tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable

import numpy as np

from speech.providers.base import RecognitionConfig, Recognizer, Transcript
from speech.settings import GoogleSettings, Secret

API_KEY = "test-google-key"
FAST = {"connect_timeout_s": 0.3, "first_result_timeout_s": 0.3}


def settings_for(url: str, **overrides: object) -> GoogleSettings:
    """Loopback settings: no TLS, an API key, tiny timeouts."""
    values: dict[str, object] = {"url": url, "tls": False, "api_key": Secret(API_KEY), **FAST}
    values.update(overrides)
    return GoogleSettings(**values)  # type: ignore[arg-type]


def noise(seconds: float, rate: int = 16000, seed: int = 0) -> bytes:
    """Loud random PCM16 (never "quiet" for the rotation's quiet-point search)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    samples = rng.integers(2000, 12000, n) * rng.choice([-1, 1], n)
    return samples.astype("<i2").tobytes()


def silence(seconds: float, rate: int = 16000) -> bytes:
    return bytes(2 * int(seconds * rate))


async def chunks(data: bytes, size: int = 6400) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def parts(pieces: Iterable[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def collect(
    recognizer: Recognizer, audio: AsyncIterator[bytes], config: RecognitionConfig | None = None
) -> list[Transcript]:
    async with asyncio.timeout(15):
        return [t async for t in recognizer.recognize(audio, config or RecognitionConfig())]


async def until(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
