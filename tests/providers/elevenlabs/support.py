"""Helpers shared by the ElevenLabs tests."""

from __future__ import annotations

from collections.abc import Callable

from speech.providers.base import AudioChunk, SynthesisRequest
from speech.providers.elevenlabs import ElevenLabsSynthesizer

# Normal requests get room to breathe on a busy machine; the tests of stalls
# pass tiny timeouts (0.3 s) explicitly.
RELAXED_TIMEOUT_S = 5.0
TINY_TIMEOUT_S = 0.3

MakeSynth = Callable[..., ElevenLabsSynthesizer]


async def collect(synth: ElevenLabsSynthesizer, request: SynthesisRequest) -> list[AudioChunk]:
    return [chunk async for chunk in synth.synthesize(request)]
