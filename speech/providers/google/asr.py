"""Google Cloud Speech-to-Text v1 streaming recognition over gRPC.

One ``StreamingRecognize`` call per utterance (the gateway opens it at speech
start with the VAD pre-roll): a configuration message, then the audio as it
arrives, then a half-close; interim and final results are yielded as they
come. Wire facts live in :mod:`speech.providers.google.wire`, credentials in
:mod:`speech.providers.google.auth`.

Why a raw ``channel.stream_stream`` and not ``speech_v1.SpeechAsyncClient``:
the generated client wraps every failure in ``google.api_core`` exceptions
(we classify by gRPC status code, :func:`translate_rpc_error`), layers its
own default retry and timeout policy on the call, and only takes a request
iterator. The raw multicallable takes our metadata as is, gives a call
object we write to (``write`` / ``done_writing``, which applies HTTP/2 flow
control as back-pressure), read from and ``cancel()``, and lets us bound
every wait with our own timeouts. The proto-plus ``serialize`` /
``deserialize`` of ``google-cloud-speech`` are the codecs.

Stream rotation: Google ends a stream after about 305 s ("Exceeded maximum
allowed stream duration", OUT_OF_RANGE). No stream here carries more than
``max_stream_s`` seconds of audio nor lives longer than that on the wall
clock: near the limit the current stream is half-closed and a new one (with
a fresh configuration message) takes the rest of the audio. The cut goes at
the first quiet 20 ms frame of the last ``min(2 s, limit / 4)`` before the
limit, or exactly at the limit when there is none. Each stream's results are
yielded in stream order (a later stream's results wait for the earlier
stream to finish), with word times shifted to stay relative to the
utterance; every byte goes to exactly one stream. The gateway's VAD already
caps utterances well below the limit, so this is a safety net.

Timeouts: the channel must be ready within ``connect_timeout_s``
(:class:`UpstreamUnavailable` "Failed to connect to google server"); after a
stream is half-closed it must finish within ``first_result_timeout_s``
(:class:`UpstreamTimeout`); a write Google does not accept within that same
time (it stopped reading) is an :class:`UpstreamTimeout` too.

Errors are classified by the status code the server ended the call with.
grpc.aio can mask it as INTERNAL "Internal error from Core" when one of our
writes is in flight as Google ends the call (grpc/grpc#36066); since audio
is written continuously that race is common, so the status is recovered
(:class:`~speech.providers.grpc_common.ServerStatus`) before translating,
and an in-band ``error`` response read first wins over the status.

Channels are made lazily on the running event loop, one per loop, and reused
by every utterance on that loop
(:class:`~speech.providers.grpc_common.LoopChannels`). Every exit, including
the consumer's cancellation or early ``aclose()``, cancels the calls still
open.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np

from speech.errors import ConfigError, UpstreamProtocolError, UpstreamTimeout
from speech.providers.base import RecognitionConfig, Transcript
from speech.providers.google.auth import GoogleAuth, Metadata
from speech.providers.grpc_common import (
    CLOUD_EXTRA_HINT,
    STATUS_GRACE_S,
    LoopChannels,
    ServerStatus,
    grpc,
    require_grpc,
    translate_rpc_error,
)
from speech.settings import GoogleSettings

try:
    from speech.providers.google import wire
except ImportError:  # pragma: no cover - the cloud extra is missing
    wire = None  # type: ignore[assignment]

PROVIDER = "google"

# Quiet-point search before a rotation (see the module docstring).
ROTATE_WINDOW_S = 2.0
QUIET_FRAME_MS = 20
QUIET_LEVEL = 200  # mean absolute sample value, about -44 dBFS

# A queue item: a transcript, an error to raise, or None for "this stream ended".
_Item = Transcript | BaseException | None


class GoogleRecognizer:
    """The ``google`` ASR engine. ``max_stream_s`` overrides ``settings.max_stream_s``
    (tests use a tiny value; settings keep it between 10 and 290 s)."""

    name = "google"

    def __init__(self, settings: GoogleSettings, *, max_stream_s: float | None = None) -> None:
        require_grpc()
        if wire is None:
            raise ConfigError(f"google-cloud-speech is not installed; {CLOUD_EXTRA_HINT}")
        self.settings = settings
        self.description = f"google ({settings.url})"
        self.max_stream_s = float(max_stream_s if max_stream_s is not None else settings.max_stream_s)
        self._auth = GoogleAuth(settings)
        self._channels = LoopChannels(PROVIDER, settings)

    async def aclose(self) -> None:
        """Close the channels: this loop's now, the others' on their own loops."""
        await self._channels.aclose()

    def close(self) -> None:
        """For callers without a loop: channels close on their own loops."""
        self._channels.close()

    async def recognize(self, audio: AsyncIterator[bytes], config: RecognitionConfig) -> AsyncIterator[Transcript]:
        metadata = await self._auth.metadata()  # NotConfigured and auth failures before any call to Google
        run = _UtteranceStreams(self, await self._channels.ready(), config, metadata)
        run.pump = asyncio.create_task(run.pump_audio(audio))
        try:
            while (stream := await run.ready.get()) is not None:
                if isinstance(stream, BaseException):
                    raise stream
                while (item := await stream.items.get()) is not None:
                    if isinstance(item, BaseException):
                        raise item
                    yield item
        finally:
            await run.cancel()


class _UpstreamStream:
    """One upstream StreamingRecognize call and the results it produced."""

    def __init__(self, call: Any, offset_ms: int) -> None:
        self.call = call
        self.offset_ms = offset_ms
        self.status = ServerStatus(call)
        self.started = time.monotonic()
        self.sent = 0  # audio bytes written
        self.items: asyncio.Queue[_Item] = asyncio.Queue()
        self.reader: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.finished = False

    def put(self, item: _Item) -> None:
        if not self.finished:
            self.items.put_nowait(item)
            self.finished = isinstance(item, BaseException) or item is None
            if self.finished and self.timer is not None:
                self.timer.cancel()

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.call.cancel()
        if self.reader is not None:
            self.reader.cancel()


class _UtteranceStreams:
    """The upstream streams of one ``recognize`` call: a pump task writes the audio
    (rotating streams), one reader task per stream queues its results, and
    :meth:`GoogleRecognizer.recognize` yields them stream by stream."""

    def __init__(
        self, owner: GoogleRecognizer, channel: grpc.aio.Channel, config: RecognitionConfig, metadata: Metadata
    ) -> None:
        self.owner = owner
        self.metadata = metadata
        settings = owner.settings
        self.timeout = settings.first_result_timeout_s
        self.first_request = wire.config_request(
            config,
            punctuation=settings.punctuation,
            interim_results=settings.interim_results,
            model=settings.model,
        )
        self.bytes_per_s = 2 * config.sample_rate  # 16-bit mono
        limit = int(owner.max_stream_s * self.bytes_per_s) // 2 * 2
        self.limit = max(limit, 2)
        window = int(min(ROTATE_WINDOW_S, owner.max_stream_s / 4) * self.bytes_per_s) // 2 * 2
        self.quiet_from = self.limit - window
        self.frame_bytes = max(2, self.bytes_per_s * QUIET_FRAME_MS // 1000 // 2 * 2)
        self.method: Callable[..., Any] = channel.stream_stream(
            wire.METHOD,
            request_serializer=wire.serialize_request,
            response_deserializer=wire.deserialize_response,
        )
        self.streams: list[_UpstreamStream] = []
        self.ready: asyncio.Queue[_UpstreamStream | BaseException | None] = asyncio.Queue()
        self.pump: asyncio.Task[None] | None = None

    async def cancel(self) -> None:
        tasks: list[asyncio.Task[None]] = []
        if self.pump is not None:
            self.pump.cancel()
            tasks.append(self.pump)
        for stream in self.streams:
            stream.cancel()
            if stream.reader is not None:
                tasks.append(stream.reader)
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- writing ---------------------------------------------------------------

    async def pump_audio(self, audio: AsyncIterator[bytes]) -> None:
        stream: _UpstreamStream | None = None
        try:
            async for chunk in audio:
                view = memoryview(chunk).cast("B")
                while view:
                    if stream is None or self._must_rotate(stream):
                        stream = await self._rotate(stream)
                    cut = self._cut(stream, view)
                    if cut == 0:  # a quiet point right here: rotate before writing
                        stream = await self._rotate(stream)
                        cut = self._cut(stream, view)
                    await self._write(stream, view[:cut])
                    view = view[cut:]
            if stream is not None:
                await self._half_close(stream)
            self.ready.put_nowait(None)
        except _CallEnded as ended:
            # The call ended while we were still sending. Its reader reports how
            # (the status, or an in-band error it read first); once it is done,
            # an OK end is a protocol breach: we had not half-closed. Recovering a
            # masked status may take the reader up to STATUS_GRACE_S.
            reader = ended.stream.reader
            if reader is not None:
                await asyncio.wait({reader}, timeout=self.timeout + STATUS_GRACE_S)
            error = UpstreamProtocolError(f"{PROVIDER} ended the stream before the audio did")
            ended.stream.put(error)
            self.ready.put_nowait(error)
        except Exception as exc:  # the audio source failed, or a write timed out: handed to the consumer
            error = _translate(exc, cause=exc) if isinstance(exc, grpc.aio.AioRpcError) else exc
            if stream is not None:
                stream.put(error)
            self.ready.put_nowait(error)

    def _must_rotate(self, stream: _UpstreamStream) -> bool:
        return stream.sent >= self.limit or time.monotonic() - stream.started >= self.owner.max_stream_s

    def _cut(self, stream: _UpstreamStream, view: memoryview) -> int:
        """How many bytes of ``view`` go to ``stream``: all of them, at most
        :data:`wire.MAX_AUDIO_BYTES`, never past the stream's limit, and
        stopping at a quiet frame once inside the rotation window."""
        cut = min(len(view), wire.MAX_AUDIO_BYTES, self.limit - stream.sent)
        start = self.quiet_from - stream.sent
        if start < cut:
            quiet = _first_quiet_frame(view[:cut], max(start, 0), self.frame_bytes)
            if quiet is not None:
                cut = quiet
        return cut

    async def _rotate(self, previous: _UpstreamStream | None) -> _UpstreamStream:
        offset = 0
        if previous is not None:
            await self._half_close(previous)
            offset = previous.offset_ms + previous.sent * 1000 // self.bytes_per_s
        metadata = await self.owner._auth.metadata() if self.streams else self.metadata  # fresh token per stream
        call = self.method(metadata=metadata)
        stream = _UpstreamStream(call, offset)
        self.streams.append(stream)
        stream.reader = asyncio.create_task(self._read(stream))
        self.ready.put_nowait(stream)
        await self._write_request(stream, self.first_request)
        return stream

    async def _write(self, stream: _UpstreamStream, pcm: memoryview) -> None:
        await self._write_request(stream, wire.audio_request(pcm))
        stream.sent += len(pcm)

    async def _write_request(self, stream: _UpstreamStream, request: Any) -> None:
        try:
            await asyncio.wait_for(stream.status.write(stream.call.write(request)), self.timeout)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"{PROVIDER} server stopped accepting audio") from exc
        except (asyncio.InvalidStateError, grpc.aio.AioRpcError):
            raise _CallEnded(stream) from None

    async def _half_close(self, stream: _UpstreamStream) -> None:
        if stream.timer is None and not stream.finished:
            stream.timer = asyncio.get_running_loop().call_later(
                self.timeout,
                stream.put,
                UpstreamTimeout(f"{PROVIDER} sent no final result within {self.timeout:g} s after the audio ended"),
            )
        try:
            await stream.status.write(stream.call.done_writing())
        except (asyncio.InvalidStateError, grpc.aio.AioRpcError):
            pass  # the call already ended; its reader reports how

    # -- reading ---------------------------------------------------------------

    async def _read(self, stream: _UpstreamStream) -> None:
        try:
            while True:
                response = await stream.call.read()
                if response is grpc.aio.EOF:
                    break
                if response is None or isinstance(response, wire.Garbage):
                    raise UpstreamProtocolError(f"{PROVIDER} sent a response that is not a StreamingRecognizeResponse")
                error = wire.in_band_error(response)
                if error is not None:
                    stream.put(error)
                    return
                for transcript in wire.transcripts(response, stream.offset_ms):
                    stream.put(transcript)
        except grpc.aio.AioRpcError as exc:
            real = await stream.status.error(exc)
            if real.code() == grpc.StatusCode.OK:
                stream.put(None)  # ended OK; only a write racing the end made it look failed
            else:
                stream.put(_translate(real, cause=exc))
        except Exception as exc:  # handed to the consumer, which raises it
            stream.put(exc)
        else:
            stream.put(None)


class _CallEnded(Exception):
    """A write found the call already ended; its reader knows how it ended."""

    def __init__(self, stream: _UpstreamStream) -> None:
        super().__init__("call ended")
        self.stream = stream


def _translate(exc: grpc.aio.AioRpcError, *, cause: BaseException) -> BaseException:
    error = translate_rpc_error(exc, PROVIDER)
    error.__cause__ = cause
    return error


def _first_quiet_frame(pcm: memoryview, start: int, frame_bytes: int) -> int | None:
    """Offset (>= ``start``, frame-aligned from it) of the first frame whose mean
    absolute 16-bit sample is below :data:`QUIET_LEVEL`, or None."""
    start += start % 2
    frames = (len(pcm) - start) // frame_bytes
    if frames <= 0:
        return None
    samples = np.frombuffer(pcm[start : start + frames * frame_bytes], dtype="<i2").astype(np.int32)
    level = np.abs(samples).reshape(frames, -1).mean(axis=1)
    quiet = np.flatnonzero(level < QUIET_LEVEL)
    return start + int(quiet[0]) * frame_bytes if quiet.size else None
