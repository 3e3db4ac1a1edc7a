"""``POST /api/core/{provider}/tts``: OpenMind's TTS shape.

Body ``{"text", "voice_id"?, "model_id"?, "output_format"?, ...}``; reply
``{"response": base64 audio, "content_type": "..."}``. ``output_format`` may
also come in the query string, as ElevenLabs takes it; the body wins.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse

from speech.api.auth import extract_key
from speech.api.gateway import Gateway
from speech.audio.encode import OutputFormat, encode, parse_output_format
from speech.errors import InvalidTtsRequest, NotFound, PaymentRequired, UpstreamProtocolError
from speech.metering.ledger import UsageIn
from speech.metering.prices import format_omcu
from speech.providers.base import AudioChunk, SynthesisRequest

log = logging.getLogger("speech.tts")

MAX_BODY_BYTES = 1024 * 1024


async def tts(request: Request) -> JSONResponse:
    gateway: Gateway = request.app.state.gateway
    route = request.path_params["provider"]
    if route not in gateway.settings.routes.tts:
        raise NotFound(f"unsupported TTS provider: {route}")
    account = await gateway.authenticate(extract_key(request.headers, request.query_params))
    body = await _read_json(request)
    text = _text(body, gateway.settings.limits.tts_max_chars)
    fmt_name = body.get("output_format") or request.query_params.get("output_format")
    fmt = parse_output_format(fmt_name or gateway.settings.tts.default_format[route])
    voice_settings = body.get("voice_settings")
    if voice_settings is not None and not isinstance(voice_settings, dict):
        raise InvalidTtsRequest("'voice_settings' must be a JSON object")
    caller_key = _opt_str(body, "elevenlabs_api_key") or None
    await gateway.admit(account)
    synthesizer = gateway.require_engines().synthesizer(route)
    synth_request = SynthesisRequest(
        text=text,
        output_format=fmt.name,
        voice_id=_opt_str(body, "voice_id"),
        model_id=_opt_str(body, "model_id"),
        language_code=_opt_str(body, "language_code"),
        voice_settings=voice_settings,
        caller_api_key=caller_key,
    )
    # The price is known before any work: hold all of it, or refuse.
    request_id = f"tts:{uuid.uuid4().hex}"
    cost = gateway.prices.tts_cost(route, len(text))
    granted = await gateway.reserve(request_id, account, cost)
    if granted < cost:
        await gateway.release(request_id)
        raise PaymentRequired(
            f"insufficient balance: this request costs {format_omcu(cost)} OMCU, {format_omcu(granted)} available"
        )
    try:
        engine, chunks = await synthesizer.synthesize_with_engine(synth_request)
        audio = await _to_format(chunks, fmt)
    except BaseException:
        await gateway.release(request_id)
        raise
    upstream_chars = next((c.billed_characters for c in chunks if c.billed_characters is not None), None)
    # The caller's own ElevenLabs key pays ElevenLabs; we charge only our fee.
    fee = None
    if caller_key and engine == "elevenlabs":
        fee = int(gateway.settings.elevenlabs.caller_key_fee_per_million_chars * 1_000_000)
    record, _ = await gateway.ledger.settle(
        request_id,
        UsageIn.tts(
            gateway.prices,
            idempotency_key=request_id,
            key_id=account.key_id,
            provider=route,
            engine=engine,
            characters=len(text),
            unit_price_uomcu=fee,
            upstream_characters=upstream_chars,
        ),
    )
    assert record is not None
    log.info(
        "tts route=%s engine=%s chars=%d format=%s cost_uomcu=%d",
        route,
        engine,
        len(text),
        fmt.name,
        record.cost_uomcu,
    )
    return JSONResponse(
        {"response": base64.b64encode(audio).decode("ascii"), "content_type": fmt.content_type},
        headers={
            "x-usage-characters": str(len(text)),
            "x-usage-cost-uomcu": str(record.cost_uomcu),
            "x-engine": engine,
        },
    )


async def _to_format(chunks: list[AudioChunk], fmt: OutputFormat) -> bytes:
    """The complete file: upstream bytes already in the asked format pass
    through; raw PCM is encoded (off the event loop)."""
    if chunks and all(c.format == fmt.name for c in chunks):
        return b"".join(c.data for c in chunks)
    pcm_chunks = [c for c in chunks if c.format == "pcm"]
    if len(pcm_chunks) != len(chunks):
        raise UpstreamProtocolError(f"engine returned audio in {chunks[0].format}, not {fmt.name} or PCM")
    rate = pcm_chunks[0].sample_rate if pcm_chunks else 22050
    if any(c.sample_rate != rate for c in pcm_chunks):
        raise UpstreamProtocolError("engine returned PCM chunks at different sample rates")
    return await asyncio.to_thread(encode, b"".join(c.data for c in pcm_chunks), rate, fmt)


async def _read_json(request: Request) -> dict:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidTtsRequest(f"request body is over {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        raise InvalidTtsRequest("request body is empty; expected JSON with 'text'")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidTtsRequest("Invalid JSON") from exc
    if not isinstance(body, dict):
        raise InvalidTtsRequest("request body must be a JSON object")
    return body


def _text(body: dict, cap: int) -> str:
    if "text" not in body:
        raise InvalidTtsRequest("missing 'text'")
    text = body["text"]
    if not isinstance(text, str):
        raise InvalidTtsRequest("'text' must be a string")
    if not text.strip():
        raise InvalidTtsRequest("'text' is empty")
    if len(text) > cap:
        raise InvalidTtsRequest(f"'text' is {len(text)} characters; the limit is {cap}")
    return text


def _opt_str(body: dict, name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidTtsRequest(f"'{name}' must be a string")
    return value
