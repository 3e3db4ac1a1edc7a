"""OM1-shaped TTS through the gateway to a loopback ElevenLabs-shaped server."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import av
import httpx
import pytest

from speech.audio.encode import SUPPORTED_FORMATS
from tests.providers.elevenlabs.fake_elevenlabs import CALLER_KEY, GATEWAY_KEY, FakeElevenLabs

pytestmark = pytest.mark.slow

TEXT = "Hello from the cloud."
OM1_BODY = {
    "text": TEXT,
    "voice_id": "JBFqnCBsd6RMkjVDRZzb",
    "model_id": "eleven_flash_v2_5",
    "output_format": "mp3_44100_128",
}


@pytest.fixture(scope="module")
def eleven_server() -> Iterator[FakeElevenLabs]:
    fake = FakeElevenLabs()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def eleven(eleven_server: FakeElevenLabs) -> FakeElevenLabs:
    eleven_server.reset()
    return eleven_server


def gateway(make_server: Any, eleven: FakeElevenLabs, **extra: Any) -> Any:
    return make_server(
        {
            "elevenlabs.url": eleven.url,
            "elevenlabs.api_key": GATEWAY_KEY,
            "elevenlabs.first_result_timeout_s": 5.0,
            **extra,
        }
    )


async def tts(server: Any, key: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.http, timeout=60) as client:
        return await client.post("/api/core/elevenlabs/tts", json=body, headers={"x-api-key": key})


async def test_om1_request_reaches_elevenlabs_with_its_parameters(make_server: Any, eleven: FakeElevenLabs) -> None:
    server = gateway(make_server, eleven)
    key = await server.create_key()
    body = {**OM1_BODY, "voice_settings": {"stability": 0.4, "similarity_boost": 0.8}}
    r = await tts(server, key, body)
    assert r.status_code == 200 and r.json()["content_type"] == "audio/mpeg"
    (sent,) = eleven.requests
    assert sent.voice_id == "JBFqnCBsd6RMkjVDRZzb" and sent.query["output_format"] == "mp3_44100_128"
    assert sent.json["model_id"] == "eleven_flash_v2_5" and sent.json["voice_settings"] == body["voice_settings"]
    assert sent.headers["xi-api-key"] == GATEWAY_KEY
    (record,) = await server.usage()
    assert (record.engine, record.characters, record.upstream_characters) == ("elevenlabs", len(TEXT), len(TEXT))
    assert record.cost_uomcu == 30_000 * len(TEXT)


@pytest.mark.parametrize("fmt", SUPPORTED_FORMATS)
async def test_every_output_format_is_playable(make_server: Any, eleven: FakeElevenLabs, fmt: str) -> None:
    server = gateway(make_server, eleven)
    key = await server.create_key()
    r = await tts(server, key, {**OM1_BODY, "output_format": fmt})
    assert r.status_code == 200, r.text
    data = base64.b64decode(r.json()["response"])
    rate, expected_s = int(fmt.split("_")[1]), len(TEXT) * 0.05
    if fmt.startswith("pcm_"):
        assert abs(len(data) / 2 / rate - expected_s) < 0.01
        return
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.audio[0]
        seconds = sum(f.samples for f in c.decode(s)) / s.rate
    assert s.rate == rate and abs(seconds - expected_s) < 0.08


async def test_callers_own_key_is_used_and_billed_at_the_fee(make_server: Any, eleven: FakeElevenLabs) -> None:
    server = gateway(make_server, eleven, **{"elevenlabs.caller_key_fee_per_million_chars": 1000})
    key = await server.create_key()
    r = await tts(server, key, {**OM1_BODY, "elevenlabs_api_key": CALLER_KEY})
    assert r.status_code == 200
    assert eleven.requests[0].headers["xi-api-key"] == CALLER_KEY
    (record,) = await server.usage()
    assert record.unit_price_uomcu == 1_000_000_000 and record.cost_uomcu == 1000 * len(TEXT)


async def test_callers_bad_key_is_their_401_and_not_failed_over(make_server: Any, eleven: FakeElevenLabs) -> None:
    server = gateway(make_server, eleven)
    key = await server.create_key()
    r = await tts(server, key, {**OM1_BODY, "elevenlabs_api_key": "caller-wrong-key-000000"})
    assert r.status_code == 401 and "elevenlabs_api_key" in r.json()["error"]
    assert "caller-wrong-key" not in r.text
    assert await server.usage() == []


async def test_gateway_key_refused_is_a_503_naming_no_secret(make_server: Any, eleven: FakeElevenLabs) -> None:
    server = gateway(make_server, eleven, **{"elevenlabs.api_key": "gw-wrong-key-0000000000"})
    key = await server.create_key()
    r = await tts(server, key, OM1_BODY)
    assert (r.status_code, r.json()) == (503, {"error": "elevenlabs rejected the gateway's credentials"})


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (429, {"detail": {"status": "too_many_concurrent_requests", "message": "Too many concurrent requests"}}),
        (429, {"detail": {"status": "system_busy", "message": "busy"}}),
        (503, {"detail": {"status": "service_unavailable", "message": "down"}}),
        (401, {"detail": {"status": "quota_exceeded", "message": "quota"}}),
    ],
)
async def test_retryable_upstream_errors_fall_over_to_the_local_voice(
    make_server: Any, eleven: FakeElevenLabs, status: int, body: Any
) -> None:
    server = gateway(make_server, eleven)
    key = await server.create_key()
    eleven.fail_with(status, body)
    r = await tts(server, key, OM1_BODY)
    assert r.status_code == 200 and r.headers["x-engine"] == "local"
    data = base64.b64decode(r.json()["response"])
    with av.open(io.BytesIO(data)) as c:
        assert c.streams.audio[0].rate == 44100  # still the mp3_44100_128 asked for
    (record,) = await server.usage()
    assert (record.engine, record.provider) == ("local", "elevenlabs")


async def test_rejected_text_is_a_clear_400(make_server: Any, eleven: FakeElevenLabs) -> None:
    server = gateway(make_server, eleven)
    key = await server.create_key()
    r = await tts(server, key, {**OM1_BODY, "voice_id": "unknownVoice123"})
    assert r.status_code == 400 and "voice" in r.json()["error"].lower()


async def test_no_elevenlabs_key_and_no_fallback_gives_the_seeds_error(make_server: Any) -> None:
    server = make_server({"routes.tts.elevenlabs": ["elevenlabs"]})
    key = await server.create_key()
    r = await tts(server, key, OM1_BODY)
    assert (r.status_code, r.json()) == (503, {"error": "elevenlabs API key not configured"})
