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

# A pause hint in a recognizer's audio: an empty chunk. The utterance has sent
# its closing tail and waits for the silence window; unless more audio follows,
# what came so far is the whole utterance. Only engines whose ``pause_hints``
# attribute is true receive it (the failover chain drops it for the others);
# they may start decoding early and answer at once when the audio ends.
PAUSE = b""


@dataclass(frozen=True, slots=True)
class RecognitionConfig:
    language_code: str = "en-US"
    sample_rate: int = 16000
    # Ask for interim transcripts while the utterance is still arriving.
    interim_results: bool = False


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
    # Set by the routing layer: the engine that produced this transcript.
    engine: str = ""


@dataclass(frozen=True, slots=True)
class SynthesisRequest:
    text: str
    # The ElevenLabs output_format name the client asked for. Engines that can
    # produce it natively (ElevenLabs) may return it encoded; others return PCM
    # and the edge encodes.
    output_format: str = "pcm_22050"
    voice_id: str | None = None
    model_id: str | None = None
    language_code: str | None = None
    voice_settings: dict[str, object] | None = None
    # The caller's own upstream key (OM1's "elevenlabs_api_key"); only the
    # engine it belongs to uses it.
    caller_api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """Audio out of a synthesizer.

    ``format == "pcm"``: ``data`` is raw PCM16LE mono at ``sample_rate``.
    Otherwise ``format`` is an ElevenLabs output_format name and ``data`` is
    already encoded in it (the chunks concatenate to the complete file).
    ``billed_characters`` is what the upstream reported it billed, when it
    says (ElevenLabs' ``character-cost`` header), on any one chunk.
    """

    data: bytes
    sample_rate: int
    format: str = "pcm"
    billed_characters: int | None = None


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
