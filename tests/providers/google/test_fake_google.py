"""The double itself enforces Google's rules, so the adapter tests mean something."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from google.cloud import speech_v1

from tests.providers.google.fake_google import FakeGoogle

METHOD = "/google.cloud.speech.v1.Speech/StreamingRecognize"


def _config() -> speech_v1.StreamingRecognizeRequest:
    cfg = speech_v1.RecognitionConfig(
        encoding=speech_v1.RecognitionConfig.AudioEncoding.LINEAR16, sample_rate_hertz=16000, language_code="en-US"
    )
    return speech_v1.StreamingRecognizeRequest(streaming_config={"config": cfg, "interim_results": True})


def _audio(n: int) -> speech_v1.StreamingRecognizeRequest:
    return speech_v1.StreamingRecognizeRequest(audio_content=b"\x01" * n)


async def _call(url: str, requests: list[speech_v1.StreamingRecognizeRequest]) -> list[str]:
    async with grpc.aio.insecure_channel(url) as channel:
        method = channel.stream_stream(
            METHOD,
            request_serializer=speech_v1.StreamingRecognizeRequest.serialize,
            response_deserializer=speech_v1.StreamingRecognizeResponse.deserialize,
        )
        call = method(iter(requests))
        return [r.results[0].alternatives[0].transcript async for r in call]


async def test_valid_stream_is_answered_from_its_audio(fake: FakeGoogle) -> None:
    texts = await _call(fake.url, [_config(), _audio(100), _audio(25_000)])
    assert texts == ["google hearing", "google heard 25100 bytes"]
    assert fake.streams[0].request_sizes == [100, 25_000]


@pytest.mark.parametrize(
    "requests",
    [
        [_audio(10)],  # audio before any config
        [_config(), _audio(10), _config()],  # a second config
        [_config(), _audio(25_001)],  # over the 25 KB cap
    ],
    ids=["audio-first", "config-later", "over-cap"],
)
async def test_protocol_breaches_are_invalid_argument(fake: FakeGoogle, requests: list) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _call(fake.url, requests)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert fake.streams[0].outcome == "aborted INVALID_ARGUMENT"


async def test_stream_duration_limit_counts_audio_seconds(fake: FakeGoogle) -> None:
    fake.faults.max_stream_audio_s = 1.0  # 32,000 bytes at 16 kHz
    assert len(await _call(fake.url, [_config(), _audio(16_000), _audio(16_000)])) == 2
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _call(fake.url, [_config(), _audio(16_000), _audio(16_002)])
    assert info.value.code() is grpc.StatusCode.OUT_OF_RANGE
    assert "maximum allowed stream duration" in (info.value.details() or "")


async def test_runs_on_the_callers_loop_too() -> None:
    server = FakeGoogle()
    await server.start()
    try:
        assert await _call(server.url, [_config(), _audio(2)]) == ["google hearing", "google heard 2 bytes"]
    finally:
        await server.stop()
