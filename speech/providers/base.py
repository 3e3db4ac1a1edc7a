"""The one-method interfaces every engine implements.

A :class:`Recognizer` takes an async iterator of 16 kHz PCM16 chunks for one
utterance and yields :class:`Transcript` events (interims optional, at least
one final unless nothing was said). A :class:`Synthesizer` takes text and
yields :class:`AudioChunk` s of PCM16 mono. Engines know nothing of
websockets, keys or billing; failures leave them as
:class:`~speech.errors.EngineError` subclasses. Retries, failover and metering
wrap engines by composition.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class RecognitionConfig:
    language_code: str = "en-US"
    sample_rate: int = 16000


@dataclass(frozen=True, slots=True)
class Word:
    word: str
    start_ms: int
    end_ms: int
    confidence: float | None = None


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    is_final: bool = True
    confidence: float | None = None
    words: tuple[Word, ...] = ()


@dataclass(frozen=True, slots=True)
class SynthesisRequest:
    text: str
    voice_id: str | None = None
    model_id: str | None = None
    language_code: str | None = None
    options: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AudioChunk:
    pcm: bytes
    sample_rate: int


@runtime_checkable
class Recognizer(Protocol):
    name: str
    description: str

    def recognize(self, audio: AsyncIterator[bytes], config: RecognitionConfig) -> AsyncIterator[Transcript]: ...


@runtime_checkable
class Synthesizer(Protocol):
    name: str
    description: str

    def synthesize(self, request: SynthesisRequest) -> AsyncIterator[AudioChunk]: ...
