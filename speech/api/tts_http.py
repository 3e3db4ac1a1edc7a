"""``POST /api/core/{provider}/tts``: OpenMind's TTS shape.

Body ``{"text", "voice_id"?, "model_id"?, "output_format"?, ...}``; reply
``{"response": base64 audio, "content_type": "..."}``. ``output_format`` may
also come in the query string, as ElevenLabs takes it; the body wins.

Streaming: ``POST /api/core/{provider}/tts/stream``, or ``"stream": true`` in
the body, answers with the audio bytes themselves (``content-type`` of the
format, chunked), sentence by sentence as they are synthesized; see
:mod:`speech.api.tts_stream`.
"""

from __future__ import annotations

import base64
import json
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from speech.api.auth import extract_key
from speech.api.gateway import Gateway
from speech.api.synthesis import synthesize_billed
from speech.api.tts_stream import streamed_response
from speech.audio.encode import parse_output_format
from speech.errors import InvalidTtsRequest, NotFound
from speech.providers.base import SynthesisRequest

log = logging.getLogger("speech.tts")

MAX_BODY_BYTES = 1024 * 1024


async def tts_stream(request: Request) -> Response:
    return await tts(request, stream=True)


async def tts(request: Request, *, stream: bool = False) -> Response:
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
    wants_stream = body.get("stream", False)
    if not isinstance(wants_stream, bool):
        raise InvalidTtsRequest("'stream' must be true or false")
    await gateway.admit(account)
    synth_request = SynthesisRequest(
        text=text,
        output_format=fmt.name,
        voice_id=_opt_str(body, "voice_id"),
        model_id=_opt_str(body, "model_id"),
        language_code=_opt_str(body, "language_code"),
        voice_settings=voice_settings,
        caller_api_key=caller_key,
    )
    if stream or wants_stream:
        return await streamed_response(
            gateway, account, route, synth_request, fmt, media_type=fmt.content_type, headers={"x-route": route}
        )
    billed = await synthesize_billed(gateway, account, route, synth_request, fmt)
    cost = billed.record.cost_uomcu
    log.info("tts route=%s engine=%s chars=%d format=%s cost_uomcu=%d", route, billed.engine, len(text), fmt.name, cost)
    return JSONResponse(
        {"response": base64.b64encode(billed.audio).decode("ascii"), "content_type": fmt.content_type},
        headers={"x-usage-characters": str(len(text)), "x-usage-cost-uomcu": str(cost), "x-engine": billed.engine},
    )


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
