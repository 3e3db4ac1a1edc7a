"""Wire mapping: requests out, transcripts and errors in (no server needed)."""

from __future__ import annotations

import datetime

import pytest
from google.cloud import speech_v1

from speech.errors import UpstreamAuthError, UpstreamRejected, UpstreamUnavailable
from speech.providers.base import RecognitionConfig, Transcript, Word
from speech.providers.google import wire


def _result(text: str, final: bool, **kw: object) -> speech_v1.StreamingRecognitionResult:
    alt = speech_v1.SpeechRecognitionAlternative(transcript=text, **kw)
    return speech_v1.StreamingRecognitionResult(alternatives=[alt], is_final=final)


def test_config_request_carries_the_streaming_config_alone() -> None:
    req = wire.config_request(RecognitionConfig("fr-FR", 8000), punctuation=False, interim_results=False, model="x")
    assert "streaming_config" in req and "audio_content" not in req
    sc = req.streaming_config
    assert (sc.interim_results, sc.single_utterance) == (False, False)
    c = sc.config
    assert c.encoding == speech_v1.RecognitionConfig.AudioEncoding.LINEAR16
    assert (c.sample_rate_hertz, c.language_code, c.max_alternatives, c.model) == (8000, "fr-FR", 1, "x")
    assert (c.enable_automatic_punctuation, c.enable_word_time_offsets) == (False, True)
    assert (
        wire.config_request(RecognitionConfig(), punctuation=True, interim_results=True).streaming_config.config.model
        == ""
    )


def test_audio_request_refuses_more_than_the_cap() -> None:
    assert wire.audio_request(b"\0" * wire.MAX_AUDIO_BYTES).audio_content == b"\0" * wire.MAX_AUDIO_BYTES
    assert wire.MAX_AUDIO_BYTES <= 25_000 and wire.MAX_AUDIO_BYTES % 2 == 0
    with pytest.raises(ValueError):
        wire.audio_request(b"\0" * (wire.MAX_AUDIO_BYTES + 1))


def test_final_then_interims_joined() -> None:
    words = [
        speech_v1.WordInfo(
            word="to",
            start_time=datetime.timedelta(seconds=0.1),
            end_time=datetime.timedelta(seconds=0.3),
            confidence=0.5,
        ),
        speech_v1.WordInfo(word="be", start_time=datetime.timedelta(seconds=0.3), end_time=datetime.timedelta(0)),
    ]
    response = speech_v1.StreamingRecognizeResponse(
        results=[
            _result(" to  be ", True, confidence=0.875, words=words),
            _result("or not", False),
            _result(" to be", False),
            speech_v1.StreamingRecognitionResult(is_final=False),  # no alternatives
        ]
    )
    assert wire.transcripts(response, offset_ms=1000) == [
        Transcript("to be", True, 0.875, (Word("to", 1100, 1300, 0.5), Word("be", 1300, 1000, None))),
        Transcript("or not to be", False),
    ]


def test_empty_results_give_nothing() -> None:
    response = speech_v1.StreamingRecognizeResponse(
        results=[_result("  ", True), _result("", False)],
        speech_event_type=speech_v1.StreamingRecognizeResponse.SpeechEventType.END_OF_SINGLE_UTTERANCE,
    )
    assert wire.transcripts(response) == []
    assert wire.in_band_error(response) is None


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (3, UpstreamRejected),
        (11, UpstreamRejected),
        (14, UpstreamUnavailable),
        (16, UpstreamAuthError),
        (99, UpstreamUnavailable),
    ],
)
def test_in_band_error_is_classified_by_its_code(code: int, kind: type) -> None:
    error = wire.in_band_error(speech_v1.StreamingRecognizeResponse(error={"code": code, "message": "m"}))
    assert type(error) is kind
    assert error is not None and error.__cause__ is not None
    assert wire.in_band_error(speech_v1.StreamingRecognizeResponse(error={"code": 0})) is None


def test_garbage_bytes_become_a_sentinel() -> None:
    assert isinstance(wire.deserialize_response(b"\x0a\xff\xff\xff\xff"), wire.Garbage)
    ok = wire.deserialize_response(
        speech_v1.StreamingRecognizeResponse.serialize(speech_v1.StreamingRecognizeResponse())
    )
    assert isinstance(ok, speech_v1.StreamingRecognizeResponse)
