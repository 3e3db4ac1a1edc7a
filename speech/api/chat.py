"""``POST /api/core/{provider}/chat/completions``: the LLM relay (PROTOCOLS.md A3).

The body is OpenAI's Chat Completions request and is forwarded as sent
(``temperature``, ``max_tokens``, ``tools``, ``response_format`` and every
other field): byte for byte for a plain request; for ``"stream": true`` with
``stream_options.include_usage`` set to true (unless the provider's
``stream_usage`` is off), the only change the gateway makes. The answer is
the upstream's: its JSON as is, or its server-sent events relayed one by one
as they arrive (:mod:`speech.api.chat_stream`).

Order of checks, each with the seed's wording where the seed has one:

1. the provider: 404 ``unsupported model provider: X``;
2. the gateway key: 401 (``missing API key``, ``invalid API key``, ...);
3. the body: 400 ``Invalid JSON``, or a specific message for a missing or
   malformed ``model``, ``messages``, ``stream``, ``stream_options``,
   ``max_tokens`` / ``max_completion_tokens``;
4. the model: 404 ``unsupported model: X. Supported model prefixes for P: [...]``;
5. its price: 503 when the model has no price (never served unpriced);
6. the upstream key: 503 ``P API key not configured``;
7. the key's requests per minute: 429;
8. credit: 402 (see :mod:`speech.api.chat_billing`);
9. the upstream: its failures as :mod:`speech.llm.error_map` describes,
   503 ``Failed to connect to P server`` when it cannot be reached.

Plain answers carry ``x-request-id`` and ``x-usage-input-tokens``,
``x-usage-output-tokens``, ``x-usage-estimated``, ``x-usage-cost-uomcu``;
the usage record is committed before the answer is sent. A streamed answer
carries ``x-request-id``; its usage record is committed when the stream ends.

A client that disconnects cancels the upstream request, before the answer
begins as well as during a stream. It is billed for what the upstream was
sent and had produced by then: the input estimate, plus for a stream the
estimate of the text already relayed (or the upstream's usage if it had
come), marked estimated.

The relay never touches the speech engines: it answers while they are still
loading, and even if they failed to load.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from starlette.requests import Request
from starlette.responses import Response

from speech.api.auth import extract_key
from speech.api.chat_billing import ChatBill
from speech.api.chat_stream import ClientGone, RelayResponse, unless_disconnected
from speech.api.gateway import Gateway
from speech.errors import InvalidChatRequest, NotConfigured
from speech.llm import estimate, jsonio
from speech.llm.providers import Provider, ProviderTable
from speech.llm.sse import Usage
from speech.llm.upstream import UpstreamClient
from speech.metering.checks import MAX_MODEL_LENGTH
from speech.metering.prices import PriceTable
from speech.metering.records import UsageRecord
from speech.settings import LlmSettings

log = logging.getLogger("speech.chat")

# For a client that left before its answer (nginx's "client closed request"):
# nobody receives it; it only shows in the access log.
CLIENT_CLOSED_REQUEST = 499


@dataclass
class ChatRelay:
    """The relay's state, built once per app: providers, prices, one HTTP client."""

    settings: LlmSettings
    providers: ProviderTable
    prices: PriceTable
    upstream: UpstreamClient
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def from_settings(
        cls, settings: LlmSettings, prices: PriceTable, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> ChatRelay:
        """Validate the ``[llm]`` settings (ConfigError) and warn about every
        model prefix of a provider with a key that has no price (its models
        are refused)."""
        providers = ProviderTable.from_settings(settings)
        for name, prefix in providers.unpriced(prices, usable_only=True):
            log.warning(
                "LLM model prefix %r of %s has no price: its models are refused until "
                "prices.llm_input_per_million_tokens and prices.llm_output_per_million_tokens price them",
                prefix,
                name,
            )
        return cls(settings, providers, prices, UpstreamClient(settings, transport=transport))

    def unit_prices(self, provider: Provider, model: str) -> tuple[int, int]:
        """µOMCU per million input / output tokens; NotConfigured (503) if unpriced."""
        if provider.free:
            return 0, 0
        units = self.prices.llm_unit_prices(model)
        if units is None:
            raise NotConfigured(
                f"model {model} has no price on this gateway; the operator must set its "
                "prices.llm_input_per_million_tokens and prices.llm_output_per_million_tokens"
            )
        return units

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` to its end even if the request is cancelled; shutdown waits for it."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("chat settlement failed", exc_info=task.exception())

    async def aclose(self) -> None:
        """Wait for settlements in flight, then close the upstream connections."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.upstream.aclose()


@dataclass(frozen=True)
class ChatRequest:
    body: dict[str, Any]
    raw: bytes
    model: str
    stream: bool
    include_usage: bool  # the client itself asked for the usage chunk
    max_output_tokens: int | None


async def chat_completions(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    relay: ChatRelay = request.app.state.chat
    provider = relay.providers.get(request.path_params["provider"])
    account = await gateway.authenticate(extract_key(request.headers, request.query_params))
    chat = await read_chat(request, relay.settings.max_body_bytes)
    provider.check_model(chat.model)
    units = relay.unit_prices(provider, chat.model)
    provider.check_key()
    await gateway.admit(account)
    bill = ChatBill(
        gateway,
        account,
        provider=provider.name,
        model=chat.model,
        units=units,
        free=provider.free,
        input_estimate=estimate.input_tokens(chat.body),
        max_life_s=relay.settings.total_timeout_s,
    )
    await bill.reserve(chat.max_output_tokens or relay.settings.default_max_tokens)
    describe = f"chat {bill.id} provider={provider.name} model={chat.model!r}"
    deadline = anyio.current_time() + relay.settings.total_timeout_s
    meter = gateway.metrics.llm(provider.name)
    sent = time.monotonic()
    try:
        if chat.stream:
            payload = await _stream_payload(chat, provider)
            events = await unless_disconnected(request.receive, relay.upstream.stream(provider, payload, deadline))
        else:
            answer = await unless_disconnected(request.receive, relay.upstream.complete(provider, chat.raw, deadline))
    except ClientGone:
        meter.finished("client_gone")
        record = await bill.settle(None, 0)
        assert record is not None
        log.info(
            "%s: the client left before the answer; billed the input estimate (%d µOMCU)", describe, record.cost_uomcu
        )
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    except BaseException as exc:
        meter.failed(exc)
        await bill.release()
        raise
    meter.answered(chat.stream, time.monotonic() - sent)
    if chat.stream:
        return RelayResponse(
            events, bill, include_usage=chat.include_usage, spawn=relay.spawn, describe=describe, meter=meter
        )
    meter.finished("ok")
    record = await bill.settle(Usage.parse(answer.parsed.get("usage")), estimate.answer_output_tokens(answer.parsed))
    assert record is not None
    log.info(
        "%s stream=false in=%s out=%s estimated=%s cost_uomcu=%d",
        describe,
        record.input_tokens,
        record.output_tokens,
        record.estimated,
        record.cost_uomcu,
    )
    return Response(answer.body, media_type=answer.content_type, headers=_usage_headers(bill.id, record))


def _usage_headers(request_id: str, record: UsageRecord) -> dict[str, str]:
    return {
        "x-request-id": request_id,
        "x-usage-input-tokens": str(record.input_tokens),
        "x-usage-output-tokens": str(record.output_tokens),
        "x-usage-estimated": "true" if record.estimated else "false",
        "x-usage-cost-uomcu": str(record.cost_uomcu),
    }


async def _stream_payload(chat: ChatRequest, provider: Provider) -> bytes:
    if not provider.stream_usage:
        return chat.raw
    options = chat.body.get("stream_options") or {}
    return await jsonio.dumps({**chat.body, "stream_options": {**options, "include_usage": True}}, len(chat.raw))


async def read_chat(request: Request, max_bytes: int) -> ChatRequest:
    """The request body, checked as far as the gateway relies on it."""
    raw = bytearray()
    async for piece in request.stream():
        raw += piece
        if len(raw) > max_bytes:
            raise InvalidChatRequest(f"request body is over {max_bytes} bytes")
    if not raw.strip():
        raise InvalidChatRequest("request body is empty; expected JSON with 'model' and 'messages'")
    try:
        body = await jsonio.loads(bytes(raw))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise InvalidChatRequest("Invalid JSON") from exc
    if not isinstance(body, dict):
        raise InvalidChatRequest("request body must be a JSON object")
    return parse_chat(body, bytes(raw))


def parse_chat(body: dict[str, Any], raw: bytes) -> ChatRequest:
    if "model" not in body:
        raise InvalidChatRequest("missing 'model'")
    model = body["model"]
    if not isinstance(model, str) or not model:
        raise InvalidChatRequest("'model' must be a non-empty string")
    if len(model) > MAX_MODEL_LENGTH or not model.isprintable():
        raise InvalidChatRequest(f"'model' must be at most {MAX_MODEL_LENGTH} printable characters")
    if "messages" not in body:
        raise InvalidChatRequest("missing 'messages'")
    if not isinstance(body["messages"], list) or not body["messages"]:
        raise InvalidChatRequest("'messages' must be a non-empty list")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidChatRequest("'stream' must be true or false")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidChatRequest("'stream_options' must be an object")
    limits = [body.get(name) for name in ("max_completion_tokens", "max_tokens")]
    for name, value in zip(("max_completion_tokens", "max_tokens"), limits, strict=True):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidChatRequest(f"'{name}' must be a positive integer")
    given = [v for v in limits if v is not None]
    return ChatRequest(
        body=body,
        raw=raw,
        model=model,
        stream=stream,
        include_usage=bool(options and options.get("include_usage") is True),
        max_output_tokens=max(given) if given else None,
    )
