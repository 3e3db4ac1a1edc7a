"""The ElevenLabs request, built and checked before anything is sent.

Wire facts (``/work/shared/PROTOCOLS.md`` section D): ``POST
/v1/text-to-speech/{voice_id}`` (or ``.../stream``), header ``xi-api-key``,
query ``output_format``, JSON ``{"text", "model_id", "voice_settings",
"language_code"}``; the ``character-cost`` response header reports billed
characters.

Decisions:

* **Voice ids are allow-listed**, not escaped into shape: ``[A-Za-z0-9_-]``,
  1 to 64 characters. That makes path injection impossible (no ``/``, ``?``,
  ``#``, ``%``, ``.`` or ``..`` can reach the path) and the id is still
  percent-quoted when the path is built, as a second fence. A bad id in a
  request is the client's input, so it is :class:`InvalidTtsRequest` (400)
  and the upstream is never called; a bad configured default is a
  :class:`ConfigError` at start-up. *Unconfirmed*: every documented and
  observed ElevenLabs voice id is 20 alphanumeric characters; the allow-list
  is wider than that on purpose.
* **Keys are checked to be header-safe** (printable ASCII, no spaces, at
  most 512 characters) before they are handed to httpx: h11 quotes an illegal
  header value in its exception text, and that must never happen to a key.
  A malformed caller key is the client's input (:class:`InvalidTtsRequest`);
  the messages never echo any part of a key.
* ``voice_settings`` and ``language_code`` are sent only when given, so the
  upstream's defaults (the voice's stored settings) apply otherwise.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from speech.errors import InvalidTtsRequest
from speech.providers.base import SynthesisRequest

VOICE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_KEY_RE = re.compile(r"[\x21-\x7e]{1,512}")

# Content types accepted as an audio body. *Unconfirmed* which exact type
# ElevenLabs sends for pcm_* / ulaw / opus, so any audio/* is accepted plus
# the generic binary types; text/html (a proxy's error page) or JSON is not.
_BINARY_TYPES = frozenset({"application/octet-stream", "binary/octet-stream", "application/ogg"})


def shown(value: object, limit: int = 40) -> str:
    """A short repr of client input for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_voice_id(voice_id: str) -> str:
    """Return ``voice_id`` if it is safe to put in the path, else raise."""
    if not isinstance(voice_id, str) or not VOICE_ID_RE.fullmatch(voice_id):
        raise InvalidTtsRequest(
            f"invalid voice_id {shown(voice_id)}: expected 1 to 64 letters, digits, '_' or '-' "
            "(e.g. JBFqnCBsd6RMkjVDRZzb)"
        )
    return voice_id


def is_header_safe_key(key: str) -> bool:
    return isinstance(key, str) and _KEY_RE.fullmatch(key) is not None


def check_caller_key(key: str) -> str:
    if not is_header_safe_key(key):
        # Never echo the value: it may be a real key with a stray character.
        raise InvalidTtsRequest("'elevenlabs_api_key' is malformed: expected printable ASCII without spaces")
    return key


def endpoint_path(voice_id: str, *, streaming: bool) -> str:
    path = "/v1/text-to-speech/" + quote(check_voice_id(voice_id), safe="")
    return path + "/stream" if streaming else path


def build_body(request: SynthesisRequest, default_model_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {"text": request.text, "model_id": request.model_id or default_model_id}
    if request.voice_settings is not None:
        body["voice_settings"] = request.voice_settings
    if request.language_code:
        body["language_code"] = request.language_code
    return body


def parse_billed_characters(value: str | None) -> int | None:
    """``character-cost`` as an int, or ``None`` when absent or not a number."""
    if value is None:
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 12:
        return None
    return int(value)


def is_audio_content_type(value: str | None) -> bool:
    mime = (value or "").split(";", 1)[0].strip().lower()
    return mime.startswith("audio/") or mime in _BINARY_TYPES
