"""The upstream client against the loopback OpenAI-protocol server: answers,
streams, the one retry, timeouts, cancellation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from speech.errors import UpstreamGatewayTimeout, UpstreamProtocolError, UpstreamServerError, UpstreamUnavailable
from speech.llm.providers import Provider, ProviderTable
from speech.llm.sse import inspect
from speech.llm.upstream import EventStream, UpstreamClient
from speech.settings import LlmSettings, load_settings
from tests.llm.fake_upstream import REPLY, UPSTREAM_KEY, FakeLLM, refused_port

PLAIN = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).encode()
STREAM = json.dumps(
    {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
).encode()


def settings(fake: FakeLLM, **llm: Any) -> LlmSettings:
    over = {
        "llm.openai.base_url": fake.url,
        "llm.openai.api_key": UPSTREAM_KEY,
        **{f"llm.{k}": v for k, v in llm.items()},
    }
    return load_settings(environ={}, overrides=over).llm


def openai(s: LlmSettings) -> Provider:
    return ProviderTable.from_settings(s).get("openai")


@pytest.fixture
async def client(fake_llm: FakeLLM) -> AsyncIterator[tuple[UpstreamClient, Provider]]:
    s = settings(fake_llm)
    upstream = UpstreamClient(s)
    yield upstream, openai(s)
    await upstream.aclose()


def deadline(seconds: float = 30) -> float:
    return anyio.current_time() + seconds


async def drain(events: EventStream) -> list[Any]:
    out = []
    while (event := await events.next()) is not None:
        out.append(event.data)
    await events.aclose()
    return out


async def test_a_plain_answer(client: Any, fake_llm: FakeLLM) -> None:
    upstream, provider = client
    answer = await upstream.complete(provider, PLAIN, deadline())
    assert answer.parsed["choices"][0]["message"]["content"] == REPLY
    assert answer.content_type.startswith("application/json")
    (seen,) = fake_llm.requests
    assert seen.raw == PLAIN and seen.headers["accept"] == "application/json"


async def test_a_stream_returns_with_its_first_event_and_then_relays_the_rest(client: Any, fake_llm: FakeLLM) -> None:
    upstream, provider = client
    fake_llm.fault = "hold"
    events = await upstream.stream(provider, STREAM, deadline())
    assert fake_llm.requests[-1].headers["accept"] == "text/event-stream"
    first = await events.next()
    assert first is not None and json.loads(first.data or "")["choices"][0]["delta"]["role"] == "assistant"
    assert not fake_llm.finished.is_set()
    fake_llm.release.set()
    rest = await drain(events)
    assert rest[-1] == "[DONE]" and inspect(rest[-2]).usage_only
    await events.aclose()  # twice is fine


async def test_one_retry_on_a_connection_failure(client: Any, fake_llm: FakeLLM) -> None:
    upstream, provider = client
    fake_llm.drop_next = 1
    assert (await upstream.complete(provider, PLAIN, deadline())).parsed["usage"]["completion_tokens"] == 8
    fake_llm.drop_next = 1
    assert (await drain(await upstream.stream(provider, STREAM, deadline())))[-1] == "[DONE]"
    assert len(fake_llm.requests) == 4
    fake_llm.drop_next = 2
    with pytest.raises(UpstreamServerError, match="openai closed the connection before answering"):
        await upstream.complete(provider, PLAIN, deadline())
    assert len(fake_llm.requests) == 6  # never a third attempt


async def test_an_unreachable_upstream() -> None:
    s = load_settings(
        environ={},
        overrides={"llm.openai.base_url": f"http://127.0.0.1:{refused_port()}/v1", "llm.openai.api_key": "k"},
    ).llm
    upstream = UpstreamClient(s)
    try:
        with pytest.raises(UpstreamUnavailable, match="^Failed to connect to openai server$"):
            await upstream.complete(openai(s), PLAIN, deadline())
    finally:
        await upstream.aclose()


async def test_read_and_total_timeouts(fake_llm: FakeLLM) -> None:
    s = settings(fake_llm, read_timeout_s=1, total_timeout_s=30)
    upstream = UpstreamClient(s)
    try:
        fake_llm.fault = "stall_headers"
        with pytest.raises(UpstreamGatewayTimeout, match="openai did not answer within 1 s"):
            await upstream.complete(openai(s), PLAIN, deadline())
        assert len(fake_llm.requests) == 1  # not retried
        fake_llm.fault = "hold"
        events = await upstream.stream(openai(s), STREAM, deadline())
        await events.next()  # the role chunk
        await events.next()  # the first word; then the upstream goes silent
        with pytest.raises(UpstreamGatewayTimeout, match="openai went silent for 1 s mid-answer"):
            await events.next()
        await events.aclose()
        with pytest.raises(UpstreamGatewayTimeout, match="openai did not finish within 30 s"):
            await upstream.complete(openai(s), PLAIN, anyio.current_time() - 1)
    finally:
        await upstream.aclose()


async def test_cancelling_a_stream_closes_the_upstream_connection(client: Any, fake_llm: FakeLLM) -> None:
    upstream, provider = client
    fake_llm.fault = "hold"
    events = await upstream.stream(provider, STREAM, deadline())
    await events.next()
    await events.next()
    waiting = asyncio.ensure_future(events.next())
    await asyncio.sleep(0.1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await events.aclose()
    assert await asyncio.to_thread(fake_llm.disconnected.wait, 10)


async def test_answers_that_break_the_protocol(fake_llm: FakeLLM) -> None:
    s = settings(fake_llm, max_response_bytes=1024)
    upstream = UpstreamClient(s)
    try:
        fake_llm.reply = "word " * 400
        with pytest.raises(UpstreamProtocolError, match="answered with more than 1024 bytes"):
            await upstream.complete(openai(s), PLAIN, deadline())
        fake_llm.reply = REPLY
        fake_llm.fail_with(200, [1, 2])
        with pytest.raises(UpstreamProtocolError, match="JSON that is not an object"):
            await upstream.complete(openai(s), PLAIN, deadline())
        fake_llm.fail_with(200, b"", {"content-type": "text/event-stream"})
        with pytest.raises(UpstreamProtocolError, match="ended the stream without sending anything"):
            await upstream.stream(openai(s), STREAM, deadline())
        fake_llm.fail_with(200, {"id": "x"})
        with pytest.raises(UpstreamProtocolError, match="'application/json', not server-sent events"):
            await upstream.stream(openai(s), STREAM, deadline())
    finally:
        await upstream.aclose()
