"""ElevenLabs failures translated into :mod:`speech.errors`.

Error bodies look like ``{"detail": {"status": "<code>", "message": "..."}}``,
or for request validation (HTTP 422) ``{"detail": [{"loc": [...], "msg":
"...", "type": "..."}]}``. Errors are classified by HTTP status and by the
``detail.status`` *code*, never by matching message text. A body that is not
JSON (a proxy's HTML page) is still mapped by its HTTP status.

Which key was used matters: the caller's own ``elevenlabs_api_key`` failing is
the caller's business (401/402 to the client, and no failover, since another
engine would hide the problem), the gateway's key failing is the operator's.

Mapping (first match wins; "caller" = the caller's own key was sent):

* ``quota_exceeded`` under any 4xx, or 402: caller -> :class:`CallerQuotaExceeded`
  (402); gateway -> :class:`UpstreamUnavailable` (503, retryable).
* 401, 403, or ``invalid_api_key`` under any 4xx: caller ->
  :class:`CallerCredentialError` (401); gateway -> :class:`UpstreamAuthError`
  (503, permanent).
* 429, or ``too_many_concurrent_requests`` / ``system_busy`` under any 4xx/5xx:
  :class:`UpstreamRateLimited` (429, retryable).
* 408: :class:`UpstreamTimeout` (retryable).
* any other 4xx (400 ``voice_not_found``, ``max_character_limit_exceeded``,
  404, 413, 422 validation): :class:`UpstreamRejected` (400, permanent), with
  ElevenLabs' message.
* 5xx: :class:`UpstreamUnavailable` (503, retryable).
* anything else (1xx, 3xx, another 2xx): :class:`UpstreamProtocolError`
  (502, retryable).

Decisions:

* The gateway's quota running out is not the client's fault and another
  engine can still serve the request, so it is a *retryable*
  :class:`UpstreamUnavailable` (503; the failover chain moves on and cools
  the engine down) rather than :class:`UpstreamRateLimited`, whose 429 would
  tell the client to slow down.
* ``quota_exceeded`` is recognised by its code under any 4xx status, and 402
  is treated as quota too: PROTOCOLS.md says 401, *unconfirmed* whether
  ElevenLabs always uses 401 for it.
* 403 is treated like 401 (a scoped key without the text-to-speech
  permission); *unconfirmed* which code ElevenLabs sends with it.
* The upstream's own message is passed on only for rejected requests (it
  tells the client what was wrong), cleaned of control characters, with every
  key we sent replaced by ``***``, and cut to 200 characters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

import httpx

from speech.errors import (
    CallerCredentialError,
    CallerQuotaExceeded,
    EngineError,
    SpeechError,
    UpstreamAuthError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)

MESSAGE_LIMIT = 200
CONNECT_FAILED = "Failed to connect to elevenlabs server"

_CODE_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_BUSY_CODES = frozenset({"too_many_concurrent_requests", "system_busy"})
_AUTH_CODES = frozenset({"invalid_api_key"})


def parse_error_body(raw: bytes) -> tuple[str, str]:
    """``(code, message)`` from an error body; empty strings when absent.

    ``code`` is ``detail.status`` (or ``detail.code``, *unconfirmed* newer
    shape) when it looks like a code; ``message`` is uncleaned.
    """
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return "", ""
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str):
        return "", detail
    if isinstance(detail, list):
        return "validation_error", "; ".join(_validation_item(item) for item in detail[:5])
    if not isinstance(detail, dict):
        return "", ""
    code = detail.get("status")
    if not isinstance(code, str) or not _CODE_RE.fullmatch(code):
        code = detail.get("code")
    code = code if isinstance(code, str) and _CODE_RE.fullmatch(code) else ""
    message = detail.get("message")
    return code, message if isinstance(message, str) else ""


def _validation_item(item: object) -> str:
    if not isinstance(item, dict):
        return str(item)
    loc = item.get("loc")
    where = ".".join(str(part) for part in loc) if isinstance(loc, list) else ""
    msg = str(item.get("msg", "invalid"))
    return f"{where}: {msg}" if where else msg


def clean_message(text: str, secrets: Iterable[str]) -> str:
    """Upstream text made safe to show: keys masked, one line, truncated."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = " ".join(text.split())
    if len(text) > MESSAGE_LIMIT:
        text = text[: MESSAGE_LIMIT - 3] + "..."
    return text


def translate_http_error(status: int, raw: bytes, *, caller_key: bool, secrets: Iterable[str]) -> SpeechError:
    """The gateway error for a non-200 answer (see the module table)."""
    code, message = parse_error_body(raw)
    tag = f"HTTP {status} {code}" if code else f"HTTP {status}"
    if 400 <= status < 500 and (code == "quota_exceeded" or status == 402):
        if caller_key:
            return CallerQuotaExceeded("elevenlabs quota exceeded for the elevenlabs_api_key in the request")
        return UpstreamUnavailable("elevenlabs quota of the gateway's account is exhausted")
    if status in (401, 403) or (400 <= status < 500 and code in _AUTH_CODES):
        if caller_key:
            return CallerCredentialError("elevenlabs rejected the elevenlabs_api_key in the request")
        return UpstreamAuthError("elevenlabs rejected the gateway's credentials")
    if status == 429 or (status >= 400 and code in _BUSY_CODES):
        return UpstreamRateLimited(f"elevenlabs is busy ({tag}); try again later")
    if status == 408:
        return UpstreamTimeout(f"elevenlabs timed out ({tag})")
    if 400 <= status < 500:
        text = clean_message(message, secrets)
        return UpstreamRejected(f"elevenlabs rejected the request ({tag})" + (f": {text}" if text else ""))
    if 500 <= status < 600:
        return UpstreamUnavailable(f"elevenlabs server error ({tag})")
    return UpstreamProtocolError(f"elevenlabs answered with unexpected {tag}")


def translate_transport_error(exc: httpx.HTTPError, *, read_timeout_s: float, received: int) -> EngineError:
    """The gateway error for an httpx failure (use with ``raise ... from exc``).

    The httpx message is never copied: only the exception's class name is,
    so nothing of the request (URL, headers) can leak through it.
    """
    if isinstance(exc, httpx.ConnectTimeout):
        return UpstreamTimeout("Timed out connecting to elevenlabs server")
    if isinstance(exc, httpx.PoolTimeout):
        return UpstreamTimeout("no free connection to elevenlabs server (too many requests in flight)")
    if isinstance(exc, httpx.TimeoutException):
        when = "before answering" if received == 0 else f"after {received} bytes of audio"
        return UpstreamTimeout(f"elevenlabs stalled for {read_timeout_s:g} s {when}")
    if isinstance(exc, httpx.ConnectError | httpx.ProxyError):
        return UpstreamUnavailable(CONNECT_FAILED)
    if isinstance(exc, httpx.DecodingError):
        return UpstreamProtocolError("elevenlabs sent a body that could not be decoded")
    if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
        if received:
            return UpstreamUnavailable(f"elevenlabs stream dropped after {received} bytes of audio")
        return UpstreamUnavailable("elevenlabs closed the connection before answering")
    return UpstreamUnavailable(f"elevenlabs request failed ({type(exc).__name__})")
