"""A loopback stand-in for Google Speech-to-Text v1 ``StreamingRecognize``.

A real ``grpc.aio`` server on 127.0.0.1, port 0, serving
``google.cloud.speech.v1.Speech/StreamingRecognize`` through a generic handler
with the proto-plus codecs of ``google-cloud-speech`` (the package ships no
servicer). Like Google it enforces:

* config first: the first message carries only ``streaming_config``, every
  later one only ``audio_content`` (else INVALID_ARGUMENT);
* the 25 KB cap: no request may carry more than 25,000 bytes of audio
  (INVALID_ARGUMENT);
* a maximum stream duration, counted in seconds of audio received on one
  stream (OUT_OF_RANGE "Exceeded maximum allowed stream duration of 305
  seconds."), configurable so a test can set it to 2 s.

It answers from the audio it received: an interim "google hearing" after the
first audio message (when the config asks for interims) and, on half-close,
one final ``google heard {n} bytes`` with a word time per word spread over the
stream's audio. Every stream is recorded (:class:`StreamRecord`).

Faults (:class:`Faults`, set per test, read when a stream starts): require an
API key or a bearer token, abort with any status at once or after N messages,
an in-band ``error`` response, stall without answering, garbage response
bytes. A refused connection is :func:`closed_port`.

:func:`running_fake_google` runs it on its own event loop in a background
thread (the shape of the lead's end-to-end tests, where the gateway runs in
yet another thread); :class:`FakeGoogle` ``start``/``stop`` also run it on
the caller's loop.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from google.cloud import speech_v1

SERVICE = "google.cloud.speech.v1.Speech"
MAX_REQUEST_AUDIO = 25_000
STREAM_TOO_LONG = "Exceeded maximum allowed stream duration of 305 seconds."
GARBAGE = b"\x0a\xff\xff\xff\xff\xff"  # a length-delimited field whose length never ends


@dataclass
class Faults:
    require_api_key: str | None = None  # "x-goog-api-key" must equal this
    require_bearer: str | None = None  # "authorization" must be "Bearer <this>"
    abort_code: grpc.StatusCode | None = None
    abort_details: str = "injected fault"
    abort_after: int = 0  # messages received before the abort (0: before reading any)
    error_code: int | None = None  # in-band google.rpc.Status code, sent after the first audio message
    error_message: str = "injected in-band error"
    stall: bool = False  # read everything, never answer, never finish
    garbage: bool = False  # every response is bytes that do not parse
    max_stream_audio_s: float | None = None  # OUT_OF_RANGE past this much audio on one stream


@dataclass
class StreamRecord:
    index: int
    peer: str
    metadata: dict[str, str]
    started: float
    config: speech_v1.StreamingRecognitionConfig | None = None
    sample_rate: int = 16000
    audio: bytearray = field(default_factory=bytearray)
    nbytes: int = 0
    sha256: Any = field(default_factory=hashlib.sha256)
    request_sizes: list[int] = field(default_factory=list)  # audio bytes per audio message
    ended: float | None = None
    cancelled: bool = False
    outcome: str = "open"  # "ok", "aborted <CODE>", "error-field", "cancelled"

    @property
    def audio_seconds(self) -> float:
        return self.nbytes / (2 * self.sample_rate)

    @property
    def wall_seconds(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    def digest(self) -> str:
        return self.sha256.hexdigest()


class FakeGoogle:
    def __init__(self, *, keep_audio: bool = True) -> None:
        self.faults = Faults()
        self.streams: list[StreamRecord] = []
        self.keep_audio = keep_audio
        self.port = 0
        self._server: grpc.aio.Server | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def peers(self) -> set[str]:
        """Distinct client addresses seen: one per TCP connection."""
        return {s.peer for s in self.streams}

    def audio(self) -> bytes:
        """Every stream's audio, in stream order."""
        return b"".join(bytes(s.audio) for s in self.streams)

    async def start(self) -> None:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 4 * 1024 * 1024)])
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "StreamingRecognize": grpc.stream_stream_rpc_method_handler(
                    self._streaming_recognize,
                    request_deserializer=speech_v1.StreamingRecognizeRequest.deserialize,
                    response_serializer=self._serialize,
                )
            },
        )
        server.add_generic_rpc_handlers((handler,))
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None

    def _serialize(self, response: speech_v1.StreamingRecognizeResponse) -> bytes:
        if self.faults.garbage:
            return GARBAGE
        return speech_v1.StreamingRecognizeResponse.serialize(response)

    async def _streaming_recognize(
        self, requests: AsyncIterator[speech_v1.StreamingRecognizeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[speech_v1.StreamingRecognizeResponse]:
        faults = self.faults
        metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        rec = StreamRecord(len(self.streams), context.peer(), metadata, time.monotonic())
        self.streams.append(rec)
        try:
            await self._check_auth(faults, metadata, context, rec)
            if faults.abort_code is not None and faults.abort_after == 0:
                await self._abort(context, rec, faults.abort_code, faults.abort_details)
            count = 0
            async for request in requests:
                count += 1
                if count == 1:
                    if "streaming_config" not in request:
                        await self._abort(
                            context, rec, grpc.StatusCode.INVALID_ARGUMENT, "first request must carry streaming_config"
                        )
                    rec.config = request.streaming_config
                    rec.sample_rate = request.streaming_config.config.sample_rate_hertz or 16000
                else:
                    if "streaming_config" in request:
                        await self._abort(
                            context, rec, grpc.StatusCode.INVALID_ARGUMENT, "streaming_config may only come first"
                        )
                    chunk = request.audio_content
                    if len(chunk) > MAX_REQUEST_AUDIO:
                        await self._abort(
                            context,
                            rec,
                            grpc.StatusCode.INVALID_ARGUMENT,
                            f"Request audio can be a maximum of 25000 bytes, got {len(chunk)}",
                        )
                    rec.request_sizes.append(len(chunk))
                    rec.nbytes += len(chunk)
                    rec.sha256.update(chunk)
                    if self.keep_audio:
                        rec.audio += chunk
                    limit = faults.max_stream_audio_s
                    if limit is not None and rec.audio_seconds > limit:
                        await self._abort(context, rec, grpc.StatusCode.OUT_OF_RANGE, STREAM_TOO_LONG)
                if faults.abort_code is not None and count == faults.abort_after:
                    await self._abort(context, rec, faults.abort_code, faults.abort_details)
                if count == 2 and faults.error_code is not None:
                    rec.outcome = "error-field"
                    yield speech_v1.StreamingRecognizeResponse(
                        error={"code": faults.error_code, "message": faults.error_message}
                    )
                    return
                if count == 2 and not faults.stall and rec.config is not None and rec.config.interim_results:
                    yield _interim("google hearing")
            if faults.stall:
                await asyncio.Event().wait()  # until the client cancels or the server stops
            yield _final(rec)
            rec.outcome = "ok"
        except (asyncio.CancelledError, GeneratorExit):
            # A client's cancellation ends the request stream; the server then
            # cancels the handler or closes it at its next yield.
            rec.cancelled = True
            if rec.outcome == "open":
                rec.outcome = "cancelled"
            raise
        finally:
            rec.cancelled = rec.cancelled or context.cancelled()
            rec.ended = time.monotonic()

    async def _check_auth(
        self, faults: Faults, metadata: dict[str, str], context: grpc.aio.ServicerContext, rec: StreamRecord
    ) -> None:
        if faults.require_api_key is not None and metadata.get("x-goog-api-key") != faults.require_api_key:
            await self._abort(context, rec, grpc.StatusCode.UNAUTHENTICATED, "API key not valid")
        if faults.require_bearer is not None and metadata.get("authorization") != f"Bearer {faults.require_bearer}":
            await self._abort(context, rec, grpc.StatusCode.UNAUTHENTICATED, "Request had invalid authentication")

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext, rec: StreamRecord, code: grpc.StatusCode, details: str) -> None:
        rec.outcome = f"aborted {code.name}"
        await context.abort(code, details)


def _interim(text: str) -> speech_v1.StreamingRecognizeResponse:
    result = speech_v1.StreamingRecognitionResult(
        alternatives=[speech_v1.SpeechRecognitionAlternative(transcript=text)], is_final=False, stability=0.5
    )
    return speech_v1.StreamingRecognizeResponse(results=[result])


def _final(rec: StreamRecord) -> speech_v1.StreamingRecognizeResponse:
    text = f"google heard {rec.nbytes} bytes"
    names = text.split()
    step = rec.audio_seconds / len(names)
    words = [
        speech_v1.WordInfo(
            word=w,
            start_time=datetime.timedelta(seconds=i * step),
            end_time=datetime.timedelta(seconds=(i + 1) * step),
            confidence=0.9,
        )
        for i, w in enumerate(names)
    ]
    alt = speech_v1.SpeechRecognitionAlternative(transcript=text, confidence=0.92, words=words)
    result = speech_v1.StreamingRecognitionResult(
        alternatives=[alt], is_final=True, result_end_time=datetime.timedelta(seconds=rec.audio_seconds)
    )
    return speech_v1.StreamingRecognizeResponse(results=[result])


@contextmanager
def running_fake_google(*, keep_audio: bool = True) -> Iterator[FakeGoogle]:
    """A :class:`FakeGoogle` serving from its own event loop in a daemon thread."""
    fake = FakeGoogle(keep_audio=keep_audio)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-google", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(fake.start(), loop).result(10)
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
