"""RivaRecognizer against a real grpc.aio fake Riva server on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from speech.errors import (
    UpstreamAuthError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from speech.providers.base import RecognitionConfig, Transcript, Word
from speech.providers.riva.asr import MAX_AUDIO_MESSAGE, RivaRecognizer
from speech.settings import Secret
from tests.providers.riva.conftest import settings_for
from tests.providers.riva.fake_riva import FakeRiva, final_text, free_port

SECOND = os.urandom(32000)  # 1 s of 16 kHz PCM16 (content does not matter to the fake)


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def endless(first: bytes) -> AsyncIterator[bytes]:
    """One chunk, then nothing: the utterance never ends by itself."""
    yield first
    await asyncio.Event().wait()


async def recognize(rec: RivaRecognizer, audio: AsyncIterator[bytes], **config: Any) -> list[Transcript]:
    return [t async for t in rec.recognize(audio, RecognitionConfig(**config))]


def finals(transcripts: list[Transcript]) -> list[str]:
    return [t.text for t in transcripts if t.is_final]


async def test_config_comes_first_with_the_settings(riva: FakeRiva, make_asr: Any) -> None:
    rec = make_asr(
        punctuation=False,
        word_offsets=True,
        profanity_filter=True,
        asr_model="parakeet-ctc-1.1b",
        endpoint_stop_history_ms=800,
        endpoint_stop_threshold=0.5,
    )
    await recognize(rec, chunks(SECOND), language_code="de-DE", sample_rate=16000)
    sent = riva.received.asr[0].config
    assert sent is not None and sent.interim_results
    c = sent.config
    assert (c.sample_rate_hertz, c.language_code, c.max_alternatives, c.audio_channel_count) == (16000, "de-DE", 1, 1)
    assert c.encoding == 1  # LINEAR_PCM
    assert not c.enable_automatic_punctuation and c.enable_word_time_offsets and c.profanity_filter
    assert c.model == "parakeet-ctc-1.1b"
    ep = c.endpointing_config
    assert ep.stop_history == 800 and ep.stop_threshold == pytest.approx(0.5)
    # Zero settings leave the server's defaults: those fields are not sent at all.
    assert not ep.HasField("start_history") and not ep.HasField("stop_history_eou")


async def test_defaults_send_no_endpointing_and_no_model(riva: FakeRiva, make_asr: Any) -> None:
    await recognize(make_asr(), chunks(SECOND))
    c = riva.received.asr[0].config.config
    assert not c.HasField("endpointing_config") and c.model == ""
    assert c.enable_automatic_punctuation and c.enable_word_time_offsets and not c.profanity_filter


async def test_audio_arrives_intact_and_large_chunks_are_split(riva: FakeRiva, make_asr: Any) -> None:
    big = os.urandom(3 * MAX_AUDIO_MESSAGE + 1000)
    audio = [SECOND, big, b"", SECOND[:3200]]
    out = await recognize(make_asr(), chunks(*audio))
    call = riva.received.asr[0]
    sent = b"".join(audio)
    assert len(call.audio) == len(sent)
    assert hashlib.sha256(call.audio).digest() == hashlib.sha256(sent).digest()
    assert call.messages == 1 + 4 + 1  # the big chunk becomes 4 messages; the empty one none
    assert finals(out) == [final_text(sent)]
    await riva.wait_until(lambda: call.ended)
    assert not call.cancelled  # a stream that ran its course is not reported as cancelled


async def test_interim_and_final_are_mapped(make_asr: Any) -> None:
    out = await recognize(make_asr(), chunks(SECOND, SECOND))
    interim, final = out  # empty results and the blank final were skipped
    assert interim == Transcript(
        "riva hearing", is_final=False, words=(Word("riva", 0, 80, 0.9), Word("hearing", 100, 180, 0.9))
    )
    assert final.is_final and final.text == final_text(SECOND + SECOND)  # stripped
    assert final.confidence == pytest.approx(0.95)
    assert [(w.word, w.start_ms, w.end_ms) for w in final.words][:3] == [
        ("riva", 0, 80),
        ("heard", 100, 180),
        ("64000", 200, 280),
    ]


async def test_no_interims_when_disabled(riva: FakeRiva, make_asr: Any) -> None:
    out = await recognize(make_asr(interim_results=False), chunks(SECOND))
    assert not riva.received.asr[0].config.interim_results
    assert [t.is_final for t in out] == [True]


async def test_bearer_token_and_function_id_are_sent(riva: FakeRiva, make_asr: Any) -> None:
    riva.faults.token, riva.faults.function_id = "k-123", "fn-asr"
    rec = make_asr(api_key=Secret("k-123"), asr_function_id="fn-asr", tts_function_id="fn-tts")
    out = await recognize(rec, chunks(SECOND))
    assert finals(out) == [final_text(SECOND)]
    md = riva.received.asr[0].metadata
    assert md["authorization"] == "Bearer k-123" and md["function-id"] == "fn-asr"


async def test_no_credentials_no_metadata(riva: FakeRiva, make_asr: Any) -> None:
    await recognize(make_asr(), chunks(SECOND))
    md = riva.received.asr[0].metadata
    assert "authorization" not in md and "function-id" not in md


@pytest.mark.parametrize(
    "changes", [{}, {"api_key": Secret("wrong")}, {"api_key": Secret("k-123"), "asr_function_id": "other"}]
)
async def test_missing_or_wrong_credentials_are_an_auth_error(
    riva: FakeRiva, make_asr: Any, changes: dict[str, Any]
) -> None:
    riva.faults.token, riva.faults.function_id = "k-123", "fn-asr"
    with pytest.raises(UpstreamAuthError) as info:
        await recognize(make_asr(**changes), chunks(SECOND))
    assert not info.value.retryable
    assert "k-123" not in info.value.message and "wrong" not in info.value.message


async def test_refused_connection_is_unavailable() -> None:
    rec = RivaRecognizer(settings_for(f"127.0.0.1:{free_port()}", connect_timeout_s=0.3))
    try:
        with pytest.raises(UpstreamUnavailable) as info:
            await recognize(rec, chunks(SECOND))
        assert info.value.message == "Failed to connect to riva server" and info.value.retryable
    finally:
        await rec.aclose()


async def test_server_stopped_after_first_use_is_unavailable(riva: FakeRiva, make_asr: Any) -> None:
    rec = make_asr(connect_timeout_s=0.3)
    await recognize(rec, chunks(SECOND))
    await riva.stop_serving()
    with pytest.raises(UpstreamUnavailable):
        await recognize(rec, chunks(SECOND))


async def test_stall_after_audio_is_a_timeout(riva: FakeRiva, make_asr: Any) -> None:
    riva.faults.stall_s = 30
    with pytest.raises(UpstreamTimeout) as info:
        await recognize(make_asr(first_result_timeout_s=0.3), chunks(SECOND))
    assert info.value.retryable
    await riva.wait_until(lambda: riva.received.asr[0].cancelled)


async def test_server_that_stops_reading_is_a_timeout(riva: FakeRiva, make_asr: Any) -> None:
    riva.faults.stop_reading = True
    audio = [os.urandom(MAX_AUDIO_MESSAGE)] * 256  # 16 MiB: far more than flow control lets through
    with pytest.raises(UpstreamTimeout):
        await recognize(make_asr(first_result_timeout_s=0.3), chunks(*audio))
    await riva.wait_until(lambda: riva.received.asr[0].cancelled)


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL])
async def test_stream_dropped_mid_utterance_is_retryable(riva: FakeRiva, make_asr: Any, code: Any) -> None:
    riva.faults.status, riva.faults.after = code, 2
    with pytest.raises(UpstreamUnavailable) as info:
        await recognize(make_asr(), chunks(*[SECOND] * 5))
    assert info.value.retryable
    assert riva.received.asr[0].messages == 2


async def test_ok_end_before_the_audio_is_finished_is_a_protocol_error(riva: FakeRiva, make_asr: Any) -> None:
    riva.faults.end_early = True
    with pytest.raises(UpstreamProtocolError) as info:
        await recognize(make_asr(), endless(SECOND))
    assert info.value.retryable


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, UpstreamRejected),
        (grpc.StatusCode.UNAUTHENTICATED, UpstreamAuthError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, UpstreamRateLimited),
        (grpc.StatusCode.DEADLINE_EXCEEDED, UpstreamTimeout),
    ],
)
async def test_status_at_start_is_translated(riva: FakeRiva, make_asr: Any, code: Any, error: type) -> None:
    riva.faults.status = code
    with pytest.raises(error) as info:
        await recognize(make_asr(), chunks(SECOND))
    if error in (UpstreamRejected, UpstreamAuthError):
        assert not info.value.retryable


async def test_garbage_response_is_a_protocol_error(riva: FakeRiva, make_asr: Any) -> None:
    riva.faults.garbage = True
    with pytest.raises(UpstreamProtocolError) as info:
        await recognize(make_asr(), chunks(SECOND))
    assert info.value.retryable


async def test_consumer_leaving_early_cancels_the_call(riva: FakeRiva, make_asr: Any) -> None:
    results = make_asr().recognize(endless(SECOND), RecognitionConfig())
    first = await anext(results)
    assert first.text == "riva hearing" and not first.is_final
    await results.aclose()
    await riva.wait_until(lambda: riva.received.asr[0].ended and riva.received.asr[0].cancelled)


async def test_cancelling_the_consumer_task_cancels_the_call(riva: FakeRiva, make_asr: Any) -> None:
    rec = make_asr()
    seen = asyncio.Event()

    async def consume() -> None:
        async for _ in rec.recognize(endless(SECOND), RecognitionConfig()):
            seen.set()

    task = asyncio.create_task(consume())
    await seen.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await riva.wait_until(lambda: riva.received.asr[0].ended and riva.received.asr[0].cancelled)


async def test_audio_iterator_failure_is_reraised_and_cancels_the_call(riva: FakeRiva, make_asr: Any) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield SECOND
        await riva.wait_until(lambda: bool(riva.received.asr and riva.received.asr[0].messages))
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError, match="client went away"):
        await recognize(make_asr(), failing())
    await riva.wait_until(lambda: riva.received.asr[0].ended and riva.received.asr[0].cancelled)


async def test_rejection_racing_with_audio_writes_keeps_the_servers_status(riva: FakeRiva, make_asr: Any) -> None:
    """grpc/grpc#36066: a write racing with the server's rejection turns the
    call's status into a local INTERNAL (retryable) in most runs; the adapter
    must still report the server's UNAUTHENTICATED (permanent)."""
    riva.faults.token = "k-123"
    rec = make_asr()
    for _ in range(30):
        with pytest.raises(UpstreamAuthError):
            await recognize(rec, chunks(*[SECOND[:3200]] * 10))
