"""The streaming ASR websocket: a thin bridge from sockets to the Sans-I/O session.

One :class:`Connection` per websocket. Its read loop feeds frames to
:class:`~speech.pipeline.session.AsrSession` and acts on the events: each
utterance gets its own recognizer stream (an asyncio task fed through a
queue), so a slow decode never stalls this loop or any other connection.
Replies go out in utterance order, each after its usage record is committed.

Query options (all optional): ``api_key``, ``rate``, ``language_code``,
``encoding`` (linear16 | mulaw | alaw), ``channels`` (1 | 2) and the VAD
settings ``vad_mode``, ``start_ms``, ``preroll_ms``, ``silence_ms``,
``tail_ms``, ``max_utterance_ms``. A first ``{"type": "Config", ...}`` frame
may declare the format instead. The stream closes with 4408 after
``limits.idle_timeout_s`` without audio or KeepAlive, and with 4409 after
``limits.max_session_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.datastructures import QueryParams
from starlette.websockets import WebSocket, WebSocketState

from speech.api.auth import extract_key
from speech.api.gateway import Gateway
from speech.errors import (
    CLOSE_NORMAL,
    BadRequest,
    EngineError,
    IdleTimeout,
    InvalidFrame,
    NotFound,
    SessionTooLong,
    SpeechError,
)
from speech.metering.prices import format_omcu
from speech.metering.records import ApiKey, UsageIn
from speech.observability.metrics import AsrStreamMeter
from speech.pipeline import frames
from speech.pipeline.codecs import ENCODINGS
from speech.pipeline.session import (
    AsrSession,
    CloseRequested,
    Configured,
    FrameRejected,
    KeptAlive,
    SessionConfig,
    SessionEvent,
    SessionFailed,
    SpeechAudio,
    SpeechEnded,
    SpeechPaused,
    SpeechStarted,
)
from speech.providers.base import PAUSE, RecognitionConfig, Transcript
from speech.providers.failover import FailoverRecognizer
from speech.settings import Settings, VadSettings

log = logging.getLogger("speech.asr")

# query name -> VadSettings field
VAD_QUERY = {
    "vad_mode": "mode",
    "start_ms": "start_ms",
    "preroll_ms": "preroll_ms",
    "silence_ms": "silence_ms",
    "tail_ms": "tail_ms",
    "max_utterance_ms": "max_utterance_ms",
}


def session_config(settings: Settings, query: QueryParams) -> SessionConfig:
    """Per-connection options from the query string, validated like settings."""
    changes: dict[str, int] = {}
    meta = {f.name: f.metadata for f in dataclasses.fields(VadSettings)}
    for qname, fname in VAD_QUERY.items():
        raw = query.get(qname)
        if raw is None:
            continue
        lo, hi = meta[fname].get("min"), meta[fname].get("max")
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or (lo is not None and value < lo) or (hi is not None and value > hi):
            raise BadRequest(f"query option '{qname}' must be an integer between {lo} and {hi}")
        changes[fname] = value
    rate = 16000
    if "rate" in query:
        try:
            rate = frames.check_rate(int(query["rate"]))
        except ValueError as exc:
            raise BadRequest("query option 'rate' must be an integer number of Hz") from exc
        except InvalidFrame as exc:
            raise BadRequest(f"query option {exc.message}") from exc
    language = query.get("language_code", "en-US") or "en-US"
    encoding = query.get("encoding", "linear16")
    if encoding not in ENCODINGS:
        raise BadRequest(f"query option 'encoding' must be one of {', '.join(ENCODINGS)}")
    channels = query.get("channels", "1")
    if channels not in ("1", "2"):
        raise BadRequest("query option 'channels' must be 1 or 2")
    return SessionConfig(
        vad=dataclasses.replace(settings.vad, **changes),
        rate=rate,
        language_code=language,
        max_frame_bytes=settings.limits.max_frame_bytes,
        max_invalid_frames=settings.limits.max_invalid_frames,
        encoding=encoding,
        channels=int(channels),
        # Recognizers that can start decoding at a pause get a hint (PAUSE).
        pause_events=True,
    )


async def asr_endpoint(ws: WebSocket) -> None:
    gateway: Gateway = ws.app.state.gateway
    route = ws.path_params.get("provider") or gateway.settings.routes.root_asr
    await ws.accept()
    await Connection(ws, gateway, route).run()


@dataclass
class Utterance:
    index: int
    language_code: str
    queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    ended: SpeechEnded | None = None
    task: asyncio.Task[None] | None = None
    forwarded_bytes: int = 0
    reservation: str = ""
    start_ms: int = 0
    # Audio the reserved credit covers; None = the whole utterance is covered.
    budget_bytes: int | None = None
    ended_at: float = 0.0  # time.monotonic() when its audio ended


class Connection:
    def __init__(self, ws: WebSocket, gateway: Gateway, route: str) -> None:
        self.ws = ws
        self.gateway = gateway
        self.route = route
        self.id = uuid.uuid4().hex
        self.account: ApiKey | None = None
        self.recognizer: FailoverRecognizer | None = None
        self.open: Utterance | None = None
        self.last_task: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self._send_lock = asyncio.Lock()
        self._closing = False
        self._disconnected = False
        self._close_with: SpeechError | None = None
        self._terminated = False
        self.session: AsrSession | None = None
        self.lease_id: str | None = None
        self.key_id = ""
        self.utterances = 0
        self.billed_ms = 0
        self.billed_uomcu = 0
        self.events = ws.query_params.get("events", "").lower() in ("1", "true", "yes")
        self._close_requested = False
        self.meter: AsrStreamMeter | None = None

    # ------------------------------------------------------------ main loop

    async def run(self) -> None:
        try:
            session = await self._start()
        except SpeechError as exc:
            self._fail(exc)
            await self._close_down()
            return
        assert self.recognizer is not None
        self.meter = meter = self.gateway.metrics.asr_stream(self.route, self.recognizer.name)
        meter.opened()
        streams = self.gateway.streams
        if streams is not None:
            streams.add(self)
        try:
            limits = self.gateway.settings.limits
            loop = asyncio.get_running_loop()
            session_deadline = loop.time() + limits.max_session_s
            last_activity = loop.time()
            try:
                while not self._closing:
                    idle_deadline = last_activity + limits.idle_timeout_s
                    try:
                        # A deadline, not wait_for: no extra task per frame.
                        async with asyncio.timeout_at(min(idle_deadline, session_deadline)):
                            message = await self.ws.receive()
                    except TimeoutError:
                        if loop.time() >= session_deadline:
                            self._fail(SessionTooLong(f"session reached its maximum of {limits.max_session_s:g} s"))
                        else:
                            self._fail(IdleTimeout(f"no audio or KeepAlive for {limits.idle_timeout_s:g} s"))
                        break
                    if message["type"] == "websocket.disconnect":
                        self._disconnected = True
                        break
                    accepted = session.frames_accepted
                    if message.get("text") is not None:
                        events = session.receive_text(message["text"])
                    elif message.get("bytes") is not None:
                        events = session.receive_bytes(message["bytes"])
                    else:
                        continue
                    if session.frames_accepted != accepted or any(isinstance(e, KeptAlive) for e in events):
                        last_activity = loop.time()
                    handling = loop.time()
                    for event in events:
                        await self._handle(event)
                    if session.received_ms >= meter.next_flush_ms:  # long silences count too
                        meter.received(session.received_ms)
                    # Time the gateway spent (e.g. under backpressure) is not client idleness.
                    last_activity += loop.time() - handling
            finally:
                await self._settle()
        finally:
            meter.closed(session.received_ms)
            if streams is not None:
                streams.remove(self)
            if self.lease_id is not None:
                await asyncio.shield(self.gateway.ledger.release_stream(self.lease_id))
        await self._close_down()

    async def _start(self) -> AsrSession:
        gateway = self.gateway
        if self.route not in gateway.settings.routes.asr:
            raise NotFound(f"unsupported ASR provider: {self.route}")
        self.account = key = await gateway.authenticate(extract_key(self.ws.headers, self.ws.query_params))
        self.key_id = key.key_id
        config = session_config(gateway.settings, self.ws.query_params)
        self.recognizer = gateway.require_engines().recognizer(self.route)
        await gateway.admit(key)
        await gateway.require_balance(key)
        self.lease_id = await gateway.acquire_stream(key, self.id)
        self.session = AsrSession(config)
        return self.session

    async def _handle(self, event: SessionEvent) -> None:
        if isinstance(event, SpeechAudio):
            utt = self.open
            if utt is not None and utt.index == event.utterance:
                pcm = event.pcm
                if utt.budget_bytes is not None:
                    # Never send upstream (nor bill) audio past the credit held.
                    pcm = pcm[: max(0, utt.budget_bytes - utt.forwarded_bytes)]
                if pcm:
                    utt.forwarded_bytes += len(pcm)
                    utt.queue.put_nowait(pcm)
        elif isinstance(event, SpeechPaused):
            if self.open is not None and self.open.index == event.utterance:
                self.open.queue.put_nowait(PAUSE)
        elif isinstance(event, SpeechStarted):
            await self._begin(event)
        elif isinstance(event, SpeechEnded):
            if self.open is not None and self.open.index == event.utterance:
                self.open.ended = event
                self.open.ended_at = time.monotonic()
                if self.meter is not None and self.session is not None:
                    self.meter.utterance_ended(self.session.received_ms, self.open.forwarded_bytes)
                self.open.queue.put_nowait(None)
                self.open = None
        elif isinstance(event, FrameRejected):
            await self._send(self._error(event.message))
        elif isinstance(event, SessionFailed):
            self._fail(event.error)
        elif isinstance(event, CloseRequested):
            self._closing = True
            self._close_requested = True
        elif isinstance(event, Configured):
            unknown = sorted(k for k in event.options if k != "events")
            if unknown:
                await self._send(self._error(f"unknown Config option(s): {', '.join(unknown)}"))
            if "events" in event.options:
                if not isinstance(event.options["events"], bool):
                    await self._send(self._error("'events' must be true or false"))
                else:
                    self.events = event.options["events"]

    async def _begin(self, event: SpeechStarted) -> None:
        assert self.account is not None and self.recognizer is not None and self.session is not None
        # Flow control: with too many utterances of this stream still being
        # recognized, stop reading until the oldest is done.
        bound = self.gateway.settings.limits.max_pending_utterances
        while len(self.tasks) >= bound:
            await asyncio.wait(set(self.tasks), return_when=asyncio.FIRST_COMPLETED)
        # Hold credit for the whole utterance before its audio goes upstream;
        # if less is available, the utterance is cut where the credit ends.
        reservation = f"asr:{self.id}:{event.utterance}"
        prices, route = self.gateway.prices, self.route
        want = prices.asr_cost(route, self.session.config.vad.max_utterance_ms)
        try:
            granted = await self.gateway.reserve(reservation, self.account, want)
        except SpeechError as exc:
            self._fail(exc)
            return
        per_minute = prices.asr_unit_price(route)
        budget: int | None = None
        if per_minute and granted < want:
            cap_ms = granted * 60_000 // per_minute  # cost(cap_ms) <= granted
            self.session.cap_utterance(event.utterance, cap_ms)
            budget = cap_ms * 32  # 16 kHz PCM16: 32 bytes per ms
        utt = Utterance(
            event.utterance, event.language_code, reservation=reservation, start_ms=event.start_ms, budget_bytes=budget
        )
        if self.events:
            await self._send({"type": "speech_started", "utterance": event.utterance, "start": event.start_ms / 1000})
        task = asyncio.create_task(self._recognize(utt, self.last_task, self.recognizer), name=reservation)
        utt.task = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        self.open = utt
        self.last_task = task

    # ---------------------------------------------------------- utterances

    async def _recognize(
        self, utt: Utterance, previous: asyncio.Task[None] | None, recognizer: FailoverRecognizer
    ) -> None:
        try:
            await self._recognize_and_settle(utt, previous, recognizer)
        except asyncio.CancelledError:
            # Abandoned (the client left mid-utterance): nothing was decoded,
            # nothing is billed, the held credit goes back.
            await self.gateway.release(utt.reservation)
            raise

    async def _recognize_and_settle(
        self, utt: Utterance, previous: asyncio.Task[None] | None, recognizer: FailoverRecognizer
    ) -> None:
        texts: list[str] = []
        finals: list[Transcript] = []
        error: SpeechError | None = None
        engine = recognizer.name
        timed = False
        try:
            config = RecognitionConfig(language_code=utt.language_code, interim_results=self.events)
            async for transcript in recognizer.recognize(_drain(utt.queue), config):
                if transcript.is_final:
                    engine = transcript.engine or engine
                    if not timed and self.meter is not None:
                        timed = True
                        self.meter.final(engine, utt.ended_at)
                    if transcript.text:
                        texts.append(transcript.text)
                        finals.append(transcript)
                elif self.events and transcript.text:
                    await self._send(
                        {
                            "type": "interim",
                            "utterance": utt.index,
                            "text": transcript.text,
                            "engine": transcript.engine,
                        }
                    )
        except SpeechError as exc:
            error = exc
        except Exception:
            log.exception("recognizer %s failed", recognizer.name)
            error = EngineError(f"{recognizer.name} recognizer failed")
        if previous is not None:  # replies leave in utterance order
            with contextlib.suppress(BaseException):
                await asyncio.shield(previous)
        ended = utt.ended
        if error is not None or ended is None:
            await self.gateway.release(utt.reservation)
            if error is not None:
                await self._send(self._error(error.message))
            return
        assert self.account is not None
        # Usage is committed (and the reservation settled) before the reply leaves.
        record, _ = await self.gateway.ledger.settle(
            utt.reservation,
            UsageIn.asr(
                self.gateway.prices,
                idempotency_key=utt.reservation,
                key_id=self.account.key_id,
                provider=self.route,
                engine=engine,
                # What actually went upstream (the VAD's count, unless the
                # credit held cut the utterance's first frames short).
                audio_ms=min(ended.forwarded_ms, utt.forwarded_bytes // 32),
                received_ms=ended.received_ms,
            ),
        )
        assert record is not None
        self.utterances += 1
        self.billed_ms += record.audio_ms or 0
        self.billed_uomcu += record.cost_uomcu
        text = " ".join(texts).strip()
        if not self.events:
            if text:
                await self._send({"asr_reply": text})
            return
        if text:
            await self._send(final_event(utt, ended, finals, text, engine))
        await self._send(
            {"type": "utterance_end", "utterance": utt.index, "end": ended.end_ms / 1000, "reason": ended.reason}
        )
        await self._send(
            {
                "type": "usage",
                "utterance": utt.index,
                "seconds": (record.audio_ms or 0) / 1000,
                "cost_omcu": format_omcu(record.cost_uomcu),
                "session_seconds": self.billed_ms / 1000,
                "session_cost_omcu": format_omcu(self.billed_uomcu),
            }
        )

    # ------------------------------------------------------------- output

    async def _send(self, payload: dict[str, object]) -> None:
        if self.ws.application_state is not WebSocketState.CONNECTED:
            return
        async with self._send_lock:
            try:
                await self.ws.send_text(json.dumps(payload))
            except Exception:  # the peer went away; the read loop will notice
                log.debug("send failed on connection %s", self.id)

    def _error(self, message: str) -> dict[str, object]:
        return {"type": "error", "error": message} if self.events else {"error": message}

    def live_reservations(self) -> list[str]:
        """Reservations of utterances not settled yet (renewed while they run)."""
        return [t.get_name() for t in self.tasks if not t.done()]

    async def terminate(self, error: SpeechError) -> None:
        """Close this stream from outside (its key was revoked on some replica)."""
        if self._terminated:
            return
        self._terminated = True
        self._closing = True
        self._close_with = error
        await self._send(self._error(error.message))
        await self._close(error.close_code, error.message)

    def _fail(self, exc: SpeechError) -> None:
        """Stop reading; the error frame and its close code follow the replies
        still owed for utterances that already ended."""
        self._closing = True
        if self._close_with is None:
            self._close_with = exc

    async def _settle(self) -> None:
        """Abandon the utterance still open (unbilled: its audio never reached
        a decode) and wait for every ended one to be billed and answered."""
        if self.open is not None:
            abandoned, self.open = self.open, None
            if self.meter is not None:
                self.meter.forwarded(abandoned.forwarded_bytes)  # it went upstream all the same
            if abandoned.task is not None:
                abandoned.task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _close_down(self) -> None:
        if self._close_with is not None and not self._terminated:
            await self._send(self._error(self._close_with.message))
            await self._close(self._close_with.close_code, self._close_with.message)
        elif not self._disconnected:
            if self.events and self._close_requested:
                await self._send(
                    {
                        "type": "summary",
                        "utterances": self.utterances,
                        "seconds": self.billed_ms / 1000,
                        "cost_omcu": format_omcu(self.billed_uomcu),
                    }
                )
            await self._close(CLOSE_NORMAL, "stream closed")
        log.info(
            "asr session route=%s engine=%s utterances=%d billed_ms=%d close=%s",
            self.route,
            self.recognizer.name if self.recognizer else "-",
            self.utterances,
            self.billed_ms,
            self._close_with.close_code if self._close_with else ("client" if self._disconnected else CLOSE_NORMAL),
        )

    async def _close(self, code: int, reason: str = "") -> None:
        if self.ws.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.ws.close(code, reason.encode("utf-8")[:120].decode("utf-8", "ignore"))


def final_event(
    utt: Utterance, ended: SpeechEnded, finals: list[Transcript], text: str, engine: str
) -> dict[str, object]:
    """The rich final: the OM1 ``asr_reply`` plus times (stream seconds),
    confidence and words where the engine gives them."""
    confidences = [t.confidence for t in finals if t.confidence is not None]
    words = [
        {
            "word": w.word,
            "start": (utt.start_ms + w.start_ms) / 1000,
            "end": (utt.start_ms + w.end_ms) / 1000,
            "confidence": w.confidence,
        }
        for t in finals
        for w in t.words
    ]
    return {
        "type": "final",
        "utterance": utt.index,
        "asr_reply": text,
        "start": ended.start_ms / 1000,
        "end": ended.end_ms / 1000,
        "confidence": round(sum(confidences) / len(confidences), 4) if confidences else None,
        "words": words,
        "engine": engine,
    }


async def _drain(queue: asyncio.Queue[bytes | None]) -> AsyncIterator[bytes]:
    while True:
        chunk = await queue.get()
        if chunk is None:
            return
        yield chunk
