"""Account endpoints, health, and keys kept out of logs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.api.streaming import om1_frames, stream
from tests.conftest import SAMPLES, read_wav


async def get(server: Any, path: str, key: str | None = None, **params: Any) -> httpx.Response:
    headers = {"x-api-key": key} if key else {}
    async with httpx.AsyncClient(base_url=server.http, timeout=30) as client:
        return await client.get(path, headers=headers, params=params)


async def test_balance(server: Any) -> None:
    key = await server.create_key("robot-7", balance_uomcu=12_500_000)
    r = await get(server, "/api/core/account/balance", key)
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == "robot-7" and body["balance_uomcu"] == 12_500_000
    assert body["balance"] == 12.5 and body["balance_omcu"] == "12.5"
    assert key not in r.text
    r = await get(server, "/api/core/account/balance")
    assert (r.status_code, r.json()) == (401, {"error": "missing API key"})


@pytest.mark.slow
async def test_usage_lists_records_with_the_documented_fields(server: Any) -> None:
    key = await server.create_key()
    pcm, rate = read_wav(SAMPLES / "hello_robot.wav")
    await stream(server.ws("/api/core/google/asr", api_key=key), om1_frames(pcm, rate))
    async with httpx.AsyncClient(base_url=server.http, timeout=60) as client:
        r = await client.post("/api/core/elevenlabs/tts", json={"text": "Hello."}, headers={"x-api-key": key})
        assert r.status_code == 200
    r = await get(server, "/api/core/account/usage", key)
    assert r.status_code == 200
    usage = r.json()["usage"]
    assert [u["kind"] for u in usage] == ["tts", "asr"]
    tts, asr = usage
    for record in usage:
        assert {"kind", "provider", "engine", "quantity", "unit", "cost", "created"} <= set(record)
    assert (tts["provider"], tts["engine"], tts["quantity"], tts["unit"]) == ("elevenlabs", "local", 6, "character")
    assert tts["cost_uomcu"] == 180_000 and tts["cost"] == 0.18
    assert (asr["provider"], asr["engine"], asr["unit"]) == ("google", "local", "second")
    assert 2.0 < asr["quantity"] < 4.32 and asr["received_seconds"] >= asr["quantity"]
    r = await get(server, "/api/core/account/usage", key, limit=1)
    assert len(r.json()["usage"]) == 1
    other = await server.create_key("other")
    r = await get(server, "/api/core/account/usage", other)
    assert r.json()["usage"] == []


async def test_usage_query_validation(server: Any) -> None:
    key = await server.create_key()
    for params, message in [
        ({"limit": "x"}, "'limit'"),
        ({"limit": 0}, "'limit'"),
        ({"since": "yesterday"}, "'since'"),
    ]:
        r = await get(server, "/api/core/account/usage", key, **params)
        assert r.status_code == 400 and message in r.json()["error"]


async def test_healthz_is_200_only_when_engines_are_ready(server: Any, make_server: Any, tmp_path: Path) -> None:
    r = await get(server, "/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert r.json()["asr"]["google"] == ["local"]
    empty = tmp_path / "no-model"
    empty.mkdir()
    broken = make_server({"local.whisper_model_dir": str(empty)}, with_engines=False)
    for _ in range(200):
        r = await get(broken, "/healthz")
        if r.json()["status"] != "loading":
            break
    assert r.status_code == 503 and r.json()["status"] == "failed"
    assert "no CTranslate2 Whisper model" in r.json()["error"]
    key = await broken.create_key()
    messages, code, _ = await stream(broken.ws(api_key=key), [], close_stream=False)
    assert code == 1013 and "engine not ready" in messages[0]["error"]
    async with httpx.AsyncClient(base_url=broken.http) as client:
        r = await client.post("/api/core/local/tts", json={"text": "hi"}, headers={"x-api-key": key})
        assert r.status_code == 503 and "engine not ready" in r.json()["error"]


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


async def test_keys_never_reach_the_logs(server: Any) -> None:
    capture = Capture()
    names = ("uvicorn.access", "uvicorn.error", "speech", "")
    for name in names:
        logging.getLogger(name).addHandler(capture)
    try:
        key = await server.create_key()
        await get(server, f"/api/core/account/balance?api_key={key}")
        await get(server, "/api/core/account/balance", key)
        await stream(server.ws(api_key=key), [], close_stream=True)
        async with websockets.connect(server.ws(api_key=key + "x")) as ws:
            await ws.recv()
    finally:
        for name in names:
            logging.getLogger(name).removeHandler(capture)
    text = "\n".join(capture.lines)
    assert "api_key=[REDACTED]" in text  # the access log line is there, redacted
    assert key not in text and key.split("_", 2)[2] not in text
