"""The websocket stream-input TTS endpoint, against the real server and the real Piper voice."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from typing import Any

import av
import numpy as np
import pytest
import websockets

from speech.metering.keys import parse_key
from tests.api.streaming import om1_frames, replies, stream, wer

pytestmark = pytest.mark.slow

PATH = "/api/core/local/tts/stream-input"


async def collect(ws: Any, until_final: bool = True, within_s: float = 60) -> list[Any]:
    """Messages (JSON as dicts, binary as bytes) until isFinal or the close."""
    out: list[Any] = []
    try:
        async with asyncio.timeout(within_s):
            async for raw in ws:
                msg = raw if isinstance(raw, bytes) else json.loads(raw)
                out.append(msg)
                if until_final and isinstance(msg, dict) and msg.get("isFinal"):
                    break
    except websockets.ConnectionClosed:
        pass
    return out


def audio_of(messages: list[Any]) -> bytes:
    return b"".join(
        m if isinstance(m, bytes) else base64.b64decode(m["audio"])
        for m in messages
        if isinstance(m, bytes) or "audio" in m
    )


def decode(data: bytes) -> tuple[int, np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        s = container.streams.audio[0]
        return s.rate, np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(s)])


async def test_token_pieces_in_audio_out_sentence_by_sentence(server: Any) -> None:
    key = await server.create_key()
    text = "Hello there, robot. Please stop at the door. Thank you!"
    async with websockets.connect(server.ws(PATH, api_key=key, output_format="mp3_44100_128"), max_size=None) as ws:
        await ws.send(json.dumps({"text": " "}))  # ElevenLabs clients open with a space: a keepalive
        for i in range(0, len(text), 4):  # an LLM's tokens
            await ws.send(json.dumps({"text": text[i : i + 4]}))
        await ws.send(json.dumps({"text": ""}))
        messages = await collect(ws)
        await asyncio.wait_for(ws.wait_closed(), 10)
        assert ws.close_code == 1000
    ends = [m for m in messages if "segment_end" in m]
    assert [e["segment_end"] for e in ends] == [0, 1, 2]
    assert [e["characters"] for e in ends] == [len("Hello there, robot. "), len("Please stop at the door. "), 10]
    assert all(e["engine"] == "local" for e in ends)
    final = messages[-1]
    assert final["isFinal"] is True and final["characters"] == len(text) and final["segments"] == 3
    # Audio of each sentence arrives before that sentence's end marker.
    first_end = messages.index(ends[0])
    assert any("audio" in m and m["segment"] == 0 for m in messages[:first_end])
    rate, samples = decode(audio_of(messages))
    assert rate == 44100 and 2.5 < len(samples) / rate < 9
    records = await server.usage()
    assert sorted(r.characters for r in records) == sorted(e["characters"] for e in ends)
    assert len({r.idempotency_key for r in records}) == 3


async def test_flush_speaks_a_fragment_now_and_the_stream_goes_on(server: Any) -> None:
    key = await server.create_key()
    async with websockets.connect(server.ws(PATH, api_key=key, output_format="pcm_16000"), max_size=None) as ws:
        await ws.send(json.dumps({"text": "Turn left", "flush": True}))
        got: list[Any] = []
        while not any("segment_end" in m for m in got):  # its audio comes without more text
            got.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        assert any("audio" in m for m in got)
        await ws.send(json.dumps({"text": "and then stop. "}))
        await ws.send(json.dumps({"text": ""}))
        rest = await collect(ws)
    assert [m["characters"] for m in got + rest if "segment_end" in m] == [9, 15]
    assert rest[-1]["isFinal"] is True


async def test_binary_frames_carry_pcm_that_is_heard_back_as_the_text(server: Any) -> None:
    key = await server.create_key()
    text = "Please bring the blue box to the loading dock before noon."
    url = server.ws(PATH, api_key=key, output_format="pcm_16000", binary="true")
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"text": text + " "}))
        await ws.send(json.dumps({"text": ""}))
        messages = await collect(ws)
    pcm = b"".join(m for m in messages if isinstance(m, bytes))
    assert not any(isinstance(m, dict) and "audio" in m for m in messages)
    silence = b"\x00" * 32000
    heard, code, _ = await stream(server.ws(api_key=key), om1_frames(silence + pcm + silence, 16000))
    assert code == 1000 and wer(text, " ".join(replies(heard))) <= 2 / 11


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        ("not json", "Invalid JSON"),
        (b"\x00\x01", "binary frames are not accepted"),
        (json.dumps([1, 2]), "JSON object"),
        (json.dumps({"flush": True}), "missing 'text'"),
        (json.dumps({"text": 5}), "'text' must be a string"),
        (json.dumps({"text": "hi", "flush": "yes"}), "'flush' must be true or false"),
        (json.dumps({"text": "hi", "voice_settings": []}), "'voice_settings' must be a JSON object"),
    ],
)
async def test_bad_messages_get_a_clear_error_and_4400(server: Any, frame: Any, needle: str) -> None:
    key = await server.create_key()
    async with websockets.connect(server.ws(PATH, api_key=key)) as ws:
        await ws.send(frame)
        messages = await collect(ws, until_final=False)
    assert ws.close_code == 4400
    assert needle in messages[-1]["error"]
    assert await server.usage() == []


async def test_connection_errors_have_their_close_codes(server: Any) -> None:
    key = await server.create_key()
    cases = [
        (server.ws(PATH, api_key="sk_nope_nope"), 4401),
        (server.ws("/api/core/nope/tts/stream-input", api_key=key), 4404),
        (server.ws(PATH, api_key=key, output_format="mp3_1"), 4400),
    ]
    for url, code in cases:
        async with websockets.connect(url) as ws:
            messages = await collect(ws, until_final=False)
        assert ws.close_code == code and "error" in messages[-1], url


async def test_idle_stream_closes_with_4408(make_server: Any) -> None:
    server = make_server({"tts.stream_idle_timeout_s": 1})
    key = await server.create_key()
    async with websockets.connect(server.ws(PATH, api_key=key)) as ws:
        await ws.send(json.dumps({"text": "Short. "}))
        messages = await collect(ws, until_final=False, within_s=30)
    assert ws.close_code == 4408 and "no text for 1 s" in messages[-1]["error"]
    assert any("segment_end" in m for m in messages)  # what was sent was still spoken and billed
    assert len(await server.usage()) == 1


async def test_credit_running_out_ends_the_stream_with_4402_and_bills_only_what_was_spoken(server: Any) -> None:
    # elevenlabs route: 30,000 OMCU per 1M characters = 30,000 uOMCU per character.
    first = "Stop right there. "
    key = await server.create_key(balance_uomcu=30_000 * len(first) + 1000)
    async with websockets.connect(server.ws("/api/core/elevenlabs/tts/stream-input", api_key=key)) as ws:
        await ws.send(json.dumps({"text": first + "Now go back to your charging station. "}))
        await ws.send(json.dumps({"text": ""}))
        messages = await collect(ws, until_final=False)
    assert ws.close_code == 4402 and "insufficient balance" in messages[-1]["error"]
    (record,) = await server.usage()
    assert record.characters == len(first) and record.cost_uomcu == 30_000 * len(first)


async def test_a_key_limited_to_one_stream_cannot_open_two(server: Any) -> None:
    key = await server.create_key()
    ledger = await server.ledger()
    try:
        await ledger.update_key(parse_key(key), max_streams=1)
    finally:
        await ledger.close()
    async with websockets.connect(server.ws(PATH, api_key=key)) as first:
        await first.send(json.dumps({"text": " "}))
        async with websockets.connect(server.ws(PATH, api_key=key)) as second:
            messages = await collect(second, until_final=False)
        assert second.close_code == 4429 and "concurrent streams" in messages[-1]["error"]


async def test_revoking_the_key_closes_the_stream(server: Any) -> None:
    key = await server.create_key()
    async with websockets.connect(server.ws(PATH, api_key=key)) as ws:
        await ws.send(json.dumps({"text": " "}))
        ledger = await server.ledger()
        try:
            await ledger.revoke(parse_key(key))
        finally:
            await ledger.close()
        messages = await collect(ws, until_final=False, within_s=20)
    assert ws.close_code == 4401 and messages[-1]["error"] == "API key revoked"
