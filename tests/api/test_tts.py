"""The TTS endpoint against the real server and the real Piper voice."""

from __future__ import annotations

import base64
import io
from typing import Any

import av
import httpx
import pytest

from speech.audio.encode import SUPPORTED_FORMATS
from tests.api.streaming import om1_frames, replies, stream, wer

pytestmark = pytest.mark.slow

TEXT = "Turn left at the next door."


async def post(
    server: Any, body: Any, *, route: str = "elevenlabs", key: str | None = None, **kw: Any
) -> httpx.Response:
    headers = {"x-api-key": key} if key else {}
    async with httpx.AsyncClient(base_url=server.http, timeout=60) as client:
        if isinstance(body, (bytes, str)):
            return await client.post(f"/api/core/{route}/tts", content=body, headers=headers, **kw)
        return await client.post(f"/api/core/{route}/tts", json=body, headers=headers, **kw)


def decode(data: bytes) -> tuple[int, float]:
    """(sample rate, seconds) of a complete audio file, as a player would read it."""
    with av.open(io.BytesIO(data)) as container:
        stream_ = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream_))
        return stream_.rate, samples / stream_.rate


@pytest.mark.parametrize(
    ("route", "content_type", "rate"),
    [("elevenlabs", "audio/mpeg", 44100), ("riva", "audio/wav", 22050), ("local", "audio/wav", 22050)],
)
async def test_default_format_per_route_is_a_playable_file(
    server: Any, route: str, content_type: str, rate: int
) -> None:
    key = await server.create_key()
    r = await post(server, {"text": TEXT}, route=route, key=key)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["content_type"] == content_type
    got_rate, seconds = decode(base64.b64decode(body["response"]))
    assert got_rate == rate and 1.0 < seconds < 4.0


@pytest.mark.parametrize("fmt", [f for f in SUPPORTED_FORMATS if not f.startswith("pcm_")])
async def test_every_container_format_decodes_at_its_rate(server: Any, fmt: str) -> None:
    key = await server.create_key()
    r = await post(server, {"text": TEXT, "output_format": fmt}, key=key)
    assert r.status_code == 200, r.text
    rate, seconds = decode(base64.b64decode(r.json()["response"]))
    assert rate == int(fmt.split("_")[1]) and 1.0 < seconds < 4.0


async def test_pcm_format_is_raw_samples_at_the_named_rate(server: Any) -> None:
    key = await server.create_key()
    r = await post(server, {"text": TEXT, "output_format": "pcm_16000"}, key=key)
    data = base64.b64decode(r.json()["response"])
    assert r.json()["content_type"].startswith("audio/L16")
    assert len(data) % 2 == 0 and 1.0 < len(data) / 32000 < 4.0


async def test_output_format_in_the_query_string_as_elevenlabs_takes_it(server: Any) -> None:
    key = await server.create_key()
    r = await post(server, {"text": TEXT}, key=key, params={"output_format": "wav_16000"})
    assert r.json()["content_type"] == "audio/wav"
    assert decode(base64.b64decode(r.json()["response"]))[0] == 16000


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({}, 400, "missing 'text'"),
        ({"text": ""}, 400, "'text' is empty"),
        ({"text": "   \n"}, 400, "'text' is empty"),
        ({"text": 42}, 400, "'text' must be a string"),
        ({"text": "x" * 5001}, 400, "'text' is 5001 characters; the limit is 5000"),
        ({"text": "hi", "output_format": "mp3_1_2"}, 400, "unsupported output_format 'mp3_1_2'"),
        ({"text": "hi", "output_format": 7}, 400, "unsupported output_format"),
        ({"text": "hi", "voice_id": 5}, 400, "'voice_id' must be a string"),
        ("{not json", 400, "Invalid JSON"),
        ("[1, 2]", 400, "must be a JSON object"),
        ("", 400, "request body is empty"),
    ],
)
async def test_bad_bodies_get_clear_errors(server: Any, body: Any, status: int, message: str) -> None:
    key = await server.create_key()
    r = await post(server, body, key=key)
    assert r.status_code == status
    assert set(r.json()) == {"error"} and message in r.json()["error"]
    ledger = await server.ledger()
    assert await ledger.usage() == []
    await ledger.close()


async def test_keys_and_balance(server: Any) -> None:
    good = await server.create_key()
    broke = await server.create_key("broke", balance_uomcu=0)
    revoked = await server.create_key("gone")
    ledger = await server.ledger()
    await ledger.revoke(revoked.split("_")[1])
    await ledger.close()
    cases = [
        (None, 401, "missing API key"),
        ("sk_nope", 401, "invalid API key"),
        (good[:-3] + "xyz", 401, "invalid API key"),
        (revoked, 401, "API key revoked"),
        (broke, 402, "insufficient balance"),
    ]
    for key, status, message in cases:
        r = await post(server, {"text": TEXT}, key=key)
        assert (r.status_code, r.json()) == (status, {"error": message + r.json()["error"][len(message) :]})
        assert r.json()["error"].startswith(message)
    async with httpx.AsyncClient(base_url=server.http) as client:
        r = await client.post("/api/core/riva/tts", json={"text": TEXT}, headers={"authorization": f"Bearer {good}"})
        assert r.status_code == 200
        r = await client.post(f"/api/core/riva/tts?api_key={good}", json={"text": TEXT})
        assert r.status_code == 200


async def test_unknown_provider_and_method(server: Any) -> None:
    key = await server.create_key()
    r = await post(server, {"text": TEXT}, route="acme", key=key)
    assert (r.status_code, r.json()) == (404, {"error": "unsupported TTS provider: acme"})
    async with httpx.AsyncClient(base_url=server.http) as client:
        r = await client.get("/api/core/elevenlabs/tts")
        assert r.status_code == 405 and "error" in r.json()
        r = await client.get("/nope")
        assert r.status_code == 404 and r.json() == {"error": "not found: /nope"}


async def test_each_request_records_its_characters_once(server: Any) -> None:
    key = await server.create_key(balance_uomcu=10_000_000)
    for route in ("elevenlabs", "riva", "local"):
        r = await post(server, {"text": TEXT}, route=route, key=key)
        assert r.status_code == 200
    ledger = await server.ledger()
    records = {r.provider: r for r in await ledger.usage()}
    balance = await ledger.balance(records["riva"].account_id)
    await ledger.close()
    assert set(records) == {"elevenlabs", "riva", "local"}
    n = len(TEXT)
    assert [records[p].characters for p in ("elevenlabs", "riva", "local")] == [n, n, n]
    assert records["elevenlabs"].cost_uomcu == 30_000 * n  # 30,000 OMCU per 1M characters
    assert records["riva"].cost_uomcu == 10_000 * n
    assert records["local"].cost_uomcu == 0
    assert all(r.engine == "local" and r.unit == "character" for r in records.values())
    assert balance == 10_000_000 - 40_000 * n


async def test_tts_then_asr_round_trip_returns_the_words(server: Any) -> None:
    key = await server.create_key()
    text = "Please bring the blue box to the loading dock before noon."
    r = await post(server, {"text": text, "output_format": "wav_16000"}, key=key)
    wav = base64.b64decode(r.json()["response"])
    with av.open(io.BytesIO(wav)) as c:
        pcm = b"".join(bytes(f.to_ndarray().tobytes()) for f in c.decode(c.streams.audio[0]))
    silence = b"\x00" * 32000
    messages, code, _ = await stream(server.ws(api_key=key), om1_frames(silence + pcm + silence, 16000))
    assert code == 1000
    # Piper samples its prosody (noise scale), so the audio differs a little on
    # every run; Whisper tiny.en may then mishear one word in eleven.
    assert wer(text, " ".join(replies(messages))) <= 1 / 11
