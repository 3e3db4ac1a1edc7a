"""One billed synthesis, shared by every TTS endpoint (OM1's and OpenAI's).

The price is known before any work, so the whole cost is reserved first (or
the request is refused with 402); the route's failover chain synthesizes;
the audio becomes the requested file; the usage record settles the
reservation in the same transaction. Any failure releases the credit.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from speech.api.gateway import Gateway
from speech.audio.encode import OutputFormat, encode
from speech.errors import UpstreamProtocolError
from speech.metering.records import ApiKey, UsageIn, UsageRecord
from speech.providers.base import AudioChunk, SynthesisRequest


@dataclass(frozen=True)
class Billed:
    engine: str
    audio: bytes
    record: UsageRecord


async def synthesize_billed(
    gateway: Gateway,
    account: ApiKey,
    route: str,
    request: SynthesisRequest,
    fmt: OutputFormat,
    *,
    id_prefix: str = "tts",
) -> Billed:
    """``request.output_format`` is what the engines are asked for (a native
    encoder may return it as is); ``fmt`` is the file the client gets."""
    synthesizer = gateway.require_engines().synthesizer(route)
    request_id = f"{id_prefix}:{uuid.uuid4().hex}"
    cost = gateway.prices.tts_cost(route, len(request.text))
    await gateway.reserve_in_full(request_id, account, cost)
    try:
        engine, chunks = await synthesizer.synthesize_with_engine(request)
        audio = await to_file(chunks, request.output_format, fmt)
    except BaseException:
        await gateway.release(request_id)
        raise
    record, _ = await gateway.ledger.settle(
        request_id,
        UsageIn.tts(
            gateway.prices,
            idempotency_key=request_id,
            key_id=account.key_id,
            provider=route,
            engine=engine,
            characters=len(request.text),
            # The caller's own ElevenLabs key pays ElevenLabs; we charge only our fee.
            unit_price_uomcu=gateway.tts_fee(request, {engine}),
            upstream_characters=next((c.billed_characters for c in chunks if c.billed_characters is not None), None),
        ),
    )
    assert record is not None
    return Billed(engine, audio, record)


async def to_file(chunks: list[AudioChunk], upstream_format: str, fmt: OutputFormat) -> bytes:
    """The complete file: upstream bytes already in ``fmt`` pass through; raw
    PCM (``pcm`` at the chunk's rate, or a ``pcm_<rate>`` name) is encoded
    off the event loop."""
    if chunks and upstream_format == fmt.name and all(c.format == fmt.name for c in chunks):
        return b"".join(c.data for c in chunks)
    rates = {_pcm_rate(c) for c in chunks}
    if None in rates:
        raise UpstreamProtocolError(f"engine returned audio in {chunks[0].format}, not {upstream_format} or PCM")
    if len(rates) > 1:
        raise UpstreamProtocolError("engine returned PCM chunks at different sample rates")
    rate = rates.pop() if rates else fmt.sample_rate
    assert rate is not None
    return await asyncio.to_thread(encode, b"".join(c.data for c in chunks), rate, fmt)


def _pcm_rate(chunk: AudioChunk) -> int | None:
    if chunk.format == "pcm":
        return chunk.sample_rate
    codec, _, rate = chunk.format.partition("_")
    if codec == "pcm" and rate.isdigit():
        return int(rate)
    return None
