"""OM1-shaped streaming through /api/core/google/asr to a loopback Google
Speech-to-Text v1 server, with failover to the local engine."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from tests.api.streaming import errors, om1_frames, replies, stream, wer
from tests.conftest import SAMPLES, read_wav
from tests.providers.google.fake_google import FakeGoogle, running_fake_google

pytestmark = pytest.mark.slow

MANIFEST = {m["file"]: m for m in json.loads((SAMPLES / "manifest.json").read_text())}
API_KEY = "AIza-test-google-key-0123456789"


@pytest.fixture
def google() -> Iterator[FakeGoogle]:
    with running_fake_google() as fake:
        yield fake


def gateway(make_server: Any, google: FakeGoogle, **extra: Any) -> Any:
    return make_server(
        {
            "google.url": google.url,
            "google.tls": False,
            "google.api_key": API_KEY,
            "google.connect_timeout_s": 2.0,
            "google.first_result_timeout_s": 3.0,
            **extra,
        }
    )


async def test_google_route_reaches_google_and_returns_its_transcripts(make_server: Any, google: FakeGoogle) -> None:
    google.faults.require_api_key = API_KEY
    server = gateway(make_server, google)
    key = await server.create_key()
    pcm, rate = read_wav(SAMPLES / "two_commands.wav")
    messages, code, _ = await stream(server.ws("/api/core/google/asr", api_key=key), om1_frames(pcm, rate))
    assert code == 1000
    assert len(google.streams) == 2  # one upstream stream per utterance, opened with the pre-roll
    assert sorted(replies(messages)) == sorted(f"google heard {s.nbytes} bytes" for s in google.streams)
    config = google.streams[0].config.config
    assert (config.sample_rate_hertz, config.language_code) == (16000, "en-US")
    assert all(size <= 25_000 for s in google.streams for size in s.request_sizes)
    ledger = await server.ledger()
    records = sorted(await ledger.usage(), key=lambda r: r.id)
    await ledger.close()
    assert [r.engine for r in records] == ["google", "google"]
    assert sorted(r.audio_ms for r in records) == sorted(s.nbytes // 32 for s in google.streams)


async def test_google_dying_mid_utterance_still_yields_the_final(make_server: Any, google: FakeGoogle) -> None:
    server = gateway(make_server, google)
    key = await server.create_key()
    google.faults.abort_code = grpc.StatusCode.UNAVAILABLE
    google.faults.abort_after = 4
    pcm, rate = read_wav(SAMPLES / "hello_robot.wav")
    frames = om1_frames(pcm, rate)
    messages, code, _ = await stream(server.ws("/api/core/google/asr", api_key=key), frames, realtime=True)
    assert code == 1000 and errors(messages) == []
    assert wer(MANIFEST["hello_robot.wav"]["transcript"], " ".join(replies(messages))) <= 0.2
    ledger = await server.ledger()
    (record,) = await ledger.usage()
    await ledger.close()
    assert record.engine == "local" and record.provider == "google"


async def test_google_refusing_the_key_is_permanent(make_server: Any, google: FakeGoogle) -> None:
    google.faults.require_api_key = "another-key"
    server = gateway(make_server, google)
    key = await server.create_key()
    pcm, rate = read_wav(SAMPLES / "hello_robot.wav")
    messages, code, _ = await stream(server.ws("/api/core/google/asr", api_key=key), om1_frames(pcm, rate))
    assert errors(messages) == ["google rejected the gateway's credentials"] and code == 1000
    assert API_KEY not in json.dumps(messages)


async def test_google_without_credentials_gives_the_seeds_error(make_server: Any) -> None:
    server = make_server({"routes.asr.google": ["google"]})
    key = await server.create_key()
    pcm, rate = read_wav(SAMPLES / "hello_robot.wav")
    messages, _, _ = await stream(server.ws("/api/core/google/asr", api_key=key), om1_frames(pcm, rate))
    assert errors(messages) == ["google API key not configured"]
