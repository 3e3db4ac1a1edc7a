"""``GET /metrics`` after real traffic: the real server on port 0, the real
local engines, the real ledger; the exposition parsed by prometheus_client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets

from tests.api.streaming import om1_frames, replies, stream
from tests.conftest import SAMPLES, read_wav
from tests.metrics_support import scrape
from tests.providers.riva.fake_riva import free_port

pytestmark = pytest.mark.slow

PRICED = {"prices.asr_per_minute.local": 50, "prices.tts_per_million_chars.local": 30000}
PLAIN = "Turn left at the door."
STREAMED = "Go to the kitchen. Then wait for me there."


async def test_metrics_after_asr_and_tts_traffic(make_server: Any) -> None:
    server = make_server(PRICED)
    key = await server.create_key()
    ledger = await server.ledger()
    try:
        who = await ledger.authenticate(key)
    finally:
        await ledger.close()
    pcm, rate = read_wav(SAMPLES / "two_commands.wav")
    messages, code, _ = await stream(server.ws("/api/core/local/asr", api_key=key), om1_frames(pcm, rate))
    assert code == 1000 and len(replies(messages)) == 2, messages
    headers = {"x-api-key": key}
    async with httpx.AsyncClient(base_url=server.http, timeout=60) as client:
        r = await client.post("/api/core/local/tts", json={"text": PLAIN}, headers=headers)
        assert r.status_code == 200, r.text
        r = await client.post("/api/core/local/tts/stream", json={"text": STREAMED}, headers=headers)
        assert r.status_code == 200 and r.content

    m = await scrape(server.http)
    ledger = await server.ledger()
    try:
        records = await ledger.usage()
    finally:
        await ledger.close()
    asr = [u for u in records if u.kind == "asr"]
    tts = [u for u in records if u.kind == "tts"]
    assert len(asr) == 2 and len(tts) == 2

    # Audio in: the whole sample, silence included; forwarded: what went upstream (= billed here).
    received = m.value("speech_asr_audio_received_seconds_total", route="local")
    assert received == pytest.approx(len(pcm) / 2 / rate, abs=0.002)
    forwarded = m.value("speech_asr_audio_forwarded_seconds_total", route="local")
    billed = sum(u.audio_ms or 0 for u in asr) / 1000
    assert 0 < forwarded < received
    assert forwarded == pytest.approx(billed, abs=0.001)
    assert m.value("speech_asr_billed_seconds_total", route="local", engine="local") == pytest.approx(billed)
    # One stream closed: one observation of its VAD speech ratio.
    assert m.value("speech_asr_vad_speech_ratio_count", route="local") == 1
    assert m.value("speech_asr_vad_speech_ratio_sum", route="local") == pytest.approx(forwarded / received, abs=0.001)

    # TTS: characters of both requests; one first-audio time per synthesis (1 + 2 sentences).
    assert m.value("speech_tts_characters_total", route="local", engine="local") == len(PLAIN) + len(STREAMED)
    assert m.value("speech_upstream_latency_seconds_count", kind="tts", engine="local") == 3
    # ASR: one end-of-audio -> final time per utterance.
    assert m.value("speech_upstream_latency_seconds_count", kind="asr", engine="local") == 2
    assert 0 < m.value("speech_upstream_latency_seconds_sum", kind="asr", engine="local") < 30

    # Cost: exactly the ledger's.
    assert m.value("speech_usage_cost_uomcu_total", kind="asr", route="local") == sum(u.cost_uomcu for u in asr) > 0
    assert m.value("speech_usage_cost_uomcu_total", kind="tts", route="local") == sum(u.cost_uomcu for u in tts) > 0
    assert m.value("speech_usage_cost_uomcu_total") == sum(u.cost_uomcu for u in records)

    # Streams opened and closed again: the series exist and read 0.
    assert m.select("speech_streams_active", kind="asr", route="local", engine="local")
    assert m.select("speech_streams_active", kind="tts_http", route="local", engine="local")
    assert all(s.value == 0 for s in m.select("speech_streams_active"))
    assert m.value("speech_upstream_errors_total") == 0
    assert m.value("process_resident_memory_bytes") > 0

    # No secret and no identity anywhere in the exposition.
    for secret in (key, who.key_id, who.account_id, key.split("_")[-1]):
        assert secret not in m.text
    # Labels come only from the configured vocabularies.
    allowed = {
        "route": {"local", "riva", "google", "elevenlabs"},
        "engine": {"local"},
        "kind": {"asr", "tts", "tts_http", "tts_ws", "llm"},
    }
    for sample in m.samples:
        for name, value in sample.labels.items():
            if name in allowed:
                assert value in allowed[name], sample


async def test_active_streams_count_open_streams(make_server: Any) -> None:
    server = make_server()
    key = await server.create_key()
    async with websockets.connect(server.ws("/api/core/local/asr", api_key=key)) as ws:
        await ws.send(om1_frames(b"\x00\x00" * 3200, 16000)[0])
        async with websockets.connect(server.ws("/api/core/local/tts/stream-input", api_key=key)) as tts:
            await tts.send(json.dumps({"text": " "}))
            for _ in range(100):  # both servers' handlers are past authentication soon after the connects
                m = await scrape(server.http)
                if m.value("speech_streams_active") == 2:
                    break
                await asyncio.sleep(0.05)
            assert m.value("speech_streams_active", kind="asr", route="local", engine="local") == 1
            assert m.value("speech_streams_active", kind="tts_ws", route="local", engine="local") == 1
            await tts.send(json.dumps({"text": ""}))
            async for _ in tts:
                pass
        await ws.send(json.dumps({"type": "CloseStream"}))
        async for _ in ws:
            pass
    m = await scrape(server.http)
    assert m.value("speech_streams_active") == 0
    assert m.value("speech_asr_audio_received_seconds_total", route="local") == pytest.approx(0.2)
    assert m.value("speech_asr_vad_speech_ratio_count") == 0  # under a second: not observed


async def test_upstream_errors_by_engine_when_riva_is_unreachable(make_server: Any) -> None:
    url = f"127.0.0.1:{free_port()}"
    server = make_server({"riva.url": url, "riva.connect_timeout_s": 2.0, "riva.first_result_timeout_s": 3.0})
    key = await server.create_key()
    pcm, rate = read_wav(SAMPLES / "hello_robot.wav")
    messages, code, _ = await stream(server.ws("/api/core/riva/asr", api_key=key), om1_frames(pcm, rate))
    assert code == 1000 and replies(messages), messages
    async with httpx.AsyncClient(base_url=server.http, timeout=60) as client:
        r = await client.post("/api/core/riva/tts", json={"text": "Turn left."}, headers={"x-api-key": key})
    assert r.status_code == 200 and r.headers["x-engine"] == "local"

    m = await scrape(server.http)
    assert m.value("speech_upstream_errors_total", kind="asr", engine="riva", error="unavailable") == 1
    assert m.value("speech_upstream_errors_total", kind="tts", engine="riva", error="unavailable") == 1
    assert m.value("speech_upstream_errors_total") == 2
    # Latency is the engine that answered; the stream is labelled with its chain's first engine.
    assert m.value("speech_upstream_latency_seconds_count", kind="asr", engine="local") == 1
    assert m.value("speech_upstream_latency_seconds_count", engine="riva") == 0
    assert m.select("speech_streams_active", kind="asr", route="riva", engine="riva")
    assert m.value("speech_asr_billed_seconds_total", route="riva", engine="local") > 0
    assert m.value("speech_tts_characters_total", route="riva", engine="local") == len("Turn left.")
    assert url not in m.text and "Failed to connect" not in m.text
