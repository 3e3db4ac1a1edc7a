"""The streaming ASR websocket against the real server and the real local engines."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import websockets

from speech.errors import CLOSE_NOT_FOUND, CLOSE_PAYMENT_REQUIRED, CLOSE_PROTOCOL, CLOSE_UNAUTHORIZED
from speech.providers.base import RecognitionConfig, Transcript
from speech.providers.registry import Engines
from tests.api.streaming import errors, normalize, om1_frames, replies, stream, wer
from tests.conftest import SAMPLES, read_wav

MANIFEST = {m["file"]: m for m in json.loads((SAMPLES / "manifest.json").read_text())}

pytestmark = pytest.mark.slow


def sample(name: str) -> tuple[bytes, int]:
    return read_wav(SAMPLES / name)


async def test_om1_json_stream_returns_one_reply_per_utterance(server: Any) -> None:
    key = await server.create_key()
    pcm, rate = sample("two_commands.wav")
    messages, code, _ = await stream(server.ws("/api/core/google/asr", api_key=key), om1_frames(pcm, rate))
    got = replies(messages)
    assert code == 1000
    assert len(got) == 2, messages
    for expected, text in zip(MANIFEST["two_commands.wav"]["utterances"], got, strict=True):
        assert wer(expected, text) <= 0.2, (expected, text)


@pytest.mark.parametrize("path", ["/api/core/riva/asr", "/api/core/local/asr", "/"])
async def test_every_asr_path_is_served(server: Any, path: str) -> None:
    key = await server.create_key()
    pcm, rate = sample("hello_robot.wav")
    messages, code, _ = await stream(server.ws(path), om1_frames(pcm, rate), headers={"x-api-key": key})
    assert code == 1000
    assert "kitchen door" in normalize(" ".join(replies(messages)))


async def test_binary_frames_at_the_query_string_rate(server: Any) -> None:
    key = await server.create_key()
    pcm, rate = sample("pick_up_cup.wav")
    assert rate == 22050
    step = rate * 2 // 5
    frames: list[str | bytes] = [pcm[i : i + step] for i in range(0, len(pcm), step)]
    messages, code, _ = await stream(server.ws(rate=rate), frames, headers={"authorization": f"Bearer {key}"})
    assert code == 1000
    assert wer(MANIFEST["pick_up_cup.wav"]["transcript"], " ".join(replies(messages))) <= 0.2


async def test_binary_frames_take_the_rate_of_an_earlier_json_frame(server: Any) -> None:
    key = await server.create_key()
    pcm, rate = sample("weather_48k.wav")
    assert rate == 48000
    step = rate * 2 // 5
    first = om1_frames(pcm[:step], rate)
    rest: list[str | bytes] = [pcm[i : i + step] for i in range(step, len(pcm), step)]
    messages, _, _ = await stream(server.ws(api_key=key), [*first, *rest])
    assert wer(MANIFEST["weather_48k.wav"]["transcript"], " ".join(replies(messages))) <= 0.2


BAD_FRAMES: list[tuple[str | bytes, str]] = [
    ("this is not json", "not valid JSON"),
    ('{"rate": 16000}', "no 'audio'"),
    ('{"audio": "***not base64***"}', "not valid base64"),
    ('{"audio": "AAAA"}', "odd number of bytes"),
    ('{"audio": "AAAAAA==", "rate": 4000}', "between 8000 and 48000"),
    ('{"audio": "AAAAAA==", "rate": 96000}', "between 8000 and 48000"),
    (b"\x00\x01\x02", "odd number of bytes"),
    ("[1, 2, 3]", "JSON object"),
    ('{"type": "Dance"}', "unknown message type"),
]


async def test_each_bad_frame_gets_an_error_and_the_session_goes_on(server: Any) -> None:
    key = await server.create_key()
    pcm, rate = sample("hello_robot.wav")
    frames = om1_frames(pcm, rate)
    mixed: list[str | bytes] = [frames[0]]
    for bad, _ in BAD_FRAMES:
        mixed.append(bad)
    mixed += frames[1:]
    messages, code, _ = await stream(server.ws(api_key=key), mixed)
    errs = errors(messages)
    assert len(errs) == len(BAD_FRAMES)
    for (_, expected), err in zip(BAD_FRAMES, errs, strict=True):
        assert expected in err
    assert code == 1000
    assert "kitchen door" in normalize(" ".join(replies(messages)))


async def test_frame_over_the_size_cap_is_refused_and_the_session_goes_on(make_server: Any) -> None:
    server = make_server({"limits.max_frame_bytes": 64 * 1024})
    key = await server.create_key()
    pcm, rate = sample("hello_robot.wav")
    big = json.dumps({"audio": base64.b64encode(b"\x00" * 60_000).decode()})  # 80 kB of JSON
    frames = om1_frames(pcm, rate)
    messages, code, _ = await stream(server.ws(api_key=key), [frames[0], big, b"\x00" * 70_000, *frames[1:]])
    errs = errors(messages)
    assert len(errs) == 2 and all("over the 65536-byte limit" in e for e in errs)
    assert code == 1000
    assert replies(messages)


async def test_garbage_only_connection_is_closed_and_others_are_unaffected(server: Any) -> None:
    key = await server.create_key()
    pcm, rate = sample("hello_robot.wav")
    good = asyncio.create_task(stream(server.ws(api_key=key), om1_frames(pcm, rate), realtime=True))
    garbage_msgs, garbage_code, reason = await stream(server.ws(api_key=key), ["garbage"] * 50, close_stream=False)
    assert garbage_code == CLOSE_PROTOCOL
    assert "consecutive invalid frames" in reason
    assert len(errors(garbage_msgs)) == 10 + 1  # ten frame errors, then the closing error
    messages, code, _ = await good
    assert code == 1000
    assert "kitchen door" in normalize(" ".join(replies(messages)))


async def test_invalid_query_options_close_the_stream(server: Any) -> None:
    key = await server.create_key()
    for query, text in [
        ({"silence_ms": "abc"}, "silence_ms"),
        ({"vad_mode": 7}, "vad_mode"),
        ({"rate": 5}, "between 8000 and 48000"),
        ({"rate": "fast"}, "rate"),
    ]:
        messages, code, _ = await stream(server.ws(api_key=key, **query), [], close_stream=False)
        assert code == CLOSE_PROTOCOL
        assert text in errors(messages)[0]


async def test_unknown_provider_path(server: Any) -> None:
    key = await server.create_key()
    messages, code, _ = await stream(server.ws("/api/core/acme/asr", api_key=key), [], close_stream=False)
    assert code == CLOSE_NOT_FOUND
    assert errors(messages) == ["unsupported ASR provider: acme"]


async def test_missing_unknown_and_revoked_keys_are_refused(server: Any) -> None:
    key = await server.create_key()
    ledger = await server.ledger()
    revoked = await server.create_key("old")
    await ledger.revoke(revoked.split("_")[1])
    await ledger.close()
    bogus = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    for query, headers, text in [
        ({}, {}, "missing API key"),
        ({"api_key": "nonsense"}, {}, "invalid API key"),
        ({}, {"x-api-key": bogus}, "invalid API key"),
        ({"api_key": revoked}, {}, "API key revoked"),
    ]:
        messages, code, _ = await stream(server.ws(**query), [], headers=headers, close_stream=False)
        assert code == CLOSE_UNAUTHORIZED
        assert errors(messages) == [text]
        assert key not in json.dumps(messages) and revoked not in json.dumps(messages)


async def test_exhausted_balance_refuses_the_stream(server: Any) -> None:
    key = await server.create_key(balance_uomcu=0)
    messages, code, _ = await stream(server.ws("/api/core/google/asr", api_key=key), [], close_stream=False)
    assert code == CLOSE_PAYMENT_REQUIRED
    assert "insufficient balance" in errors(messages)[0]


async def test_balance_running_out_mid_stream_closes_before_the_next_utterance(server: Any) -> None:
    # Google ASR costs 50 OMCU/min, so 1 OMCU covers 1.2 s. The first utterance
    # reserves what is left and is cut where the credit ends; the next one
    # finds nothing to reserve and the stream closes: no overspend at all.
    key = await server.create_key(balance_uomcu=1_000_000)
    pcm, rate = sample("two_commands.wav")
    messages, code, _ = await stream(server.ws("/api/core/google/asr", api_key=key), om1_frames(pcm, rate))
    assert code == CLOSE_PAYMENT_REQUIRED
    assert len(replies(messages)) == 1
    assert "insufficient balance" in errors(messages)[-1]
    ledger = await server.ledger()
    records = await ledger.usage()
    balance = await ledger.balance(records[0].account_id)
    await ledger.close()
    assert len(records) == 1
    assert (records[0].audio_ms, records[0].cost_uomcu, balance) == (1200, 1_000_000, 0)


class CountingRecognizer:
    """The real local recognizer, plus a tally of the audio each stream carried."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.description = inner.description
        self.streams: list[int] = []

    async def recognize(self, audio: AsyncIterator[bytes], config: RecognitionConfig) -> AsyncIterator[Transcript]:
        index = len(self.streams)
        self.streams.append(0)

        async def counted() -> AsyncIterator[bytes]:
            async for chunk in audio:
                self.streams[index] += len(chunk)
                yield chunk

        async for transcript in self.inner.recognize(counted(), config):
            yield transcript


async def test_usage_seconds_match_audio_forwarded_to_the_recognizer(make_server: Any, engines: Engines) -> None:
    counting = CountingRecognizer(engines.asr["local"])
    wrapped = Engines(engines.settings, asr={"local": counting}, tts=engines.tts)
    server = make_server(with_engines=wrapped)
    key = await server.create_key()
    for name in ("two_commands.wav", "hello_robot.wav", "weather_48k.wav"):
        pcm, rate = sample(name)
        await stream(server.ws("/api/core/google/asr", api_key=key), om1_frames(pcm, rate))
    ledger = await server.ledger()
    records = sorted(await ledger.usage(), key=lambda r: r.id)
    await ledger.close()
    assert len(records) == len(counting.streams) == 4
    for record, forwarded_bytes in zip(records, counting.streams, strict=True):
        forwarded_ms = forwarded_bytes / 32
        assert abs(record.audio_ms - forwarded_ms) <= 20, (record, forwarded_ms)
        assert record.kind == "asr" and record.provider == "google" and record.engine == "local"
        # Google's price: 50 OMCU/min, billed per millisecond rounded up to 1 µOMCU.
        assert record.cost_uomcu == -(-record.audio_ms * 50_000_000 // 60_000)
    # Silence is never forwarded: far less than the files' total duration was billed.
    total = sum(m["seconds"] for m in MANIFEST.values() if m["file"] != "pick_up_cup.wav")
    assert sum(r.audio_ms for r in records) / 1000 < total - 2.5


class BlockedRecognizer:
    """A decode that holds a pool worker until released: a stand-in for a slow
    model run. The real engine's pool executes it, so the test exercises the
    same off-loop path."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.description = inner.description
        self.release = threading.Event()
        self.entered = threading.Event()

    async def recognize(self, audio: AsyncIterator[bytes], config: RecognitionConfig) -> AsyncIterator[Transcript]:
        pcm = b"".join([c async for c in audio])

        def slow_decode() -> Transcript:
            self.entered.set()
            self.release.wait(60)
            return self.inner.transcribe_pcm(pcm)

        yield await self.inner.pool.run(slow_decode)


async def test_a_slow_decode_never_delays_other_connections(make_server: Any, engines: Engines) -> None:
    blocked = BlockedRecognizer(engines.asr["local"])
    wrapped = Engines(engines.settings, asr={"local": blocked}, tts=engines.tts)
    server = make_server(with_engines=wrapped)
    key = await server.create_key()
    pcm, rate = sample("hello_robot.wav")
    slow = asyncio.create_task(stream(server.ws(api_key=key), om1_frames(pcm, rate)))
    await asyncio.to_thread(blocked.entered.wait, 60)
    # While the decode holds its worker, another connection is served at once:
    # its frames are read and answered, its garbage is refused and it is closed.
    messages, code, _ = await stream(server.ws(api_key=key), ["x"] * 10, close_stream=False)
    assert code == CLOSE_PROTOCOL and len(errors(messages)) == 11
    assert not slow.done()
    blocked.release.set()
    slow_messages, slow_code, _ = await slow
    assert slow_code == 1000 and "kitchen door" in normalize(" ".join(replies(slow_messages)))


async def test_client_disconnect_mid_utterance_bills_nothing_for_it(server: Any) -> None:
    key = await server.create_key()
    pcm, rate = sample("hello_robot.wav")
    frames = om1_frames(pcm, rate)
    async with websockets.connect(server.ws(api_key=key)) as ws:
        for frame in frames[: len(frames) // 2]:
            await ws.send(frame)
    await asyncio.sleep(0.5)
    ledger = await server.ledger()
    assert await ledger.usage() == []
    await ledger.close()


async def test_silence_only_stream_bills_nothing(server: Any) -> None:
    key = await server.create_key()
    noise = (np.random.default_rng(1).normal(0, 30, 16000 * 3)).astype("<i2").tobytes()
    messages, code, _ = await stream(server.ws(api_key=key), om1_frames(b"\x00" * 64000 + noise, 16000))
    assert code == 1000 and replies(messages) == []
    ledger = await server.ledger()
    assert await ledger.usage() == []
    await ledger.close()
