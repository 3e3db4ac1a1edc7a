"""A fake NVIDIA Riva server: a real ``grpc.aio`` server on a loopback port
implementing ``RivaSpeechRecognition`` and ``RivaSpeechSynthesis`` with the
servicers of ``nvidia-riva-client``'s generated stubs.

What it answers (derived from what it actually received, so a test can tell
that the right audio arrived):

* ``StreamingRecognize``: the first message must be the config alone (else
  INVALID_ARGUMENT), as must be every later one audio alone. After the first
  audio message it sends the interim "riva hearing" (when interim results
  were asked for); after the client half-closes, an empty result, an empty
  final (both to be skipped) and the final :func:`final_text` -
  ``"riva heard <N> bytes sha <first 8 hex of sha256(audio)>"`` - with word
  times (100 ms per word) and ``audio_processed``.
* ``Synthesize`` / ``SynthesizeOnline``: :func:`tone` of 50 ms per character
  at the requested rate; ``SynthesizeOnline`` sends it in three chunks cut at
  odd byte offsets (the client must reassemble whole samples).

Fault injection, set per test on ``.faults`` (read at each call): a stall
before the first response, an error status at the start or after N audio
messages / chunks, an OK end before the audio was finished, a server that
stops reading, undecodable response bytes (the response serializer itself
emits garbage), odd-length TTS audio, and required credentials (bearer token,
function-id; UNAUTHENTICATED when missing or wrong). A refused connection is
a port with nothing listening (:func:`free_port`).

``.received`` records every call: metadata, the config, the audio (bytes
and message count) and whether the stream ended or was cancelled.

Run it on the current loop (``await fake.start()`` / ``await fake.stop()``)
or on its own loop in a background thread (:func:`fake_riva_in_thread`);
grpc.aio objects belong to the loop that made them, so the thread mode is
what a gateway running in another thread (uvicorn) talks to.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import numpy as np
from riva.client.proto import riva_asr_pb2 as rasr
from riva.client.proto import riva_asr_pb2_grpc as rasr_grpc
from riva.client.proto import riva_tts_pb2 as rtts
from riva.client.proto import riva_tts_pb2_grpc as rtts_grpc

GARBAGE = b"\xff\xfe garbage, not a protobuf message"
MS_PER_CHAR = 50


@dataclass
class Faults:
    stall_s: float = 0.0  # wait this long before the first response
    status: grpc.StatusCode | None = None  # abort with this code...
    after: int = 0  # ...after this many audio messages (ASR) or chunks (TTS); 0 = at once
    end_early: bool = False  # ASR: finish with OK after the first audio message
    stop_reading: bool = False  # ASR: read the config, then nothing more
    garbage: bool = False  # responses are undecodable bytes
    odd_audio: bool = False  # TTS: one byte too many
    token: str | None = None  # require "authorization: Bearer <token>"
    function_id: str | None = None  # require "function-id: <id>"


@dataclass
class AsrCall:
    metadata: dict[str, str]
    config: rasr.StreamingRecognitionConfig | None = None
    messages: int = 0
    audio: bytearray = field(default_factory=bytearray)
    ended: bool = False  # the RPC is over, whichever way
    cancelled: bool = False  # the client cancelled it

    def done(self, context: grpc.aio.ServicerContext) -> None:
        self.ended = True


@dataclass
class TtsCall:
    method: str
    metadata: dict[str, str]
    requests: list[rtts.SynthesizeSpeechRequest] = field(default_factory=list)


@dataclass
class Received:
    asr: list[AsrCall] = field(default_factory=list)
    tts: list[TtsCall] = field(default_factory=list)


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}


def final_text(audio: bytes) -> str:
    return f"riva heard {len(audio)} bytes sha {hashlib.sha256(audio).hexdigest()[:8]}"


def tone(text: str, rate: int) -> bytes:
    """The PCM16 the fake synthesizes for ``text``: 440 Hz, 50 ms per character."""
    n = rate * MS_PER_CHAR * len(text) // 1000
    t = np.arange(n) / rate
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()


def free_port() -> int:
    """A loopback port with nothing listening (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeRiva:
    def __init__(self, *, tls: tuple[bytes, bytes] | None = None) -> None:
        """``tls``: (private key PEM, certificate PEM) to serve TLS."""
        self.faults = Faults()
        self.received = Received()
        self.port = 0
        self._tls = tls
        self._server: grpc.aio.Server | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop serving

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> int:
        """Start serving on the running loop; returns the port.

        The handler table is the one ``add_RivaSpeech*Servicer_to_server``
        builds, except for the response serializer, which emits
        :data:`GARBAGE` while ``faults.garbage`` is set."""
        self.loop = asyncio.get_running_loop()
        server = grpc.aio.server()
        asr = _Recognition(self)
        tts = _Synthesis(self)
        out = self._serialize
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    rasr.DESCRIPTOR.services_by_name["RivaSpeechRecognition"].full_name,
                    {
                        "StreamingRecognize": grpc.stream_stream_rpc_method_handler(
                            asr.StreamingRecognize,
                            request_deserializer=rasr.StreamingRecognizeRequest.FromString,
                            response_serializer=out,
                        )
                    },
                ),
                grpc.method_handlers_generic_handler(
                    rtts.DESCRIPTOR.services_by_name["RivaSpeechSynthesis"].full_name,
                    {
                        "Synthesize": grpc.unary_unary_rpc_method_handler(
                            tts.Synthesize,
                            request_deserializer=rtts.SynthesizeSpeechRequest.FromString,
                            response_serializer=out,
                        ),
                        "SynthesizeOnline": grpc.stream_stream_rpc_method_handler(
                            tts.SynthesizeOnline,
                            request_deserializer=rtts.SynthesizeSpeechRequest.FromString,
                            response_serializer=out,
                        ),
                    },
                ),
            )
        )
        if self._tls is None:
            self.port = server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([self._tls]))
        await server.start()
        self._server = server
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)
            self._server = None

    def _serialize(self, message: Any) -> bytes:
        return GARBAGE if self.faults.garbage else message.SerializeToString()

    async def stop_serving(self) -> None:
        """Stop the server from any loop (e.g. the test's, in thread mode):
        later calls find nothing listening."""
        if self.loop is None or self.loop is asyncio.get_running_loop():
            await self.stop()
        else:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.stop(), self.loop))

    async def check(self, context: grpc.aio.ServicerContext, md: dict[str, str]) -> None:
        """What every call starts with: credentials, then an error status
        injected at the start."""
        f = self.faults
        if f.token is not None and md.get("authorization") != f"Bearer {f.token}":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        if f.function_id is not None and md.get("function-id") != f.function_id:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong function-id")
        if f.status is not None and f.after == 0:
            await context.abort(f.status, "injected failure")

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Poll ``predicate`` (from any loop) until it holds, for at most 5 s."""
        for _ in range(500):
            if predicate():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("fake riva: condition not reached")


class _Recognition(rasr_grpc.RivaSpeechRecognitionServicer):
    def __init__(self, fake: FakeRiva) -> None:
        self.fake = fake

    async def StreamingRecognize(
        self, request_iterator: AsyncIterator[rasr.StreamingRecognizeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rasr.StreamingRecognizeResponse]:
        f = self.fake.faults
        call = AsrCall(metadata=_metadata(context))
        self.fake.received.asr.append(call)
        context.add_done_callback(call.done)
        try:
            await self.fake.check(context, call.metadata)
            async for req in request_iterator:
                kind = req.WhichOneof("streaming_request")
                if call.config is None:
                    if kind != "streaming_config":
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be the config")
                    call.config = req.streaming_config
                    if f.stop_reading:
                        await asyncio.sleep(3600)
                    continue
                if kind != "audio_content":
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "config may only come first")
                call.messages += 1
                call.audio += req.audio_content
                if f.status is not None and f.after and call.messages >= f.after:
                    await context.abort(f.status, "injected failure mid-stream")
                if f.end_early:
                    return
                if call.messages == 1 and call.config.interim_results and not f.stall_s:
                    yield _response("riva hearing", is_final=False)
            if call.config is None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no config")
            if f.stall_s:
                await asyncio.sleep(f.stall_s)
            yield rasr.StreamingRecognizeResponse()  # nothing to say yet
            rate = call.config.config.sample_rate_hertz or 16000
            yield _response(final_text(bytes(call.audio)) + " ", is_final=True, audio_s=len(call.audio) / 2 / rate)
        except (asyncio.CancelledError, GeneratorExit):
            # A grpc.aio server sees a client's cancel either as the handler
            # being cancelled or, when it was reading, as the end of the
            # requests; the next response then cannot be sent (GeneratorExit).
            call.cancelled = True
            raise


def _response(text: str, *, is_final: bool, audio_s: float = 0.0) -> rasr.StreamingRecognizeResponse:
    words = [
        rasr.WordInfo(word=w, start_time=i * 100, end_time=i * 100 + 80, confidence=0.9)
        for i, w in enumerate(text.split())
    ]
    alt = rasr.SpeechRecognitionAlternative(transcript=text, confidence=0.95 if is_final else 0.0, words=words)
    results = [rasr.StreamingRecognitionResult(alternatives=[alt], is_final=is_final, audio_processed=audio_s)]
    if is_final:  # an empty final first: the adapter must skip it
        empty = rasr.SpeechRecognitionAlternative(transcript="  ")
        results.insert(0, rasr.StreamingRecognitionResult(alternatives=[empty], is_final=True))
    return rasr.StreamingRecognizeResponse(results=results)


class _Synthesis(rtts_grpc.RivaSpeechSynthesisServicer):
    def __init__(self, fake: FakeRiva) -> None:
        self.fake = fake

    def _audio(self, req: rtts.SynthesizeSpeechRequest) -> bytes:
        pcm = tone(req.text, req.sample_rate_hz or 22050)
        return pcm + b"\x00" if self.fake.faults.odd_audio else pcm

    async def Synthesize(
        self, request: rtts.SynthesizeSpeechRequest, context: grpc.aio.ServicerContext
    ) -> rtts.SynthesizeSpeechResponse:
        call = TtsCall("Synthesize", _metadata(context), [request])
        self.fake.received.tts.append(call)
        await self.fake.check(context, call.metadata)
        if self.fake.faults.stall_s:
            await asyncio.sleep(self.fake.faults.stall_s)
        return rtts.SynthesizeSpeechResponse(audio=self._audio(request))

    async def SynthesizeOnline(
        self, request_iterator: AsyncIterator[rtts.SynthesizeSpeechRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rtts.SynthesizeSpeechResponse]:
        f = self.fake.faults
        call = TtsCall("SynthesizeOnline", _metadata(context))
        self.fake.received.tts.append(call)
        await self.fake.check(context, call.metadata)
        sent = 0
        async for req in request_iterator:  # 2.25+: one request per text chunk
            call.requests.append(req)
            pcm = self._audio(req)
            cuts = [0, (len(pcm) // 3) | 1, (2 * len(pcm) // 3) | 1, len(pcm)]
            for start, end in zip(cuts, cuts[1:], strict=False):
                if f.stall_s and sent == 0:
                    await asyncio.sleep(f.stall_s)
                if f.status is not None and f.after and sent >= f.after:
                    await context.abort(f.status, "injected failure mid-stream")
                yield rtts.SynthesizeSpeechResponse(audio=pcm[start:end])
                sent += 1


@contextmanager
def fake_riva_in_thread(*, tls: tuple[bytes, bytes] | None = None) -> Iterator[FakeRiva]:
    """A :class:`FakeRiva` serving from its own event loop in a background thread."""
    fake = FakeRiva(tls=tls)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(fake.start())
        except BaseException as exc:  # reported to the starting thread
            failure.append(exc)
            loop.close()
            started.set()
            return
        started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=run, name="fake-riva", daemon=True)
    thread.start()
    started.wait(10)
    if failure:
        raise failure[0]
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
