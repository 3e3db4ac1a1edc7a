"""GoogleRecognizer against the loopback fake: requests, results, channels, auth by API key."""

from __future__ import annotations

import asyncio
import hashlib
import threading

import pytest

from speech.errors import ConfigError, NotConfigured
from speech.providers.base import RecognitionConfig, Recognizer
from speech.providers.google import asr as google_asr
from speech.providers.google.asr import GoogleRecognizer
from speech.settings import GoogleSettings, Secret
from tests.providers.google.fake_google import FakeGoogle
from tests.providers.google.support import API_KEY, chunks, collect, noise, parts, settings_for


def test_construction_does_no_io_and_describes_itself() -> None:
    rec = GoogleRecognizer(GoogleSettings())
    assert isinstance(rec, Recognizer)
    assert rec.name == "google"
    assert rec.description == "google (speech.googleapis.com:443)"
    assert rec.max_stream_s == 240


def test_missing_package_names_the_cloud_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(google_asr, "wire", None)
    with pytest.raises(ConfigError, match=r"speech-gateway\[cloud\]"):
        GoogleRecognizer(GoogleSettings())


async def test_no_credentials_is_not_configured(fake: FakeGoogle) -> None:
    rec = GoogleRecognizer(settings_for(fake.url, api_key=Secret()))
    with pytest.raises(NotConfigured) as info:
        await collect(rec, chunks(noise(0.2)))
    assert info.value.message == "google API key not configured"
    assert not info.value.retryable
    assert fake.streams == []


async def test_config_first_with_the_requested_fields(fake: FakeGoogle) -> None:
    rec = GoogleRecognizer(settings_for(fake.url, model="latest_short", punctuation=False, interim_results=False))
    out = await collect(rec, chunks(noise(0.5, 8000), 1600), RecognitionConfig("de-DE", 8000))
    await rec.aclose()
    assert [t.is_final for t in out] == [True]  # no interims asked for, none sent
    (stream,) = fake.streams
    assert stream.outcome == "ok"
    sc = stream.config
    assert sc is not None
    assert (sc.interim_results, sc.single_utterance) == (False, False)
    c = sc.config
    assert (c.encoding.name, c.sample_rate_hertz, c.language_code, c.max_alternatives) == ("LINEAR16", 8000, "de-DE", 1)
    assert (c.enable_automatic_punctuation, c.enable_word_time_offsets, c.model) == (False, True, "latest_short")
    assert stream.request_sizes == [1600] * 5


async def test_interim_and_final_mapping(recognizer: GoogleRecognizer, fake: FakeGoogle) -> None:
    audio = noise(1.0)
    out = await collect(recognizer, chunks(audio))
    assert [(t.text, t.is_final) for t in out] == [("google hearing", False), ("google heard 32000 bytes", True)]
    final = out[-1]
    assert final.confidence == 0.92
    assert [(w.word, w.start_ms, w.end_ms, w.confidence) for w in final.words] == [
        ("google", 0, 250, 0.9),
        ("heard", 250, 500, 0.9),
        ("32000", 500, 750, 0.9),
        ("bytes", 750, 1000, 0.9),
    ]
    assert out[0].confidence is None and out[0].words == ()


async def test_audio_arrives_intact(recognizer: GoogleRecognizer, fake: FakeGoogle) -> None:
    audio = noise(3.3, seed=7)
    await collect(recognizer, chunks(audio, 4410))  # sizes that do not divide evenly
    (stream,) = fake.streams
    assert stream.digest() == hashlib.sha256(audio).hexdigest()
    assert bytes(stream.audio) == audio


async def test_a_big_chunk_is_split_under_the_25_kb_cap(recognizer: GoogleRecognizer, fake: FakeGoogle) -> None:
    big = noise(6.25, seed=3)  # 200,000 bytes in one chunk
    assert len(big) == 200_000
    out = await collect(recognizer, parts([big, b"", big[:10]]))
    assert out[-1].text == "google heard 200010 bytes"
    (stream,) = fake.streams
    assert max(stream.request_sizes) <= 25_000
    assert len(stream.request_sizes) == 10
    assert bytes(stream.audio) == big + big[:10]


async def test_audio_is_forwarded_as_it_arrives(recognizer: GoogleRecognizer, fake: FakeGoogle) -> None:
    """The second chunk is only produced once the interim for the first came back:
    an adapter that buffered the utterance would deadlock here."""
    heard = asyncio.Event()

    async def live():
        yield noise(0.2)
        await heard.wait()
        yield noise(0.2, seed=1)

    texts = []
    async with asyncio.timeout(5):
        async for t in recognizer.recognize(live(), RecognitionConfig()):
            texts.append(t.text)
            heard.set()
    assert texts == ["google hearing", "google heard 12800 bytes"]


async def test_api_key_goes_in_metadata(recognizer: GoogleRecognizer, fake: FakeGoogle) -> None:
    fake.faults.require_api_key = API_KEY
    await collect(recognizer, chunks(noise(0.2)))
    md = fake.streams[0].metadata
    assert md["x-goog-api-key"] == API_KEY
    assert "authorization" not in md


async def test_no_audio_opens_no_stream(recognizer: GoogleRecognizer, fake: FakeGoogle) -> None:
    assert await collect(recognizer, parts([b"", b""])) == []
    assert fake.streams == []


async def test_utterances_share_one_channel(recognizer: GoogleRecognizer, fake: FakeGoogle) -> None:
    for i in range(5):
        out = await collect(recognizer, chunks(noise(0.3, seed=i)))
        assert out[-1].is_final
    assert len(fake.streams) == 5
    assert len(fake.peers) == 1


async def test_concurrent_utterances(recognizer: GoogleRecognizer, fake: FakeGoogle) -> None:
    audios = [noise(0.2 * (i + 1), seed=i) for i in range(6)]
    results = await asyncio.gather(*(collect(recognizer, chunks(a)) for a in audios))
    for audio, out in zip(audios, results, strict=True):
        assert out[-1].text == f"google heard {len(audio)} bytes"
    assert len(fake.peers) == 1


async def test_one_recognizer_serves_several_event_loops(recognizer: GoogleRecognizer, fake: FakeGoogle) -> None:
    """The lead's end-to-end tests run the gateway on another thread's loop:
    each loop gets its own channel, and aclose() closes them all."""
    answers: list[str] = []

    def finished_loop() -> None:  # a loop that runs once and is closed
        async def run() -> None:
            out = await collect(recognizer, chunks(noise(0.2)))
            answers.append(out[-1].text)

        asyncio.run(run())

    thread = threading.Thread(target=finished_loop)
    thread.start()
    await asyncio.to_thread(thread.join, 10)

    live = asyncio.new_event_loop()  # a loop that keeps running on its own thread
    runner = threading.Thread(target=live.run_forever, daemon=True)
    runner.start()
    try:
        other = asyncio.run_coroutine_threadsafe(collect(recognizer, chunks(noise(0.3))), live)
        out = await collect(recognizer, chunks(noise(0.4)))
        elsewhere = await asyncio.wrap_future(other)
        await recognizer.aclose()  # closes the live loop's channel on that loop
        assert answers == ["google heard 6400 bytes"]
        assert elsewhere[-1].text == "google heard 9600 bytes"
        assert out[-1].text == "google heard 12800 bytes"
        out = await collect(recognizer, chunks(noise(0.1)))  # a closed recognizer reconnects on demand
        assert out[-1].text == "google heard 3200 bytes"
    finally:
        live.call_soon_threadsafe(live.stop)
        await asyncio.to_thread(runner.join, 10)
        live.close()


async def test_fake_and_adapter_on_the_same_loop() -> None:
    server = FakeGoogle()
    await server.start()
    rec = GoogleRecognizer(settings_for(server.url))
    try:
        out = await collect(rec, chunks(noise(0.5)))
        assert out[-1].text == "google heard 16000 bytes"
    finally:
        await rec.aclose()
        await server.stop()
