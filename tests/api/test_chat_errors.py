"""Every error of the chat relay, as the client sees it: the seed's table
(exact wording), the gateway's own refusals, and each upstream failure. None
of them leaves a usage record or held credit behind, and no message carries
a key."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest

from tests.api.chat_support import (
    BALANCE,
    body,
    chat_path,
    money,
    post,
    sse_events,
    usage,
)
from tests.llm.fake_upstream import UPSTREAM_KEY, FlakyFront, refused_port

OPENAI_PREFIXES = "gpt-4o, gpt-4o-mini, gpt-4.1, gpt-4.1-mini, gpt-4.1-nano, gpt-5, gpt-5-mini, gpt-5-nano"


async def nothing_billed(server: Any, key: str, balance: int = BALANCE) -> None:
    assert await usage(server) == []
    assert await money(server, key) == (balance, balance)


# ---------------------------------------------------------------- the seed's table


async def test_invalid_json_is_400(gateway: Any, http: Any, fake_llm: Any) -> None:
    key = await gateway.create_key(balance_uomcu=BALANCE)
    for raw in ("{not json", '{"model": "gpt-4o", "messages": [', "\xff\xfe", '{"model": NaN, "messages": []}'):
        r = await post(http, raw.encode("latin-1"), key=key)
        assert (r.status_code, r.json()) == (400, {"error": "Invalid JSON"})
    assert fake_llm.requests == []
    await nothing_billed(gateway, key)


async def test_unknown_provider_is_404(gateway: Any, http: Any) -> None:
    key = await gateway.create_key(balance_uomcu=BALANCE)
    r = await post(http, body(), key=key, provider="invalid_provider")
    assert (r.status_code, r.json()) == (404, {"error": "unsupported model provider: invalid_provider"})
    await nothing_billed(gateway, key)


async def test_unknown_model_is_404_listing_the_prefixes(gateway: Any, http: Any, fake_llm: Any) -> None:
    key = await gateway.create_key(balance_uomcu=BALANCE)
    r = await post(http, body("gpt-6"), key=key)
    assert r.status_code == 404
    assert r.json() == {"error": f"unsupported model: gpt-6. Supported model prefixes for openai: [{OPENAI_PREFIXES}]"}
    r = await post(http, body("gpt-4o"), key=key, provider="deepseek")
    assert r.json() == {"error": "unsupported model: gpt-4o. Supported model prefixes for deepseek: [deepseek-chat]"}
    assert fake_llm.requests == []
    await nothing_billed(gateway, key)


async def test_model_prefixes_admit_dated_versions(gateway: Any, http: Any) -> None:
    key = await gateway.create_key(balance_uomcu=BALANCE)
    r = await post(http, body("gpt-4o-2024-08-06"), key=key)
    assert r.status_code == 200, r.text
    (record,) = await usage(gateway)
    assert record.model == "gpt-4o-2024-08-06" and record.unit_price_uomcu == 42_500_000_000


async def test_missing_upstream_key_is_503(make_gateway: Any, fake_llm: Any) -> None:
    srv = make_gateway({"llm.openai.api_key": ""})
    key = await srv.create_key(balance_uomcu=BALANCE)
    async with httpx.AsyncClient(base_url=srv.http) as client:
        r = await post(client, body(), key=key)
    assert (r.status_code, r.json()) == (503, {"error": "openai API key not configured"})
    assert fake_llm.requests == []
    await nothing_billed(srv, key)


async def test_unreachable_upstream_is_503_after_one_retry(make_gateway: Any) -> None:
    srv = make_gateway({"llm.openai.base_url": f"http://127.0.0.1:{refused_port()}/v1"})
    key = await srv.create_key(balance_uomcu=BALANCE)
    async with httpx.AsyncClient(base_url=srv.http) as client:
        for payload in (body(), body(stream=True)):
            r = await post(client, payload, key=key)
            assert (r.status_code, r.json()) == (503, {"error": "Failed to connect to openai server"})
    await nothing_billed(srv, key)


@pytest.mark.parametrize(
    ("key", "message"),
    [(None, "missing API key"), ("sk_nope", "invalid API key"), ("sk_000000000000_wrong", "invalid API key")],
)
async def test_no_valid_gateway_key_is_401(gateway: Any, http: Any, fake_llm: Any, key: Any, message: str) -> None:
    r = await post(http, body(), key=key)
    assert (r.status_code, r.json()) == (401, {"error": message})
    assert fake_llm.requests == []


async def test_revoked_key_and_query_string_key(gateway: Any, http: Any) -> None:
    key = await gateway.create_key(balance_uomcu=BALANCE)
    assert (await http.post(chat_path(), json=body(), params={"api_key": key})).status_code == 200
    assert (await http.post(chat_path(), json=body(), headers={"x-api-key": key})).status_code == 200
    ledger = await gateway.ledger()
    await ledger.revoke(key.split("_")[1])
    await ledger.close()
    r = await post(http, body(), key=key)
    assert (r.status_code, r.json()) == (401, {"error": "API key revoked"})


# ---------------------------------------------------------------- the gateway's own refusals


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "request body is empty; expected JSON with 'model' and 'messages'"),
        (b"[1, 2]", "request body must be a JSON object"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "missing 'model'"),
        ({"model": 4, "messages": []}, "'model' must be a non-empty string"),
        ({"model": "gpt-4o\n", "messages": []}, "'model' must be at most 200 printable characters"),
        ({"model": "gpt-4o"}, "missing 'messages'"),
        ({"model": "gpt-4o", "messages": []}, "'messages' must be a non-empty list"),
        (body(stream="yes"), "'stream' must be true or false"),
        (body(stream=True, stream_options=[1]), "'stream_options' must be an object"),
        (body(max_tokens=0), "'max_tokens' must be a positive integer"),
        (body(max_tokens=1.5), "'max_tokens' must be a positive integer"),
        (body(max_completion_tokens=True), "'max_completion_tokens' must be a positive integer"),
    ],
)
async def test_bad_bodies_get_specific_400s(gateway: Any, http: Any, fake_llm: Any, payload: Any, message: str) -> None:
    key = await gateway.create_key(balance_uomcu=BALANCE)
    r = await post(http, payload, key=key)
    assert (r.status_code, r.json()) == (400, {"error": message})
    assert fake_llm.requests == []
    await nothing_billed(gateway, key)


async def test_oversized_body_is_refused(make_gateway: Any, fake_llm: Any) -> None:
    srv = make_gateway({"llm.max_body_bytes": 2048})
    key = await srv.create_key(balance_uomcu=BALANCE)
    async with httpx.AsyncClient(base_url=srv.http) as client:
        r = await post(client, body(messages=[{"role": "user", "content": "x" * 4096}]), key=key)
    assert (r.status_code, r.json()) == (400, {"error": "request body is over 2048 bytes"})
    assert fake_llm.requests == []


async def test_insufficient_balance_is_402_before_anything_goes_upstream(
    gateway: Any, http: Any, fake_llm: Any
) -> None:
    key = await gateway.create_key(balance_uomcu=10_000_000)  # 10 OMCU
    # No max_tokens: 4096 output tokens of gpt-4o-mini (0.028 OMCU each) are reserved.
    r = await post(http, body(), key=key)
    assert r.status_code == 402
    message = r.json()["error"]
    assert message.startswith("insufficient balance: this request may cost up to 114.")
    assert "up to 4096 output tokens" in message and "10 OMCU available" in message
    assert "lower max_tokens or top up" in message
    assert fake_llm.requests == []
    await nothing_billed(gateway, key, 10_000_000)
    # With max_tokens the same account can afford it.
    assert (await post(http, body(max_tokens=200), key=key)).status_code == 200
    empty = await gateway.create_key("empty", balance_uomcu=0)
    r = await post(http, body(max_tokens=1), key=empty)
    assert (r.status_code, r.json()) == (402, {"error": "insufficient balance: top up this API key to continue"})


async def test_per_key_rate_limit_is_429(gateway: Any, http: Any, fake_llm: Any) -> None:
    ledger = await gateway.ledger()
    key, _ = await ledger.create_key("slow", BALANCE, rpm=2)
    await ledger.close()
    statuses = [(await post(http, body(max_tokens=10), key=key)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    r = await post(http, body(), key=key)
    assert r.json() == {"error": "rate limit: this API key allows 2 requests per minute"}
    assert len(fake_llm.requests) == 2


async def test_an_unpriced_model_is_refused_not_served_free(gateway: Any, http: Any, fake_llm: Any) -> None:
    key = await gateway.create_key(balance_uomcu=BALANCE)
    r = await post(http, body("gemini-3.5-flash"), key=key, provider="gemini")
    assert r.status_code == 503
    assert r.json()["error"].startswith("model gemini-3.5-flash has no price on this gateway")
    assert fake_llm.requests == []


async def test_an_operator_can_price_a_model(make_gateway: Any, fake_llm: Any, tmp_path: Any) -> None:
    srv = make_gateway(
        {
            "prices.llm_input_per_million_tokens": {"gemini-3.5-flash": 5000},
            "prices.llm_output_per_million_tokens": {"gemini-3.5-flash": 20000},
        }
    )
    key = await srv.create_key(balance_uomcu=BALANCE)
    async with httpx.AsyncClient(base_url=srv.http) as client:
        r = await post(client, body("gemini-3.5-flash"), key=key, provider="gemini")
    assert r.status_code == 200
    (record,) = await usage(srv)
    assert record.cost_uomcu == (11 * 5000 + 8 * 20000)


async def test_a_disabled_provider_does_not_exist(make_gateway: Any) -> None:
    srv = make_gateway({"llm.ollama.enabled": False})
    key = await srv.create_key(balance_uomcu=BALANCE)
    async with httpx.AsyncClient(base_url=srv.http) as client:
        r = await post(client, body("llama3.2"), key=key, provider="ollama")
    assert (r.status_code, r.json()) == (404, {"error": "unsupported model provider: ollama"})


# ---------------------------------------------------------------- upstream failures


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_429_is_429_with_retry_after(gateway: Any, http: Any, fake_llm: Any, stream: bool) -> None:
    key = await gateway.create_key(balance_uomcu=BALANCE)
    error = {"error": {"message": "Rate limit reached for gpt-4o-mini", "type": "requests", "code": "rate_limit"}}
    fake_llm.fail_with(429, error, {"retry-after": "7"})
    r = await post(http, body(stream=stream), key=key)
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert r.json() == {"error": "openai rate limit: Rate limit reached for gpt-4o-mini"}
    await nothing_billed(gateway, key)
    fake_llm.fail_with(429, error, {"retry-after": "soon; rm -rf"})  # not a valid Retry-After: dropped
    r = await post(http, body(stream=stream), key=key)
    assert r.status_code == 429 and "retry-after" not in r.headers


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_upstream_5xx_is_502_naming_the_provider(gateway: Any, http: Any, fake_llm: Any, status: int) -> None:
    key = await gateway.create_key(balance_uomcu=BALANCE)
    fake_llm.fail_with(status, {"error": {"message": "The server had an error", "type": "server_error"}})
    r = await post(http, body(), key=key, provider="deepseek")
    r2 = await post(http, body("deepseek-chat"), key=key, provider="deepseek")
    assert r.status_code == 404  # the model is checked before anything goes upstream
    assert r2.status_code == 502
    assert r2.json() == {"error": f"deepseek server error (HTTP {status}): The server had an error"}
    fake_llm.fail_with(status, b"<html>oops</html>")
    r3 = await post(http, body(stream=True), key=key)
    assert (r3.status_code, r3.json()) == (502, {"error": f"openai server error (HTTP {status}): <html>oops</html>"})
    await nothing_billed(gateway, key)


@pytest.mark.parametrize(
    ("status", "upstream", "expected"),
    [
        (400, {"error": {"message": "Invalid value for 'temperature': 7"}}, "Invalid value for 'temperature': 7"),
        (404, {"error": {"message": "The model `gpt-4o-x` does not exist"}}, "The model `gpt-4o-x` does not exist"),
        (422, [{"error": {"code": 422, "message": "Gemini says no"}}], "Gemini says no"),
        (413, {"message": "payload too large"}, "payload too large"),
    ],
)
async def test_upstream_4xx_passes_its_status_and_message(
    gateway: Any, http: Any, fake_llm: Any, status: int, upstream: Any, expected: str
) -> None:
    key = await gateway.create_key(balance_uomcu=BALANCE)
    fake_llm.fail_with(status, upstream)
    r = await post(http, body(), key=key)
    assert (r.status_code, r.json()) == (status, {"error": f"openai rejected the request: {expected}"})
    await nothing_billed(gateway, key)


async def test_upstream_refusing_the_gateways_key_is_not_the_callers_fault(make_gateway: Any, fake_llm: Any) -> None:
    srv = make_gateway({"llm.openai.api_key": "sk-wrong-upstream-key-0123456789"})
    key = await srv.create_key(balance_uomcu=BALANCE)
    async with httpx.AsyncClient(base_url=srv.http) as client:
        r = await post(client, body(), key=key)
        assert (r.status_code, r.json()) == (503, {"error": "openai rejected the gateway's credentials"})
        fake_llm.fail_with(402, {"error": {"message": "You exceeded your current quota"}})
        r = await post(client, body(), key=key)
        assert r.status_code == 503
        assert (
            r.json()["error"]
            == "openai refused the gateway's account (payment required): You exceeded your current quota"
        )
    await nothing_billed(srv, key)


async def test_no_key_ever_reaches_an_error_text_or_a_log(make_gateway: Any, fake_llm: Any) -> None:
    capture = Capture()
    names = ("uvicorn.access", "uvicorn.error", "speech", "")
    for name in names:
        logging.getLogger(name).addHandler(capture)
    try:
        srv = make_gateway()
        key = await srv.create_key(balance_uomcu=BALANCE)
        echo = f"Incorrect API key provided: {UPSTREAM_KEY}. You sent {key} as well."
        fake_llm.fail_with(400, {"error": {"message": echo}})
        async with httpx.AsyncClient(base_url=srv.http) as client:
            r = await client.post(chat_path(), json=body(), params={"api_key": key})
            fake_llm.fail_with(500, {"error": {"message": echo}})
            r2 = await post(client, body(stream=True), key=key)
    finally:
        for name in names:
            logging.getLogger(name).removeHandler(capture)
    assert r.status_code == 400 and r2.status_code == 502
    for text in (r.text, r2.text, "\n".join(capture.lines)):
        assert UPSTREAM_KEY not in text and key not in text and key.split("_", 2)[2] not in text
    assert "Incorrect API key provided: ***. You sent *** as well." in r.json()["error"]


async def test_a_silent_upstream_is_504(make_gateway: Any, fake_llm: Any) -> None:
    srv = make_gateway({"llm.read_timeout_s": 1})
    key = await srv.create_key(balance_uomcu=BALANCE)
    fake_llm.fault = "stall_headers"
    async with httpx.AsyncClient(base_url=srv.http, timeout=30) as client:
        for payload in (body(), body(stream=True)):
            r = await post(client, payload, key=key)
            assert (r.status_code, r.json()) == (504, {"error": "openai did not answer within 1 s"})
    assert len(fake_llm.requests) == 2  # a read timeout is not retried
    await nothing_billed(srv, key)


async def test_the_total_timeout_bounds_a_stream(make_gateway: Any, fake_llm: Any) -> None:
    srv = make_gateway({"llm.total_timeout_s": 1.5, "llm.read_timeout_s": 30})
    key = await srv.create_key(balance_uomcu=BALANCE)
    fake_llm.fault = "hold"  # first word, then nothing
    async with httpx.AsyncClient(base_url=srv.http, timeout=30) as client:
        r = await post(client, body(stream=True), key=key)
    events = sse_events(r.text)
    assert r.status_code == 200 and events[-1] == {
        "error": {"message": "openai did not finish within 1.5 s", "type": "upstream_error", "code": 504}
    }
    (record,) = await usage(srv)
    assert record.estimated and record.output_tokens == 1  # "Turn"


async def test_a_connection_dropped_before_the_answer_is_retried_once(gateway: Any, http: Any, fake_llm: Any) -> None:
    key = await gateway.create_key(balance_uomcu=BALANCE)
    for stream in (False, True):
        fake_llm.requests.clear()
        fake_llm.drop_next = 1
        r = await post(http, body(stream=stream), key=key)
        assert r.status_code == 200, r.text
        assert len(fake_llm.requests) == 2
    fake_llm.drop_next = 2
    r = await post(http, body(), key=key)
    assert (r.status_code, r.json()) == (502, {"error": "openai closed the connection before answering"})
    records = await usage(gateway)
    assert len(records) == 2 and not any(r.estimated for r in records)


async def test_a_refused_connection_is_retried_on_a_fresh_one(make_gateway: Any, fake_llm: Any) -> None:
    front = FlakyFront(fake_llm.port)
    front.start()
    try:
        srv = make_gateway({"llm.openai.base_url": front.url})
        key = await srv.create_key(balance_uomcu=BALANCE)
        async with httpx.AsyncClient(base_url=srv.http) as client:
            front.drop_next = 1
            r = await post(client, body(), key=key)
            assert r.status_code == 200 and front.accepted == 2
            # The upstream closes the pooled connection, then the next one
            # fails as well: after the one retry the client gets the error.
            front.cut_all()
            front.drop_next = 2
            r = await post(client, body(), key=key)
            assert (r.status_code, r.json()) == (503, {"error": "Failed to connect to openai server"})
            assert front.accepted == 4
            front.cut_all()  # a pooled connection closed by the upstream costs nothing but a new connection
            assert (await post(client, body(), key=key)).status_code == 200
    finally:
        front.stop()
    assert len(await usage(srv)) == 2


async def test_a_stream_cut_mid_answer_ends_with_an_error_event_and_bills_what_came(
    gateway: Any, http: Any, fake_llm: Any
) -> None:
    key = await gateway.create_key(balance_uomcu=BALANCE)
    fake_llm.fault = "drop_after_first"
    r = await post(http, body(stream=True), key=key)
    assert r.status_code == 200
    events = sse_events(r.text)
    assert events[1]["choices"][0]["delta"]["content"] == "Turn"
    assert events[-1] == {
        "error": {"message": "openai dropped the connection mid-answer", "type": "upstream_error", "code": 502}
    }
    assert "[DONE]" not in events
    (record,) = await usage(gateway)
    assert record.estimated and record.output_tokens == 1


async def test_the_official_client_raises_on_a_mid_stream_error(gateway: Any, fake_llm: Any) -> None:
    import openai

    key = await gateway.create_key(balance_uomcu=BALANCE)
    fake_llm.fault = "drop_after_first"
    client = openai.AsyncOpenAI(api_key=key, base_url=f"{gateway.http}/api/core/openai", max_retries=0)
    try:
        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=body()["messages"], stream=True)
        with pytest.raises(openai.APIError, match="openai dropped the connection mid-answer"):
            async for _ in stream:
                pass
        fake_llm.fault = None
        fake_llm.fail_with(429, {"error": {"message": "slow down"}}, {"retry-after": "1"})
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="gpt-4o-mini", messages=body()["messages"])
        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(model="gpt-6", messages=body()["messages"])
        # The seed's {"error": "..."}: the client keeps the text as the error's body.
        assert str(info.value.body).startswith("unsupported model: gpt-6. Supported model prefixes for openai: [")
    finally:
        await client.close()


async def test_an_upstream_answer_that_is_not_json_is_502(gateway: Any, http: Any, fake_llm: Any) -> None:
    key = await gateway.create_key(balance_uomcu=BALANCE)
    fake_llm.fault = "not_json"
    r = await post(http, body(), key=key)
    assert (r.status_code, r.json()) == (502, {"error": "openai answered 200 with a body that is not JSON"})
    r = await post(http, body(stream=True), key=key)
    assert r.status_code == 502 and "not server-sent events" in r.json()["error"]
    await nothing_billed(gateway, key)


async def test_an_upstream_without_usage_is_billed_by_the_estimate(gateway: Any, http: Any, fake_llm: Any) -> None:
    from speech.llm.estimate import input_tokens, text_tokens

    key = await gateway.create_key(balance_uomcu=BALANCE)
    fake_llm.fault = "no_usage"
    r = await post(http, body(), key=key)
    assert r.status_code == 200 and r.headers["x-usage-estimated"] == "true"
    r = await post(http, body(stream=True), key=key)
    assert r.status_code == 200
    plain, streamed = sorted(await usage(gateway), key=lambda rec: rec.id)
    assert plain.estimated and streamed.estimated
    assert plain.input_tokens == streamed.input_tokens == input_tokens(body())
    assert plain.output_tokens == text_tokens(fake_llm.reply)
    # Streamed text is rounded up chunk by chunk: one chunk per word here.
    assert streamed.output_tokens == sum(
        text_tokens(w if n == 0 else " " + w) for n, w in enumerate(fake_llm.reply.split())
    )


async def test_the_relay_works_while_the_speech_engines_are_down(make_gateway: Any, tmp_path: Any) -> None:
    empty = tmp_path / "no-model"
    empty.mkdir()
    srv = make_gateway({"local.whisper_model_dir": str(empty)}, engines=None)
    key = await srv.create_key(balance_uomcu=BALANCE)
    async with httpx.AsyncClient(base_url=srv.http) as client:
        for _ in range(500):
            health = (await client.get("/healthz")).json()
            if health["status"] != "loading":
                break
            await asyncio.sleep(0.02)
        assert health["status"] == "failed"
        r = await post(client, body(), key=key)
        assert r.status_code == 200, r.text
        assert (
            await client.post("/api/core/local/tts", json={"text": "hi"}, headers={"x-api-key": key})
        ).status_code == 503


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
