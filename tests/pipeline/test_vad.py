"""VadSegmenter driven by a deterministic energy scorer and synthetic audio.

Every sample of the synthetic signal depends on its position, so forwarded
audio can be compared byte for byte with a span of the input.
"""

from __future__ import annotations

import wave
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from speech.pipeline.vad import (
    BYTES_PER_MS,
    UtteranceAudio,
    UtteranceEnded,
    UtterancePaused,
    UtteranceStarted,
    VadEvent,
    VadSegmenter,
    VadState,
    webrtc_scorer,
)
from speech.settings import VadSettings

SAMPLES = Path(__file__).resolve().parents[2] / "samples"

# The defaults, spelled out so the expected numbers below read on their own.
PARAMS = VadSettings(
    mode=3, frame_ms=30, start_ms=120, preroll_ms=300, silence_ms=500, tail_ms=150, max_utterance_ms=15000
)


def energy(frame: bytes) -> bool:
    return max(abs(s) for s in array("h", frame)) > 1000


def signal(*parts: tuple[str, int]) -> bytes:
    """('speech'|'silence', ms) parts; speech samples are loud, silence ones quiet, all position-dependent."""
    out = array("h")
    for kind, ms in parts:
        for _ in range(ms * 16):
            i = len(out)
            out.append(2000 + i % 20000 if kind == "speech" else i % 500)
    return out.tobytes()


def ms(n: int) -> int:
    """Milliseconds -> bytes of 16 kHz PCM16."""
    return n * BYTES_PER_MS


@dataclass
class Utt:
    index: int
    start_ms: int = -1
    end_ms: int = -1
    forwarded_ms: int = -1
    reason: str = ""
    pcm: bytearray = field(default_factory=bytearray)
    closed: bool = False


def utterances(events: Iterable[VadEvent]) -> list[Utt]:
    """Group events per utterance, checking their order on the way."""
    out: list[Utt] = []
    for ev in events:
        if isinstance(ev, UtteranceStarted):
            assert not out or out[-1].closed, "started while another is open"
            assert not out or ev.index == out[-1].index + 1
            out.append(Utt(ev.index, start_ms=ev.start_ms))
        elif isinstance(ev, UtteranceAudio):
            assert out and not out[-1].closed and ev.index == out[-1].index
            assert ev.pcm
            out[-1].pcm += ev.pcm
        else:
            assert isinstance(ev, UtteranceEnded)
            utt = out[-1]
            assert not utt.closed and ev.index == utt.index and ev.start_ms == utt.start_ms
            utt.end_ms, utt.forwarded_ms, utt.reason, utt.closed = ev.end_ms, ev.forwarded_ms, ev.reason, True
    return out


def check_invariants(utts: list[Utt], audio: bytes) -> None:
    """forwarded_ms == end - start == bytes/32, audio equals its input span, spans never overlap."""
    prev_end = 0
    for u in utts:
        assert u.closed
        assert u.forwarded_ms == u.end_ms - u.start_ms == len(u.pcm) // BYTES_PER_MS
        assert bytes(u.pcm) == audio[ms(u.start_ms) : ms(u.start_ms) + len(u.pcm)]
        assert u.start_ms >= prev_end
        prev_end = u.end_ms


def run(audio: bytes, params: VadSettings = PARAMS, chunk: int | None = None, scorer=energy) -> list[Utt]:
    seg = VadSegmenter(params, scorer)
    events: list[VadEvent] = []
    step = chunk or len(audio) or 1
    for i in range(0, len(audio), step):
        events += seg.feed(audio[i : i + step])
    events += seg.flush()
    utts = utterances(events)
    check_invariants(utts, audio)
    return utts


def frames_of(audio: bytes, frame_ms: int = 30) -> list[bytes]:
    n = ms(frame_ms)
    return [audio[i : i + n] for i in range(0, len(audio), n)]


# ------------------------------------------------------------------ starting


def test_blip_shorter_than_start_ms_goes_back_to_quiet_without_events() -> None:
    seg = VadSegmenter(PARAMS, energy)
    audio = signal(("silence", 300), ("speech", 90), ("silence", 300))
    states = []
    for frame in frames_of(audio):
        assert seg.feed(frame) == []
        states.append(seg.state)
    assert states[:10] == [VadState.QUIET] * 10
    # 3 voiced frames (90 ms < 120) then an unvoiced run: back to QUIET once the run reaches start_ms
    assert states[10:13] == [VadState.STARTING] * 3
    assert states[13:16] == [VadState.STARTING] * 3  # 30, 60, 90 ms unvoiced
    assert states[16] is VadState.QUIET  # 120 ms unvoiced
    assert states[17:] == [VadState.QUIET] * (len(states) - 17)
    assert seg.flush() == []
    assert seg.position_ms == 690


def test_start_after_start_ms_of_voiced_audio_with_full_preroll() -> None:
    audio = signal(("silence", 600), ("speech", 900), ("silence", 1020))
    seg = VadSegmenter(PARAMS, energy)
    frames = frames_of(audio)
    events: list[VadEvent] = []
    for i, frame in enumerate(frames):
        got = seg.feed(frame)
        if i < 23:  # frames 20, 21, 22 are voiced but only 90 ms
            assert got == [], i
        elif i == 23:  # the 4th voiced frame: 120 ms
            assert got[0] == UtteranceStarted(0, 300)
            assert got[1] == UtteranceAudio(0, audio[ms(300) : ms(720)])  # 300 ms pre-roll + 120 ms voiced
            assert len(got) == 2
            assert seg.state is VadState.SPEAKING
        events += got
    events += seg.flush()
    (utt,) = utterances(events)
    assert (utt.start_ms, utt.end_ms, utt.reason) == (300, 1650, "silence")
    assert bytes(utt.pcm) == audio[ms(300) : ms(1650)]  # pre-roll + speech + 150 ms tail


def test_preroll_is_shorter_when_the_stream_is_younger() -> None:
    (utt,) = run(signal(("silence", 60), ("speech", 600), ("silence", 1000)))
    assert utt.start_ms == 0
    assert len(utt.pcm) == ms(60 + 600 + 150)


def test_speech_from_the_first_byte() -> None:
    (utt,) = run(signal(("speech", 600), ("silence", 1000)))
    assert (utt.start_ms, utt.end_ms) == (0, 750)


def test_no_preroll_and_no_tail() -> None:
    params = VadSettings(frame_ms=30, start_ms=120, preroll_ms=0, silence_ms=300, tail_ms=0)
    (utt,) = run(signal(("silence", 600), ("speech", 600), ("silence", 600)), params)
    assert (utt.start_ms, utt.end_ms, utt.reason) == (600, 1200, "silence")


def test_preroll_not_a_multiple_of_the_frame_is_rounded_down() -> None:
    params = VadSettings(frame_ms=30, preroll_ms=100, tail_ms=100)  # 3 frames each = 90 ms
    (utt,) = run(signal(("silence", 600), ("speech", 600), ("silence", 900)), params)
    assert (utt.start_ms, utt.end_ms) == (510, 1290)


def test_unvoiced_frames_inside_the_start_window_do_not_reset_the_count() -> None:
    # voiced, unvoiced, voiced, unvoiced... : 4 voiced frames among 7 reach start_ms=120
    audio = signal(("silence", 300), *[("speech", 30), ("silence", 30)] * 3, ("speech", 600), ("silence", 900))
    (utt,) = run(audio)
    assert utt.start_ms == 0  # 300 ms before the first voiced frame at 300 ms
    assert bytes(utt.pcm) == audio[: ms(300 + 180 + 600 + 150)]


def test_blip_before_speech_is_part_of_the_preroll_only() -> None:
    audio = signal(("silence", 600), ("speech", 60), ("silence", 240), ("speech", 600), ("silence", 900))
    (utt,) = run(audio)
    # the blip ended STARTING after 120 ms unvoiced; the pre-roll then reaches back into it
    assert utt.start_ms == 600
    assert bytes(utt.pcm) == audio[ms(600) : ms(900 + 600 + 150)]


# ------------------------------------------------------------------- stopping


def test_short_pause_stays_in_one_utterance_and_is_forwarded() -> None:
    audio = signal(("silence", 600), ("speech", 600), ("silence", 450), ("speech", 600), ("silence", 1000))
    (utt,) = run(audio)
    assert (utt.start_ms, utt.end_ms, utt.reason) == (300, 600 + 600 + 450 + 600 + 150, "silence")
    assert bytes(utt.pcm) == audio[ms(300) : ms(2400)]  # the pause included


@pytest.mark.parametrize(("pause", "count"), [(480, 1), (500, 2)])
def test_pause_of_silence_ms_ends_the_utterance(pause: int, count: int) -> None:
    params = VadSettings(frame_ms=20, silence_ms=500)  # 25 frames exactly
    audio = signal(("silence", 600), ("speech", 600), ("silence", pause), ("speech", 600), ("silence", 1000))
    utts = run(audio, params)
    assert len(utts) == count
    assert [u.reason for u in utts] == ["silence"] * count


def test_end_event_arrives_when_the_silence_reaches_silence_ms() -> None:
    seg = VadSegmenter(PARAMS, energy)
    audio = signal(("silence", 600), ("speech", 600), ("silence", 1000))
    frames = frames_of(audio)
    ended_at = None
    for i, frame in enumerate(frames):
        for ev in seg.feed(frame):
            if isinstance(ev, UtteranceEnded):
                ended_at = i
                assert ev == UtteranceEnded(0, 300, 1350, 1050, "silence")
        if i == 40:
            assert seg.state is VadState.STOPPING  # the first unvoiced frame
    # 17 unvoiced frames (510 ms) are needed for silence_ms=500
    assert ended_at == 40 + 16
    assert seg.state is VadState.QUIET


def test_silence_between_utterances_is_never_forwarded() -> None:
    audio = signal(
        ("silence", 990), ("speech", 900), ("silence", 1980), ("speech", 1200), ("silence", 510), ("speech", 300)
    )
    utts = run(audio)
    assert [(u.start_ms, u.end_ms, u.reason) for u in utts] == [
        (690, 2040, "silence"),
        (3570, 5220, "silence"),
        # 510 ms of silence: the tail takes the first 150 ms, the pre-roll the last 300;
        # 60 ms in between are dropped, nothing is sent twice
        (5280, 5880, "flush"),
    ]
    total = sum(len(u.pcm) for u in utts)
    assert total == ms((300 + 900 + 150) + (300 + 1200 + 150) + (300 + 300))


def test_gap_of_exactly_silence_ms_plus_frames_is_not_duplicated() -> None:
    params = VadSettings(frame_ms=30, preroll_ms=600, tail_ms=450, silence_ms=510)
    audio = signal(("silence", 600), ("speech", 600), ("silence", 540), ("speech", 600), ("silence", 900))
    u1, u2 = run(audio, params)
    # the second pre-roll can only use what the first tail did not take
    assert u1.end_ms == 1200 + 450
    assert u2.start_ms == 1650


# --------------------------------------------------------------- max length


def test_max_length_cut_loses_and_duplicates_nothing() -> None:
    params = VadSettings(frame_ms=30, max_utterance_ms=600)  # 20 frames
    audio = signal(("silence", 600), ("speech", 1950), ("silence", 1000))
    utts = run(audio, params)
    assert [(u.start_ms, u.end_ms, u.reason) for u in utts] == [
        (300, 900, "max_length"),
        (900, 1500, "max_length"),
        (1500, 2100, "max_length"),
        (2100, 2700, "silence"),
    ]
    assert b"".join(bytes(u.pcm) for u in utts) == audio[ms(300) : ms(2700)]


def test_max_length_starts_the_next_utterance_at_once() -> None:
    params = VadSettings(frame_ms=30, max_utterance_ms=1200)  # 40 frames
    seg = VadSegmenter(params, energy)
    frames = frames_of(signal(("silence", 300), ("speech", 3000)))
    events = [ev for frame in frames[:40] for ev in seg.feed(frame)]
    assert not any(isinstance(ev, UtteranceEnded) for ev in events)
    got = seg.feed(frames[40])  # the 41st forwarded frame (pre-roll from 0)
    assert got == [
        UtteranceEnded(0, 0, 1200, 1200, "max_length"),
        UtteranceStarted(1, 1200),
        UtteranceAudio(1, frames[40]),
    ]


def test_max_length_inside_a_pause_and_at_flush() -> None:
    params = VadSettings(frame_ms=30, max_utterance_ms=1000)  # 33 frames = 990 ms
    # the first cut falls while the 300 ms pause is released, the second at the flush of a partial frame
    audio = signal(("silence", 300), ("speech", 600), ("silence", 300), ("speech", 780), ("speech", 2))
    utts = run(audio, params)
    assert [(u.start_ms, u.end_ms, u.reason) for u in utts] == [
        (0, 990, "max_length"),
        (990, 1980, "max_length"),
        (1980, 1982, "flush"),
    ]
    assert b"".join(bytes(u.pcm) for u in utts) == audio


def test_closing_tail_never_opens_an_utterance_of_silence_alone() -> None:
    # 300 ms pre-roll + 600 ms speech = 900 ms; the cap (990 ms) leaves room
    # for 3 of the 5 tail frames, and the rest of the silence is dropped.
    params = VadSettings(frame_ms=30, max_utterance_ms=1000)
    audio = signal(("silence", 300), ("speech", 600), ("silence", 1000))
    utts = run(audio, params)
    assert [(u.start_ms, u.end_ms, u.reason) for u in utts] == [(0, 990, "silence")]
    seg = VadSegmenter(params, energy)
    events = seg.feed(signal(("silence", 300), ("speech", 600), ("silence", 300))) + seg.flush()
    assert [(u.start_ms, u.end_ms, u.reason) for u in utterances(events)] == [(0, 990, "flush")]


# ----------------------------------------------------------------- flushing


def test_flush_in_quiet() -> None:
    seg = VadSegmenter(PARAMS, energy)
    assert seg.feed(signal(("silence", 200))[:-10]) == []
    assert seg.flush() == []
    assert seg.state is VadState.QUIET
    assert seg.position_ms == 199  # 6390 bytes: 199.7 ms, partial frame included


def test_flush_in_starting_drops_the_candidate() -> None:
    seg = VadSegmenter(PARAMS, energy)
    assert seg.feed(signal(("silence", 600), ("speech", 60))) == []
    assert seg.state is VadState.STARTING
    assert seg.flush() == []
    assert seg.state is VadState.QUIET


def test_flush_in_speaking_forwards_the_partial_frame() -> None:
    audio = signal(("silence", 600), ("speech", 512))  # 17 frames + 2 ms
    seg = VadSegmenter(PARAMS, energy)
    events = seg.feed(audio)
    assert seg.state is VadState.SPEAKING
    tail = seg.flush()
    assert tail == [UtteranceAudio(0, audio[ms(1110) :]), UtteranceEnded(0, 300, 1112, 812, "flush")]
    (utt,) = utterances(events + tail)
    assert bytes(utt.pcm) == audio[ms(300) :]


def test_flush_in_speaking_on_a_frame_boundary() -> None:
    audio = signal(("silence", 600), ("speech", 510))
    seg = VadSegmenter(PARAMS, energy)
    seg.feed(audio)
    assert seg.flush() == [UtteranceEnded(0, 300, 1110, 810, "flush")]


@pytest.mark.parametrize(("silence", "forwarded"), [(60, 60), (150, 150), (300, 150)])
def test_flush_in_stopping_keeps_at_most_tail_ms(silence: int, forwarded: int) -> None:
    audio = signal(("silence", 600), ("speech", 600), ("silence", silence))
    seg = VadSegmenter(PARAMS, energy)
    events = seg.feed(audio + bytes(100))  # plus a partial frame, never forwarded
    assert seg.state is VadState.STOPPING
    events += seg.flush()
    (utt,) = utterances(events)
    assert (utt.start_ms, utt.end_ms, utt.reason) == (300, 1200 + forwarded, "flush")
    assert bytes(utt.pcm) == audio[ms(300) : ms(1200 + forwarded)]
    assert seg.position_ms == (len(audio) + 100) // BYTES_PER_MS


def test_flush_twice_and_feeding_after_a_flush() -> None:
    seg = VadSegmenter(PARAMS, energy)
    first = seg.feed(signal(("speech", 600)))
    first += seg.flush()
    assert seg.flush() == []
    later = signal(("silence", 600), ("speech", 600), ("silence", 600))
    second = utterances(seg.feed(later) + seg.flush())
    (u0,) = utterances(first)
    assert (u0.start_ms, u0.end_ms, u0.reason) == (0, 600, "flush")
    assert [(u.index, u.start_ms, u.end_ms) for u in second] == [(1, 900, 1950)]
    assert seg.position_ms == 2400


# ---------------------------------------------------------- chunk boundaries


SCENARIO = signal(
    ("silence", 700),
    ("speech", 90),
    ("silence", 400),
    ("speech", 1300),
    ("silence", 300),
    ("speech", 700),
    ("silence", 900),
    ("speech", 2500),
    ("silence", 200),
    ("speech", 50),
)


def coalesced(events: list[VadEvent]) -> list[VadEvent]:
    out: list[VadEvent] = []
    for ev in events:
        if isinstance(ev, UtteranceAudio) and out and isinstance(out[-1], UtteranceAudio):
            out[-1] = UtteranceAudio(ev.index, out[-1].pcm + ev.pcm)
        else:
            out.append(ev)
    return out


def feed_in(seg: VadSegmenter, audio: bytes, sizes: list[int]) -> list[VadEvent]:
    events: list[VadEvent] = []
    pos, i = 0, 0
    while pos < len(audio):
        n = sizes[i % len(sizes)]
        events += seg.feed(audio[pos : pos + n])
        pos, i = pos + n, i + 1
    return events + seg.flush()


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
@pytest.mark.parametrize("sizes", [[2], [2, 962, 30], [958, 4, 1920, 2, 6], [3200], [97 * 2]])
def test_chunk_boundaries_do_not_change_the_events(frame_ms: int, sizes: list[int]) -> None:
    params = VadSettings(frame_ms=frame_ms, max_utterance_ms=2000)
    whole = coalesced(feed_in(VadSegmenter(params, energy), SCENARIO, [len(SCENARIO)]))
    chunked = coalesced(feed_in(VadSegmenter(params, energy), SCENARIO, sizes))
    assert chunked == whole
    utts = utterances(whole)
    check_invariants(utts, SCENARIO)
    assert {u.reason for u in utts} == {"silence", "max_length", "flush"}


def test_empty_feed_is_harmless() -> None:
    seg = VadSegmenter(PARAMS, energy)
    assert seg.feed(b"") == []
    assert seg.position_ms == 0


# --------------------------------------------------------------- frame sizes


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_frame_sizes(frame_ms: int) -> None:
    params = VadSettings(frame_ms=frame_ms, start_ms=120, preroll_ms=300, silence_ms=480, tail_ms=180)
    calls: list[int] = []

    def scorer(frame: bytes) -> bool:
        calls.append(len(frame))
        return energy(frame)

    audio = signal(("silence", 600), ("speech", 600), ("silence", 1200), ("speech", 600), ("silence", 600))
    utts = run(audio, params, scorer=scorer)
    assert set(calls) == {frame_ms * BYTES_PER_MS}
    assert [(u.start_ms, u.end_ms, u.reason) for u in utts] == [(300, 1380, "silence"), (2100, 3180, "silence")]


@pytest.mark.parametrize("frame_ms", [0, 5, 15, 25, 40])
def test_invalid_frame_ms(frame_ms: int) -> None:
    with pytest.raises(ValueError, match="frame_ms must be 10, 20 or 30"):
        VadSegmenter(VadSettings(frame_ms=frame_ms), energy)


def test_scripted_scorer() -> None:
    script = iter([False, True, True, True, True] + [False] * 17)
    seg = VadSegmenter(PARAMS, lambda _frame: next(script))
    events = seg.feed(bytes(ms(30) * 22))
    assert [type(ev) for ev in events] == [UtteranceStarted, UtteranceAudio, UtteranceEnded]
    assert events[0] == UtteranceStarted(0, 0)
    assert events[2] == UtteranceEnded(0, 0, 300, 300, "silence")


# ------------------------------------------------------------- real webrtcvad


def read_wav(name: str) -> bytes:
    with wave.open(str(SAMPLES / name)) as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (16000, 2, 1)
        return w.readframes(w.getnframes())


@pytest.mark.parametrize(("name", "count"), [("two_commands.wav", 2), ("hello_robot.wav", 1)])
def test_real_recordings_with_webrtcvad(name: str, count: int) -> None:
    audio = read_wav(name)
    seg = VadSegmenter(VadSettings())  # default scorer: webrtcvad, mode 3
    events: list[VadEvent] = []
    for i in range(0, len(audio), 3200):  # 100 ms chunks
        events += seg.feed(audio[i : i + 3200])
    events += seg.flush()
    utts = utterances(events)
    check_invariants(utts, audio)
    assert len(utts) == count
    assert all(u.reason == "silence" for u in utts)
    # the 0.5 s leading padding is not speech; the pre-roll reaches into it
    assert 150 <= utts[0].start_ms <= 500
    assert utts[-1].end_ms <= len(audio) // BYTES_PER_MS


def test_webrtc_scorer() -> None:
    is_speech: Callable[[bytes], bool] = webrtc_scorer(3)
    assert is_speech(bytes(ms(30))) is False
    audio = read_wav("hello_robot.wav")
    frames = frames_of(audio)
    assert any(is_speech(f) for f in frames if len(f) == ms(30))


def test_cap_open_ends_the_utterance_at_its_budget_and_loses_nothing() -> None:
    seg = VadSegmenter(PARAMS, energy)
    audio = signal(("silence", 300), ("speech", 3000), ("silence", 1000))
    frames = frames_of(audio)
    events: list[VadEvent] = []
    for i, frame in enumerate(frames):
        events += seg.feed(frame)
        if i == 20:  # the utterance is open: its credit covers 900 ms
            assert seg.open_index == 0
            seg.cap_open(900)
    events += seg.flush()
    utts = utterances(events)
    check_invariants(utts, audio)
    assert (utts[0].start_ms, utts[0].end_ms, utts[0].reason) == (0, 900, "budget")
    assert utts[1].start_ms == 900 and utts[1].reason == "silence"  # the next utterance carries on at once
    assert b"".join(bytes(u.pcm) for u in utts) == audio[: ms(utts[-1].end_ms)]


def test_cap_open_below_what_was_already_sent_cuts_at_the_next_frame() -> None:
    seg = VadSegmenter(PARAMS, energy)
    frames = frames_of(signal(("silence", 300), ("speech", 1500)))
    events: list[VadEvent] = []
    for frame in frames[:30]:
        events += seg.feed(frame)
    seg.cap_open(1)  # less than one frame: rounds up to one frame, already exceeded
    events += seg.feed(frames[30])
    ended = [e for e in events if isinstance(e, UtteranceEnded)]
    assert [(e.reason, e.end_ms) for e in ended] == [("budget", 900)]
    assert seg.open_index == 1
    seg.cap_open(60)
    assert VadSegmenter(PARAMS, energy).open_index is None
    VadSegmenter(PARAMS, energy).cap_open(10)  # nothing open: no effect


# ------------------------------------------------------------ pause events


def run_events(audio: bytes, params: VadSettings = PARAMS, chunk: int = ms(200), **kw: bool) -> list[VadEvent]:
    seg = VadSegmenter(params, energy, **kw)
    events: list[VadEvent] = []
    for i in range(0, len(audio), chunk):
        events += seg.feed(audio[i : i + chunk])
    return events + seg.flush()


def test_pause_comes_after_the_tail_at_half_the_silence_window_then_the_end() -> None:
    audio = signal(("silence", 600), ("speech", 900), ("silence", 1200))
    events = run_events(audio, chunk=ms(30), pause_events=True)
    kinds = [type(e).__name__ for e in events]
    paused = kinds.index("UtterancePaused")
    ended = kinds.index("UtteranceEnded")
    assert paused < ended and kinds.count("UtterancePaused") == 1
    # Everything the utterance forwards (its tail included) left before the pause.
    before = b"".join(e.pcm for e in events[:paused] if isinstance(e, UtteranceAudio))
    after = b"".join(e.pcm for e in events[paused:] if isinstance(e, UtteranceAudio))
    assert after == b"" and len(before) == ms(300 + 900 + 150)
    # The pause came once half the 500 ms window had passed, not at its end.
    seg = VadSegmenter(PARAMS, energy, pause_events=True)
    seen: list[VadEvent] = []
    pos = 0
    for frame in frames_of(audio):
        seen += seg.feed(frame)
        pos += 30
        if any(isinstance(e, UtterancePaused) for e in seen):
            break
    assert pos == 600 + 900 + 240  # 8 frames of 30 ms: the first >= 250 ms


def test_speech_resuming_after_a_pause_gets_another_pause_and_one_utterance() -> None:
    audio = signal(("speech", 600), ("silence", 360), ("speech", 600), ("silence", 900))
    events = run_events(audio, chunk=ms(30), pause_events=True)
    utts = utterances(e for e in events if not isinstance(e, UtterancePaused))
    assert len(utts) == 1
    assert [e.index for e in events if isinstance(e, UtterancePaused)] == [0, 0]


@pytest.mark.parametrize("chunk", [ms(30), ms(200), ms(1000)])
@pytest.mark.parametrize("name", ["two_commands.wav", "hello_robot.wav"])
def test_pause_events_never_change_what_is_forwarded(name: str, chunk: int) -> None:
    """Sending the tail early and announcing pauses moves nothing: same utterances, same audio."""
    audio = read_wav(name)

    def segments(**kw: bool) -> list[tuple[int, int, bytes]]:
        seg = VadSegmenter(VadSettings(), **kw)
        events: list[VadEvent] = []
        for i in range(0, len(audio), chunk):
            events += seg.feed(audio[i : i + chunk])
        events += seg.flush()
        return [
            (u.start_ms, u.end_ms, bytes(u.pcm))
            for u in utterances(e for e in events if not isinstance(e, UtterancePaused))
        ]

    assert segments(pause_events=True) == segments()


def test_no_pause_event_without_pause_events() -> None:
    audio = signal(("speech", 600), ("silence", 900))
    assert not any(isinstance(e, UtterancePaused) for e in run_events(audio))
