"""The OpenAI-compatible audio API, driven by the official ``openai`` client
against the real server and the real local engines (marked slow), plus the
error shape without engines."""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import av
import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from speech.api import openai_audio
from speech.api.gateway import Gateway
from speech.audio.encode import encode, flac_format, parse_output_format
from speech.metering.factory import open_ledger
from speech.metering.prices import PriceTable
from speech.settings import load_settings
from tests.api.streaming import normalize, wer
from tests.conftest import SAMPLES, read_wav

TWO_COMMANDS = SAMPLES / "two_commands.wav"
MANIFEST = {e["file"]: e for e in json.loads((SAMPLES / "manifest.json").read_text())}
SAY = "Hello there."


@pytest.fixture
async def client(server: Any) -> AsyncIterator[Callable[[str], openai.AsyncOpenAI]]:
    """client(key): the official client on this server's /v1 (closed at teardown)."""
    made: list[openai.AsyncOpenAI] = []

    def make(key: str) -> openai.AsyncOpenAI:
        made.append(openai.AsyncOpenAI(api_key=key, base_url=server.http + "/v1", max_retries=0, timeout=120))
        return made[-1]

    yield make
    for c in made:
        await c.close()


def audio_file(path: Path) -> tuple[str, bytes]:
    return path.name, path.read_bytes()


def decode(data: bytes) -> tuple[str, int, float]:
    """(container, sample rate, seconds) of a complete audio file, as a player reads it."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return container.format.name, stream.rate, samples / stream.rate


def reference(name: str) -> str:
    return MANIFEST[name]["transcript"]


# ------------------------------------------------------------ transcriptions


@pytest.mark.slow
async def test_transcribes_a_wav_with_the_official_client(server: Any, client: Any) -> None:
    key = await server.create_key()
    with TWO_COMMANDS.open("rb") as f:
        result = await client(key).audio.transcriptions.create(model="whisper-1", file=f)
    assert isinstance(result, openai.types.audio.Transcription)
    assert wer(reference("two_commands.wav"), result.text) <= 0.2
    for command in MANIFEST["two_commands.wav"]["utterances"]:
        assert normalize(command) in normalize(result.text)


@pytest.mark.slow
async def test_text_srt_and_vtt_formats(server: Any, client: Any) -> None:
    key = await server.create_key()
    api = client(key)
    text = await api.audio.transcriptions.create(
        model="whisper-1", file=audio_file(TWO_COMMANDS), response_format="text"
    )
    assert isinstance(text, str) and text.endswith("\n")
    assert wer(reference("two_commands.wav"), text) <= 0.2

    srt = await api.audio.transcriptions.create(model="whisper-1", file=audio_file(TWO_COMMANDS), response_format="srt")
    blocks = [b.splitlines() for b in srt.strip().split("\n\n")]
    assert [b[0] for b in blocks] == ["1", "2"]
    stamp = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"
    times = []
    for block in blocks:
        m = re.fullmatch(f"{stamp} --> {stamp}", block[1])
        assert m, block
        g = [int(x) for x in m.groups()]
        times.append(((g[0] * 60 + g[1]) * 60 + g[2] + g[3] / 1000, (g[4] * 60 + g[5]) * 60 + g[6] + g[7] / 1000))
    assert times[0][0] < times[0][1] <= times[1][0] < times[1][1] <= 5.2
    assert wer(reference("two_commands.wav"), " ".join(b[2] for b in blocks)) <= 0.2

    vtt = await api.audio.transcriptions.create(model="whisper-1", file=audio_file(TWO_COMMANDS), response_format="vtt")
    lines = vtt.splitlines()
    assert lines[0] == "WEBVTT" and lines[1] == ""
    cues = [i for i, line in enumerate(lines) if " --> " in line]
    assert len(cues) == 2
    for i in cues:
        assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d\d\d --> \d\d:\d\d:\d\d\.\d\d\d", lines[i])
    assert normalize(lines[cues[0] + 1]) == normalize(MANIFEST["two_commands.wav"]["utterances"][0])


@pytest.mark.slow
async def test_verbose_json_has_segments_and_words_with_times(server: Any, client: Any) -> None:
    key = await server.create_key()
    result = await client(key).audio.transcriptions.create(
        model="whisper-1",
        file=audio_file(TWO_COMMANDS),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
        language="en",
    )
    assert isinstance(result, openai.types.audio.TranscriptionVerbose)
    assert result.language == "en" and math.isclose(
        result.duration, MANIFEST["two_commands.wav"]["seconds"], abs_tol=0.05
    )
    segments = result.segments or []
    assert [s.id for s in segments] == [0, 1]
    assert 0 <= segments[0].start < segments[0].end <= segments[1].start < segments[1].end <= result.duration
    for segment, said in zip(segments, MANIFEST["two_commands.wav"]["utterances"], strict=True):
        assert wer(said, segment.text) <= 0.2
    words = result.words or []
    assert normalize(" ".join(w.word for w in words)) == normalize(result.text)
    assert all(w.start <= w.end for w in words)
    assert all(a.start <= b.start for a, b in zip(words, words[1:], strict=False))
    # Word times are in the file's time line: each falls inside its segment.
    first, second = segments
    n_first = len(normalize(first.text).split())
    assert all(first.start <= w.start and w.end <= first.end + 0.05 for w in words[:n_first])
    assert all(second.start <= w.start and w.end <= second.end + 0.05 for w in words[n_first:])
    # Only segments unless words are asked for, as OpenAI.
    plain = await client(key).audio.transcriptions.create(
        model="whisper-1", file=audio_file(TWO_COMMANDS), response_format="verbose_json"
    )
    assert plain.words is None and len(plain.segments or []) == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fmt", "filename"),
    [
        (parse_output_format("mp3_44100_128"), "two_commands.mp3"),
        (parse_output_format("opus_48000_64"), "two_commands.ogg"),
        (flac_format(16000), "two_commands.flac"),
    ],
)
async def test_compressed_uploads(server: Any, client: Any, fmt: Any, filename: str) -> None:
    pcm, rate = read_wav(TWO_COMMANDS)
    data = encode(pcm, rate, fmt)
    key = await server.create_key()
    result = await client(key).audio.transcriptions.create(model="whisper-1", file=(filename, data))
    assert wer(reference("two_commands.wav"), result.text) <= 0.2


@pytest.mark.slow
async def test_one_usage_record_per_utterance_at_the_route_price(server: Any, client: Any) -> None:
    key = await server.create_key(balance_uomcu=10_000_000)
    api = client(key)
    # "riva" names a route (25 OMCU/min, served by the local engine here).
    raw = await api.audio.transcriptions.with_raw_response.create(model="riva", file=audio_file(TWO_COMMANDS))
    assert wer(reference("two_commands.wav"), raw.parse().text) <= 0.2
    records = sorted(await server.usage(), key=lambda r: r.idempotency_key)
    assert len(records) == 2
    assert all(r.kind == "asr" and r.provider == "riva" and r.engine == "local" for r in records)
    assert len({r.idempotency_key.rsplit(":", 1)[0] for r in records}) == 1
    assert all(r.idempotency_key.startswith("openai-asr:") for r in records)
    for r in records:
        assert 300 < r.audio_ms < 3000
        assert r.cost_uomcu == math.ceil(25_000_000 * r.audio_ms / 60_000) and r.cost_uomcu > 0
    assert int(raw.headers["x-usage-audio-ms"]) == sum(r.audio_ms for r in records)
    assert int(raw.headers["x-usage-cost-uomcu"]) == sum(r.cost_uomcu for r in records)
    assert raw.headers["x-engine"] == "local"
    ledger = await server.ledger()
    balance = await ledger.balance(records[0].account_id)
    await ledger.close()
    assert balance == 10_000_000 - sum(r.cost_uomcu for r in records)
    # Any other model is the local route.
    await api.audio.transcriptions.create(model="gpt-4o-transcribe", file=audio_file(TWO_COMMANDS))
    local = [r for r in await server.usage() if r.provider == "local"]
    assert len(local) == 2 and all(r.cost_uomcu == 0 for r in local)


@pytest.mark.slow
async def test_silence_gives_empty_text_and_no_usage(server: Any, client: Any) -> None:
    key = await server.create_key()
    silence = encode(b"\0" * 32000 * 3, 16000, parse_output_format("wav_16000"))
    api = client(key)
    result = await api.audio.transcriptions.create(model="whisper-1", file=("silence.wav", silence))
    assert result.text == ""
    verbose = await api.audio.transcriptions.create(
        model="whisper-1", file=("silence.wav", silence), response_format="verbose_json"
    )
    assert verbose.text == "" and verbose.segments == [] and math.isclose(verbose.duration, 3.0)
    srt = await api.audio.transcriptions.create(model="whisper-1", file=("silence.wav", silence), response_format="srt")
    assert srt == ""
    assert await server.usage() == []


@pytest.mark.slow
async def test_bad_uploads_get_clear_400s(server: Any, client: Any) -> None:
    key = await server.create_key()
    api = client(key)
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"file": ("notes.wav", b"this is not audio\n" * 100)}, "could not decode the audio file", "file"),
        ({"file": ("tiny.wav", encode(b"\0" * 64, 16000, parse_output_format("wav_16000")))}, "too short", "file"),
        (
            {"file": audio_file(TWO_COMMANDS), "response_format": "diarized_json"},
            "unsupported response_format",
            "response_format",
        ),
        ({"file": audio_file(TWO_COMMANDS), "language": "english please"}, "'language' must be", "language"),
    ]
    for kwargs, message, param in cases:
        with pytest.raises(openai.BadRequestError) as info:
            await api.audio.transcriptions.create(model="whisper-1", **kwargs)
        assert message in info.value.message
        assert info.value.body["param"] == param and info.value.body["type"] == "invalid_request_error"
    headers = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=server.http, headers=headers, timeout=60) as http:
        r = await http.post("/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"other": b"x"})
        assert r.status_code == 400
        assert r.json() == {
            "error": {
                "message": "missing 'file': upload the audio as a multipart/form-data file field",
                "type": "invalid_request_error",
                "param": "file",
                "code": None,
            }
        }
        r = await http.post("/v1/audio/transcriptions", json={"model": "whisper-1", "file": "x"})
        assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]["message"]
        r = await http.post("/v1/audio/transcriptions", files={"file": audio_file(TWO_COMMANDS)})
        assert r.status_code == 400 and r.json()["error"]["param"] == "model"
        r = await http.post(
            "/v1/audio/transcriptions",
            data={"model": "whisper-1", "timestamp_granularities[]": "sentence"},
            files={"file": audio_file(TWO_COMMANDS)},
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "timestamp_granularities"
    assert await server.usage() == []


@pytest.mark.slow
async def test_upload_over_25_mb_is_refused(server: Any, client: Any) -> None:
    key = await server.create_key()
    with pytest.raises(openai.APIStatusError) as info:
        await client(key).audio.transcriptions.create(
            model="whisper-1", file=("big.wav", b"\0" * (25 * 1024 * 1024 + 1))
        )
    assert info.value.status_code == 413
    assert info.value.message.endswith("the audio file is over the 25 MB limit")


@pytest.mark.slow
async def test_keys_balance_and_rate_limit(server: Any, client: Any) -> None:
    good = await server.create_key()
    broke = await server.create_key("broke", balance_uomcu=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        await client("sk_nope").audio.transcriptions.create(model="whisper-1", file=audio_file(TWO_COMMANDS))
    assert "invalid API key" in auth.value.message and auth.value.body["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        await client("sk_nope").audio.speech.create(model="tts-1", voice="alloy", input=SAY)
    with pytest.raises(openai.APIStatusError) as paid:
        await client(broke).audio.transcriptions.create(model="whisper-1", file=audio_file(TWO_COMMANDS))
    assert paid.value.status_code == 402 and "insufficient balance" in paid.value.message
    assert paid.value.body["type"] == "insufficient_quota"
    with pytest.raises(openai.APIStatusError) as paid:
        await client(broke).audio.speech.create(model="tts-1", voice="alloy", input=SAY)
    assert paid.value.status_code == 402
    # Too little for this request's cost: refused before any recognition.
    poor = await server.create_key("poor", balance_uomcu=100)
    with pytest.raises(openai.APIStatusError) as paid:
        await client(poor).audio.transcriptions.create(model="google", file=audio_file(TWO_COMMANDS))
    assert paid.value.status_code == 402 and "this request costs" in paid.value.message
    assert await server.usage() == []
    ledger = await server.ledger()
    await ledger.update_key(good.split("_")[1], rpm=1)
    await ledger.close()
    await client(good).audio.speech.create(model="tts-1", voice="alloy", input=SAY)
    with pytest.raises(openai.RateLimitError) as limited:
        await client(good).audio.speech.create(model="tts-1", voice="alloy", input=SAY)
    assert "rate limit" in limited.value.message


# ------------------------------------------------------------------- speech


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fmt", "container", "rate", "content_type"),
    [
        ("mp3", "mp3", 44100, "audio/mpeg"),
        ("opus", "ogg", 48000, "audio/ogg"),
        ("wav", "wav", 24000, "audio/wav"),
        ("flac", "flac", 24000, "audio/flac"),
    ],
)
async def test_speech_formats_decode_at_their_rates(
    server: Any, client: Any, fmt: str, container: str, rate: int, content_type: str
) -> None:
    key = await server.create_key()
    audio = await client(key).audio.speech.create(model="tts-1", voice="alloy", input=SAY, response_format=fmt)
    assert audio.response.headers["content-type"] == content_type
    got_container, got_rate, seconds = decode(audio.content)
    assert (got_container, got_rate) == (container, rate) and 0.5 < seconds < 3.0


@pytest.mark.slow
async def test_speech_pcm_is_raw_24k_samples(server: Any, client: Any) -> None:
    key = await server.create_key()
    audio = await client(key).audio.speech.create(
        model="gpt-4o-mini-tts", voice="alloy", input=SAY, response_format="pcm"
    )
    assert audio.response.headers["content-type"] == "audio/pcm"
    assert len(audio.content) % 2 == 0 and 0.5 < len(audio.content) / 48000 < 3.0
    assert audio.content[:4] not in (b"RIFF", b"ID3\x03", b"fLaC", b"OggS")


@pytest.mark.slow
async def test_speech_streams_sentence_by_sentence(server: Any, client: Any) -> None:
    key = await server.create_key()
    text = "Please bring the blue box to the loading dock before noon, and then come back here."
    async with client(key).audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=text, response_format="wav"
    ) as response:
        assert response.headers["content-type"] == "audio/wav"
        assert "content-length" not in response.headers  # chunked, sentence by sentence
        pieces = [piece async for piece in response.iter_bytes()]
    data = b"".join(pieces)
    assert len(pieces) > 1
    assert decode(data)[1] == 24000 and data[:4] == b"RIFF"


@pytest.mark.slow
async def test_speech_usage_counts_the_input_characters(server: Any, client: Any) -> None:
    key = await server.create_key(balance_uomcu=10_000_000)
    api = client(key)
    raw = await api.audio.speech.with_raw_response.create(model="tts-1", voice="alloy", input=SAY)
    assert raw.headers["x-usage-characters"] == str(len(SAY)) and raw.headers["x-engine"] == "local"
    raw = await api.audio.speech.with_raw_response.create(model="riva", voice="alloy", input=SAY)
    records = {r.provider: r for r in await server.usage()}
    assert set(records) == {"local", "riva"}
    assert all(r.kind == "tts" and r.engine == "local" and r.characters == len(SAY) for r in records.values())
    assert all(r.idempotency_key.startswith("openai-tts:") for r in records.values())
    assert records["local"].cost_uomcu == 0
    assert records["riva"].cost_uomcu == 10_000 * len(SAY)  # 10,000 OMCU per 1M characters
    assert raw.headers["x-usage-cost-uomcu"] == str(10_000 * len(SAY))


@pytest.mark.slow
async def test_bad_speech_requests_get_400(server: Any, client: Any) -> None:
    key = await server.create_key()
    api = client(key)
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"input": ""}, "'input' is empty", "input"),
        ({"input": "x" * 5001}, "'input' is 5001 characters; the limit is 5000", "input"),
        (
            {"input": SAY, "response_format": "aac"},
            "unsupported response_format 'aac'; supported: mp3, opus",
            "response_format",
        ),
        ({"input": SAY, "speed": 5.0}, "'speed' must be a number from 0.25 to 4.0", "speed"),
    ]
    for kwargs, message, param in cases:
        with pytest.raises(openai.BadRequestError) as info:
            await api.audio.speech.create(model="tts-1", voice="alloy", **kwargs)
        assert message in info.value.message and info.value.body["param"] == param
    # speed inside the range is accepted
    await api.audio.speech.create(model="tts-1", voice="alloy", input=SAY, speed=1.5)
    async with httpx.AsyncClient(base_url=server.http, headers={"x-api-key": key}) as http:
        r = await http.post("/v1/audio/speech", content=b"{nope")
        assert r.status_code == 400 and r.json()["error"]["message"] == "request body is not valid JSON"
        r = await http.post("/v1/audio/speech", json={"input": SAY})
        assert r.status_code == 400 and r.json()["error"]["param"] == "model"
        r = await http.post("/v1/audio/speech", json={"model": "tts-1", "input": SAY, "voice": 5})
        assert r.status_code == 400 and r.json()["error"]["param"] == "voice"
    # A custom voice object is accepted (the local voice ignores it).
    await api.audio.speech.create(model="tts-1", voice={"id": "voice_1234"}, input=SAY)
    assert [r.provider for r in await server.usage()] == ["local", "local"]


@pytest.mark.slow
async def test_round_trip_speech_then_transcription(server: Any, client: Any) -> None:
    key = await server.create_key()
    api = client(key)
    text = "Please bring the blue box to the loading dock before noon."
    audio = await api.audio.speech.create(model="tts-1", voice="alloy", input=text, response_format="mp3")
    result = await api.audio.transcriptions.create(model="whisper-1", file=("speech.mp3", audio.content))
    # Piper's output varies a little run to run (noise scale): allow one misheard word.
    assert wer(text, result.text) <= 1 / len(text.split())


@pytest.mark.slow
async def test_chunked_upload_over_the_limit_is_cut_off(server: Any) -> None:
    key = await server.create_key()
    boundary = "b0undary"

    async def body() -> AsyncIterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        for _ in range(30):
            yield b"\0" * (1024 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {"authorization": f"Bearer {key}", "content-type": f"multipart/form-data; boundary={boundary}"}
    async with httpx.AsyncClient(base_url=server.http, timeout=60) as http:
        r = await http.post("/v1/audio/transcriptions", content=body(), headers=headers)
    assert "content-length" not in r.request.headers
    assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"


async def test_errors_use_openai_shape_even_before_the_engines_load(tmp_path: Path) -> None:
    settings = load_settings(environ={}, overrides={"server.db": str(tmp_path / "ledger.db")})
    ledger = await open_ledger(settings.server.db)
    key, _ = await ledger.create_key("test", 1_000_000)
    app = Starlette(
        routes=[
            Route("/v1/audio/transcriptions", openai_audio.transcriptions, methods=["POST"]),
            Route("/v1/audio/speech", openai_audio.speech, methods=["POST"]),
        ]
    )
    app.state.gateway = Gateway(settings=settings, ledger=ledger, prices=PriceTable.from_settings(settings.prices))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
            speech = await http.post(
                "/v1/audio/speech", json={"model": "tts-1", "input": SAY}, headers={"authorization": f"Bearer {key}"}
            )
            transcription = await http.post(
                "/v1/audio/transcriptions",
                data={"model": "whisper-1"},
                files={"file": audio_file(TWO_COMMANDS)},
                headers={"x-api-key": key},
            )
            anonymous = await http.post("/v1/audio/speech", json={"model": "tts-1", "input": SAY})
    finally:
        await ledger.close()
    for r in (speech, transcription):
        assert r.status_code == 503
        error = r.json()["error"]
        assert error["type"] == "server_error" and error["message"].startswith("engine not ready")
    assert anonymous.status_code == 401
    assert anonymous.json() == {
        "error": {
            "message": anonymous.json()["error"]["message"],
            "type": "authentication_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    assert anonymous.json()["error"]["message"].startswith("missing API key")
