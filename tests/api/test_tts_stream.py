"""Streamed TTS over chunked HTTP, against the real server and the real Piper voice."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from typing import Any

import av
import httpx
import numpy as np
import pytest

from tests.api.streaming import om1_frames, replies, stream, wer
from tests.providers.elevenlabs.fake_elevenlabs import GATEWAY_KEY, FakeElevenLabs

pytestmark = pytest.mark.slow

TEXT = "Turn left at the next door. Then stop. The charging station is on your right."
# Long enough that its audio cannot all sit in socket buffers (about 90 s at 48 kHz).
LONG = " ".join(f"This is sentence number {i} of a long answer that the robot reads aloud." for i in range(40))


async def balance(server: Any) -> int:
    ledger = await server.ledger()
    try:
        (account,) = await ledger.list_accounts()
        return await ledger.available(account.account_id)
    finally:
        await ledger.close()


def decode(data: bytes) -> tuple[int, np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        stream_ = container.streams.audio[0]
        frames = [f.to_ndarray().reshape(-1) for f in container.decode(stream_)]
        return stream_.rate, np.concatenate(frames)


async def stream_post(server: Any, key: str, body: dict[str, Any], path: str = "/api/core/local/tts/stream") -> Any:
    """(response, chunks as they arrived)."""
    async with httpx.AsyncClient(base_url=server.http, timeout=60) as client:
        async with client.stream("POST", path, json=body, headers={"x-api-key": key}) as r:
            chunks = [c async for c in r.aiter_raw()]
            return r, chunks


@pytest.mark.parametrize(
    ("fmt", "content_type", "rate"),
    [
        ("mp3_44100_128", "audio/mpeg", 44100),
        ("wav_16000", "audio/wav", 16000),
        ("opus_48000_64", "audio/ogg", 48000),
        ("ulaw_8000", "audio/wav", 8000),
    ],
)
async def test_stream_is_one_playable_file_sent_in_chunks(server: Any, fmt: str, content_type: str, rate: int) -> None:
    key = await server.create_key()
    r, chunks = await stream_post(server, key, {"text": TEXT, "output_format": fmt})
    assert r.status_code == 200
    assert r.headers["content-type"] == content_type
    assert "content-length" not in r.headers and r.headers.get("transfer-encoding") == "chunked"
    assert len(chunks) >= 3  # three sentences, each sent when it was ready
    got_rate, samples = decode(b"".join(chunks))
    assert got_rate == rate and 3.0 < len(samples) / rate < 9.0


async def test_streamed_speech_is_heard_back_as_the_text(server: Any) -> None:
    key = await server.create_key()
    r, chunks = await stream_post(server, key, {"text": TEXT, "output_format": "pcm_16000"})
    assert r.headers["content-type"].startswith("audio/L16;rate=16000")
    pcm = b"".join(chunks)
    assert len(pcm) % 2 == 0
    silence = b"\x00" * 32000
    messages, code, _ = await stream(server.ws(api_key=key), om1_frames(silence + pcm + silence, 16000))
    assert code == 1000
    # Piper's prosody is sampled, so Whisper tiny.en may mishear a word.
    assert wer(TEXT, " ".join(replies(messages))) <= 2 / 15


async def test_stream_true_in_the_om1_body_streams_too(server: Any) -> None:
    key = await server.create_key()
    r, chunks = await stream_post(
        server, key, {"text": TEXT, "output_format": "mp3_44100_128", "stream": True}, "/api/core/local/tts"
    )
    assert r.status_code == 200 and r.headers["content-type"] == "audio/mpeg" and len(chunks) >= 3
    r2, _ = await stream_post(server, key, {"text": TEXT, "stream": "yes"}, "/api/core/local/tts")
    assert r2.status_code == 400


async def test_a_completed_stream_bills_exactly_what_the_plain_request_bills(server: Any) -> None:
    key = await server.create_key()
    r, _ = await stream_post(server, key, {"text": TEXT}, "/api/core/elevenlabs/tts/stream")
    assert r.status_code == 200
    async with httpx.AsyncClient(base_url=server.http, timeout=60) as client:
        plain = await client.post("/api/core/elevenlabs/tts", json={"text": TEXT}, headers={"x-api-key": key})
    streamed, whole = sorted(await server.usage(), key=lambda u: u.idempotency_key.startswith("tts:"))
    assert streamed.idempotency_key.startswith("tts-stream:")
    assert streamed.characters == whole.characters == len(TEXT)
    assert streamed.cost_uomcu == whole.cost_uomcu == int(plain.headers["x-usage-cost-uomcu"]) > 0
    assert int(r.headers["x-usage-cost-uomcu"]) == streamed.cost_uomcu


async def test_a_client_that_leaves_early_pays_only_for_the_sentences_dispatched(server: Any) -> None:
    key = await server.create_key()
    before = await balance(server)
    async with httpx.AsyncClient(base_url=server.http, timeout=60) as client:
        body = {"text": LONG, "output_format": "pcm_48000"}
        async with client.stream("POST", "/api/core/elevenlabs/tts/stream", json=body, headers={"x-api-key": key}) as r:
            first = await anext(r.aiter_raw())
            assert r.status_code == 200 and len(first) > 0
    # The server notices the disconnect, stops, and settles.
    for _ in range(200):
        records = await server.usage()
        if records:
            break
        await asyncio.sleep(0.05)
    (record,) = records
    assert 0 < record.characters < len(LONG)
    assert LONG[: record.characters].endswith(". ")  # whole sentences only
    assert before - await balance(server) == record.cost_uomcu  # nothing else held


async def test_not_enough_credit_is_a_402_before_any_audio(server: Any) -> None:
    key = await server.create_key(balance_uomcu=100)  # elevenlabs route: 30,000 OMCU per 1M chars
    r, chunks = await stream_post(server, key, {"text": TEXT}, "/api/core/elevenlabs/tts/stream")
    assert r.status_code == 402 and b"insufficient balance" in b"".join(chunks)
    assert await server.usage() == []


async def test_bad_requests_are_clear_errors(server: Any) -> None:
    key = await server.create_key()
    for body, status, needle in [
        ({}, 400, b"missing 'text'"),
        ({"text": TEXT, "output_format": "mp3_1"}, 400, b"unsupported output_format"),
        ({"text": ""}, 400, b"empty"),
    ]:
        r, chunks = await stream_post(server, key, body)
        assert r.status_code == status and needle in b"".join(chunks), (body, r.status_code, b"".join(chunks))
    r, _ = await stream_post(server, "sk_bad_key", {"text": TEXT})
    assert r.status_code == 401
    r, _ = await stream_post(server, key, {"text": TEXT}, "/api/core/nope/tts/stream")
    assert r.status_code == 404


# --- through a loopback ElevenLabs -------------------------------------------------


@pytest.fixture(scope="module")
def eleven_server() -> Iterator[FakeElevenLabs]:
    fake = FakeElevenLabs(max_chars=1000)
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def eleven(eleven_server: FakeElevenLabs) -> FakeElevenLabs:
    eleven_server.reset()
    return eleven_server


def cloud(make_server: Any, eleven: FakeElevenLabs) -> Any:
    return make_server(
        {"elevenlabs.url": eleven.url, "elevenlabs.api_key": GATEWAY_KEY, "elevenlabs.first_result_timeout_s": 2.0}
    )


async def test_elevenlabs_mp3_passes_through_sentence_by_sentence(make_server: Any, eleven: FakeElevenLabs) -> None:
    server = cloud(make_server, eleven)
    key = await server.create_key()
    r, chunks = await stream_post(
        server, key, {"text": TEXT, "output_format": "mp3_44100_128"}, "/api/core/elevenlabs/tts/stream"
    )
    assert r.status_code == 200
    assert [c.json["text"] for c in eleven.requests] == [
        "Turn left at the next door. ",
        "Then stop. ",
        TEXT.split("stop. ")[1],
    ]
    assert all(c.query.get("output_format") == "mp3_44100_128" for c in eleven.requests)
    rate, samples = decode(b"".join(chunks))
    assert rate == 44100 and len(samples) > 0
    (record,) = await server.usage()
    assert (record.engine, record.characters) == ("elevenlabs", len(TEXT))


async def test_elevenlabs_is_asked_for_pcm_when_the_format_does_not_concatenate(
    make_server: Any, eleven: FakeElevenLabs
) -> None:
    server = cloud(make_server, eleven)
    key = await server.create_key()
    r, chunks = await stream_post(
        server, key, {"text": TEXT, "output_format": "wav_22050"}, "/api/core/elevenlabs/tts/stream"
    )
    assert r.status_code == 200
    assert {c.query.get("output_format") for c in eleven.requests} == {"pcm_22050"}
    rate, _ = decode(b"".join(chunks))
    assert rate == 22050


async def test_elevenlabs_down_before_the_first_audio_falls_over_to_local(
    make_server: Any, eleven: FakeElevenLabs
) -> None:
    server = cloud(make_server, eleven)
    key = await server.create_key()
    eleven.fail_with(503, {"detail": {"status": "service_unavailable", "message": "down"}})
    r, chunks = await stream_post(
        server, key, {"text": TEXT, "output_format": "mp3_44100_128"}, "/api/core/elevenlabs/tts/stream"
    )
    assert r.status_code == 200
    assert decode(b"".join(chunks))[0] == 44100
    (record,) = await server.usage()
    assert record.engine == "local" and record.characters == len(TEXT)


async def test_every_engine_failing_first_is_an_error_status_not_an_empty_200(
    make_server: Any, eleven: FakeElevenLabs
) -> None:
    server = make_server(
        {
            "elevenlabs.url": eleven.url,
            "elevenlabs.api_key": GATEWAY_KEY,
            "routes.tts.elevenlabs": ["elevenlabs"],
        }
    )
    key = await server.create_key()
    eleven.fail_with(503, {"detail": {"status": "service_unavailable", "message": "down"}})
    r, chunks = await stream_post(server, key, {"text": TEXT}, "/api/core/elevenlabs/tts/stream")
    assert r.status_code in (502, 503) and b"error" in b"".join(chunks)
    assert await server.usage() == []
    assert await balance(server) == 1_000_000_000  # the reservation went back
