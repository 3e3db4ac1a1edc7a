"""Google Speech-to-Text v1 wire details: requests out, gateway values in.

This is the only module of the package that touches the proto-plus classes of
``google-cloud-speech``; nothing it returns to the rest of the gateway is a
protobuf object. It imports ``google.cloud.speech_v1`` at the top, so import
it only through :mod:`speech.providers.google.asr`, which turns a missing
``cloud`` extra into a :class:`~speech.errors.ConfigError`.

Wire facts (PROTOCOLS.md section C):

* ``StreamingRecognizeRequest`` is a oneof: the first message carries only
  ``streaming_config``, every later one only ``audio_content``;
* at most 25 KB of audio per request message (:data:`MAX_AUDIO_BYTES`);
* a response carries either ``error`` (a ``google.rpc.Status``) or
  ``results``: zero or one newly settled ``is_final`` result followed by zero
  or more interim results covering the audio after it.
"""

from __future__ import annotations

import datetime

import grpc
import grpc.aio
from google.cloud import speech_v1

from speech.errors import EngineError
from speech.providers.base import RecognitionConfig, Transcript, Word
from speech.providers.grpc_common import translate_rpc_error

METHOD = "/google.cloud.speech.v1.Speech/StreamingRecognize"

# Google documents "at most 25 KB" of audio per streaming request without
# saying whether a KB is 1,000 or 1,024 bytes. 24,000 bytes stays under both
# readings with room for the message's own few bytes of framing, and is even,
# so a split never cuts a 16-bit sample in two (750 ms at 16 kHz).
MAX_AUDIO_BYTES = 24_000

_STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class Garbage:
    """What :func:`deserialize_response` returns for bytes that are not a
    ``StreamingRecognizeResponse``. gRPC's own handling of a raising
    deserializer is to log a traceback and hand the reader ``None``; a
    sentinel lets the reader raise a precise error instead."""

    def __init__(self, size: int) -> None:
        self.size = size


def deserialize_response(data: bytes) -> speech_v1.StreamingRecognizeResponse | Garbage:
    try:
        return speech_v1.StreamingRecognizeResponse.deserialize(data)
    except Exception:  # DecodeError, or anything else the parser raises on garbage
        return Garbage(len(data))


serialize_request = speech_v1.StreamingRecognizeRequest.serialize


def config_request(
    config: RecognitionConfig,
    *,
    punctuation: bool,
    interim_results: bool,
    model: str = "",
) -> speech_v1.StreamingRecognizeRequest:
    """The first message of a stream: the streaming configuration alone."""
    recognition = speech_v1.RecognitionConfig(
        encoding=speech_v1.RecognitionConfig.AudioEncoding.LINEAR16,
        sample_rate_hertz=config.sample_rate,
        language_code=config.language_code,
        max_alternatives=1,
        enable_automatic_punctuation=punctuation,
        enable_word_time_offsets=True,
    )
    if model:
        recognition.model = model
    streaming = speech_v1.StreamingRecognitionConfig(
        config=recognition,
        interim_results=interim_results,
        single_utterance=False,
    )
    return speech_v1.StreamingRecognizeRequest(streaming_config=streaming)


def audio_request(pcm: bytes | memoryview) -> speech_v1.StreamingRecognizeRequest:
    """An audio-only message; the caller keeps ``pcm`` within :data:`MAX_AUDIO_BYTES`."""
    if len(pcm) > MAX_AUDIO_BYTES:
        raise ValueError(f"{len(pcm)} bytes of audio in one request; the cap is {MAX_AUDIO_BYTES}")
    return speech_v1.StreamingRecognizeRequest(audio_content=bytes(pcm))


def in_band_error(response: speech_v1.StreamingRecognizeResponse) -> EngineError | None:
    """The gateway error for a response whose ``error`` field is set (and not OK).

    Classified by the numeric ``google.rpc.Code``, which is the gRPC status
    code, through the same table as failed calls."""
    if "error" not in response or response.error.code == 0:
        return None
    code = _STATUS_BY_NUMBER.get(response.error.code, grpc.StatusCode.UNKNOWN)
    rpc_error = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), response.error.message)
    error = translate_rpc_error(rpc_error, "google")
    error.__cause__ = rpc_error
    return error


def transcripts(response: speech_v1.StreamingRecognizeResponse, offset_ms: int = 0) -> list[Transcript]:
    """The transcripts of one response, in order: each settled (final) result,
    then the interim results joined into one interim transcript.

    ``offset_ms`` is where the response's stream started within the utterance
    (non-zero after a stream rotation), added to every word time so they stay
    relative to the utterance.
    """
    out: list[Transcript] = []
    interim: list[str] = []
    for result in response.results:
        if not result.alternatives:
            continue
        alt = result.alternatives[0]
        if not result.is_final:
            interim.append(alt.transcript)
            continue
        text = " ".join(alt.transcript.split())
        if not text:
            continue
        words = tuple(
            Word(
                w.word,
                offset_ms + _ms(w.start_time),
                offset_ms + _ms(w.end_time),
                _confidence(w.confidence),
            )
            for w in alt.words
        )
        out.append(Transcript(text=text, is_final=True, confidence=_confidence(alt.confidence), words=words))
    text = " ".join(" ".join(interim).split())
    if text:
        out.append(Transcript(text=text, is_final=False))
    return out


def _confidence(value: float) -> float | None:
    """Google's float32 confidence, rounded; 0 means "not given"."""
    return round(float(value), 4) if value else None


def _ms(value: datetime.timedelta) -> int:
    """A Duration (proto-plus gives a ``datetime.timedelta``) in whole milliseconds."""
    return round(value.total_seconds() * 1000)
