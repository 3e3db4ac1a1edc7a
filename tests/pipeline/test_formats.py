"""Input formats (linear16 mono/stereo, G.711 mu-law and A-law), the Config
frame that declares them, and Finalize: synchronous, no sockets."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from speech.audio.encode import alaw_encode, ulaw_encode
from speech.errors import InvalidFrame
from speech.pipeline.codecs import sample_bytes, to_pcm16_mono
from speech.pipeline.session import (
    AsrSession,
    Configured,
    FrameRejected,
    SessionConfig,
    SpeechAudio,
    SpeechEnded,
    SpeechStarted,
)
from speech.settings import VadSettings

RATE = 8000


def tone(seconds: float, rate: int = RATE, amp: int = 12000) -> np.ndarray:
    n = int(seconds * rate)
    return (np.sin(np.arange(n) * 2 * np.pi * 300 / rate) * amp).astype("<i2")


def loud(frame: bytes) -> bool:
    return int(np.abs(np.frombuffer(frame, "<i2")).max()) > 2000


def speech_then_silence(rate: int = RATE) -> np.ndarray:
    return np.concatenate([np.zeros(rate // 2, "<i2"), tone(1.0, rate), np.zeros(rate, "<i2")])


def run(session: AsrSession, data: bytes, step: int) -> list[object]:
    out: list[object] = []
    for i in range(0, len(data), step):
        out += session.receive_bytes(data[i : i + step])
    return out + session.end()


def forwarded(events: list[object]) -> bytes:
    return b"".join(e.pcm for e in events if isinstance(e, SpeechAudio))


@pytest.mark.parametrize(("encoding", "encoder"), [("mulaw", ulaw_encode), ("alaw", alaw_encode)])
def test_g711_decodes_to_the_signal(encoding: str, encoder: object) -> None:
    x = tone(0.5)
    coded = bytes(encoder(x))  # type: ignore[operator]
    y = np.frombuffer(to_pcm16_mono(coded, encoding, 1), "<i2")
    assert len(y) == len(x) and np.abs(y.astype(int) - x).max() < 400  # G.711 quantization


def test_stereo_is_downmixed_by_averaging() -> None:
    left, right = tone(0.1), np.zeros(800, "<i2")
    stereo = np.column_stack([left, right]).reshape(-1).astype("<i2").tobytes()
    mono = np.frombuffer(to_pcm16_mono(stereo, "linear16", 2), "<i2")
    assert np.array_equal(mono, (left.astype(int) // 2).astype("<i2"))
    assert sample_bytes("linear16", 2) == 4 and sample_bytes("mulaw", 1) == 1 and sample_bytes("alaw", 2) == 2


@pytest.mark.parametrize(
    ("encoding", "channels", "make"),
    [
        ("mulaw", 1, lambda x: bytes(ulaw_encode(x))),
        ("alaw", 1, lambda x: bytes(alaw_encode(x))),
        ("linear16", 2, lambda x: np.column_stack([x, x]).reshape(-1).astype("<i2").tobytes()),
    ],
)
def test_each_format_segments_like_pcm(encoding: str, channels: int, make: object) -> None:
    signal = speech_then_silence()
    data = make(signal)  # type: ignore[operator]
    session = AsrSession(SessionConfig(VadSettings(), rate=RATE, encoding=encoding, channels=channels), loud)
    events = run(session, data, sample_bytes(encoding, channels) * 1600)  # 200 ms frames
    ended = [e for e in events if isinstance(e, SpeechEnded)]
    assert len(ended) == 1 and 900 <= ended[0].forwarded_ms <= 1500
    assert session.received_ms == 2500
    # an incomplete sample frame is refused and the session goes on
    fresh = AsrSession(SessionConfig(VadSettings(), rate=RATE, encoding=encoding, channels=channels), loud)
    if sample_bytes(encoding, channels) > 1:
        assert isinstance(fresh.receive_bytes(b"\x00" * 3)[0], FrameRejected)
    assert fresh.receive_bytes(b"\x00" * 4) == [] and not fresh.closed


def test_config_frame_declares_the_format_before_audio() -> None:
    session = AsrSession(SessionConfig(VadSettings()), loud)
    cfg = {"type": "Config", "encoding": "mulaw", "rate": RATE, "channels": 1, "events": True}
    assert session.receive_text(json.dumps(cfg)) == [Configured({"events": True})]
    audio = bytes(ulaw_encode(speech_then_silence()))
    events: list[object] = []
    for i in range(0, len(audio), 1600):
        chunk = base64.b64encode(audio[i : i + 1600]).decode()
        events += session.receive_text(json.dumps({"audio": chunk}))
    assert any(isinstance(e, SpeechStarted) for e in events)
    late = session.receive_text(json.dumps({"type": "Config", "encoding": "alaw"}))
    assert late == [FrameRejected("a Config frame must come before any audio")]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"encoding": "opus"}, "'encoding' must be one of linear16, mulaw, alaw"),
        ({"channels": 3}, "'channels' must be 1 or 2"),
        ({"channels": True}, "'channels' must be 1 or 2"),
        ({"rate": 96000}, "between 8000 and 48000"),
        ({"language_code": ""}, "language tag"),
    ],
)
def test_bad_config_frames_are_refused(fields: dict[str, object], message: str) -> None:
    session = AsrSession(SessionConfig(VadSettings()), loud)
    (event,) = session.receive_text(json.dumps({"type": "Config", **fields}))
    assert isinstance(event, FrameRejected) and message in event.message


def test_bad_configured_format_raises() -> None:
    with pytest.raises(InvalidFrame):
        AsrSession(SessionConfig(VadSettings(), encoding="opus"))
    with pytest.raises(InvalidFrame):
        AsrSession(SessionConfig(VadSettings(), channels=3))


def test_finalize_closes_the_open_utterance_now_and_the_stream_goes_on() -> None:
    session = AsrSession(SessionConfig(VadSettings(), rate=16000), loud)
    speech = tone(1.0, 16000).tobytes()
    events = session.receive_bytes(np.zeros(8000, "<i2").tobytes() + speech)
    assert any(isinstance(e, SpeechStarted) for e in events)
    events = session.receive_text('{"type": "Finalize"}')
    ended = [e for e in events if isinstance(e, SpeechEnded)]
    assert [e.reason for e in ended] == ["finalize"]
    assert session.receive_text('{"type": "Finalize"}') == []  # nothing open: nothing to do
    events = session.receive_bytes(speech) + session.end()
    assert [e.utterance for e in events if isinstance(e, SpeechStarted)] == [1]  # the stream went on


def test_finalize_during_the_closing_silence_keeps_only_the_tail() -> None:
    session = AsrSession(SessionConfig(VadSettings(), rate=16000), loud)
    events = session.receive_bytes(tone(1.0, 16000).tobytes() + np.zeros(3200 * 2, "<i2").tobytes())
    events += session.receive_text('{"type": "Finalize"}')
    (ended,) = [e for e in events if isinstance(e, SpeechEnded)]
    assert ended.reason == "finalize"
    assert len(forwarded(events)) // 32 == ended.forwarded_ms
    assert session.finalize() == [] and not session.closed
    session.end()
    assert session.finalize() == []
