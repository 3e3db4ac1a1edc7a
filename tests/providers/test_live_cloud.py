"""Optional checks against the real cloud services.

Skipped unless credentials are in the environment (CI has none, and this
machine cannot reach the internet):

* ``LIVE_ELEVENLABS_API_KEY``
* ``LIVE_GOOGLE_API_KEY`` or ``LIVE_GOOGLE_CREDENTIALS_FILE``
* ``LIVE_RIVA_URL`` (+ ``LIVE_RIVA_API_KEY``,
  ``LIVE_RIVA_ASR_FUNCTION_ID``, ``LIVE_RIVA_TTS_FUNCTION_ID`` for hosted Riva)
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from speech.providers.base import RecognitionConfig, SynthesisRequest
from speech.settings import ElevenLabsSettings, GoogleSettings, RivaSettings, Secret
from tests.api.streaming import wer
from tests.conftest import SAMPLES, read_wav

ENV = os.environ


def _needs(*names: str) -> pytest.MarkDecorator:
    missing = [n for n in names if not ENV.get(n)]
    return pytest.mark.skipif(bool(missing), reason=f"live cloud test: set {', '.join(missing)} to run it")


async def _chunks(pcm: bytes, size: int = 6400) -> AsyncIterator[bytes]:
    for i in range(0, len(pcm), size):
        yield pcm[i : i + size]


@_needs("LIVE_ELEVENLABS_API_KEY")
async def test_live_elevenlabs_speaks() -> None:
    from speech.providers.elevenlabs import ElevenLabsSynthesizer

    synth = ElevenLabsSynthesizer(ElevenLabsSettings(api_key=Secret(ENV["LIVE_ELEVENLABS_API_KEY"])))
    try:
        chunks = [c async for c in synth.synthesize(SynthesisRequest("Hello.", output_format="mp3_44100_128"))]
    finally:
        await synth.aclose()
    assert sum(len(c.data) for c in chunks) > 1000


@pytest.mark.skipif(
    not (ENV.get("LIVE_GOOGLE_API_KEY") or ENV.get("LIVE_GOOGLE_CREDENTIALS_FILE")),
    reason="live cloud test: set LIVE_GOOGLE_API_KEY or LIVE_GOOGLE_CREDENTIALS_FILE to run it",
)
async def test_live_google_transcribes() -> None:
    from speech.providers.google.asr import GoogleRecognizer

    rec = GoogleRecognizer(
        GoogleSettings(
            api_key=Secret(ENV.get("LIVE_GOOGLE_API_KEY", "")),
            credentials_file=ENV.get("LIVE_GOOGLE_CREDENTIALS_FILE", ""),
        )
    )
    pcm, rate = read_wav(SAMPLES / "hello_robot.wav")
    assert rate == 16000
    try:
        finals = [t.text async for t in rec.recognize(_chunks(pcm), RecognitionConfig()) if t.is_final]
    finally:
        await rec.aclose()
    assert wer("Hello robot, please turn left and walk to the kitchen door.", " ".join(finals)) <= 0.3


@_needs("LIVE_RIVA_URL")
async def test_live_riva_transcribes() -> None:
    from speech.providers.riva.asr import RivaRecognizer

    url = ENV["LIVE_RIVA_URL"]
    rec = RivaRecognizer(
        RivaSettings(
            url=url,
            tls=url.endswith(":443"),
            api_key=Secret(ENV.get("LIVE_RIVA_API_KEY", "")),
            asr_function_id=ENV.get("LIVE_RIVA_ASR_FUNCTION_ID", ""),
        )
    )
    pcm, _ = read_wav(SAMPLES / "hello_robot.wav")
    try:
        finals = [t.text async for t in rec.recognize(_chunks(pcm), RecognitionConfig()) if t.is_final]
    finally:
        await rec.aclose()
    assert wer("Hello robot, please turn left and walk to the kitchen door.", " ".join(finals)) <= 0.3
