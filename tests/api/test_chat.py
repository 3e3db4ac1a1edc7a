"""The chat-completions relay end to end: the real gateway on port 0, the real
ledger, and a loopback upstream speaking the OpenAI protocol (plain and SSE)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest

from speech.llm.estimate import input_tokens, text_tokens
from speech.metering.prices import llm_cost_from_unit
from tests.api.chat_support import (
    BALANCE,
    HELLO,
    body,
    chat_path,
    money,
    post,
    sse_events,
    usage,
)
from tests.llm.fake_upstream import REPLY, UPSTREAM_KEY

MINI = (7_000_000_000, 28_000_000_000)  # gpt-4o-mini, µOMCU per million input / output tokens


async def test_plain_answer_is_the_upstreams_and_its_usage_is_billed(gateway: Any, http: Any, fake_llm: Any) -> None:
    key = await gateway.create_key(balance_uomcu=BALANCE)
    sent = body(
        temperature=0.2,
        max_tokens=64,
        top_p=0.9,
        frequency_penalty=0.5,
        presence_penalty=-0.5,
        seed=7,
        user="robot-7",
        tools=[{"type": "function", "function": {"name": "turn", "parameters": {"type": "object"}}}],
        tool_choice="auto",
        response_format={"type": "text"},
        logit_bias={"50256": -100},
        vendor_extension={"anything": [1, 2.5, None]},
    )
    raw = json.dumps(sent).encode()
    r = await post(http, raw, key=key)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["choices"][0]["message"]["content"] == REPLY
    assert answer["usage"] == {"prompt_tokens": 11, "completion_tokens": 8, "total_tokens": 19}
    # Forwarded byte for byte, with the upstream's key and nothing of the caller's.
    (seen,) = fake_llm.requests
    assert seen.raw == raw
    assert seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert key not in json.dumps(seen.headers) and "x-api-key" not in seen.headers
    cost = llm_cost_from_unit(*MINI, 11, 8)
    assert r.headers["x-usage-input-tokens"] == "11" and r.headers["x-usage-output-tokens"] == "8"
    assert r.headers["x-usage-estimated"] == "false" and r.headers["x-usage-cost-uomcu"] == str(cost)
    (record,) = await usage(gateway)
    assert (record.kind, record.provider, record.engine, record.model) == ("llm", "openai", "openai", "gpt-4o-mini")
    assert (record.input_tokens, record.output_tokens, record.estimated, record.cost_uomcu) == (11, 8, False, cost)
    assert record.idempotency_key == r.headers["x-request-id"]
    assert await money(gateway, key) == (BALANCE - cost, BALANCE - cost)  # the reservation is gone


async def test_the_official_openai_client_plain_and_streamed(gateway: Any, fake_llm: Any) -> None:
    key = await gateway.create_key(balance_uomcu=BALANCE)
    client = openai.AsyncOpenAI(api_key=key, base_url=f"{gateway.http}/api/core/openai", max_retries=0, timeout=30)
    try:
        plain = await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, temperature=0.1)
        assert plain.choices[0].message.content == REPLY
        assert plain.usage is not None and plain.usage.completion_tokens == 8

        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True)
        chunks = [chunk async for chunk in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == REPLY
        # The gateway asked the upstream for usage; this client did not, so it
        # never sees the usage-only chunk (choices: []).
        assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
        assert fake_llm.requests[-1].json["stream_options"] == {"include_usage": True}

        asked = await client.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in asked]
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.prompt_tokens == 11 and chunks[-1].usage.completion_tokens == 8
    finally:
        await client.close()
    records = await usage(gateway)
    assert len(records) == 3 and {r.kind for r in records} == {"llm"}
    assert all((r.input_tokens, r.output_tokens, r.estimated) == (11, 8, False) for r in records)
    cost = llm_cost_from_unit(*MINI, 11, 8)
    assert await money(gateway, key) == (BALANCE - 3 * cost,) * 2


async def test_a_streamed_answer_reaches_the_client_before_the_upstream_has_finished(
    gateway: Any, http: Any, fake_llm: Any
) -> None:
    key = await gateway.create_key(balance_uomcu=BALANCE)
    fake_llm.fault = "hold"  # the upstream holds the rest of its answer until the test releases it
    headers = {"authorization": f"Bearer {key}"}
    async with http.stream("POST", chat_path(), json=body(stream=True), headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        received = ""
        lines = r.aiter_lines()
        while '"Turn"' not in received:
            received += await asyncio.wait_for(lines.__anext__(), 10) + "\n"
        assert fake_llm.first_sent.is_set() and not fake_llm.finished.is_set()
        fake_llm.release.set()
        async for line in lines:
            received += line + "\n"
    assert fake_llm.finished.is_set()
    events = sse_events(received)
    assert events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"]) == REPLY
    (record,) = await usage(gateway)
    assert (record.input_tokens, record.output_tokens, record.estimated) == (11, 8, False)


async def test_a_client_that_disconnects_cancels_the_upstream_and_pays_what_was_produced(
    gateway: Any, http: Any, fake_llm: Any
) -> None:
    key = await gateway.create_key(balance_uomcu=BALANCE)
    fake_llm.fault = "hold"
    headers = {"authorization": f"Bearer {key}"}
    async with http.stream("POST", chat_path(), json=body(stream=True), headers=headers) as r:
        lines = r.aiter_lines()
        received = ""
        while '"Turn"' not in received:
            received += await asyncio.wait_for(lines.__anext__(), 10)
    # The client has gone; the upstream, still holding, sees its connection closed.
    assert await asyncio.to_thread(fake_llm.disconnected.wait, 10), "the upstream request was not cancelled"
    assert not fake_llm.finished.is_set()
    for _ in range(200):
        records = await usage(gateway)
        if records:
            break
        await asyncio.sleep(0.02)
    (record,) = records
    estimate_in = input_tokens(body())
    assert (record.input_tokens, record.output_tokens, record.estimated) == (estimate_in, text_tokens("Turn"), True)
    cost = llm_cost_from_unit(*MINI, estimate_in, 1)
    assert record.cost_uomcu == cost and await money(gateway, key) == (BALANCE - cost,) * 2


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_that_leaves_before_the_answer_begins_cancels_the_upstream(
    gateway: Any, fake_llm: Any, stream: bool
) -> None:
    key = await gateway.create_key(balance_uomcu=BALANCE)
    fake_llm.fault = "stall_headers"
    async with httpx.AsyncClient(base_url=gateway.http, timeout=0.5) as client:
        with pytest.raises(httpx.ReadTimeout):
            await post(client, body(stream=stream), key=key)
    assert await asyncio.to_thread(fake_llm.disconnected.wait, 10), "the upstream request was not cancelled"
    for _ in range(200):
        records = await usage(gateway)
        if records:
            break
        await asyncio.sleep(0.02)
    (record,) = records  # the prompt went upstream: its estimate is billed, nothing else
    assert (record.input_tokens, record.output_tokens, record.estimated) == (input_tokens(body()), 0, True)
    assert await money(gateway, key) == (BALANCE - record.cost_uomcu,) * 2


async def test_usage_api_filters_and_exports_llm_records(gateway: Any, http: Any, fake_llm: Any) -> None:
    key = await gateway.create_key(balance_uomcu=BALANCE)
    assert (await post(http, body(), key=key)).status_code == 200
    headers = {"x-api-key": key}
    rows = (await http.get("/api/core/account/usage", params={"kind": "llm"}, headers=headers)).json()["usage"]
    assert [(u["kind"], u["model"], u["input_tokens"], u["output_tokens"], u["estimated"]) for u in rows] == [
        ("llm", "gpt-4o-mini", 11, 8, False)
    ]
    assert rows[0]["unit"] == "token" and rows[0]["quantity"] == 19
    assert (await http.get("/api/core/account/usage", params={"kind": "tts"}, headers=headers)).json()["usage"] == []
    csv_text = (await http.get("/api/core/account/usage", params={"format": "csv"}, headers=headers)).text
    header, row = csv_text.strip().splitlines()
    assert header.endswith("model,input_tokens,output_tokens,output_unit_price_uomcu,estimated")
    assert row.endswith("gpt-4o-mini,11,8,28000000000,False")


async def test_many_concurrent_streams_are_each_billed_once(gateway: Any, fake_llm: Any) -> None:
    key = await gateway.create_key(balance_uomcu=BALANCE)

    async def one(client: httpx.AsyncClient) -> str:
        r = await post(client, body(stream=True, max_tokens=50), key=key)
        assert r.status_code == 200, r.text
        return "".join(e["choices"][0]["delta"].get("content") or "" for e in sse_events(r.text)[:-1])

    async with httpx.AsyncClient(base_url=gateway.http, timeout=30) as client:
        answers = await asyncio.gather(*(one(client) for _ in range(12)))
    assert answers == [REPLY] * 12
    records = await usage(gateway)
    assert len(records) == 12 and len({r.idempotency_key for r in records}) == 12
    cost = llm_cost_from_unit(*MINI, 11, 8)
    assert await money(gateway, key) == (BALANCE - 12 * cost,) * 2


@pytest.mark.parametrize("provider", ["deepseek", "gemini", "xai", "nearai", "openrouter"])
async def test_every_seed_provider_relays(make_gateway: Any, fake_llm: Any, provider: str) -> None:
    model = {
        "deepseek": "deepseek-chat",
        "gemini": "gemini-2.5-flash",
        "xai": "grok-4",
        "nearai": "qwen3-30b-a3b-instruct-2507",
        "openrouter": "anthropic/claude-sonnet-4.5",
    }[provider]
    srv = make_gateway()
    key = await srv.create_key(balance_uomcu=BALANCE)
    async with httpx.AsyncClient(base_url=srv.http, timeout=30) as client:
        r = await post(client, body(model), key=key, provider=provider)
    assert r.status_code == 200, r.text
    (record,) = await usage(srv)
    assert (record.provider, record.model, record.estimated) == (provider, model, False)
    assert record.cost_uomcu > 0


async def test_ollama_needs_no_key_and_is_free(make_gateway: Any, fake_llm: Any) -> None:
    fake_llm.require_key = False
    srv = make_gateway()
    key = await srv.create_key(balance_uomcu=1)
    async with httpx.AsyncClient(base_url=srv.http, timeout=30) as client:
        r = await post(client, body("llama3.2:3b", max_tokens=100_000), key=key, provider="ollama")
    assert r.status_code == 200, r.text
    assert "authorization" not in fake_llm.requests[-1].headers
    (record,) = await usage(srv)
    assert (record.provider, record.model, record.cost_uomcu, record.unit_price_uomcu) == (
        "ollama",
        "llama3.2:3b",
        0,
        0,
    )
    assert await money(srv, key) == (1, 1)


async def test_stream_usage_can_be_turned_off_for_an_upstream_that_refuses_the_option(
    make_gateway: Any, fake_llm: Any
) -> None:
    srv = make_gateway({"llm.openai.stream_usage": False})
    key = await srv.create_key(balance_uomcu=BALANCE)
    raw = json.dumps(body(stream=True)).encode()
    async with httpx.AsyncClient(base_url=srv.http, timeout=30) as client:
        r = await post(client, raw, key=key)
    assert r.status_code == 200 and sse_events(r.text)[-1] == "[DONE]"
    assert fake_llm.requests[-1].raw == raw  # sent exactly as the client sent it
    (record,) = await usage(srv)
    assert record.estimated and record.input_tokens == input_tokens(body())
