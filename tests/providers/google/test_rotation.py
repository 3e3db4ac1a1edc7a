"""No upstream stream outlives Google's limit: rotation keeps every byte, in order,
and an hour of audio goes through one adapter on one connection."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import numpy as np

from speech.providers.base import RecognitionConfig
from speech.providers.google.asr import GoogleRecognizer
from tests.providers.google.fake_google import FakeGoogle, running_fake_google
from tests.providers.google.support import chunks, collect, noise, settings_for, silence

RATE = 16000
BYTES_PER_S = 2 * RATE


async def test_rotation_keeps_each_stream_under_the_limit(fake: FakeGoogle) -> None:
    fake.faults.max_stream_audio_s = 2.0  # Google's 305 s, scaled down
    rec = GoogleRecognizer(settings_for(fake.url), max_stream_s=2.0)
    audio = noise(10.3, seed=11)  # loud throughout: every cut falls exactly on the limit
    out = await collect(rec, chunks(audio, 6000))
    await rec.aclose()

    streams = fake.streams
    assert [s.nbytes for s in streams] == [2 * BYTES_PER_S] * 5 + [len(audio) - 10 * BYTES_PER_S]
    assert all(s.outcome == "ok" and s.audio_seconds <= 2.0 for s in streams)
    assert all(s.config is not None and s.config.config.sample_rate_hertz == RATE for s in streams)
    assert fake.audio() == audio  # nothing lost, nothing sent twice, in order
    assert max(size for s in streams for size in s.request_sizes) <= 25_000

    finals = [t for t in out if t.is_final]
    assert [t.text for t in finals] == [f"google heard {s.nbytes} bytes" for s in streams]
    starts = [t.words[0].start_ms for t in finals]
    assert starts == [0, 2000, 4000, 6000, 8000, 10000]  # word times stay relative to the utterance
    assert len(fake.peers) == 1


async def test_rotation_cuts_at_a_quiet_point_near_the_limit(fake: FakeGoogle) -> None:
    rec = GoogleRecognizer(settings_for(fake.url), max_stream_s=2.0)  # quiet search from 1.5 s
    audio = noise(1.7, seed=1) + silence(0.1) + noise(0.7, seed=2)
    out = await collect(rec, chunks(audio, 6400))
    await rec.aclose()
    assert [s.nbytes for s in fake.streams] == [int(1.7 * BYTES_PER_S), int(0.8 * BYTES_PER_S)]
    assert fake.audio() == audio
    assert [t.text for t in out if t.is_final] == ["google heard 54400 bytes", "google heard 25600 bytes"]


async def test_rotation_on_wall_clock_age(fake: FakeGoogle) -> None:
    """Audio that trickles in slower than real time still rotates by stream age."""
    rec = GoogleRecognizer(settings_for(fake.url), max_stream_s=0.3)
    audio = noise(0.3, seed=5)

    async def trickle() -> AsyncIterator[bytes]:
        async for piece in chunks(audio, 1600):  # 50 ms of audio every 120 ms
            yield piece
            await asyncio.sleep(0.12)

    out = await collect(rec, trickle())
    await rec.aclose()
    assert len(fake.streams) >= 2
    assert fake.audio() == audio
    assert len([t for t in out if t.is_final]) == len(fake.streams)


async def test_an_hour_of_utterances_on_one_connection() -> None:
    """240 utterances of 15 s (the VAD's cap), streamed as fast as possible."""
    utterance = noise(15.0, seed=3)
    digest = hashlib.sha256(utterance).hexdigest()
    with running_fake_google(keep_audio=False) as fake:
        fake.faults.max_stream_audio_s = 305
        rec = GoogleRecognizer(settings_for(fake.url, first_result_timeout_s=5.0))
        finals = 0
        for _ in range(240):
            out = await collect(rec, chunks(utterance, 96_000))
            assert [t.text for t in out if t.is_final] == [f"google heard {len(utterance)} bytes"]
            finals += 1
        await rec.aclose()
        assert finals == 240
        assert len(fake.streams) == 240
        assert sum(s.audio_seconds for s in fake.streams) == 3600
        assert all(s.outcome == "ok" and s.digest() == digest for s in fake.streams)
        assert len(fake.peers) == 1


async def test_an_hour_long_utterance_rotates_under_googles_limit() -> None:
    """One pathological 3600 s utterance through the default 240 s rotation."""
    second = noise(1.0, seed=9)
    marked = [np.int64(i).tobytes() + second[8:] for i in range(3600)]  # each second distinct
    expected = [hashlib.sha256(b"".join(marked[i : i + 240])).hexdigest() for i in range(0, 3600, 240)]

    async def hour() -> AsyncIterator[bytes]:
        for i in range(0, 3600, 3):
            yield b"".join(marked[i : i + 3])

    with running_fake_google(keep_audio=False) as fake:
        fake.faults.max_stream_audio_s = 305
        rec = GoogleRecognizer(settings_for(fake.url, first_result_timeout_s=5.0))
        assert rec.max_stream_s == 240
        out = await collect(rec, hour(), RecognitionConfig())
        await rec.aclose()
        assert [s.nbytes for s in fake.streams] == [240 * BYTES_PER_S] * 15
        assert [s.digest() for s in fake.streams] == expected
        finals = [t for t in out if t.is_final]
        assert len(finals) == 15
        assert [t.words[0].start_ms for t in finals] == [k * 240_000 for k in range(15)]
        assert len(fake.peers) == 1
