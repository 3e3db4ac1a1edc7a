"""Streaming recognition on NVIDIA Riva (``RivaSpeechRecognition.StreamingRecognize``).

One bidi call per utterance, on the loop's shared channel (see
:class:`~speech.providers.grpc_common.LoopChannels`). The first request
carries only the ``StreamingRecognitionConfig``; every later one only
``audio_content``, at most :data:`MAX_AUDIO_MESSAGE` bytes each, sent as the
chunks arrive. The call is half-closed when the audio iterator ends, and
always cancelled when the consumer leaves (done, error, ``aclose()`` or task
cancellation), so no stream is left open on the server.

Decisions and limits:

* A sender task writes the audio while the consumer's task reads results, so
  interims flow while audio is still being sent.
* Timeouts (asyncio, never blocking): connecting within
  ``connect_timeout_s`` (:class:`UpstreamUnavailable`, "Failed to connect to
  riva server"); once the audio is finished, the stream must end within
  ``first_result_timeout_s``, else :class:`UpstreamTimeout` - unless a final
  already arrived after the audio ended, in which case the stream simply
  ends. A single write that does not complete within
  ``first_result_timeout_s`` (the server stopped reading) is also an
  :class:`UpstreamTimeout`.
* Failed calls are translated by the status code the server sent
  (:class:`~speech.providers.grpc_common.ServerStatus`, which sidesteps
  grpc/grpc#36066).
  A response that cannot be decoded (grpc.aio hands back ``None``), or a
  stream that ends with OK before the audio was finished, is an
  :class:`UpstreamProtocolError` (retryable). Errors of the audio iterator
  itself are re-raised unchanged: they are the caller's, not Riva's.
* Mapping: the first alternative of each result becomes a
  :class:`Transcript`; results without alternatives or with blank text are
  skipped (Riva sends empty results while it has nothing to say). Riva may
  send more than one final per utterance when its own endpointing splits
  it. A confidence of 0 is reported as ``None``: proto3 cannot tell "0" from
  "not computed", and Riva leaves it 0 on interims and on some models
  (unconfirmed which).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from speech.errors import UpstreamProtocolError, UpstreamTimeout
from speech.providers.base import RecognitionConfig, Transcript, Word
from speech.providers.grpc_common import LoopChannels, ServerStatus, grpc, translate_rpc_error
from speech.providers.riva.channel import PROVIDER, metadata, rasr, rasr_grpc, raudio, require_stubs
from speech.settings import RivaSettings

# Audio bytes per request message (about 2 s of 16 kHz PCM16).
MAX_AUDIO_MESSAGE = 64 * 1024


class RivaRecognizer:
    name = "riva"

    def __init__(self, settings: RivaSettings) -> None:
        """No I/O here: engines are built in a worker thread; the channel is
        made on first use, on the loop that uses it."""
        require_stubs()
        self._settings = settings
        self._channels = LoopChannels(PROVIDER, settings)
        self._metadata = metadata(settings, settings.asr_function_id)
        self.description = f"riva ({settings.url})"

    async def recognize(self, audio: AsyncIterator[bytes], config: RecognitionConfig) -> AsyncIterator[Transcript]:
        channel = await self._channels.ready()
        call = rasr_grpc.RivaSpeechRecognitionStub(channel).StreamingRecognize(metadata=self._metadata)
        stream = _RecognizeCall(call, self._settings.first_result_timeout_s)
        sender = asyncio.create_task(stream.send(self.config_request(config), audio))
        try:
            async with contextlib.aclosing(stream.results(sender)) as results:
                async for transcript in results:
                    yield transcript
        except grpc.aio.AioRpcError as exc:
            real = await stream.status.error(exc)
            if real.code() == grpc.StatusCode.OK:
                raise UpstreamProtocolError(f"{PROVIDER} ended the stream before the request was finished") from exc
            raise translate_rpc_error(real, PROVIDER) from exc
        finally:
            await stream.close(sender)

    def config_request(self, config: RecognitionConfig) -> Any:
        """The first request of a stream: the recognition config, alone."""
        s = self._settings
        rc = rasr.RecognitionConfig(
            encoding=raudio.AudioEncoding.LINEAR_PCM,
            sample_rate_hertz=config.sample_rate,
            language_code=config.language_code,
            max_alternatives=1,
            audio_channel_count=1,
            profanity_filter=s.profanity_filter,
            enable_automatic_punctuation=s.punctuation,
            enable_word_time_offsets=s.word_offsets,
        )
        if s.asr_model:
            rc.model = s.asr_model
        endpointing = {
            "start_history": s.endpoint_start_history_ms,
            "start_threshold": s.endpoint_start_threshold,
            "stop_history": s.endpoint_stop_history_ms,
            "stop_threshold": s.endpoint_stop_threshold,
            "stop_history_eou": s.endpoint_stop_history_eou_ms,
            "stop_threshold_eou": s.endpoint_stop_threshold_eou,
        }
        chosen = {k: v for k, v in endpointing.items() if v}  # 0 leaves the server's default
        if chosen:
            rc.endpointing_config.CopyFrom(rasr.EndpointingConfig(**chosen))
        streaming = rasr.StreamingRecognitionConfig(config=rc, interim_results=s.interim_results)
        return rasr.StreamingRecognizeRequest(streaming_config=streaming)

    async def aclose(self) -> None:
        await self._channels.aclose()

    def close(self) -> None:
        """For callers without a loop: channels close on their own loops."""
        self._channels.close()


class _RecognizeCall:
    """One ``StreamingRecognize`` call: :meth:`send` runs in its own task,
    :meth:`results` in the consumer's."""

    def __init__(self, call: Any, timeout_s: float) -> None:
        self.call = call
        self.status = ServerStatus(call)
        self.timeout_s = timeout_s
        self.audio_done = False
        self.failure: Exception | None = None  # why the sender ended the call
        self._read: asyncio.Future[Any] | None = None

    async def send(self, first: Any, audio: AsyncIterator[bytes]) -> None:
        try:
            await self._write(first)
            async for chunk in audio:
                for start in range(0, len(chunk), MAX_AUDIO_MESSAGE):
                    piece = bytes(chunk[start : start + MAX_AUDIO_MESSAGE])
                    await self._write(rasr.StreamingRecognizeRequest(audio_content=piece))
            self.audio_done = True
            await self._write(None)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            return  # the call is over; the reader reports why (see ServerStatus)
        except Exception as exc:
            self.failure = exc
            self.call.cancel()

    async def _write(self, request: Any) -> None:
        op = self.call.done_writing() if request is None else self.call.write(request)
        try:
            await asyncio.wait_for(self.status.write(op), self.timeout_s)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"{PROVIDER} stopped reading audio") from exc

    async def results(self, sender: asyncio.Task[None]) -> AsyncIterator[Transcript]:
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        final_after_audio = False
        while True:
            read = self._read = asyncio.ensure_future(self.call.read())
            while not read.done():
                if deadline is None and sender.done():
                    deadline = loop.time() + self.timeout_s
                if deadline is None:
                    await asyncio.wait((read, sender), return_when=asyncio.FIRST_COMPLETED)
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                await asyncio.wait((read,), timeout=remaining)
            if self.failure is not None:
                raise self.failure
            if not read.done():
                if final_after_audio:
                    return
                raise UpstreamTimeout(
                    f"{PROVIDER} sent no final result within {self.timeout_s:g} s after the audio ended"
                )
            response = read.result()
            if response is grpc.aio.EOF:
                if not self.audio_done:
                    raise UpstreamProtocolError(f"{PROVIDER} ended the stream before the audio was finished")
                return
            if response is None:
                raise UpstreamProtocolError(f"{PROVIDER} sent a response that could not be decoded")
            for transcript in transcripts(response):
                final_after_audio = final_after_audio or (transcript.is_final and deadline is not None)
                yield transcript

    async def close(self, sender: asyncio.Task[None]) -> None:
        """Cancel the call (a no-op once it ended) and wait for our tasks."""
        self.call.cancel()
        pending = [t for t in (sender, self._read) if t is not None]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def transcripts(response: Any) -> list[Transcript]:
    """The transcripts of one ``StreamingRecognizeResponse``, in order."""
    out = []
    for result in response.results:
        if not result.alternatives:
            continue
        alt = result.alternatives[0]
        text = alt.transcript.strip()
        if not text:
            continue
        words = tuple(Word(w.word, w.start_time, w.end_time, _confidence(w.confidence)) for w in alt.words)
        out.append(Transcript(text=text, is_final=result.is_final, confidence=_confidence(alt.confidence), words=words))
    return out


def _confidence(value: float) -> float | None:
    return round(float(value), 4) if value else None
