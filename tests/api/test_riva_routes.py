"""OM1-shaped traffic through the gateway to a loopback Riva server, with
failover to the local engines when Riva fails."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import av
import grpc
import httpx
import pytest

from speech.audio.encode import SUPPORTED_FORMATS
from tests.api.streaming import errors, om1_frames, replies, stream, wer
from tests.conftest import SAMPLES, read_wav
from tests.providers.riva.fake_riva import FakeRiva, fake_riva_in_thread, final_text, free_port

pytestmark = pytest.mark.slow

MANIFEST = {m["file"]: m for m in json.loads((SAMPLES / "manifest.json").read_text())}
FAST = {"riva.connect_timeout_s": 2.0, "riva.first_result_timeout_s": 3.0}


@pytest.fixture
def riva() -> Iterator[FakeRiva]:
    with fake_riva_in_thread() as fake:
        yield fake


def riva_server(make_server: Any, url: str, **extra: Any) -> Any:
    return make_server({"riva.url": url, **FAST, **extra})


async def test_riva_route_reaches_riva_and_returns_its_transcripts(make_server: Any, riva: FakeRiva) -> None:
    server = riva_server(make_server, riva.url)
    key = await server.create_key()
    pcm, rate = read_wav(SAMPLES / "two_commands.wav")
    messages, code, _ = await stream(server.ws("/api/core/riva/asr", api_key=key), om1_frames(pcm, rate))
    assert code == 1000
    calls = riva.received.asr
    assert len(calls) == 2  # one upstream stream per utterance
    # The fake lists calls in the order its handlers started, which can differ
    # from the utterance order when two streams open close together.
    assert sorted(replies(messages)) == sorted(final_text(bytes(c.audio)) for c in calls)
    config = calls[0].config.config
    assert (config.sample_rate_hertz, config.language_code) == (16000, "en-US")
    assert config.enable_automatic_punctuation and config.enable_word_time_offsets
    ledger = await server.ledger()
    records = sorted(await ledger.usage(), key=lambda r: r.id)
    await ledger.close()
    assert [r.engine for r in records] == ["riva", "riva"]
    assert sorted(r.audio_ms for r in records) == sorted(len(c.audio) // 32 for c in calls)  # billed = forwarded
    assert all(r.cost_uomcu == -(-r.audio_ms * 25_000_000 // 60_000) for r in records)  # 25 OMCU/min


async def test_root_path_is_the_riva_route(make_server: Any, riva: FakeRiva) -> None:
    server = riva_server(make_server, riva.url)
    key = await server.create_key()
    pcm, rate = read_wav(SAMPLES / "hello_robot.wav")
    messages, _, _ = await stream(server.ws("/", api_key=key), om1_frames(pcm, rate))
    assert replies(messages) == [final_text(bytes(riva.received.asr[0].audio))]


async def test_riva_dying_mid_utterance_still_yields_the_final_from_the_local_engine(
    make_server: Any, riva: FakeRiva
) -> None:
    server = riva_server(make_server, riva.url)
    key = await server.create_key()
    riva.faults.status = grpc.StatusCode.UNAVAILABLE
    riva.faults.after = 3  # the stream drops after three audio messages
    pcm, rate = read_wav(SAMPLES / "hello_robot.wav")
    messages, code, _ = await stream(server.ws("/api/core/riva/asr", api_key=key), om1_frames(pcm, rate), realtime=True)
    assert code == 1000 and errors(messages) == []
    assert wer(MANIFEST["hello_robot.wav"]["transcript"], " ".join(replies(messages))) <= 0.2
    ledger = await server.ledger()
    records = await ledger.usage()
    await ledger.close()
    assert [r.engine for r in records] == ["local"]  # billed once, to the engine that answered
    async with httpx.AsyncClient(base_url=server.http) as client:
        health = (await client.get("/healthz")).json()
    assert health["failover"]["asr:riva"]["state"] == "cooling_down"
    assert health["failover"]["asr:riva"]["last_error"] == "Failed to connect to riva server"


async def test_unreachable_riva_without_fallback_reports_the_seeds_error(make_server: Any) -> None:
    url = f"127.0.0.1:{free_port()}"
    server = riva_server(make_server, url, **{"routes.asr.riva": ["riva"], "routes.tts.riva": ["riva"]})
    key = await server.create_key()
    pcm, rate = read_wav(SAMPLES / "hello_robot.wav")
    messages, code, _ = await stream(server.ws("/api/core/riva/asr", api_key=key), om1_frames(pcm, rate))
    assert errors(messages) == ["Failed to connect to riva server"] and code == 1000
    async with httpx.AsyncClient(base_url=server.http, timeout=30) as client:
        r = await client.post("/api/core/riva/tts", json={"text": "hello"}, headers={"x-api-key": key})
    assert (r.status_code, r.json()) == (503, {"error": "Failed to connect to riva server"})
    ledger = await server.ledger()
    assert await ledger.usage() == []  # nothing answered, nothing billed
    await ledger.close()


async def test_riva_rejecting_credentials_is_permanent_and_not_failed_over(make_server: Any, riva: FakeRiva) -> None:
    riva.faults.token = "right-token"
    server = riva_server(make_server, riva.url, **{"riva.api_key": "wrong-token"})
    key = await server.create_key()
    async with httpx.AsyncClient(base_url=server.http, timeout=30) as client:
        r = await client.post("/api/core/riva/tts", json={"text": "hello"}, headers={"x-api-key": key})
    assert (r.status_code, r.json()) == (503, {"error": "riva rejected the gateway's credentials"})
    assert "wrong-token" not in r.text


@pytest.mark.parametrize("fmt", SUPPORTED_FORMATS)
async def test_riva_tts_returns_playable_audio_in_every_format(make_server: Any, riva: FakeRiva, fmt: str) -> None:
    server = riva_server(make_server, riva.url)
    key = await server.create_key()
    text = "Riva speaks."
    async with httpx.AsyncClient(base_url=server.http, timeout=30) as client:
        r = await client.post(
            "/api/core/riva/tts", json={"text": text, "output_format": fmt}, headers={"x-api-key": key}
        )
    assert r.status_code == 200 and r.headers["x-engine"] == "riva"
    data = base64.b64decode(r.json()["response"])
    rate = int(fmt.split("_")[1])
    expected_s = len(text) * 0.05  # the fake speaks 50 ms per character
    if fmt.startswith("pcm_"):
        assert abs(len(data) / 2 / rate - expected_s) < 0.01
        return
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.audio[0]
        seconds = sum(f.samples for f in c.decode(s)) / s.rate
    assert s.rate == rate and abs(seconds - expected_s) < 0.08


async def test_riva_tts_falls_over_to_local_when_riva_fails(make_server: Any, riva: FakeRiva) -> None:
    server = riva_server(make_server, riva.url)
    key = await server.create_key()
    riva.faults.status = grpc.StatusCode.INTERNAL
    async with httpx.AsyncClient(base_url=server.http, timeout=60) as client:
        r = await client.post("/api/core/riva/tts", json={"text": "Turn left."}, headers={"x-api-key": key})
    assert r.status_code == 200 and r.headers["x-engine"] == "local"
    ledger = await server.ledger()
    (record,) = await ledger.usage()
    await ledger.close()
    assert (record.engine, record.provider, record.characters) == ("local", "riva", 10)
    assert record.cost_uomcu == 10 * 10_000  # priced by route: riva TTS


async def test_om1_riva_transcripts_survive_a_riva_that_returns_garbage(make_server: Any, riva: FakeRiva) -> None:
    server = riva_server(make_server, riva.url)
    key = await server.create_key()
    riva.faults.garbage = True
    pcm, rate = read_wav(SAMPLES / "pick_up_cup.wav")
    messages, _, _ = await stream(server.ws("/api/core/riva/asr", api_key=key), om1_frames(pcm, rate))
    assert wer(MANIFEST["pick_up_cup.wav"]["transcript"], " ".join(replies(messages))) <= 0.2
