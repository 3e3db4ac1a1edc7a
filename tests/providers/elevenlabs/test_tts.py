"""ElevenLabsSynthesizer against a real loopback server shaped like ElevenLabs:
request shape, keys, billing header, real audio per format, streaming,
connection reuse per event loop, input validation and cancellation."""

from __future__ import annotations

import asyncio
import io
import logging
import threading

import av
import pytest

from speech.errors import ConfigError, InvalidTtsRequest, NotConfigured, UnsupportedOutputFormat
from speech.providers.base import AudioChunk, SynthesisRequest, Synthesizer
from speech.providers.elevenlabs import ElevenLabsSynthesizer
from speech.settings import ElevenLabsSettings, Secret
from tests.providers.elevenlabs.fake_elevenlabs import (
    CALLER_KEY,
    GATEWAY_KEY,
    MS_PER_CHAR,
    FakeElevenLabs,
)
from tests.providers.elevenlabs.support import MakeSynth, collect

TEXT = "Hello from the robot."  # 21 characters: 1.05 s of tone


def decode(data: bytes) -> tuple[int, float]:
    """(sample rate, seconds) of a complete audio file, decoded by PyAV."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        rate = stream.codec_context.sample_rate
    return rate, samples / rate


# --- request shape ---------------------------------------------------------


async def test_request_shape_with_defaults(fake: FakeElevenLabs, make_synth: MakeSynth) -> None:
    chunks = await collect(make_synth(), SynthesisRequest(TEXT, output_format="mp3_44100_128"))
    assert chunks
    [req] = fake.requests
    assert req.path == "/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb"
    assert not req.streaming
    assert req.query == {"output_format": "mp3_44100_128"}
    assert req.headers["xi-api-key"] == GATEWAY_KEY
    assert req.headers["content-type"] == "application/json"
    assert req.json == {"text": TEXT, "model_id": "eleven_flash_v2_5"}


async def test_voice_model_settings_and_language_are_passed_through(
    fake: FakeElevenLabs, make_synth: MakeSynth
) -> None:
    voice_settings = {"stability": 0.4, "similarity_boost": 0.8, "use_speaker_boost": True}
    request = SynthesisRequest(
        TEXT,
        output_format="pcm_16000",
        voice_id="21m00Tcm4TlvDq8ikWAM",
        model_id="eleven_multilingual_v2",
        language_code="de",
        voice_settings=voice_settings,
    )
    await collect(make_synth(), request)
    [req] = fake.requests
    assert req.voice_id == "21m00Tcm4TlvDq8ikWAM"
    assert req.query == {"output_format": "pcm_16000"}
    assert req.json == {
        "text": TEXT,
        "model_id": "eleven_multilingual_v2",
        "voice_settings": voice_settings,
        "language_code": "de",
    }


async def test_configured_default_voice_and_model(fake: FakeElevenLabs, make_synth: MakeSynth) -> None:
    synth = make_synth(default_voice_id="21m00Tcm4TlvDq8ikWAM", default_model_id="eleven_turbo_v2_5")
    await collect(synth, SynthesisRequest(TEXT, output_format="pcm_16000"))
    [req] = fake.requests
    assert req.voice_id == "21m00Tcm4TlvDq8ikWAM"
    assert req.json["model_id"] == "eleven_turbo_v2_5"


async def test_the_callers_own_key_replaces_the_gateways(
    fake: FakeElevenLabs, make_synth: MakeSynth, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await collect(make_synth(), SynthesisRequest(TEXT, output_format="pcm_16000", caller_api_key=CALLER_KEY))
    # Works with no configured key at all, too.
    unconfigured = make_synth(api_key=Secret())
    await collect(unconfigured, SynthesisRequest(TEXT, output_format="pcm_16000", caller_api_key=CALLER_KEY))
    assert [r.headers["xi-api-key"] for r in fake.requests] == [CALLER_KEY, CALLER_KEY]
    assert all(GATEWAY_KEY not in str(r.headers) for r in fake.requests)
    assert "api_key" not in str([r.query for r in fake.requests])
    assert "secret-KEY" not in caplog.text  # httpx / httpcore debug logs included


async def test_no_key_at_all_is_not_configured(fake: FakeElevenLabs, make_synth: MakeSynth) -> None:
    synth = make_synth(api_key=Secret())
    with pytest.raises(NotConfigured, match="^elevenlabs API key not configured$"):
        await collect(synth, SynthesisRequest(TEXT))
    assert fake.requests == []


async def test_character_cost_is_reported_once_on_the_first_chunk(fake: FakeElevenLabs, make_synth: MakeSynth) -> None:
    chunks = await collect(make_synth(streaming=True), SynthesisRequest(TEXT, output_format="mp3_44100_128"))
    assert len(chunks) > 1
    assert chunks[0].billed_characters == len(TEXT)
    assert [c.billed_characters for c in chunks[1:]] == [None] * (len(chunks) - 1)


@pytest.mark.parametrize("header", ["", "n/a", "-3", "1.5", "9" * 40])
async def test_a_missing_or_odd_character_cost_is_none(
    fake: FakeElevenLabs, make_synth: MakeSynth, header: str
) -> None:
    fake.cost_header = header
    chunks = await collect(make_synth(), SynthesisRequest(TEXT, output_format="pcm_16000"))
    assert all(c.billed_characters is None for c in chunks)


# --- audio -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "rate"),
    [("mp3_44100_128", 44100), ("wav_22050", 22050), ("opus_48000_64", 48000), ("ulaw_8000", 8000)],
)
@pytest.mark.parametrize("streaming", [False, True])
async def test_chunks_concatenate_to_a_playable_file_at_the_named_rate(
    fake: FakeElevenLabs, make_synth: MakeSynth, fmt: str, rate: int, streaming: bool
) -> None:
    chunks = await collect(make_synth(streaming=streaming), SynthesisRequest(TEXT, output_format=fmt))
    assert {(c.format, c.sample_rate) for c in chunks} == {(fmt, rate)}
    decoded_rate, seconds = decode(b"".join(c.data for c in chunks))
    assert decoded_rate == rate
    assert seconds == pytest.approx(len(TEXT) * MS_PER_CHAR / 1000, abs=0.03)


async def test_pcm_is_raw_samples_at_the_named_rate(fake: FakeElevenLabs, make_synth: MakeSynth) -> None:
    chunks = await collect(make_synth(), SynthesisRequest(TEXT, output_format="pcm_16000"))
    assert {(c.format, c.sample_rate) for c in chunks} == {("pcm_16000", 16000)}
    data = b"".join(c.data for c in chunks)
    expected = 16000 * MS_PER_CHAR * len(TEXT) // 1000 * 2
    assert len(data) % 2 == 0
    assert abs(len(data) - expected) <= 8


async def test_streaming_uses_the_stream_route_and_yields_several_chunks(
    fake: FakeElevenLabs, make_synth: MakeSynth
) -> None:
    chunks = await collect(make_synth(streaming=True), SynthesisRequest(TEXT, output_format="pcm_16000"))
    [req] = fake.requests
    assert req.path == "/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb/stream"
    assert req.streaming
    assert len(chunks) > 1
    assert all(isinstance(c, AudioChunk) and c.data for c in chunks)


async def test_octet_stream_bodies_are_accepted(fake: FakeElevenLabs, make_synth: MakeSynth) -> None:
    fake.content_type = "application/octet-stream"
    chunks = await collect(make_synth(), SynthesisRequest(TEXT, output_format="pcm_16000"))
    assert sum(len(c.data) for c in chunks) > 0


# --- connections and lifecycle ---------------------------------------------


async def test_one_pooled_connection_is_reused_within_a_loop(fake: FakeElevenLabs, make_synth: MakeSynth) -> None:
    synth = make_synth()
    for _ in range(3):
        await collect(synth, SynthesisRequest("Hi there", output_format="pcm_16000"))
    assert len({r.client_port for r in fake.requests}) == 1


async def test_each_event_loop_gets_its_own_client(fake: FakeElevenLabs, make_synth: MakeSynth) -> None:
    synth = make_synth()
    await collect(synth, SynthesisRequest("Hi there", output_format="pcm_16000"))
    results: list[object] = []

    async def elsewhere() -> None:
        try:
            results.append(await collect(synth, SynthesisRequest("Hi there", output_format="pcm_16000")))
        finally:
            await synth.aclose()  # closes this loop's client, schedules the test loop's

    thread = threading.Thread(target=lambda: asyncio.run(elsewhere()))
    thread.start()
    await asyncio.to_thread(thread.join, 10)
    assert len(results) == 1 and results[0]
    assert len({r.client_port for r in fake.requests}) == 2
    # Still usable after a close: a fresh client is opened.
    await collect(synth, SynthesisRequest("Hi there", output_format="pcm_16000"))
    assert len(fake.requests) == 3


async def test_sync_close_schedules_the_close_on_the_clients_loop(make_synth: MakeSynth) -> None:
    synth = make_synth()
    await collect(synth, SynthesisRequest("Hi there", output_format="pcm_16000"))
    synth.close()
    for _ in range(100):
        await asyncio.sleep(0.01)
        if not synth._closing:
            break
    assert not synth._closing


async def test_cancelling_mid_stream_closes_the_response(fake: FakeElevenLabs, make_synth: MakeSynth) -> None:
    fake.fault = "stall_body"
    synth = make_synth()
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in synth.synthesize(SynthesisRequest(TEXT, output_format="pcm_16000")):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(fake.stream_closed.wait, 5)


def test_description_and_protocol() -> None:
    synth = ElevenLabsSynthesizer(ElevenLabsSettings())
    assert synth.name == "elevenlabs"
    assert synth.description == "elevenlabs (api.elevenlabs.io)"
    assert isinstance(synth, Synthesizer)
    streaming = ElevenLabsSynthesizer(ElevenLabsSettings(url="http://127.0.0.1:8081", streaming=True))
    assert streaming.description == "elevenlabs (127.0.0.1:8081, streaming)"


# --- input validation ------------------------------------------------------


@pytest.mark.parametrize(
    "voice_id",
    ["../voices", "..", "a/b", "voice?x=1", "voice#frag", "%2e%2e", "a" * 65, "v oice", "voix\u00e9", "a\nb", "."],
)
async def test_unsafe_voice_ids_are_refused_before_any_request(
    fake: FakeElevenLabs, make_synth: MakeSynth, voice_id: str
) -> None:
    with pytest.raises(InvalidTtsRequest, match="invalid voice_id") as info:
        await collect(make_synth(), SynthesisRequest(TEXT, voice_id=voice_id))
    assert info.value.status == 400
    assert fake.requests == []


async def test_unknown_output_format_is_refused_before_any_request(fake: FakeElevenLabs, make_synth: MakeSynth) -> None:
    with pytest.raises(UnsupportedOutputFormat):
        await collect(make_synth(), SynthesisRequest(TEXT, output_format="flac_44100"))
    assert fake.requests == []


@pytest.mark.parametrize("key", ["caller key with spaces", "key\r\nx-evil: 1", "cl\u00e9"])
async def test_malformed_caller_keys_are_refused_without_echo(
    fake: FakeElevenLabs, make_synth: MakeSynth, key: str
) -> None:
    with pytest.raises(InvalidTtsRequest) as info:
        await collect(make_synth(), SynthesisRequest(TEXT, caller_api_key=key))
    assert key not in str(info.value)
    assert fake.requests == []


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        (ElevenLabsSettings(url="ftp://example.com"), "elevenlabs.url"),
        (ElevenLabsSettings(url="not a url"), "elevenlabs.url"),
        (ElevenLabsSettings(url="https://user:pw@example.com"), "elevenlabs.url"),
        (ElevenLabsSettings(default_voice_id="../x"), "default_voice_id"),
        (ElevenLabsSettings(api_key=Secret("bad key")), "api_key"),
    ],
)
def test_bad_settings_fail_at_construction(settings: ElevenLabsSettings, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        ElevenLabsSynthesizer(settings)
    assert "pw" not in str(info.value) and "bad key" not in str(info.value)
