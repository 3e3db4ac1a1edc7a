"""Streamed TTS: the audio of each sentence leaves as soon as it is synthesized.

Shared by the chunked-HTTP endpoints (``POST /api/core/{route}/tts/stream``,
``"stream": true`` on OM1's ``/tts``, and OpenAI's ``/v1/audio/speech``) and
by the websocket stream-input endpoint (:mod:`speech.api.tts_ws`).

The text is cut into sentences (:mod:`speech.pipeline.sentences`); each
sentence goes through the route's failover chain on its own, and its audio is
encoded incrementally (:class:`~speech.audio.stream_encode.StreamEncoder`)
into one continuous stream of the requested format. Sentences are
synthesized one after the other, each only once the previous one's audio has
been handed to the transport, so a client that reads slowly slows the
synthesis down (TCP backpressure) instead of growing the gateway's memory.

Billing of an HTTP stream (decisions):

* The whole text is priced and reserved before anything starts, so a request
  that is not covered gets a real ``402`` status, as the non-streaming
  endpoints do.
* The first audio bytes are produced before the ``200`` is sent: if every
  engine fails on the first sentence the client gets a proper error status.
* Characters are billed when their sentence is handed to an engine. A client
  that disconnects half-way pays for the sentences already dispatched and
  nothing after; a sentence every engine failed on is not billed. A stream
  that completes is billed ``len(text)`` characters, exactly as the
  non-streaming endpoint bills the same text. One usage record per request.
* A failure after audio has left cannot change the status any more: the body
  ends early (the client sees a short read) and the log says why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Mapping

from starlette.responses import StreamingResponse

from speech.api.gateway import Gateway
from speech.audio.encode import OutputFormat
from speech.audio.stream_encode import StreamEncoder, native_ok
from speech.errors import AuthError, SpeechError
from speech.metering.records import ApiKey, UsageIn, UsageRecord
from speech.pipeline.sentences import SentenceSegmenter
from speech.providers.base import SynthesisRequest
from speech.providers.failover import FailoverSynthesizer

log = logging.getLogger("speech.tts")


class SegmentSynthesizer:
    """Synthesizes segments in order into one continuous encoded stream."""

    def __init__(self, chain: FailoverSynthesizer, base: SynthesisRequest, fmt: OutputFormat) -> None:
        self.chain = chain
        self.base = base
        self.fmt = fmt
        self.encoder = StreamEncoder(fmt)
        # Engines that encode natively may answer in the format itself when
        # its streams concatenate (MP3, PCM); otherwise they are asked for PCM.
        self.upstream_format = fmt.name if native_ok(fmt) else f"pcm_{fmt.sample_rate}"
        self.engine: str | None = None  # the engine of the last segment
        self.upstream_characters: int | None = None

    async def segment(self, text: str) -> AsyncIterator[bytes]:
        """Encoded audio of one segment as it is produced. Whitespace-only
        segments produce nothing (and are not sent to an engine)."""
        self.engine = None
        if not text.strip():
            return
        request = dataclasses.replace(self.base, text=text, output_format=self.upstream_format)
        self.encoder.new_segment()
        async for name, chunk in self.chain.stream(request):
            self.engine = name
            if chunk.billed_characters is not None:
                self.upstream_characters = (self.upstream_characters or 0) + chunk.billed_characters
            data = await asyncio.to_thread(self.encoder.push_chunk, chunk.data, chunk.format, chunk.sample_rate)
            if data:
                yield data
        tail = self.encoder.end_segment()
        if tail:
            yield tail

    async def finish(self) -> bytes:
        return await asyncio.to_thread(self.encoder.finish)


class HttpStream:
    """One streamed HTTP TTS request; registered with the gateway's streams
    so its reservation is renewed and a revoked key stops it."""

    def __init__(
        self,
        gateway: Gateway,
        account: ApiKey,
        route: str,
        request: SynthesisRequest,
        fmt: OutputFormat,
        request_id: str,
    ) -> None:
        self.gateway = gateway
        self.account = account
        self.key_id = account.key_id
        self.lease_id: str | None = None
        self.route = route
        self.request = request
        self.fmt = fmt
        self.request_id = request_id
        self.synth = SegmentSynthesizer(gateway.require_engines().synthesizer(route), request, fmt)
        self.dispatched = 0
        self.engines: set[str] = set()
        self.record: UsageRecord | None = None
        self._settled = False
        self._stopped: SpeechError | None = None

    def live_reservations(self) -> list[str]:
        return [] if self._settled else [self.request_id]

    async def terminate(self, error: AuthError) -> None:
        self._stopped = error

    async def body(self) -> AsyncIterator[bytes]:
        streams = self.gateway.streams
        if streams is not None:
            streams.add(self)
        active = self.gateway.metrics.active_streams("tts_http", self.route, self.synth.chain.name)
        active.inc()
        try:
            segmenter = SentenceSegmenter(self.gateway.settings.tts.segment_max_chars)
            for text in segmenter.feed(self.request.text) + segmenter.flush():
                if self._stopped is not None:
                    log.info("tts stream %s stopped: %s", self.request_id, self._stopped.message)
                    return
                self.dispatched += len(text)
                produced = False
                try:
                    async for data in self.synth.segment(text):
                        if not produced and self.synth.engine is not None:
                            self.engines.add(self.synth.engine)  # it spoke (part of) this sentence
                        produced = True
                        yield data
                except SpeechError as exc:
                    if not produced:
                        self.dispatched -= len(text)  # no engine spoke it: not billed
                    log.warning("tts stream %s ended early: %s", self.request_id, exc.message)
                    if self.dispatched == 0:
                        raise  # nothing has left yet: the client gets the error status
                    return
            tail = await self.synth.finish()
            if tail:
                yield tail
        finally:
            active.dec()
            if streams is not None:
                streams.remove(self)
            await asyncio.shield(self._settle())

    async def _settle(self) -> None:
        if self._settled:
            return
        self._settled = True
        if self.dispatched == 0:
            await self.gateway.ledger.release(self.request_id)
            return
        engine = "+".join(sorted(self.engines)) or self.gateway.require_engines().synthesizer(self.route).name
        record, _ = await self.gateway.ledger.settle(
            self.request_id,
            UsageIn.tts(
                self.gateway.prices,
                idempotency_key=self.request_id,
                key_id=self.account.key_id,
                provider=self.route,
                engine=engine,
                characters=self.dispatched,
                unit_price_uomcu=self.gateway.tts_fee(self.request, self.engines),
                upstream_characters=self.synth.upstream_characters,
            ),
        )
        self.record = record
        log.info(
            "tts stream route=%s engine=%s chars=%d/%d format=%s cost_uomcu=%d",
            self.route,
            engine,
            self.dispatched,
            len(self.request.text),
            self.fmt.name,
            record.cost_uomcu if record else 0,
        )


async def streamed_response(
    gateway: Gateway,
    account: ApiKey,
    route: str,
    request: SynthesisRequest,
    fmt: OutputFormat,
    *,
    media_type: str,
    id_prefix: str = "tts-stream",
    headers: Mapping[str, str] | None = None,
) -> StreamingResponse:
    """Reserve the whole text, produce the first audio, then stream the rest."""
    request_id = f"{id_prefix}:{uuid.uuid4().hex}"
    cost = gateway.prices.tts_cost(route, len(request.text))
    job = HttpStream(gateway, account, route, request, fmt, request_id)
    await gateway.reserve_in_full(request_id, account, cost)
    body = job.body()
    try:
        first = await anext(body)
    except StopAsyncIteration:
        first = b""
    except BaseException:
        await body.aclose()
        raise

    async def rest() -> AsyncIterator[bytes]:
        try:
            if first:
                yield first
            async for data in body:
                yield data
        finally:
            await body.aclose()

    out_headers = {
        # What the whole text costs; a stream cut short bills less (see above).
        "x-usage-characters": str(len(request.text)),
        "x-usage-cost-uomcu": str(cost),
        # The engine of the first sentence (later ones may fail over).
        "x-engine": job.synth.engine or job.synth.chain.name,
        "cache-control": "no-store",
        **(headers or {}),
    }
    return StreamingResponse(rest(), media_type=media_type, headers=out_headers)
