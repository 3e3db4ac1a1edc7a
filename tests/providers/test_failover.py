"""The failover layer, driven by scripted engines that implement the one-method
interfaces (the real adapters are tested against loopback servers elsewhere)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from speech.errors import UpstreamAuthError, UpstreamUnavailable
from speech.providers.base import AudioChunk, RecognitionConfig, SynthesisRequest, Transcript
from speech.providers.failover import EngineHealth, FailoverRecognizer, FailoverSynthesizer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedRecognizer:
    """Reads the audio; fails after ``fail_after`` chunks if told to; else
    answers with a final naming the bytes it heard."""

    def __init__(
        self,
        name: str,
        fail_after: int | None = None,
        error: Exception | None = None,
        interim: bool = False,
        final: bool = True,
        read_all: bool = True,
    ) -> None:
        self.name = name
        self.description = f"scripted {name}"
        self.fail_after = fail_after
        self.error = error or UpstreamUnavailable(f"Failed to connect to {name} server")
        self.interim = interim
        self.final = final
        self.read_all = read_all
        self.heard: list[bytes] = []
        self.calls = 0

    async def recognize(self, audio: AsyncIterator[bytes], config: RecognitionConfig) -> AsyncIterator[Transcript]:
        self.calls += 1
        heard = bytearray()
        async for chunk in audio:
            if self.fail_after is not None and len(self.heard) + 1 > self.fail_after:
                raise self.error
            heard += chunk
            self.heard.append(chunk)
            if self.interim:
                yield Transcript(f"{self.name} partial", is_final=False)
            if not self.read_all:
                break
        if self.final:
            yield Transcript(f"{self.name} heard {len(heard)}", is_final=True)


async def source(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for c in chunks:
        yield c


CHUNKS = [bytes([i]) * 100 for i in range(10)]


async def run(rec: FailoverRecognizer, chunks: list[bytes] = CHUNKS) -> list[Transcript]:
    return [t async for t in rec.recognize(source(chunks), RecognitionConfig())]


async def test_first_engine_answers_and_is_named() -> None:
    a, b = ScriptedRecognizer("a"), ScriptedRecognizer("b")
    out = await run(FailoverRecognizer("google", [a, b], EngineHealth(30)))
    assert out == [Transcript("a heard 1000", engine="a")]
    assert b.calls == 0


async def test_retryable_failure_mid_utterance_replays_all_audio_to_the_next_engine() -> None:
    a = ScriptedRecognizer("a", fail_after=4, interim=True)
    b = ScriptedRecognizer("b")
    clock = Clock()
    health = EngineHealth(30, clock)
    out = await run(FailoverRecognizer("google", [a, b], health))
    assert b"".join(b.heard) == b"".join(CHUNKS)  # from the first byte, nothing lost or doubled
    finals = [t for t in out if t.is_final]
    assert finals == [Transcript("b heard 1000", engine="b")]
    assert [t.engine for t in out if not t.is_final] == ["a"] * 4  # interims passed through as they came
    snap = health.snapshot()["asr:a"]
    assert snap["state"] == "cooling_down" and snap["retry_in_s"] == 30 and "Failed to connect" in snap["last_error"]


async def test_cooled_down_engine_is_skipped_then_retried() -> None:
    a = ScriptedRecognizer("a", fail_after=0)
    b = ScriptedRecognizer("b")
    clock = Clock()
    rec = FailoverRecognizer("google", [a, b], EngineHealth(30, clock))
    await run(rec)
    assert a.calls == 1
    out = await run(rec)  # a is cooling down: b first, a not called
    assert a.calls == 1 and out[-1].engine == "b"
    clock.now += 31
    a.fail_after = None
    out = await run(rec)
    assert a.calls == 2 and out[-1].engine == "a"
    assert rec.health.snapshot()["asr:a"]["state"] == "ok"


async def test_permanent_failure_is_reported_not_retried() -> None:
    a = ScriptedRecognizer("a", fail_after=1, error=UpstreamAuthError("a rejected the gateway's credentials"))
    b = ScriptedRecognizer("b")
    with pytest.raises(UpstreamAuthError):
        await run(FailoverRecognizer("google", [a, b], EngineHealth(30)))
    assert b.calls == 0


async def test_every_engine_failing_raises_the_last_error() -> None:
    a = ScriptedRecognizer("a", fail_after=0)
    b = ScriptedRecognizer("b", fail_after=2, error=UpstreamUnavailable("Failed to connect to b server"))
    with pytest.raises(UpstreamUnavailable, match="b server"):
        await run(FailoverRecognizer("google", [a, b], EngineHealth(30)))


async def test_all_engines_cooling_are_still_tried_soonest_first() -> None:
    clock = Clock()
    health = EngineHealth(30, clock)
    a, b = ScriptedRecognizer("a", fail_after=0), ScriptedRecognizer("b", fail_after=0)
    rec = FailoverRecognizer("riva", [a, b], health)
    with pytest.raises(UpstreamUnavailable):
        await run(rec)
    a.fail_after = b.fail_after = None
    assert health.order("asr", ["a", "b"]) == ["a", "b"]
    out = await run(rec)
    assert out[-1].engine == "a"


async def test_no_final_still_ends_with_an_empty_final_naming_the_engine() -> None:
    a = ScriptedRecognizer("a", final=False)
    assert await run(FailoverRecognizer("google", [a], EngineHealth(30))) == [Transcript("", engine="a")]


async def test_source_is_drained_when_an_engine_stops_reading_early() -> None:
    consumed: list[int] = []

    async def counting() -> AsyncIterator[bytes]:
        for i, c in enumerate(CHUNKS):
            consumed.append(i)
            yield c

    a = ScriptedRecognizer("a", read_all=False)
    rec = FailoverRecognizer("google", [a], EngineHealth(30))
    out = [t async for t in rec.recognize(counting(), RecognitionConfig())]
    assert out[-1].text == "a heard 100"
    assert consumed == list(range(10))


class ScriptedSynth:
    def __init__(self, name: str, fail_after: int | None = None, error: Exception | None = None) -> None:
        self.name = name
        self.description = name
        self.fail_after = fail_after
        self.error = error or UpstreamUnavailable(f"Failed to connect to {name} server")

    async def synthesize(self, request: SynthesisRequest) -> AsyncIterator[AudioChunk]:
        for i in range(3):
            if self.fail_after is not None and i >= self.fail_after:
                raise self.error
            yield AudioChunk(self.name.encode() * 2, 16000)


async def test_tts_failure_half_way_falls_over_without_mixing_audio() -> None:
    rec = FailoverSynthesizer("elevenlabs", [ScriptedSynth("a", fail_after=2), ScriptedSynth("b")], EngineHealth(30))
    engine, chunks = await rec.synthesize_with_engine(SynthesisRequest("hi"))
    assert engine == "b" and [c.data for c in chunks] == [b"bb"] * 3
    assert [c.data async for c in rec.synthesize(SynthesisRequest("hi"))] == [b"bb"] * 3  # a cooling down


async def test_tts_permanent_failure_is_raised() -> None:
    err = UpstreamAuthError("a rejected the gateway's credentials")
    rec = FailoverSynthesizer("elevenlabs", [ScriptedSynth("a", 0, err), ScriptedSynth("b")], EngineHealth(30))
    with pytest.raises(UpstreamAuthError):
        await rec.synthesize_with_engine(SynthesisRequest("hi"))


def test_empty_chain_is_refused() -> None:
    health: Any = EngineHealth(30)
    with pytest.raises(ValueError):
        FailoverRecognizer("google", [], health)
    with pytest.raises(ValueError):
        FailoverSynthesizer("riva", [], health)


async def test_callers_own_key_failures_do_not_cool_down_the_shared_engine() -> None:
    a = ScriptedSynth("a", fail_after=0)
    a.uses_caller_key = True  # type: ignore[attr-defined]
    health = EngineHealth(30)
    rec = FailoverSynthesizer("elevenlabs", [a, ScriptedSynth("b")], health)
    engine, _ = await rec.synthesize_with_engine(SynthesisRequest("hi", caller_api_key="their-key"))
    assert engine == "b" and "tts:a" not in health.snapshot()
    await rec.synthesize_with_engine(SynthesisRequest("hi"))
    assert health.snapshot()["tts:a"]["state"] == "cooling_down"


class CancelsItsReader:
    """Like the gRPC adapters: a sender task reads the audio and is cancelled
    when the upstream stream fails, possibly while it waits for more audio."""

    name = "a"
    description = "a"

    async def recognize(self, audio: AsyncIterator[bytes], config: RecognitionConfig) -> AsyncIterator[Transcript]:
        import asyncio

        got: list[bytes] = []
        two = asyncio.Event()

        async def sender() -> None:
            async for chunk in audio:
                got.append(chunk)
                if len(got) == 2:
                    two.set()

        task = asyncio.create_task(sender())
        await two.wait()
        task.cancel()
        raise UpstreamUnavailable("Failed to connect to a server")
        yield  # pragma: no cover


async def test_a_cancelled_reader_never_cancels_the_live_source() -> None:
    import asyncio

    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def live() -> AsyncIterator[bytes]:
        while (chunk := await queue.get()) is not None:
            yield chunk

    b = ScriptedRecognizer("b")
    rec = FailoverRecognizer("riva", [CancelsItsReader(), b], EngineHealth(30))

    async def feed() -> None:
        for c in CHUNKS:
            queue.put_nowait(c)
            await asyncio.sleep(0.001)
        queue.put_nowait(None)

    feeder = asyncio.create_task(feed())
    out = [t async for t in rec.recognize(live(), RecognitionConfig())]
    await feeder
    assert out == [Transcript("b heard 1000", engine="b")]
    assert b"".join(b.heard) == b"".join(CHUNKS)


async def test_tts_stream_falls_over_before_the_first_chunk() -> None:
    health = EngineHealth(30)
    rec = FailoverSynthesizer("elevenlabs", [ScriptedSynth("a", fail_after=0), ScriptedSynth("b")], health)
    out = [(name, c.data) async for name, c in rec.stream(SynthesisRequest("hi"))]
    assert out == [("b", b"bb")] * 3
    assert health.snapshot()["tts:a"]["state"] == "cooling_down"


async def test_tts_stream_failure_after_audio_left_is_raised_not_replayed() -> None:
    health = EngineHealth(30)
    rec = FailoverSynthesizer("elevenlabs", [ScriptedSynth("a", fail_after=2), ScriptedSynth("b")], health)
    got: list[tuple[str, bytes]] = []
    with pytest.raises(UpstreamUnavailable):
        async for name, chunk in rec.stream(SynthesisRequest("hi")):
            got.append((name, chunk.data))
    assert got == [("a", b"aa")] * 2  # nothing from b: the listener would hear the start twice
    assert health.snapshot()["tts:a"]["state"] == "cooling_down"
    # The next stream starts on b.
    assert [n async for n, _ in rec.stream(SynthesisRequest("hi"))] == ["b"] * 3


async def test_tts_stream_permanent_failure_is_raised() -> None:
    err = UpstreamAuthError("a rejected the gateway's credentials")
    rec = FailoverSynthesizer("elevenlabs", [ScriptedSynth("a", 0, err), ScriptedSynth("b")], EngineHealth(30))
    with pytest.raises(UpstreamAuthError):
        [x async for x in rec.stream(SynthesisRequest("hi"))]
