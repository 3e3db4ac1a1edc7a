"""Telephony and stereo input, Config and Finalize frames, the idle timeout
and the maximum session length, against the real server and local engine."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
import soxr
import websockets

from speech.audio.encode import alaw_encode, ulaw_encode
from speech.errors import CLOSE_IDLE, CLOSE_SESSION_LIMIT
from tests.api.streaming import errors, normalize, om1_frames, replies, stream
from tests.conftest import SAMPLES, read_wav

pytestmark = pytest.mark.slow

TEXT = "hello robot please turn left and walk to the kitchen door"


def hello_8k() -> np.ndarray:
    pcm, rate = read_wav(SAMPLES / "hello_robot.wav")
    x = np.frombuffer(pcm, "<i2")
    return soxr.resample(x, rate, 8000).astype("<i2")


def chunks(data: bytes, size: int) -> list[str | bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
async def test_telephony_audio_declared_in_the_query(server: Any, encoding: str) -> None:
    key = await server.create_key()
    coded = bytes((ulaw_encode if encoding == "mulaw" else alaw_encode)(hello_8k()))
    messages, code, _ = await stream(server.ws(api_key=key, encoding=encoding, rate=8000), chunks(coded, 1600))
    assert code == 1000 and normalize(" ".join(replies(messages))) == TEXT


async def test_stereo_declared_in_a_config_frame(server: Any) -> None:
    key = await server.create_key()
    pcm, rate = read_wav(SAMPLES / "hello_robot.wav")
    mono = np.frombuffer(pcm, "<i2")
    stereo = np.column_stack([mono, mono]).reshape(-1).astype("<i2").tobytes()
    config = json.dumps({"type": "Config", "channels": 2, "rate": rate})
    messages, code, _ = await stream(server.ws(api_key=key), [config, *chunks(stereo, rate * 4 // 5)])
    assert code == 1000 and normalize(" ".join(replies(messages))) == TEXT


async def test_bad_format_options_close_the_stream(server: Any) -> None:
    key = await server.create_key()
    for query in ({"encoding": "opus"}, {"channels": 3}):
        messages, code, _ = await stream(server.ws(api_key=key, **query), [], close_stream=False)
        assert code == 4400 and len(errors(messages)) == 1


async def test_finalize_answers_without_waiting_for_silence(server: Any) -> None:
    key = await server.create_key()
    pcm, rate = read_wav(SAMPLES / "hello_robot.wav")
    speech_end = int(3.8 * rate) * 2  # the words end here; no closing silence is sent
    frames = om1_frames(pcm[:speech_end], rate)
    async with websockets.connect(server.ws(api_key=key)) as ws:
        for frame in frames:
            await ws.send(frame)
        await ws.send(json.dumps({"type": "Finalize"}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert normalize(reply["asr_reply"]) == TEXT
        await ws.send(json.dumps({"type": "KeepAlive"}))  # the stream goes on
        await ws.send(json.dumps({"type": "CloseStream"}))
        with pytest.raises(websockets.ConnectionClosedOK):
            await asyncio.wait_for(ws.recv(), 10)


async def test_idle_stream_is_closed_and_keepalive_keeps_it_open(make_server: Any) -> None:
    server = make_server({"limits.idle_timeout_s": 1.0})
    key = await server.create_key()
    async with websockets.connect(server.ws(api_key=key)) as ws:
        for _ in range(4):  # 2 s of keepalives at 0.5 s: never idle for 1 s
            await ws.send(json.dumps({"type": "KeepAlive"}))
            await asyncio.sleep(0.5)
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))  # then silence from the client
        assert message == {"error": "no audio or KeepAlive for 1 s"}
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == CLOSE_IDLE


async def test_session_length_is_capped(make_server: Any) -> None:
    server = make_server({"limits.max_session_s": 10, "limits.idle_timeout_s": 60})
    key = await server.create_key()
    async with websockets.connect(server.ws(api_key=key)) as ws:

        async def keep() -> None:
            while True:
                await ws.send(json.dumps({"type": "KeepAlive"}))
                await asyncio.sleep(1)

        keeper = asyncio.create_task(keep())
        try:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
        finally:
            keeper.cancel()
        assert message == {"error": "session reached its maximum of 10 s"}
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == CLOSE_SESSION_LIMIT


class GatedRecognizer:
    """The real local recognizer behind a gate: decodes wait until released,
    and the number of utterances in recognition at once is recorded."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.description = inner.description
        self.gate = asyncio.Event()
        self.active = 0
        self.peak = 0
        self.started = 0

    async def recognize(self, audio: Any, config: Any) -> Any:
        self.active += 1
        self.started += 1
        self.peak = max(self.peak, self.active)
        try:
            chunks = [c async for c in audio]
            await self.gate.wait()

            async def again() -> Any:
                for c in chunks:
                    yield c

            async for t in self.inner.recognize(again(), config):
                yield t
        finally:
            self.active -= 1


async def test_a_client_faster_than_real_time_gets_backpressure(make_server: Any, engines: Any) -> None:
    from speech.providers.registry import Engines

    gated = GatedRecognizer(engines.asr["local"])
    server = make_server(
        {"limits.max_pending_utterances": 2},
        with_engines=Engines(engines.settings, asr={"local": gated}, tts=engines.tts),
    )
    key = await server.create_key()
    pcm, rate = read_wav(SAMPLES / "two_commands.wav")
    frames = om1_frames(pcm * 4, rate)  # eight utterances, sent as fast as the socket takes them
    task = asyncio.create_task(stream(server.ws(api_key=key), frames))
    for _ in range(100):
        await asyncio.sleep(0.1)
        if gated.started >= 2:
            break
    await asyncio.sleep(1.0)  # the client keeps pushing; the gateway must not start more
    assert gated.started == 2 and gated.peak == 2
    gated.gate.set()
    messages, code, _ = await task
    assert code == 1000 and len(replies(messages)) == 8 and gated.peak <= 2
