"""Every upstream failure ends as the right gateway error; every exit cancels the call."""

from __future__ import annotations

import asyncio

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
from speech.providers.base import RecognitionConfig
from speech.providers.google.asr import GoogleRecognizer
from tests.providers.google.fake_google import STREAM_TOO_LONG, FakeGoogle, closed_port
from tests.providers.google.support import chunks, collect, noise, parts, settings_for, until

S = grpc.StatusCode


async def test_refused_connection_is_retryable() -> None:
    rec = GoogleRecognizer(settings_for(f"127.0.0.1:{closed_port()}"))
    with pytest.raises(UpstreamUnavailable) as info:
        await collect(rec, chunks(noise(0.2)))
    assert info.value.message == "Failed to connect to google server"
    assert info.value.retryable
    await rec.aclose()


@pytest.mark.parametrize(
    ("code", "kind", "retryable"),
    [
        (S.UNAVAILABLE, UpstreamUnavailable, True),
        (S.INTERNAL, UpstreamUnavailable, True),
        (S.UNKNOWN, UpstreamUnavailable, True),
        (S.DEADLINE_EXCEEDED, UpstreamTimeout, True),
        (S.RESOURCE_EXHAUSTED, UpstreamRateLimited, True),
        (S.INVALID_ARGUMENT, UpstreamRejected, False),
        (S.OUT_OF_RANGE, UpstreamRejected, False),
        (S.UNAUTHENTICATED, UpstreamAuthError, False),
        (S.PERMISSION_DENIED, UpstreamAuthError, False),
    ],
)
@pytest.mark.parametrize("after", [0, 3], ids=["at-start", "mid-utterance"])
async def test_aborted_stream(
    recognizer: GoogleRecognizer, fake: FakeGoogle, code: grpc.StatusCode, kind: type, retryable: bool, after: int
) -> None:
    fake.faults.abort_code, fake.faults.abort_after = code, after
    seen = []
    with pytest.raises(kind) as info:
        async with asyncio.timeout(10):
            async for t in recognizer.recognize(chunks(noise(2.0)), RecognitionConfig()):
                seen.append(t.text)
    assert info.value.retryable is retryable
    assert seen == ([] if after == 0 else ["google hearing"])  # interims before a drop pass through
    assert fake.streams[0].outcome == f"aborted {code.name}"


async def test_status_survives_a_write_racing_the_servers_abort(recognizer: GoogleRecognizer, fake: FakeGoogle) -> None:
    """grpc.aio can overwrite the server's status with INTERNAL when a write is in
    flight as the server ends the call (grpc/grpc#36066). Audio is written
    continuously, so repeat enough times to hit that window."""
    fake.faults.abort_code = S.UNAUTHENTICATED
    for _ in range(25):
        with pytest.raises(UpstreamAuthError):
            await collect(recognizer, parts([noise(0.75)] * 4))
    fake.faults.abort_code, fake.faults.abort_after = S.INVALID_ARGUMENT, 2
    for _ in range(25):
        with pytest.raises(UpstreamRejected):
            await collect(recognizer, parts([noise(0.75)] * 4))


async def test_stream_duration_exceeded_is_permanent(recognizer: GoogleRecognizer, fake: FakeGoogle) -> None:
    fake.faults.max_stream_audio_s = 1.0  # far below the adapter's 240 s rotation
    with pytest.raises(UpstreamRejected) as info:
        await collect(recognizer, chunks(noise(2.0)))
    assert STREAM_TOO_LONG in info.value.message
    assert not info.value.retryable


@pytest.mark.parametrize(
    ("code", "kind"),
    [(3, UpstreamRejected), (11, UpstreamRejected), (14, UpstreamUnavailable), (7, UpstreamAuthError)],
)
async def test_in_band_error_field(recognizer: GoogleRecognizer, fake: FakeGoogle, code: int, kind: type) -> None:
    fake.faults.error_code = code
    with pytest.raises(kind):
        await collect(recognizer, chunks(noise(1.0)))
    assert fake.streams[0].outcome == "error-field"


async def test_stall_times_out_and_cancels_the_call(recognizer: GoogleRecognizer, fake: FakeGoogle) -> None:
    fake.faults.stall = True
    with pytest.raises(UpstreamTimeout) as info:
        await collect(recognizer, chunks(noise(0.5)))
    assert info.value.retryable
    assert "no final result" in info.value.message
    await until(lambda: fake.streams[0].cancelled)


async def test_garbage_is_a_retryable_protocol_error(recognizer: GoogleRecognizer, fake: FakeGoogle) -> None:
    fake.faults.garbage = True
    with pytest.raises(UpstreamProtocolError) as info:
        await collect(recognizer, chunks(noise(0.5)))
    assert info.value.retryable
    await until(lambda: fake.streams[0].ended is not None)


async def test_consumer_cancellation_cancels_the_call(recognizer: GoogleRecognizer, fake: FakeGoogle) -> None:
    heard = asyncio.Event()

    async def endless():
        yield noise(0.2)
        await asyncio.Event().wait()
        yield b""  # pragma: no cover

    async def consume() -> None:
        async for _ in recognizer.recognize(endless(), RecognitionConfig()):
            heard.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(heard.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: fake.streams[0].cancelled)


async def test_early_exit_cancels_the_call(recognizer: GoogleRecognizer, fake: FakeGoogle) -> None:
    async def endless():
        while True:
            yield noise(0.1)
            await asyncio.sleep(0.01)

    results = recognizer.recognize(endless(), RecognitionConfig())
    first = await asyncio.wait_for(anext(results), 5)
    assert first.text == "google hearing"
    await results.aclose()
    await until(lambda: fake.streams[0].cancelled)


async def test_failing_audio_source_propagates_and_cancels(recognizer: GoogleRecognizer, fake: FakeGoogle) -> None:
    async def broken():
        yield noise(0.2)
        await asyncio.sleep(0.05)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await collect(recognizer, broken())
    await until(lambda: fake.streams[0].cancelled)
