"""Relaying an upstream's server-sent events to the client, and noticing
when the client leaves.

:class:`RelayResponse` is the ASGI response of a streamed chat completion.
It forwards each upstream event as soon as it is complete (never the whole
answer), while a second task waits for the client's ``http.disconnect``: a
client that leaves cancels the relay, which closes the upstream connection,
so the upstream stops generating even while it is silent. Whatever ends the
stream (the upstream's end, an upstream failure, the client leaving, the
server shutting down), the usage is settled exactly once, in a task shielded
from cancellation and tracked by the relay so shutdown waits for it.

Decisions:

* The usage-only chunk (``choices: []``) that the gateway asks for with
  ``stream_options.include_usage`` is passed on only to clients that asked
  for it themselves: many clients assume every chunk has a choice.
* An upstream failure after the first event cannot change the status any
  more (200 went out with the first bytes), so the client gets one event
  ``data: {"error": {"message", "type": "upstream_error", "code"}}`` and the
  stream ends without ``[DONE]``; the official OpenAI clients raise an
  ``APIError`` with that message.
* A stream that ends early (client gone, upstream failure) is billed for
  what was produced: the upstream's usage if it arrived, else the input
  estimate plus the estimate of the text relayed so far, marked estimated.
* The usage record is committed before ``data: [DONE]`` (or the end of a
  stream without it) is sent, so a client that asks for its usage as soon
  as its stream ends finds it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from speech.api.chat_billing import ChatBill
from speech.errors import SpeechError
from speech.llm import jsonio
from speech.llm.sse import Usage, inspect
from speech.llm.upstream import EventStream
from speech.observability.metrics import LlmMeter

log = logging.getLogger("speech.chat")

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before its answer began."""


async def wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
    """``work``'s result, or ClientGone (``work`` cancelled) if the client
    disconnects first. Only for after the request body has been read."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(wait_for_disconnect(receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if watch.done() and not watch.cancelled():
        if not task.cancelled() and task.exception() is None:
            result = task.result()
            if isinstance(result, EventStream):
                await result.aclose()
        raise ClientGone
    return task.result()


def error_event(error: SpeechError) -> bytes:
    payload = {"error": {"message": error.message, "type": "upstream_error", "code": error.status}}
    return b"data: " + jsonio.encode(payload) + b"\n\n"


class RelayResponse(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        events: EventStream,
        bill: ChatBill,
        *,
        include_usage: bool,
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
        describe: str,
        meter: LlmMeter | None = None,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers(
            {
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
                "x-accel-buffering": "no",  # proxies such as nginx: do not buffer the stream
                "x-request-id": bill.id,
            }
        )
        self._events = events
        self._bill = bill
        self._include_usage = include_usage
        self._spawn = spawn
        self._describe = describe
        self._usage: Usage | None = None
        self._output_estimate = 0
        self._outcome = "complete"
        self._meter = meter
        self._upstream_error: SpeechError | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        relay = asyncio.ensure_future(self._relay(send))
        watch = asyncio.ensure_future(wait_for_disconnect(receive))
        try:
            await asyncio.wait({relay, watch}, return_when=asyncio.FIRST_COMPLETED)
            if not relay.done():
                self._outcome = "client_gone"
                relay.cancel()
            await asyncio.gather(relay, return_exceptions=True)
            if not relay.cancelled() and isinstance(relay.exception(), OSError | ClientDisconnect):
                self._outcome = "client_gone"
            elif not relay.cancelled() and relay.exception() is not None:
                self._outcome = "error"
                log.error("chat relay failed", exc_info=relay.exception())
        finally:
            watch.cancel()
            relay.cancel()
            await asyncio.shield(self._spawn(self._finish()))

    async def _relay(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        while True:
            try:
                event = await self._events.next()
            except SpeechError as exc:
                self._outcome = "upstream_error"
                self._upstream_error = exc
                log.info("%s: stream failed mid-answer: %s", self._describe, exc.message)
                await send({"type": "http.response.body", "body": error_event(exc), "more_body": True})
                break
            if event is None:
                break
            info = inspect(event.data)
            self._output_estimate += info.output_tokens
            if info.usage is not None:
                self._usage = info.usage
            if info.usage_only and not self._include_usage:
                continue
            if info.done:  # clients stop reading at [DONE]: the usage is committed before it
                await asyncio.shield(self._spawn(self._settle()))
            await send({"type": "http.response.body", "body": event.raw, "more_body": True})
        await asyncio.shield(self._spawn(self._settle()))
        self._count()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _count(self) -> None:
        """The request's outcome in the metrics, once: where the stream ends, or at the finish."""
        if self._meter is not None:
            meter, self._meter = self._meter, None
            meter.stream_finished(self._outcome, self._upstream_error)

    async def _finish(self) -> None:
        self._count()
        await self._events.aclose()
        await self._settle()

    async def _settle(self) -> None:
        record = await self._bill.settle(self._usage, self._output_estimate)
        if record is not None:
            log.info(
                "%s stream=true outcome=%s in=%s out=%s estimated=%s cost_uomcu=%d",
                self._describe,
                self._outcome,
                record.input_tokens,
                record.output_tokens,
                record.estimated,
                record.cost_uomcu,
            )
