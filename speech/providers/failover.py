"""Routing by composition: an ordered chain of engines behind one interface.

:class:`FailoverRecognizer` and :class:`FailoverSynthesizer` implement the same
one-method interfaces as the engines they wrap. They try the chain's engines
in order; a *retryable* failure (:attr:`SpeechError.retryable`: connect
refused, UNAVAILABLE, DEADLINE_EXCEEDED, 5xx, 429, a dropped stream) moves on
to the next engine and puts the failed one in a cool-down; a *permanent*
failure (bad credentials, invalid argument, not configured) is raised as it is.

ASR failover replays the utterance: the audio of the utterance in flight is
kept (at most one utterance, capped by the VAD's ``max_utterance_ms``) so the
next engine receives it from its first byte and the client still gets its
final transcript. Interim transcripts pass straight through; finals are held
until their engine completes, so a failure after a partial answer never
sends words twice. Every transcript is stamped with the engine that made it,
and a successful run always ends with at least one final (possibly empty),
so the caller can bill the engine that answered exactly once.

Cool-down: an engine that failed with a retryable error is skipped for
``cooldown_s``; when every engine of a chain is cooling down they are still
tried, soonest-recovering first, rather than refusing service.

Observer: an app may set :attr:`EngineHealth.observer` (its metrics) to hear
of every engine failure, a failover absorbed or not, and of each TTS engine's
time to its first audio chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from speech.errors import SpeechError
from speech.providers.base import (
    AudioChunk,
    RecognitionConfig,
    Recognizer,
    SynthesisRequest,
    Synthesizer,
    Transcript,
)

log = logging.getLogger("speech.failover")


@dataclass
class EngineState:
    failures: int = 0
    cooling_until: float = 0.0
    last_error: str | None = None
    last_error_at: float | None = None


class EngineObserver(Protocol):
    def upstream_error(self, kind: str, engine: str, error: BaseException) -> None: ...

    def first_audio(self, kind: str, engine: str, seconds: float) -> None: ...


class EngineHealth:
    """Cool-down bookkeeping, one entry per ``kind:engine`` (e.g. ``asr:riva``)."""

    def __init__(self, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._state: dict[str, EngineState] = {}
        self.observer: EngineObserver | None = None

    def _get(self, key: str) -> EngineState:
        return self._state.setdefault(key, EngineState())

    def cooling(self, key: str) -> bool:
        state = self._state.get(key)
        return state is not None and state.cooling_until > self._clock()

    def order(self, kind: str, names: Sequence[str]) -> list[str]:
        """The chain with engines in cool-down moved behind the healthy ones."""
        healthy = [n for n in names if not self.cooling(f"{kind}:{n}")]
        cooling = sorted(
            (n for n in names if self.cooling(f"{kind}:{n}")),
            key=lambda n: self._get(f"{kind}:{n}").cooling_until,
        )
        return healthy + cooling

    def failed(self, key: str, error: SpeechError) -> None:
        state = self._get(key)
        now = self._clock()
        state.failures += 1
        state.last_error = error.message
        state.last_error_at = now
        if error.retryable:
            state.cooling_until = now + self.cooldown_s

    def succeeded(self, key: str) -> None:
        state = self._state.get(key)
        if state is None:
            return
        state.failures = 0
        state.cooling_until = 0.0

    def snapshot(self) -> dict[str, dict[str, object]]:
        """For ``/healthz``: each engine that has ever failed, and its cool-down."""
        now = self._clock()
        out: dict[str, dict[str, object]] = {}
        for key, state in sorted(self._state.items()):
            cooling = state.cooling_until > now
            out[key] = {
                "state": "cooling_down" if cooling else "ok",
                "retry_in_s": round(state.cooling_until - now, 1) if cooling else 0,
                "consecutive_failures": state.failures,
                "last_error": state.last_error,
                "last_error_age_s": None if state.last_error_at is None else round(now - state.last_error_at, 1),
            }
        return out


class _Replay:
    """The live audio of one utterance, readable from the start any number of times.

    A pump task owned by the replay reads the source; readers only wait for
    it. So an engine that is cancelled while it waits for audio (adapters
    cancel their sender tasks when a stream fails) never cancels the source
    itself, and the next engine still receives every chunk.
    """

    def __init__(self, source: AsyncIterator[bytes]) -> None:
        self._source = source
        self._chunks: list[bytes] = []
        self._done = False
        self._error: BaseException | None = None
        self._changed = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        try:
            async for chunk in self._source:
                self._chunks.append(chunk)
                self._notify()
        except Exception as exc:  # handed to the readers
            self._error = exc
        finally:
            self._done = True
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def reader(self, *, pauses: bool = False) -> AsyncIterator[bytes]:
        """The audio from its first chunk; pause hints (empty chunks) only
        for engines that take them (``pauses``)."""
        if self._pump is None:
            self._pump = asyncio.create_task(self._run())
        i = 0
        while True:
            if i < len(self._chunks):
                chunk = self._chunks[i]
                i += 1
                if chunk or pauses:
                    yield chunk
            elif self._done:
                if self._error is not None:
                    raise self._error
                return
            else:
                await self._changed.wait()

    async def drain(self) -> None:
        """Wait until the source is exhausted (an engine may stop reading early)."""
        if self._pump is None:
            self._pump = asyncio.create_task(self._run())
        await asyncio.shield(self._pump)

    async def aclose(self) -> None:
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump


class _Chain:
    """What both chains share: the engines in order, and what a failure does."""

    kind = ""

    def __init__(self, route: str, chain: Sequence[Any], health: EngineHealth) -> None:
        if not chain:
            raise ValueError("an engine chain needs at least one engine")
        self.route = route
        self.chain = {e.name: e for e in chain}
        self.names = [e.name for e in chain]
        self.health = health
        self.name = self.names[0]
        self.description = " -> ".join(f"{e.name} [{e.description}]" for e in chain)

    def _observe_error(self, name: str, exc: SpeechError) -> None:
        if self.health.observer is not None:
            self.health.observer.upstream_error(self.kind, name, exc)

    def _observe_first_audio(self, name: str, since: float) -> None:
        if self.health.observer is not None:
            self.health.observer.first_audio(self.kind, name, time.monotonic() - since)

    def _failed(self, name: str, exc: SpeechError, *, record: bool = True) -> None:
        """Note the failure; re-raise a permanent one, log a retryable one."""
        self._observe_error(name, exc)
        if record:
            self.health.failed(f"{self.kind}:{name}", exc)
        if not exc.retryable:
            raise exc
        log.warning("%s route %s: engine %s failed (%s); trying the next", self.kind, self.route, name, exc)


class FailoverRecognizer(_Chain):
    kind = "asr"

    def __init__(self, route: str, chain: Sequence[Recognizer], health: EngineHealth) -> None:
        super().__init__(route, chain, health)

    async def recognize(self, audio: AsyncIterator[bytes], config: RecognitionConfig) -> AsyncIterator[Transcript]:
        replay = _Replay(audio)
        try:
            async for transcript in self._run(replay, config):
                yield transcript
        finally:
            await replay.aclose()

    async def _run(self, replay: _Replay, config: RecognitionConfig) -> AsyncIterator[Transcript]:
        last: SpeechError | None = None
        for name in self.health.order(self.kind, self.names):
            engine = self.chain[name]
            finals: list[Transcript] = []
            audio = replay.reader(pauses=getattr(engine, "pause_hints", False))
            try:
                async for t in engine.recognize(audio, config):
                    stamped = dataclasses.replace(t, engine=name)
                    if t.is_final:
                        finals.append(stamped)
                    else:
                        yield stamped
            except SpeechError as exc:
                self._failed(name, exc)
                last = exc
                continue
            self.health.succeeded(f"{self.kind}:{name}")
            await replay.drain()
            for f in finals:
                yield f
            if not finals:
                yield Transcript(text="", is_final=True, engine=name)
            return
        assert last is not None
        raise last


class FailoverSynthesizer(_Chain):
    """TTS chain. Audio is collected per engine and released once the engine
    has finished, so a failure half-way through falls over to the next engine
    instead of delivering a truncated file."""

    kind = "tts"

    def __init__(self, route: str, chain: Sequence[Synthesizer], health: EngineHealth) -> None:
        super().__init__(route, chain, health)

    async def synthesize_with_engine(self, request: SynthesisRequest) -> tuple[str, list[AudioChunk]]:
        """(the engine that answered, its complete audio)."""
        last: SpeechError | None = None
        for name in self.health.order(self.kind, self.names):
            engine = self.chain[name]
            caller_owned = bool(request.caller_api_key) and getattr(engine, "uses_caller_key", False)
            chunks: list[AudioChunk] = []
            since = time.monotonic()
            try:
                async for chunk in engine.synthesize(request):
                    if not chunks:
                        self._observe_first_audio(name, since)
                    chunks.append(chunk)
            except SpeechError as exc:
                self._failed(name, exc, record=not caller_owned)
                last = exc
                continue
            self.health.succeeded(f"{self.kind}:{name}")
            return name, chunks
        assert last is not None
        raise last

    async def stream(self, request: SynthesisRequest) -> AsyncIterator[tuple[str, AudioChunk]]:
        """(engine, chunk) pairs as the engine produces them, for streamed TTS.

        An engine failing before its first chunk falls over to the next one;
        once audio has been handed on, a failure is raised as it is (the
        listener already has part of this engine's audio, and replaying the
        text on another voice would repeat it)."""
        last: SpeechError | None = None
        for name in self.health.order(self.kind, self.names):
            engine = self.chain[name]
            caller_owned = bool(request.caller_api_key) and getattr(engine, "uses_caller_key", False)
            started = False
            since = time.monotonic()
            try:
                async for chunk in engine.synthesize(request):
                    if not started:
                        started = True
                        self._observe_first_audio(name, since)
                    yield name, chunk
            except SpeechError as exc:
                if started:
                    self._observe_error(name, exc)
                    if not caller_owned:
                        self.health.failed(f"{self.kind}:{name}", exc)
                    raise
                self._failed(name, exc, record=not caller_owned)
                last = exc
                continue
            self.health.succeeded(f"{self.kind}:{name}")
            return
        assert last is not None
        raise last

    async def synthesize(self, request: SynthesisRequest) -> AsyncIterator[AudioChunk]:
        _, chunks = await self.synthesize_with_engine(request)
        for chunk in chunks:
            yield chunk
