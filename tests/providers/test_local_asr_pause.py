"""The local recognizer's speculative final: decoded at a PAUSE hint, used when no audio follows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from speech.providers.base import PAUSE, RecognitionConfig
from tests.conftest import SAMPLES, read_wav

pytestmark = pytest.mark.slow


async def feed(parts: list[bytes], before_end: asyncio.Event | None = None) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
        await asyncio.sleep(0)
    if before_end is not None:
        await before_end.wait()


def counting(engine: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the length of every final decode the engine runs."""
    calls: list[int] = []
    real = engine._decode

    def decode(pcm: bytes, language_code: str) -> Any:
        calls.append(len(pcm))
        return real(pcm, language_code)

    monkeypatch.setattr(engine, "_decode", decode)
    return calls


async def test_a_pause_then_the_end_uses_the_early_decode(engines: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engines.asr["local"]
    pcm, _ = read_wav(SAMPLES / "hello_robot.wav")
    calls = counting(engine, monkeypatch)
    plain = [t async for t in engine.recognize(feed([pcm]), RecognitionConfig())]
    assert calls == [len(pcm)]
    calls.clear()
    # The early decode starts at the hint; the utterance ends while it runs.
    with_pause = [
        t
        async for t in engine.recognize(feed([pcm[: len(pcm) // 2], pcm[len(pcm) // 2 :], PAUSE]), RecognitionConfig())
    ]
    assert calls == [len(pcm)]  # one decode: the early one was the final
    assert [t.text for t in with_pause] == [t.text for t in plain]


async def test_audio_after_the_pause_is_decoded_whole(engines: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engines.asr["local"]
    pcm, _ = read_wav(SAMPLES / "two_commands.wav")
    calls = counting(engine, monkeypatch)
    half = len(pcm) // 2
    out = [t async for t in engine.recognize(feed([pcm[:half], PAUSE, pcm[half:]]), RecognitionConfig())]
    assert calls[-1] == len(pcm)  # the final saw everything, whatever the early decode did
    assert "charging station" in out[-1].text.lower()


async def test_pause_hints_never_reach_engines_that_do_not_take_them(engines: Any) -> None:
    from speech.providers.failover import EngineHealth, FailoverRecognizer

    seen: list[bytes] = []

    class Plain:
        name, description = "plain", "records its audio"

        async def recognize(self, audio: AsyncIterator[bytes], config: RecognitionConfig) -> AsyncIterator[Any]:
            async for chunk in audio:
                seen.append(chunk)
            return
            yield

    chain = FailoverRecognizer("x", [Plain()], EngineHealth(30))
    [t async for t in chain.recognize(feed([b"ab", PAUSE, b"cd"]), RecognitionConfig())]
    assert seen == [b"ab", b"cd"]
