"""RivaSynthesizer against a real grpc.aio fake Riva server on loopback."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from speech.errors import (
    UpstreamAuthError,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from speech.providers.base import AudioChunk, SynthesisRequest
from speech.providers.riva.tts import RivaSynthesizer
from speech.settings import Secret
from tests.providers.riva.conftest import settings_for
from tests.providers.riva.fake_riva import FakeRiva, free_port, tone

TEXT = "Hello from the robot."
MODES = [pytest.param(False, id="unary"), pytest.param(True, id="streaming")]


async def synthesize(syn: RivaSynthesizer, text: str = TEXT, **kw: Any) -> list[AudioChunk]:
    return [c async for c in syn.synthesize(SynthesisRequest(text=text, **kw))]


async def test_unary_returns_the_whole_answer_as_one_chunk(riva: FakeRiva, make_tts: Any) -> None:
    syn = make_tts()
    chunks = await synthesize(syn, voice_id="JBFqnCBsd6RMkjVDRZzb")
    assert [(c.sample_rate, c.format) for c in chunks] == [(22050, "pcm")]
    assert chunks[0].data == tone(TEXT, 22050)
    (call,) = riva.received.tts
    (req,) = call.requests
    assert call.method == "Synthesize"
    assert (req.text, req.language_code, req.encoding, req.sample_rate_hz) == (TEXT, "en-US", 1, 22050)
    assert req.voice_name == ""  # an ElevenLabs voice id is not a Riva voice
    assert syn.description == f"riva ({riva.url}, unary)"


async def test_streaming_yields_whole_samples_as_they_arrive(riva: FakeRiva, make_tts: Any) -> None:
    chunks = await synthesize(make_tts(tts_streaming=True, tts_sample_rate=16000))
    assert len(chunks) == 3  # the fake's three pieces, cut at odd offsets and re-aligned
    assert all(len(c.data) % 2 == 0 and c.sample_rate == 16000 for c in chunks)
    assert b"".join(c.data for c in chunks) == tone(TEXT, 16000)
    assert len(tone(TEXT, 16000)) == 2 * 16000 * 50 * len(TEXT) // 1000
    (call,) = riva.received.tts
    assert call.method == "SynthesizeOnline" and call.requests[0].sample_rate_hz == 16000


async def test_voice_and_language(riva: FakeRiva, make_tts: Any) -> None:
    syn = make_tts(tts_voice="English-US.Male-1", tts_language_code="en-GB")
    await synthesize(syn, voice_id="English-US.Female-1", language_code="es-US")
    await synthesize(syn, voice_id="JBFqnCBsd6RMkjVDRZzb")
    first, second = (c.requests[0] for c in riva.received.tts)
    assert (first.voice_name, first.language_code) == ("English-US.Female-1", "es-US")
    assert (second.voice_name, second.language_code) == ("English-US.Male-1", "en-GB")


async def test_bearer_token_and_function_id_are_sent(riva: FakeRiva, make_tts: Any) -> None:
    riva.faults.token, riva.faults.function_id = "k-9", "fn-tts"
    syn = make_tts(api_key=Secret("k-9"), asr_function_id="fn-asr", tts_function_id="fn-tts")
    assert b"".join(c.data for c in await synthesize(syn)) == tone(TEXT, 22050)
    md = riva.received.tts[0].metadata
    assert md["authorization"] == "Bearer k-9" and md["function-id"] == "fn-tts"


@pytest.mark.parametrize("streaming", MODES)
async def test_missing_credentials_are_an_auth_error(riva: FakeRiva, make_tts: Any, streaming: bool) -> None:
    riva.faults.token = "k-9"
    with pytest.raises(UpstreamAuthError) as info:
        await synthesize(make_tts(tts_streaming=streaming))
    assert not info.value.retryable
    assert "authorization" not in riva.received.tts[0].metadata


@pytest.mark.parametrize("streaming", MODES)
async def test_refused_connection_is_unavailable(streaming: bool) -> None:
    url = f"127.0.0.1:{free_port()}"
    syn = RivaSynthesizer(settings_for(url, connect_timeout_s=0.3, tts_streaming=streaming))
    try:
        with pytest.raises(UpstreamUnavailable, match="^Failed to connect to riva server$"):
            await synthesize(syn)
    finally:
        await syn.aclose()


@pytest.mark.parametrize("streaming", MODES)
async def test_stall_is_a_timeout(riva: FakeRiva, make_tts: Any, streaming: bool) -> None:
    riva.faults.stall_s = 30
    with pytest.raises(UpstreamTimeout):
        await synthesize(make_tts(tts_streaming=streaming, first_result_timeout_s=0.3))


@pytest.mark.parametrize("streaming", MODES)
@pytest.mark.parametrize(
    ("code", "error", "retryable"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, UpstreamRejected, False),
        (grpc.StatusCode.NOT_FOUND, UpstreamRejected, False),
        (grpc.StatusCode.UNAVAILABLE, UpstreamUnavailable, True),
        (grpc.StatusCode.INTERNAL, UpstreamUnavailable, True),
    ],
)
async def test_status_is_translated(
    riva: FakeRiva, make_tts: Any, streaming: bool, code: Any, error: type, retryable: bool
) -> None:
    riva.faults.status = code
    with pytest.raises(error) as info:
        await synthesize(make_tts(tts_streaming=streaming))
    assert info.value.retryable is retryable


async def test_stream_dropped_after_a_chunk_is_retryable(riva: FakeRiva, make_tts: Any) -> None:
    riva.faults.status, riva.faults.after = grpc.StatusCode.UNAVAILABLE, 1
    got: list[AudioChunk] = []
    with pytest.raises(UpstreamUnavailable):
        async for chunk in make_tts(tts_streaming=True).synthesize(SynthesisRequest(text=TEXT)):
            got.append(chunk)
    assert len(got) == 1


@pytest.mark.parametrize("streaming", MODES)
async def test_garbage_is_a_protocol_error(riva: FakeRiva, make_tts: Any, streaming: bool) -> None:
    riva.faults.garbage = True
    with pytest.raises(UpstreamProtocolError) as info:
        await synthesize(make_tts(tts_streaming=streaming))
    assert info.value.retryable


@pytest.mark.parametrize("streaming", MODES)
async def test_odd_length_audio_is_a_protocol_error(riva: FakeRiva, make_tts: Any, streaming: bool) -> None:
    riva.faults.odd_audio = True
    got: list[AudioChunk] = []
    with pytest.raises(UpstreamProtocolError, match="16-bit"):
        async for chunk in make_tts(tts_streaming=streaming).synthesize(SynthesisRequest(text=TEXT)):
            got.append(chunk)
    assert got if streaming else not got  # unary checks the whole answer before yielding it


@pytest.mark.parametrize("streaming", MODES)
async def test_no_audio_is_a_protocol_error(make_tts: Any, streaming: bool) -> None:
    with pytest.raises(UpstreamProtocolError, match="no audio"):
        await synthesize(make_tts(tts_streaming=streaming), text="")


async def test_consumer_leaving_early_is_clean(riva: FakeRiva, make_tts: Any) -> None:
    chunks = make_tts(tts_streaming=True).synthesize(SynthesisRequest(text=TEXT * 20))
    first = await anext(chunks)
    assert first.data
    await chunks.aclose()
