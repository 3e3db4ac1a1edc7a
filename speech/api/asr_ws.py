"""The streaming ASR websocket: a thin bridge from sockets to the Sans-I/O session.

One :class:`Connection` per websocket. Its read loop feeds frames to
:class:`~speech.pipeline.session.AsrSession` and acts on the events: each
utterance gets its own recognizer stream (an asyncio task fed through a
queue), so a slow decode never stalls this loop or any other connection.
Replies go out in utterance order, each after its usage record is committed.

Query options (all optional): ``api_key``, ``rate``, ``language_code`` and the
VAD settings ``vad_mode``, ``start_ms``, ``preroll_ms``, ``silence_ms``,
``tail_ms``, ``max_utterance_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
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
    InvalidFrame,
    NotFound,
    SpeechError,
)
from speech.metering.ledger import ApiKey, UsageIn
from speech.pipeline import frames
from speech.pipeline.session import (
    AsrSession,
    CloseRequested,
    FrameRejected,
    SessionConfig,
    SessionEvent,
    SessionFailed,
    SpeechAudio,
    SpeechEnded,
    SpeechStarted,
)
from speech.providers.base import RecognitionConfig
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
    return SessionConfig(
        vad=dataclasses.replace(settings.vad, **changes),
        rate=rate,
        language_code=language,
        max_frame_bytes=settings.limits.max_frame_bytes,
        max_invalid_frames=settings.limits.max_invalid_frames,
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
    estimate: int = 0  # µOMCU, known once the utterance has ended


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
        self.unsettled_uomcu = 0
        self.utterances = 0
        self.billed_ms = 0

    # ------------------------------------------------------------ main loop

    async def run(self) -> None:
        try:
            session = await self._start()
        except SpeechError as exc:
            self._fail(exc)
        else:
            try:
                while not self._closing:
                    message = await self.ws.receive()
                    if message["type"] == "websocket.disconnect":
                        self._disconnected = True
                        break
                    if message.get("text") is not None:
                        events = session.receive_text(message["text"])
                    elif message.get("bytes") is not None:
                        events = session.receive_bytes(message["bytes"])
                    else:
                        continue
                    for event in events:
                        await self._handle(event)
            finally:
                await self._settle()
        await self._close_down()

    async def _start(self) -> AsrSession:
        gateway = self.gateway
        if self.route not in gateway.settings.routes.asr:
            raise NotFound(f"unsupported ASR provider: {self.route}")
        self.account = await gateway.authenticate(extract_key(self.ws.headers, self.ws.query_params))
        await gateway.require_balance(self.account)
        self.recognizer = gateway.require_engines().recognizer(self.route)
        return AsrSession(session_config(gateway.settings, self.ws.query_params))

    async def _handle(self, event: SessionEvent) -> None:
        if isinstance(event, SpeechAudio):
            if self.open is not None and self.open.index == event.utterance:
                self.open.forwarded_bytes += len(event.pcm)
                self.open.queue.put_nowait(event.pcm)
        elif isinstance(event, SpeechStarted):
            await self._begin(event)
        elif isinstance(event, SpeechEnded):
            if self.open is not None and self.open.index == event.utterance:
                self.open.ended = event
                self.open.estimate = self.gateway.prices.asr_cost(self.route, event.forwarded_ms)
                self.unsettled_uomcu += self.open.estimate
                self.open.queue.put_nowait(None)
                self.open = None
        elif isinstance(event, FrameRejected):
            await self._send({"error": event.message})
        elif isinstance(event, SessionFailed):
            self._fail(event.error)
        elif isinstance(event, CloseRequested):
            self._closing = True

    async def _begin(self, event: SpeechStarted) -> None:
        assert self.account is not None and self.recognizer is not None
        try:
            # Utterances still decoding are not billed yet; count them, so a
            # stream overspends by at most the utterance in flight.
            await self.gateway.require_balance(self.account, reserved=self.unsettled_uomcu)
        except SpeechError as exc:
            self._fail(exc)
            return
        utt = Utterance(event.utterance, event.language_code)
        task = asyncio.create_task(self._recognize(utt, self.last_task, self.recognizer))
        utt.task = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        self.open = utt
        self.last_task = task

    # ---------------------------------------------------------- utterances

    async def _recognize(
        self, utt: Utterance, previous: asyncio.Task[None] | None, recognizer: FailoverRecognizer
    ) -> None:
        texts: list[str] = []
        error: SpeechError | None = None
        engine = recognizer.name
        try:
            config = RecognitionConfig(language_code=utt.language_code)
            async for transcript in recognizer.recognize(_drain(utt.queue), config):
                if transcript.is_final:
                    engine = transcript.engine or engine
                    if transcript.text:
                        texts.append(transcript.text)
        except SpeechError as exc:
            error = exc
        except Exception:
            log.exception("recognizer %s failed", recognizer.name)
            error = EngineError(f"{recognizer.name} recognizer failed")
        if previous is not None:  # replies leave in utterance order
            with contextlib.suppress(BaseException):
                await asyncio.shield(previous)
        self.unsettled_uomcu -= utt.estimate
        if error is not None:
            await self._send({"error": error.message})
            return
        ended = utt.ended
        if ended is None:  # abandoned: the stream ended mid-utterance
            return
        assert self.account is not None
        await self.gateway.ledger.record_usage(
            UsageIn.asr(
                self.gateway.prices,
                idempotency_key=f"asr:{self.id}:{utt.index}",
                key_id=self.account.key_id,
                provider=self.route,
                engine=engine,
                audio_ms=ended.forwarded_ms,
                received_ms=ended.received_ms,
            )
        )
        self.utterances += 1
        self.billed_ms += ended.forwarded_ms
        text = " ".join(texts).strip()
        if text:
            await self._send({"asr_reply": text})

    # ------------------------------------------------------------- output

    async def _send(self, payload: dict[str, object]) -> None:
        if self.ws.application_state is not WebSocketState.CONNECTED:
            return
        async with self._send_lock:
            try:
                await self.ws.send_text(json.dumps(payload))
            except Exception:  # the peer went away; the read loop will notice
                log.debug("send failed on connection %s", self.id)

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
            if abandoned.task is not None:
                abandoned.task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _close_down(self) -> None:
        if self._close_with is not None:
            await self._send(self._close_with.to_json())
            await self._close(self._close_with.close_code, self._close_with.message)
        elif not self._disconnected:
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


async def _drain(queue: asyncio.Queue[bytes | None]) -> AsyncIterator[bytes]:
    while True:
        chunk = await queue.get()
        if chunk is None:
            return
        yield chunk
