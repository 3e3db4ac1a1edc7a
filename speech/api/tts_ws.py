"""Websocket TTS in the spirit of ElevenLabs' stream-input: text pieces in, audio out.

``/api/core/{route}/tts/stream-input``. The key comes as for every endpoint
(header, Bearer or ``?api_key=``). Query options, all optional:
``output_format`` (the route's default), ``voice_id``, ``model_id``,
``language_code`` and ``binary`` (``true``: audio as binary frames instead of
base64 JSON).

Client -> server, JSON text frames:

* ``{"text": "Hello there. "}``: text to speak, in pieces of any size (an
  LLM's tokens). It is buffered and synthesized sentence by sentence.
* ``{"text": "...", "flush": true}``: also synthesize what is buffered now,
  even mid-sentence (end of a conversational turn).
* ``{"text": ""}``: end of input. The rest is synthesized, then
  ``{"isFinal": true, ...}`` is sent and the socket closes normally (1000).
* Whitespace-only text while nothing is buffered is a keepalive (ElevenLabs
  clients open with ``{"text": " "}``); it is neither spoken nor billed.
* The first message may carry ``voice_settings`` (an object) and
  ``elevenlabs_api_key`` (the caller's own ElevenLabs key, as on ``/tts``).

Server -> client: ``{"audio": base64, "isFinal": false, "segment": n}`` per
chunk (or binary frames), ``{"segment_end": n, "characters", "engine",
"cost_omcu"}`` after each sentence, ``{"isFinal": true, "characters",
"cost_omcu", "segments"}`` at the end, and ``{"error": "..."}`` for problems.
The audio of all sentences is one continuous stream of ``output_format``.

Billing: each sentence is reserved, synthesized and settled on its own (one
usage record per sentence, idempotency key ``<stream>:<n>``), so a replica
that dies mid-stream loses at most the sentence in flight, unbilled. A
sentence is billed once it was handed to an engine (a client leaving during
it pays for it); one every engine failed on is not billed. Without credit
for the next sentence the stream ends with 4402.

Flow control: sentences are synthesized one after the other, each only when
the previous one's audio has been handed to the transport, and the transport
waits when the client does not read; so a stalled reader stops its own
synthesis. Text received but not yet synthesized is bounded by
``tts.stream_max_pending_chars``: past it the gateway stops reading the
socket. Errors of one sentence (an engine failure after failover) are
reported with ``{"error", "segment"}`` and the stream goes on with the next.

Closes: 1000 after ``isFinal``; 4400 bad message; 4401 key revoked; 4402 no
credit; 4404 unknown route; 4408 no text for ``tts.stream_idle_timeout_s``
while nothing is being synthesized; 4409 ``limits.max_session_s``; 4429
stream or rate limits; 1013 engines not ready.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import uuid
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from speech.api.auth import extract_key
from speech.api.gateway import Gateway
from speech.api.tts_stream import SegmentSynthesizer
from speech.audio.encode import parse_output_format
from speech.errors import (
    CLOSE_NORMAL,
    BadRequest,
    IdleTimeout,
    NotFound,
    SessionTooLong,
    SpeechError,
)
from speech.metering.prices import format_omcu
from speech.metering.records import ApiKey, UsageIn
from speech.pipeline.sentences import SentenceSegmenter
from speech.providers.base import SynthesisRequest

log = logging.getLogger("speech.tts")

_END = object()  # end of input, in the segment queue
_FLUSH = object()


class _Gone(Exception):
    """The client went away while audio was being sent."""


async def tts_ws_endpoint(ws: WebSocket) -> None:
    await ws.accept()
    await TtsConnection(ws, ws.app.state.gateway, ws.path_params["provider"]).run()


class TtsConnection:
    def __init__(self, ws: WebSocket, gateway: Gateway, route: str) -> None:
        self.ws = ws
        self.gateway = gateway
        self.route = route
        self.id = uuid.uuid4().hex
        self.key_id = ""
        self.lease_id: str | None = None
        self.account: ApiKey | None = None
        self.synth: SegmentSynthesizer | None = None
        self.binary = ws.query_params.get("binary", "").lower() in ("1", "true", "yes")
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.pending_chars = 0
        self._room = asyncio.Event()
        self._room.set()
        self.busy = False  # a sentence is being synthesized
        self.idle_since = 0.0  # when the writer last finished a sentence
        self.segments = 0
        self.characters = 0
        self.cost_uomcu = 0
        self.live: str | None = None  # the reservation of the sentence in flight
        self._send_lock = asyncio.Lock()
        self._close_with: SpeechError | None = None
        self._terminated = False
        self._closed = False
        self._disconnected = False
        self._first = True

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        try:
            base = await self._start()
        except SpeechError as exc:
            await self._close_error(exc)
            return
        assert self.synth is not None
        active = self.gateway.metrics.active_streams("tts_ws", self.route, self.synth.chain.name)
        active.inc()
        streams = self.gateway.streams
        if streams is not None:
            streams.add(self)
        writer = asyncio.create_task(self._write(base), name=f"tts-ws:{self.id}")
        try:
            await self._read(writer)
            if self._close_with is None and not self._disconnected:
                await writer  # end of input: the rest is synthesized and isFinal sent
        finally:
            if not writer.done():
                writer.cancel()
            with contextlib.suppress(BaseException):
                await writer
            active.dec()
            if streams is not None:
                streams.remove(self)
            if self.lease_id is not None:
                await asyncio.shield(self.gateway.ledger.release_stream(self.lease_id))
        if self._close_with is not None:
            await self._close_error(self._close_with)
        elif not self._disconnected:
            await self._close(CLOSE_NORMAL, "stream closed")
        log.info(
            "tts stream-input route=%s segments=%d chars=%d cost_uomcu=%d close=%s",
            self.route,
            self.segments,
            self.characters,
            self.cost_uomcu,
            self._close_with.close_code if self._close_with else ("client" if self._disconnected else CLOSE_NORMAL),
        )

    async def _start(self) -> SynthesisRequest:
        gateway = self.gateway
        if self.route not in gateway.settings.routes.tts:
            raise NotFound(f"unsupported TTS provider: {self.route}")
        self.account = key = await gateway.authenticate(extract_key(self.ws.headers, self.ws.query_params))
        self.key_id = key.key_id
        query = self.ws.query_params
        fmt = parse_output_format(query.get("output_format") or gateway.settings.tts.default_format[self.route])
        chain = gateway.require_engines().synthesizer(self.route)
        await gateway.admit(key)
        await gateway.require_balance(key)
        self.lease_id = await gateway.acquire_stream(key, self.id)
        base = SynthesisRequest(
            text="",
            output_format=fmt.name,
            voice_id=query.get("voice_id") or None,
            model_id=query.get("model_id") or None,
            language_code=query.get("language_code") or None,
        )
        self.synth = SegmentSynthesizer(chain, base, fmt)
        return base

    # ------------------------------------------------------------- reading

    async def _read(self, writer: asyncio.Task[None]) -> None:
        settings = self.gateway.settings
        segmenter = SentenceSegmenter(settings.tts.segment_max_chars)
        loop = asyncio.get_running_loop()
        session_deadline = loop.time() + settings.limits.max_session_s
        idle_s = settings.tts.stream_idle_timeout_s
        last_text = loop.time()
        while self._close_with is None:
            # Flow control: too much text waiting, stop reading until it is spoken.
            while self.pending_chars > settings.tts.stream_max_pending_chars and not writer.done():
                self._room.clear()
                room = asyncio.ensure_future(self._room.wait())
                await asyncio.wait({writer, room}, return_when=asyncio.FIRST_COMPLETED)
                room.cancel()
            if writer.done():
                return
            speaking = self.busy or not self.queue.empty()
            # Idle means no text *and* nothing being spoken; while speaking, look again later.
            idle_deadline = loop.time() + idle_s if speaking else max(last_text, self.idle_since) + idle_s
            try:
                async with asyncio.timeout_at(min(session_deadline, idle_deadline)):
                    message = await self.ws.receive()
            except TimeoutError:
                if loop.time() < session_deadline and (self.busy or not self.queue.empty()):
                    continue
                if loop.time() >= session_deadline:
                    self._fail(SessionTooLong(f"session reached its maximum of {settings.limits.max_session_s:g} s"))
                else:
                    self._fail(IdleTimeout(f"no text for {idle_s:g} s"))
                return
            if message["type"] == "websocket.disconnect":
                self._disconnected = True
                return
            try:
                text, flush, end = self._parse(message)
            except BadRequest as exc:
                self._fail(exc)
                return
            if text.strip() or segmenter.pending:
                last_text = loop.time()
                for segment in segmenter.feed(text):
                    self._enqueue(segment)
            if flush or end:
                for segment in segmenter.flush():
                    self._enqueue(segment)
                self.queue.put_nowait(_FLUSH)
            if end:
                self.queue.put_nowait(_END)
                return

    def _parse(self, message: dict[str, Any]) -> tuple[str, bool, bool]:
        """(text, flush, end of input) of one frame, or BadRequest."""
        raw = message.get("text")
        if raw is None:
            raise BadRequest('send JSON text frames like {"text": "Hello. "}; binary frames are not accepted')
        if len(raw) > self.gateway.settings.limits.max_frame_bytes:
            raise BadRequest("message is too large")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise BadRequest("Invalid JSON") from exc
        if not isinstance(body, dict):
            raise BadRequest("each message must be a JSON object")
        if "text" not in body:
            raise BadRequest('missing \'text\' (send {"text": ""} to end the stream)')
        text = body["text"]
        if not isinstance(text, str):
            raise BadRequest("'text' must be a string")
        flush = body.get("flush", False)
        if not isinstance(flush, bool):
            raise BadRequest("'flush' must be true or false")
        if self._first:
            self._first = False
            self._configure(body)
        elif "voice_settings" in body or "elevenlabs_api_key" in body:
            raise BadRequest("'voice_settings' and 'elevenlabs_api_key' are accepted in the first message only")
        return text, flush, text == ""

    def _configure(self, body: dict[str, Any]) -> None:
        assert self.synth is not None
        voice_settings = body.get("voice_settings")
        if voice_settings is not None and not isinstance(voice_settings, dict):
            raise BadRequest("'voice_settings' must be a JSON object")
        caller_key = body.get("elevenlabs_api_key")
        if caller_key is not None and not isinstance(caller_key, str):
            raise BadRequest("'elevenlabs_api_key' must be a string")
        self.synth.base = dataclasses.replace(
            self.synth.base, voice_settings=voice_settings, caller_api_key=caller_key or None
        )

    def _enqueue(self, segment: str) -> None:
        self.pending_chars += len(segment)
        self.queue.put_nowait(segment)

    # ------------------------------------------------------------- writing

    async def _write(self, base: SynthesisRequest) -> None:
        assert self.synth is not None
        try:
            while True:
                item = await self.queue.get()
                if item is _END:
                    tail = await self.synth.finish()
                    if tail:
                        await self._send_audio(tail)
                    await self._send(
                        {
                            "isFinal": True,
                            "segments": self.segments,
                            "characters": self.characters,
                            "cost_omcu": format_omcu(self.cost_uomcu),
                        }
                    )
                    return
                if item is _FLUSH:
                    continue
                self.busy = True
                try:
                    await self._speak(item)
                finally:
                    self.busy = False
                    self.idle_since = asyncio.get_running_loop().time()
                    self.pending_chars -= len(item)
                    self._room.set()
        except SpeechError as exc:
            # Closing the socket also ends the reader's wait for the next message.
            self._fail(exc)
            await self._close_error(exc)

    async def _speak(self, text: str) -> None:
        """Reserve, synthesize and send, settle: one sentence."""
        assert self.account is not None and self.synth is not None
        if not text.strip():
            return  # whitespace only (a flush of trailing spaces): nothing to speak or bill
        index = self.segments
        self.segments += 1
        characters = len(text)
        reservation = f"tts-ws:{self.id}:{index}"
        cost = self.gateway.prices.tts_cost(self.route, characters)
        await self.gateway.reserve_in_full(reservation, self.account, cost, "the next sentence")
        self.live = reservation
        produced = False
        engines: set[str] = set()
        failure: SpeechError | None = None
        try:
            async for data in self.synth.segment(text):
                produced = True
                if self.synth.engine:
                    engines.add(self.synth.engine)
                await self._send_audio(data, index)
        except SpeechError as exc:
            log.warning("tts stream-input %s sentence %d failed: %s", self.id, index, exc.message)
            if not produced:  # no engine spoke it: not billed
                await self.gateway.release(reservation)
                if not exc.retryable:
                    raise
                await self._send({"error": exc.message, "segment": index})
                return
            failure = exc  # part of it was heard: billed, then reported
        except BaseException:
            # Cancelled (the client left) while the sentence was with an engine: it is billed.
            await asyncio.shield(self._settle(reservation, characters, engines, index, announce=False))
            raise
        finally:
            self.live = None
        await self._settle(reservation, characters, engines, index, announce=failure is None)
        if failure is not None:
            await self._send({"error": failure.message, "segment": index})

    async def _settle(
        self, reservation: str, characters: int, engines: set[str], index: int, *, announce: bool
    ) -> None:
        assert self.account is not None and self.synth is not None
        engine = "+".join(sorted(engines)) or self.synth.chain.name
        record, _ = await self.gateway.ledger.settle(
            reservation,
            UsageIn.tts(
                self.gateway.prices,
                idempotency_key=reservation,
                key_id=self.account.key_id,
                provider=self.route,
                engine=engine,
                characters=characters,
                unit_price_uomcu=self.gateway.tts_fee(self.synth.base, engines),
            ),
        )
        assert record is not None
        self.characters += characters
        self.cost_uomcu += record.cost_uomcu
        if announce:
            await self._send(
                {
                    "segment_end": index,
                    "characters": characters,
                    "engine": engine,
                    "cost_omcu": format_omcu(record.cost_uomcu),
                }
            )

    # -------------------------------------------------------------- output

    async def _send_audio(self, data: bytes, index: int | None = None) -> None:
        if self.binary:
            await self._send_raw(data)
        else:
            payload: dict[str, Any] = {"audio": base64.b64encode(data).decode("ascii"), "isFinal": False}
            if index is not None:
                payload["segment"] = index
            await self._send(payload)

    async def _send(self, payload: dict[str, Any]) -> None:
        await self._send_raw(json.dumps(payload))

    async def _send_raw(self, data: str | bytes) -> None:
        if self._closed or self.ws.application_state is not WebSocketState.CONNECTED:
            raise _Gone
        async with self._send_lock:
            try:
                if isinstance(data, bytes):
                    await self.ws.send_bytes(data)
                else:
                    await self.ws.send_text(data)
            except Exception as exc:  # the peer went away
                self._disconnected = True
                raise _Gone from exc

    # ------------------------------------------------------- stream registry

    def live_reservations(self) -> list[str]:
        return [self.live] if self.live else []

    async def terminate(self, error: SpeechError) -> None:
        if self._terminated:
            return
        self._terminated = True
        self._fail(error)
        await self._close_error(error)

    def _fail(self, exc: SpeechError) -> None:
        if self._close_with is None:
            self._close_with = exc

    async def _close_error(self, exc: SpeechError) -> None:
        if self._closed:
            return
        if self.ws.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(BaseException):
                async with self._send_lock:
                    await self.ws.send_text(json.dumps({"error": exc.message}))
        await self._close(exc.close_code, exc.message)

    async def _close(self, code: int, reason: str = "") -> None:
        self._closed = True
        if self.ws.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.ws.close(code, reason.encode("utf-8")[:120].decode("utf-8", "ignore"))
