"""AsrSession fed frames synchronously: events, rejections, rates, accounting."""

from __future__ import annotations

import base64
import json
import wave
from array import array
from pathlib import Path

import numpy as np
import pytest

from speech.errors import CLOSE_PROTOCOL, InvalidFrame, ProtocolViolation
from speech.pipeline.session import (
    AsrSession,
    CloseRequested,
    FrameRejected,
    KeptAlive,
    SessionConfig,
    SessionEvent,
    SessionFailed,
    SpeechAudio,
    SpeechEnded,
    SpeechStarted,
)
from speech.settings import VadSettings

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
VAD = VadSettings(mode=3, frame_ms=30, start_ms=120, preroll_ms=300, silence_ms=500, tail_ms=150)


def energy(frame: bytes) -> bool:
    return max(abs(s) for s in array("h", frame)) > 1000


def always(_frame: bytes) -> bool:
    return True


def tone(rate: int, ms: int, hz: float = 440.0, amplitude: int = 8000) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def silence(rate: int, ms: int) -> bytes:
    return bytes(rate * ms // 1000 * 2)


def frame(pcm: bytes, **extra: object) -> str:
    return json.dumps({"audio": base64.b64encode(pcm).decode(), **extra})


def chunks(pcm: bytes, size: int) -> list[bytes]:
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


def session(scorer=energy, **config: object) -> AsrSession:
    return AsrSession(SessionConfig(vad=config.pop("vad", VAD), **config), scorer)  # type: ignore[arg-type]


def audio_of(events: list[SessionEvent], utterance: int | None = None) -> bytes:
    return b"".join(e.pcm for e in events if isinstance(e, SpeechAudio) and utterance in (None, e.utterance))


def of_type(events: list[SessionEvent], kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


# 16 kHz, frame-aligned: speech 600..1500 ms, then 1020 ms of silence.
STREAM = silence(16000, 600) + tone(16000, 900) + silence(16000, 1020)


# ------------------------------------------------------------- good streams


def test_binary_stream_events() -> None:
    s = session()
    events: list[SessionEvent] = []
    for chunk in chunks(STREAM, 3200):  # 100 ms
        events += s.receive_bytes(chunk)
    assert s.end() == []
    assert events[0] == SpeechStarted(0, 300, "en-US")
    assert events[-1] == SpeechEnded(0, 300, 1650, 1350, 2100, "silence")  # detected in the 2000..2100 ms chunk
    assert audio_of(events) == STREAM[300 * 32 : 1650 * 32]
    assert [type(e) for e in events[1:-1]] == [SpeechAudio] * (len(events) - 2)
    assert s.received_ms == 2520
    assert s.frames_accepted == len(chunks(STREAM, 3200))


def test_json_stream_events_match_binary() -> None:
    binary, text = session(), session()
    ev_b = [e for c in chunks(STREAM, 3200) for e in binary.receive_bytes(c)] + binary.end()
    ev_t = [e for c in chunks(STREAM, 3200) for e in text.receive_text(frame(c, rate=16000))] + text.end()
    assert ev_t == ev_b


def test_real_recording_with_webrtcvad() -> None:
    with wave.open(str(SAMPLES / "hello_robot.wav")) as w:
        assert w.getframerate() == 16000
        audio = w.readframes(w.getnframes())
    s = AsrSession(SessionConfig(vad=VadSettings()))  # default scorer: webrtcvad
    events: list[SessionEvent] = []
    for chunk in chunks(audio, 3200):
        events += s.receive_text(frame(chunk, rate=16000, language_code="en-US"))
    events += s.receive_text('{"type": "CloseStream"}')
    (started,) = of_type(events, SpeechStarted)
    (ended,) = of_type(events, SpeechEnded)
    assert isinstance(events[-1], CloseRequested)
    assert ended.reason == "silence"
    assert audio_of(events) == audio[started.start_ms * 32 : ended.end_ms * 32]
    assert ended.forwarded_ms == ended.end_ms - ended.start_ms > 3000
    assert s.received_ms == len(audio) // 32


# ------------------------------------------------------------ bad frames


BAD_TEXT = [
    ("nope", "not valid JSON"),
    ("[]", "must be a JSON object"),
    ("{}", "no 'audio' field"),
    ('{"type": "Stop"}', "unknown message type 'Stop'"),
    ('{"audio": 5}', "must be a base64 string"),
    ('{"audio": "***"}', "not valid base64"),
    ('{"audio": "AA=="}', "odd number of bytes (1)"),
    ('{"audio": "", "rate": 4000}', "between 8000 and 48000 Hz, got 4000"),
    ('{"audio": "", "rate": "16000"}', "integer number of Hz"),
    ('{"audio": "", "rate": NaN}', "not valid JSON"),
    ('{"audio": "", "language_code": 7}', "'language_code' must be a language tag"),
    ("x" * 2000, "frame of 2000 bytes is over the 1024-byte limit"),
]
BAD_BINARY = [
    (b"\x00" * 3, "odd number of bytes (3)"),
    (bytes(1026), "frame of 1026 bytes is over the 1024-byte limit"),
]


def test_each_bad_frame_is_rejected_and_the_session_goes_on() -> None:
    s = session(max_frame_bytes=1024, max_invalid_frames=100)
    good = chunks(STREAM, 960)
    events: list[SessionEvent] = []
    rejected: list[str] = []
    bad = [("text", t, m) for t, m in BAD_TEXT] + [("bytes", b, m) for b, m in BAD_BINARY]
    for i, chunk in enumerate(good):
        if i < len(bad):
            how, data, message = bad[i]
            got = s.receive_text(data) if how == "text" else s.receive_bytes(data)  # type: ignore[arg-type]
            assert len(got) == 1 and isinstance(got[0], FrameRejected), (data, got)
            assert message in got[0].message
            rejected.append(got[0].message)
        events += s.receive_bytes(chunk)
    events += s.end()
    assert len(rejected) == len(bad)
    assert not of_type(events, SessionFailed)
    # the bad frames changed nothing: same events as a clean run
    clean = session(max_frame_bytes=1024)
    expected = [e for c in good for e in clean.receive_bytes(c)] + clean.end()
    assert events == expected
    assert s.rate == 16000 and s.language_code == "en-US"


def test_too_many_consecutive_bad_frames_fail_the_session() -> None:
    s = session(max_invalid_frames=3)
    assert s.receive_bytes(STREAM[: 1200 * 32]) != []  # an utterance is open
    assert s.receive_text("bad") == [FrameRejected("text frame is not valid JSON")]
    assert s.receive_bytes(b"\x00") == [
        FrameRejected("audio has an odd number of bytes (1); expected 16-bit PCM samples")
    ]
    last = s.receive_text("{}")
    assert last[0] == FrameRejected("JSON frame has no 'audio' field")
    assert isinstance(last[1], SessionFailed) and len(last) == 2
    error = last[1].error
    assert isinstance(error, ProtocolViolation)
    assert error.close_code == CLOSE_PROTOCOL == 4400
    assert error.message == "closing after 3 consecutive invalid frames"
    assert s.closed
    # nothing after it: no flush of the open utterance, input ignored
    assert s.receive_bytes(STREAM) == []
    assert s.receive_text(frame(STREAM)) == []
    assert s.receive_text("bad") == []
    assert s.end() == []


@pytest.mark.parametrize("good", ["binary", "json", "keepalive"])
def test_a_good_frame_resets_the_consecutive_count(good: str) -> None:
    s = session(max_invalid_frames=3)
    for _ in range(5):
        assert len(s.receive_text("bad")) == 1
        assert len(s.receive_text("bad")) == 1
        if good == "binary":
            s.receive_bytes(silence(16000, 30))
        elif good == "json":
            s.receive_text(frame(silence(16000, 30)))
        else:
            assert s.receive_text('{"type": "KeepAlive"}') == [KeptAlive()]
    assert len(s.receive_text("bad")) == 1
    assert len(s.receive_text("bad")) == 1
    assert isinstance(s.receive_text("bad")[-1], SessionFailed)


def test_max_invalid_frames_of_one() -> None:
    s = session(max_invalid_frames=1)
    got = s.receive_bytes(b"\x01")
    assert [type(e) for e in got] == [FrameRejected, SessionFailed]


# ----------------------------------------------------------------- rates


def test_rate_change_mid_stream_flushes_and_resamples() -> None:
    s = session(always, rate=48000, vad=VadSettings(max_utterance_ms=60000))
    events: list[SessionEvent] = []
    for chunk in chunks(tone(48000, 1000), 4801 * 2):  # binary frames at the configured rate
        events += s.receive_bytes(chunk)
    events += s.receive_text(frame(b"", rate=8000))  # rate change alone: flushes the 48 kHz resampler
    assert s.rate == 8000
    for chunk in chunks(tone(8000, 500), 333 * 2):  # binary frames now use 8 kHz
        events += s.receive_bytes(chunk)
    events += s.receive_text(frame(tone(16000, 250), rate=16000))
    events += s.end()
    pcm = audio_of(events)
    expected = (1000 + 500 + 250) * 16
    assert abs(len(pcm) // 2 - expected) <= 3 * 16, (len(pcm) // 2, expected)
    (ended,) = of_type(events, SpeechEnded)
    assert ended.forwarded_ms == len(pcm) // 32
    assert ended.received_ms == s.received_ms
    assert abs(s.received_ms - 1750) <= 1  # per-chunk rounding stays under a millisecond


def test_json_rate_changes_then_binary_uses_the_new_rate() -> None:
    s = session(always, vad=VadSettings(max_utterance_ms=60000))
    events: list[SessionEvent] = []
    events += s.receive_text(frame(tone(44100, 500), rate=44100))
    events += s.receive_bytes(tone(44100, 500))  # still 44.1 kHz
    events += s.receive_text(frame(tone(44100, 100), rate=44100))  # same rate: no flush, no change
    events += s.receive_text(frame(tone(22050, 400), rate=22050))
    events += s.end()
    assert s.rate == 22050
    samples = np.frombuffer(audio_of(events), dtype="<i2")
    assert abs(len(samples) - 1500 * 16) <= 3 * 16
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    assert abs(np.fft.rfftfreq(len(samples), 1 / 16000)[int(np.argmax(spectrum))] - 440) <= 2


def test_received_ms_accounting() -> None:
    rate = 22050
    pcm = silence(rate, 600) + tone(rate, 900) + silence(rate, 1200) + tone(rate, 1200) + silence(rate, 1500)
    s = session(rate=rate)
    sizes = [2 * 1103, 2 * 17, 2 * 2205, 2 * 441]
    pos, n, total_us = 0, 0, 0
    ended: list[tuple[SpeechEnded, int]] = []
    events: list[SessionEvent] = []
    while pos < len(pcm):
        chunk = pcm[pos : pos + sizes[n % len(sizes)]]
        pos, n = pos + len(chunk), n + 1
        total_us += len(chunk) // 2 * 1_000_000 / rate
        got = s.receive_bytes(chunk)
        ended += [(e, total_us) for e in got if isinstance(e, SpeechEnded)]
        events += got
    got = s.end()
    ended += [(e, total_us) for e in got if isinstance(e, SpeechEnded)]
    events += got
    duration_ms = len(pcm) / 2 / rate * 1000
    assert [ev.reason for ev, _ in ended] == ["silence", "silence"]
    assert abs(s.received_ms - duration_ms) <= 1
    # each utterance is charged the input received since the previous one ended
    previous = 0.0
    for ev, at_us in ended:
        assert abs(ev.received_ms - (at_us - previous) / 1000) <= 1
        previous = at_us
    # what follows the last end (about 1 s of silence) is the trailing, uncharged part
    trailing_ms = (total_us - previous) / 1000
    assert 900 < trailing_ms < 1500
    assert abs(sum(ev.received_ms for ev, _ in ended) + trailing_ms - duration_ms) <= len(ended)


def test_invalid_configured_rate_raises() -> None:
    with pytest.raises(InvalidFrame, match="between 8000 and 48000"):
        session(rate=96000)
    with pytest.raises(InvalidFrame, match="integer number of Hz"):
        session(rate=True)


# ------------------------------------------------------- language, control


def test_language_code_from_a_frame_is_carried_into_speech_started() -> None:
    s = session(language_code="en-GB")
    events = s.receive_text(frame(STREAM, language_code="de-DE"))
    events += s.receive_text(frame(STREAM))  # no language_code: keeps de-DE
    events += s.receive_text(frame(STREAM, language_code="fr-FR"))
    events += s.end()
    assert [e.language_code for e in of_type(events, SpeechStarted)] == ["de-DE", "de-DE", "fr-FR"]
    assert s.language_code == "fr-FR"


def test_configured_language_is_the_default() -> None:
    s = session(language_code="es-ES")
    events = s.receive_bytes(STREAM)
    assert of_type(events, SpeechStarted)[0].language_code == "es-ES"


def test_close_stream_flushes_then_requests_close() -> None:
    s = session()
    open_part = STREAM[: 1200 * 32 + 100]  # speaking, with a partial frame
    events = s.receive_bytes(open_part)
    assert of_type(events, SpeechStarted) and not of_type(events, SpeechEnded)
    closing = s.receive_text('{"type": "CloseStream"}')
    assert closing[-1] == CloseRequested()
    assert closing[-2] == SpeechEnded(0, 300, 1203, 903, 1203, "flush")
    assert audio_of(events + closing) == open_part[300 * 32 :]
    assert s.closed
    assert s.receive_bytes(STREAM) == []
    assert s.receive_text('{"type": "CloseStream"}') == []
    assert s.end() == []


def test_close_stream_with_nothing_open() -> None:
    s = session()
    assert s.receive_text('{"type": "CloseStream"}') == [CloseRequested()]


def test_keepalive_causes_only_its_own_event() -> None:
    s = session()
    assert s.receive_text('{"type": "KeepAlive"}') == [KeptAlive()]
    assert s.frames_accepted == 0 and not s.closed


def test_end_twice_is_harmless() -> None:
    s = session()
    first = s.receive_bytes(STREAM[: 1200 * 32]) + s.end()
    assert isinstance(first[-1], SpeechEnded) and first[-1].reason == "flush"
    assert s.end() == []
    assert s.end(close_requested=True) == []


def test_end_with_close_requested() -> None:
    s = session()
    assert s.end(close_requested=True) == [CloseRequested()]


def test_empty_binary_frame_counts_but_does_nothing() -> None:
    s = session()
    assert s.receive_bytes(b"") == []
    assert s.frames_accepted == 1 and s.received_ms == 0


def test_unknown_vad_events_are_ignored() -> None:
    # The segmenter only emits its three event types; anything else is dropped, not mistranslated.
    assert session()._vad_events([object()]) == []


def test_cap_utterance_limits_only_the_open_utterance() -> None:
    from speech.pipeline.session import SpeechEnded, SpeechStarted

    loud = (b"\x00\x10" * 160) * 10  # 100 ms of loud samples
    session = AsrSession(SessionConfig(VadSettings()), is_speech=lambda f: max(f) > 0)
    events = session.receive_bytes(b"\x00" * 9600 + loud * 3)
    started = [e for e in events if isinstance(e, SpeechStarted)]
    assert [e.utterance for e in started] == [0]
    session.cap_utterance(5, 60)  # not the open one: ignored
    session.cap_utterance(0, 600)
    events = session.receive_bytes(loud * 10)
    ended = [e for e in events if isinstance(e, SpeechEnded)]
    assert [(e.utterance, e.reason, e.forwarded_ms) for e in ended] == [(0, "budget", 600)]
