"""ElevenLabs text to speech: :class:`ElevenLabsSynthesizer` (engine ``elevenlabs``).

One ``POST /v1/text-to-speech/{voice_id}`` (``.../stream`` when
``elevenlabs.streaming`` is set) per request; the response body is streamed
straight through as :class:`AudioChunk` s that are already encoded in the
requested ``output_format`` (``format=<that name>``), so the edge only
concatenates them. For ``pcm_*`` ElevenLabs sends raw PCM, which is still
marked with the format name. ``billed_characters`` (ElevenLabs'
``character-cost`` header) rides on the first chunk.

Decisions:

* **One httpx.AsyncClient per event loop**, created on first use and reused
  (connection pooling, HTTP/1.1 keep-alive, 20 s idle expiry). An httpx
  client's connections belong to the loop that opened them, and the gateway
  may run several servers on different threads (tests do), so clients are
  cached by running loop; clients of loops that have since closed are
  dropped. :meth:`aclose` closes the current loop's client and schedules the
  others' close on their own loops; :meth:`close` (what
  :meth:`Engines.close` calls) schedules them all. Using the engine after a
  close simply opens a new client.
* httpx's ``trust_env`` is left on, so ``HTTPS_PROXY`` / ``NO_PROXY`` /
  ``SSL_CERT_FILE`` work the way operators expect of an HTTP client.
* **Timeouts**: ``connect_timeout_s`` to connect (and to wait for a pooled
  connection); ``first_result_timeout_s`` for every read, which bounds both
  the wait for the first byte and any stall mid-body. Either is a retryable
  :class:`UpstreamTimeout`. Connect refused, DNS failure or reset is a
  retryable :class:`UpstreamUnavailable` ("Failed to connect to elevenlabs
  server").
* **Keys**: the caller's own ``elevenlabs_api_key`` when given, else the
  configured key, else :class:`NotConfigured` ("elevenlabs API key not
  configured"). The key travels only in the ``xi-api-key`` header, never in
  the URL, and never appears in an exception or log text (see
  :mod:`.error_map`).
* **Cancellation** (client gone, failover deadline) closes the response and
  its connection through ``client.stream``'s context manager.
* A 200 whose content type is not audio (a proxy's HTML page) or whose body
  is empty is a retryable :class:`UpstreamProtocolError`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator

import httpx

from speech.audio.encode import parse_output_format
from speech.errors import ConfigError, NotConfigured, UpstreamProtocolError
from speech.providers.base import AudioChunk, SynthesisRequest
from speech.providers.elevenlabs.error_map import translate_http_error, translate_transport_error
from speech.providers.elevenlabs.wire import (
    VOICE_ID_RE,
    build_body,
    check_caller_key,
    endpoint_path,
    is_audio_content_type,
    is_header_safe_key,
    parse_billed_characters,
    shown,
)
from speech.settings import ElevenLabsSettings

log = logging.getLogger("speech.providers.elevenlabs")

# Error bodies are JSON of a few hundred bytes; read no more than this of one.
ERROR_BODY_LIMIT = 64 * 1024
KEEPALIVE_EXPIRY_S = 20.0


class ElevenLabsSynthesizer:
    """The ``elevenlabs`` engine. Construction does no I/O."""

    name = "elevenlabs"
    # Requests may carry the caller's own key: their failures describe that
    # key, not this engine, so the failover layer keeps them out of its health.
    uses_caller_key = True

    def __init__(self, settings: ElevenLabsSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        """``transport`` replaces httpx's network transport (for tests only)."""
        self._settings = settings
        self._base_url = _check_url(settings.url)
        if not VOICE_ID_RE.fullmatch(settings.default_voice_id):
            raise ConfigError(
                f"setting 'elevenlabs.default_voice_id' must be 1 to 64 letters, digits, '_' or '-', "
                f"got {shown(settings.default_voice_id)}"
            )
        if settings.api_key and not is_header_safe_key(settings.api_key.get()):
            raise ConfigError("setting 'elevenlabs.api_key' has characters not allowed in an HTTP header")
        self._transport = transport
        self._timeout = httpx.Timeout(
            connect=settings.connect_timeout_s,
            read=settings.first_result_timeout_s,
            write=settings.first_result_timeout_s,
            pool=settings.connect_timeout_s,
        )
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._lock = threading.Lock()
        self._closing: set[asyncio.Task[None]] = set()
        port = f":{self._base_url.port}" if self._base_url.port else ""
        mode = ", streaming" if settings.streaming else ""
        self.description = f"elevenlabs ({self._base_url.host}{port}{mode})"

    async def synthesize(self, request: SynthesisRequest) -> AsyncIterator[AudioChunk]:
        fmt = parse_output_format(request.output_format)
        path = endpoint_path(request.voice_id or self._settings.default_voice_id, streaming=self._settings.streaming)
        key, caller_key = self._key(request)
        body = build_body(request, self._settings.default_model_id)
        client = self._client()
        received = 0
        try:
            async with client.stream(
                "POST", path, params={"output_format": fmt.name}, headers={"xi-api-key": key}, json=body
            ) as response:
                if response.status_code != 200:
                    raw = await _read_capped(response)
                    error = translate_http_error(response.status_code, raw, caller_key=caller_key, secrets=(key,))
                    log.info("elevenlabs answered HTTP %d: %s", response.status_code, error.message)
                    raise error
                content_type = response.headers.get("content-type")
                if not is_audio_content_type(content_type):
                    raise UpstreamProtocolError(f"elevenlabs answered 200 with content-type {shown(content_type)}")
                billed = parse_billed_characters(response.headers.get("character-cost"))
                async for data in response.aiter_bytes():
                    if not data:
                        continue
                    received += len(data)
                    yield AudioChunk(data, fmt.sample_rate, format=fmt.name, billed_characters=billed)
                    billed = None
        except httpx.HTTPError as exc:
            error = translate_transport_error(
                exc, read_timeout_s=self._settings.first_result_timeout_s, received=received
            )
            log.info("elevenlabs request failed: %s", error.message)
            raise error from exc
        if received == 0:
            raise UpstreamProtocolError("elevenlabs answered 200 with an empty body")

    def _key(self, request: SynthesisRequest) -> tuple[str, bool]:
        """The key to send and whether it is the caller's own."""
        if request.caller_api_key:
            return check_caller_key(request.caller_api_key), True
        key = self._settings.api_key.get()
        if not key:
            raise NotConfigured("elevenlabs API key not configured")
        return key, False

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None or client.is_closed:
                for dead in [other for other in self._clients if other.is_closed()]:
                    del self._clients[dead]
                client = httpx.AsyncClient(
                    base_url=self._base_url,
                    timeout=self._timeout,
                    transport=self._transport,
                    follow_redirects=False,
                    limits=httpx.Limits(
                        max_connections=100, max_keepalive_connections=20, keepalive_expiry=KEEPALIVE_EXPIRY_S
                    ),
                    headers={"user-agent": "speech-gateway"},
                )
                self._clients[loop] = client
            return client

    async def aclose(self) -> None:
        """Close the running loop's client; schedule the other loops' clients to close."""
        current = asyncio.get_running_loop()
        with self._lock:
            clients, self._clients = self._clients, {}
        for loop, client in clients.items():
            if loop is current:
                await client.aclose()
            else:
                self._close_on(loop, client)

    def close(self) -> None:
        """Synchronous close (for ``Engines.close()``): each client's close is
        scheduled on its own loop, which must still be running to carry it out."""
        with self._lock:
            clients, self._clients = self._clients, {}
        for loop, client in clients.items():
            self._close_on(loop, client)

    def _close_on(self, loop: asyncio.AbstractEventLoop, client: httpx.AsyncClient) -> None:
        def spawn() -> None:
            # The coroutine is created here, on its loop, so a loop that never
            # runs the callback leaves no never-awaited coroutine behind.
            task = loop.create_task(client.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

        if loop.is_closed():
            return  # its sockets went with it
        try:
            loop.call_soon_threadsafe(spawn)
        except RuntimeError:  # closed in the meantime
            pass


def _check_url(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigError(f"setting 'elevenlabs.url' is not a valid URL: {shown(url, 80)}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"setting 'elevenlabs.url' must be an http(s) URL, got {shown(url, 80)}")
    if parsed.userinfo or parsed.query or parsed.fragment:
        raise ConfigError("setting 'elevenlabs.url' must not carry credentials, a query or a fragment")
    return parsed


async def _read_capped(response: httpx.Response) -> bytes:
    """Up to :data:`ERROR_BODY_LIMIT` bytes of an error body; what arrived if it breaks off."""
    buf = bytearray()
    try:
        async for part in response.aiter_bytes():
            buf += part
            if len(buf) >= ERROR_BODY_LIMIT:
                break
    except httpx.HTTPError:
        pass  # classify by status with whatever arrived
    return bytes(buf[:ERROR_BODY_LIMIT])
