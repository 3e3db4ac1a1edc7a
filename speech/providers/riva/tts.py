"""Speech synthesis on NVIDIA Riva (``RivaSpeechSynthesis``).

``settings.tts_streaming`` picks ``SynthesizeOnline`` (each audio chunk is
yielded as it arrives) over the unary ``Synthesize`` (one chunk). Audio is
requested as LINEAR_PCM at ``settings.tts_sample_rate`` and yielded as
``AudioChunk(format="pcm")``; the edge encodes it to the client's
``output_format``.

Decisions and limits:

* ``SynthesizeOnline`` is called as a *server-streaming* method (one request,
  then half-close), built from the method path rather than the stub: the
  2.25+ stubs declare it bidi, older servers serve it server-streaming, and
  one request followed by a half-close is the same on the wire for both.
* Voice: ``request.voice_id`` is used only when it looks like a Riva voice
  name, i.e. contains a "." (``English-US.Female-1``,
  ``Magpie-Multilingual.EN-US.Aria``); ElevenLabs ids that OM1 sends by
  default (``JBFqnCBsd6RMkjVDRZzb``) never do, and fall back to
  ``settings.tts_voice`` ("" lets Riva pick the first voice of the language).
* Timeouts (asyncio): connecting within ``connect_timeout_s``
  (:class:`UpstreamUnavailable`); the unary answer, or each streamed chunk,
  within ``first_result_timeout_s`` (:class:`UpstreamTimeout`).
* Audio must be whole 16-bit samples: streamed chunks may split a sample
  (an odd byte is carried into the next chunk), but an odd total, or no audio
  at all, is an :class:`UpstreamProtocolError`, as is an undecodable response.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from speech.errors import UpstreamProtocolError, UpstreamTimeout
from speech.providers.base import AudioChunk, SynthesisRequest
from speech.providers.grpc_common import LoopChannels, grpc, translate_rpc_error
from speech.providers.riva.channel import PROVIDER, metadata, raudio, require_stubs, rtts, rtts_grpc
from speech.settings import RivaSettings

SYNTHESIZE_ONLINE = "/nvidia.riva.tts.RivaSpeechSynthesis/SynthesizeOnline"

T = TypeVar("T")


class RivaSynthesizer:
    name = "riva"

    def __init__(self, settings: RivaSettings) -> None:
        """No I/O here; the channel is made on first use, on the loop that uses it."""
        require_stubs()
        self._settings = settings
        self._channels = LoopChannels(PROVIDER, settings)
        self._metadata = metadata(settings, settings.tts_function_id)
        mode = "streaming" if settings.tts_streaming else "unary"
        self.description = f"riva ({settings.url}, {mode})"

    def speech_request(self, request: SynthesisRequest) -> Any:
        s = self._settings
        voice = request.voice_id if request.voice_id and "." in request.voice_id else s.tts_voice
        return rtts.SynthesizeSpeechRequest(
            text=request.text,
            language_code=request.language_code or s.tts_language_code,
            encoding=raudio.AudioEncoding.LINEAR_PCM,
            sample_rate_hz=s.tts_sample_rate,
            voice_name=voice,
        )

    async def synthesize(self, request: SynthesisRequest) -> AsyncIterator[AudioChunk]:
        channel = await self._channels.ready()
        rate = self._settings.tts_sample_rate
        pcm = _Samples()
        try:
            async with contextlib.aclosing(self._audio(channel, self.speech_request(request))) as responses:
                async for audio in responses:
                    data = pcm.take(audio)
                    if not self._settings.tts_streaming:
                        pcm.finish()  # check the whole answer before yielding any of it
                    if data:
                        yield AudioChunk(data=data, sample_rate=rate)
        except grpc.aio.AioRpcError as exc:
            raise translate_rpc_error(exc, PROVIDER) from exc
        pcm.finish()

    async def _audio(self, channel: Any, req: Any) -> AsyncIterator[bytes]:
        """The ``audio`` field of each response, as it arrives."""
        if not self._settings.tts_streaming:
            unary = rtts_grpc.RivaSpeechSynthesisStub(channel).Synthesize(req, metadata=self._metadata)
            try:
                yield _audio_of(await self._within(_result(unary)))
            finally:
                unary.cancel()
            return
        online = channel.unary_stream(
            SYNTHESIZE_ONLINE,
            request_serializer=rtts.SynthesizeSpeechRequest.SerializeToString,
            response_deserializer=rtts.SynthesizeSpeechResponse.FromString,
        )
        call = online(req, metadata=self._metadata)
        try:
            while (response := await self._within(call.read())) is not grpc.aio.EOF:
                yield _audio_of(response)
        finally:
            call.cancel()

    async def _within(self, op: Awaitable[T]) -> T:
        timeout = self._settings.first_result_timeout_s
        try:
            return await asyncio.wait_for(op, timeout)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"{PROVIDER} sent no audio within {timeout:g} s") from exc

    async def aclose(self) -> None:
        await self._channels.aclose()

    def close(self) -> None:
        """For callers without a loop: channels close on their own loops."""
        self._channels.close()


async def _result(call: Awaitable[T]) -> T:
    return await call


def _audio_of(response: Any) -> bytes:
    if response is None:
        raise UpstreamProtocolError(f"{PROVIDER} sent a response that could not be decoded")
    return bytes(response.audio)


class _Samples:
    """Cuts a byte stream into whole 16-bit samples."""

    def __init__(self) -> None:
        self._odd = b""
        self._total = 0

    def take(self, data: bytes) -> bytes:
        data = self._odd + data
        cut = len(data) - len(data) % 2
        self._odd = data[cut:]
        self._total += cut
        return data[:cut]

    def finish(self) -> None:
        if self._odd:
            raise UpstreamProtocolError(f"{PROVIDER} returned audio that is not whole 16-bit samples")
        if not self._total:
            raise UpstreamProtocolError(f"{PROVIDER} returned no audio")
