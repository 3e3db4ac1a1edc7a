"""One pooled HTTP client for every LLM upstream, with the relay's timeouts
and its one retry.

:meth:`UpstreamClient.complete` returns a plain answer (the whole body);
:meth:`UpstreamClient.stream` returns an :class:`EventStream` whose first
event has already arrived. Until then nothing has reached the client, so:

* **One retry.** A failure of the connection itself (refused, reset, DNS, a
  connect timeout, a pooled connection the upstream had closed, a drop before
  the answer or its first event) is retried once, at once, on a fresh
  connection. A read timeout is not retried (it would double the wait), nor
  is an HTTP error status (the upstream did answer).
* **Errors as statuses.** An HTTP error, a timeout or a dead upstream becomes a
  gateway error (:mod:`.error_map`) the edge answers with a real status, and
  a stream's first-event wait is bounded like any read.

**Timeouts** (``[llm]``): ``connect_timeout_s`` to connect or get a pooled
connection; ``read_timeout_s`` for every read, which bounds the wait for the
answer to begin (for a plain request: the whole generation) and any silence
between two stream chunks; ``total_timeout_s`` for the whole request,
enforced by a deadline the caller passes in (``anyio.current_time()``
based).

**Cancellation**: a cancelled call (the client hung up) closes the upstream
response, and with it the connection, so the upstream sees the disconnect
and stops generating.

The client follows no redirects (a redirect is a misconfigured base URL,
reported as ``P answered HTTP 30x``) and honours ``HTTPS_PROXY`` /
``NO_PROXY`` / ``SSL_CERT_FILE`` like any httpx client.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from speech.errors import UpstreamGatewayTimeout, UpstreamProtocolError
from speech.llm import jsonio
from speech.llm.error_map import is_connection_failure, translate_midstream, translate_status, translate_transport
from speech.llm.providers import Provider
from speech.llm.sse import SseEvent, SseParser
from speech.settings import LlmSettings

log = logging.getLogger("speech.llm")

ERROR_BODY_LIMIT = 64 * 1024
KEEPALIVE_EXPIRY_S = 20.0
MAX_CONNECTIONS = 1000


@dataclass(frozen=True)
class Answer:
    """A plain (non-streamed) completion."""

    body: bytes
    content_type: str
    parsed: Any  # the decoded JSON


class UpstreamClient:
    def __init__(self, settings: LlmSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._settings = settings
        self._transport = transport
        self._http: httpx.AsyncClient | None = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            s = self._settings
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(
                    connect=s.connect_timeout_s, read=s.read_timeout_s, write=s.read_timeout_s, pool=s.connect_timeout_s
                ),
                limits=httpx.Limits(
                    max_connections=MAX_CONNECTIONS,
                    max_keepalive_connections=100,
                    keepalive_expiry=KEEPALIVE_EXPIRY_S,
                ),
                follow_redirects=False,
                transport=self._transport,
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    async def complete(self, provider: Provider, payload: bytes, deadline: float) -> Answer:
        """POST a plain request; the whole answer, or a gateway error."""
        answer = await self._exchange(provider, payload, deadline, stream=False)
        assert isinstance(answer, Answer)
        return answer

    async def stream(self, provider: Provider, payload: bytes, deadline: float) -> EventStream:
        """POST a streaming request; returns once its first event has arrived."""
        events = await self._exchange(provider, payload, deadline, stream=True)
        assert isinstance(events, EventStream)
        return events

    async def _exchange(
        self, provider: Provider, payload: bytes, deadline: float, *, stream: bool
    ) -> Answer | EventStream:
        s = self._settings
        headers = provider.headers()
        headers["accept"] = "text/event-stream" if stream else "application/json"
        for attempt in (1, 2):
            response: httpx.Response | None = None
            keep_open = False
            try:
                with total_deadline(provider.name, deadline, s.total_timeout_s):
                    request = self._client().build_request("POST", provider.endpoint, content=payload, headers=headers)
                    response = await self._client().send(request, stream=True)
                    if response.status_code != 200:
                        raw = await _read_capped(response, ERROR_BODY_LIMIT)
                        error = translate_status(
                            provider.name, response.status_code, raw, response.headers, (provider.api_key.get(),)
                        )
                        log.info("%s answered HTTP %d: %s", provider.name, response.status_code, error.message)
                        raise error
                    if stream:
                        events = EventStream(provider.name, response, s, deadline)
                        await events.prime()
                        keep_open = True
                        return events
                    return await _answer(provider.name, response, s.max_response_bytes)
            except httpx.HTTPError as exc:
                if attempt == 1 and is_connection_failure(exc):
                    log.info("%s: connection failed (%s); retrying once", provider.name, type(exc).__name__)
                    continue
                error = translate_transport(
                    provider.name, exc, answered=response is not None, read_timeout_s=s.read_timeout_s
                )
                log.info("%s request failed: %s (%s)", provider.name, error.message, type(exc).__name__)
                raise error from exc
            finally:
                if response is not None and not keep_open:
                    with anyio.CancelScope(shield=True):
                        await response.aclose()
        raise AssertionError("unreachable")  # pragma: no cover


class EventStream:
    """The open stream of one request: its events, in order, as they arrive.

    Failures after :meth:`prime` (the client already has part of the answer)
    raise gateway errors from :meth:`next`; the relay turns them into an
    error event. :meth:`aclose` closes the upstream connection; it is safe to
    call more than once."""

    def __init__(self, provider: str, response: httpx.Response, settings: LlmSettings, deadline: float) -> None:
        self._provider = provider
        self._response = response
        self._settings = settings
        self._deadline = deadline
        self._parser = SseParser(settings.max_response_bytes)
        self._pending: deque[SseEvent] = deque()
        self._chunks: AsyncIterator[bytes] = response.aiter_bytes()
        self._eof = False

    async def prime(self) -> None:
        """Wait for the first event (httpx errors propagate, for the retry)."""
        content_type = self._response.headers.get("content-type", "")
        if not content_type.lower().startswith("text/event-stream"):
            raise UpstreamProtocolError(
                f"{self._provider} answered a stream request with {content_type[:60] or 'no content type'!r}, "
                "not server-sent events"
            )
        while not self._pending:
            if self._eof:
                raise UpstreamProtocolError(f"{self._provider} ended the stream without sending anything")
            await self._read()

    async def next(self) -> SseEvent | None:
        """The next event; ``None`` at the end of the stream."""
        try:
            with total_deadline(self._provider, self._deadline, self._settings.total_timeout_s):
                while not self._pending:
                    if self._eof:
                        return None
                    await self._read()
        except httpx.HTTPError as exc:
            raise translate_midstream(self._provider, exc, read_timeout_s=self._settings.read_timeout_s) from exc
        return self._pending.popleft()

    async def _read(self) -> None:
        try:
            data = await self._chunks.__anext__()
        except StopAsyncIteration:
            self._eof = True
            self._pending.extend(self._parser.close())
            return
        self._pending.extend(self._parser.feed(data))

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._response.aclose()


@contextlib.contextmanager
def total_deadline(provider: str, deadline: float, total_s: float) -> Iterator[None]:
    """``total_timeout_s`` as an UpstreamGatewayTimeout."""
    try:
        with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
            yield
    except TimeoutError as exc:
        raise UpstreamGatewayTimeout(f"{provider} did not finish within {total_s:g} s") from exc


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    out = bytearray()
    async for chunk in response.aiter_bytes():
        out += chunk
        if len(out) > limit:
            break
    return bytes(out)


async def _answer(provider: str, response: httpx.Response, limit: int) -> Answer:
    body = await _read_capped(response, limit)
    if len(body) > limit:
        raise UpstreamProtocolError(f"{provider} answered with more than {limit} bytes")
    try:
        parsed = await jsonio.loads(body)
    except (ValueError, RecursionError) as exc:
        raise UpstreamProtocolError(f"{provider} answered 200 with a body that is not JSON") from exc
    if not isinstance(parsed, dict):
        raise UpstreamProtocolError(f"{provider} answered 200 with JSON that is not an object")
    return Answer(body, response.headers.get("content-type", "application/json"), parsed)
