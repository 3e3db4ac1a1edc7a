"""``GET /metrics`` for the chat relay, and the endpoint's own settings: the
real gateway on port 0 (no speech models), the loopback OpenAI-protocol fake."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from speech.api.app import create_app
from speech.errors import ConfigError
from speech.settings import load_settings
from tests.api.chat_support import BALANCE, body, post, usage
from tests.metrics_support import scrape

ADMIN = "metrics-admin-token-0123456789"


async def test_llm_requests_tokens_cost_latency_and_errors(gateway: Any, http: Any, fake_llm: Any) -> None:
    key = await gateway.create_key(balance_uomcu=BALANCE)
    dated = "gpt-4o-mini-2024-07-18"
    r = await post(http, body(dated, max_tokens=50), key=key)
    assert r.status_code == 200, r.text
    r = await post(http, body(stream=True, max_tokens=50), key=key)
    assert r.status_code == 200 and "[DONE]" in r.text
    fake_llm.fail_with(500, {"error": {"message": "boom"}})
    r = await post(http, body(max_tokens=50), key=key)
    assert r.status_code == 502
    r = await post(http, body("not-a-model"), key=key)
    assert r.status_code == 404  # refused by the gateway: never sent upstream

    m = await scrape(gateway.http)
    records = await usage(gateway)
    assert len(records) == 2
    assert m.value("speech_llm_requests_total", provider="openai", outcome="ok") == 2
    assert m.value("speech_llm_requests_total", provider="openai", outcome="server_error") == 1
    assert m.value("speech_llm_requests_total") == 3
    assert m.value("speech_llm_upstream_errors_total", provider="openai", error="server_error") == 1
    assert m.value("speech_llm_upstream_latency_seconds_count", provider="openai", stream="false") == 1
    assert m.value("speech_llm_upstream_latency_seconds_count", provider="openai", stream="true") == 1
    # Tokens and cost are the ledger's; the model label is the configured prefix that admitted the model.
    assert m.value("speech_llm_input_tokens_total", provider="openai", model="gpt-4o-mini") == sum(
        u.input_tokens or 0 for u in records
    )
    assert m.value("speech_llm_output_tokens_total", provider="openai", model="gpt-4o-mini") == sum(
        u.output_tokens or 0 for u in records
    )
    cost = sum(u.cost_uomcu for u in records)
    assert cost > 0 and m.value("speech_usage_cost_uomcu_total", kind="llm", route="openai") == cost
    ledger = await gateway.ledger()
    try:
        who = await ledger.authenticate(key)
    finally:
        await ledger.close()
    for secret in (key, who.key_id, who.account_id, dated, "not-a-model", "boom"):
        assert secret not in m.text


async def test_metrics_can_be_turned_off(make_gateway: Any) -> None:
    gw = make_gateway({"server.metrics": False})
    async with httpx.AsyncClient(base_url=gw.http, timeout=30) as client:
        r = await client.get("/metrics")
    assert r.status_code == 404


async def test_metrics_can_require_the_admin_token(make_gateway: Any) -> None:
    gw = make_gateway({"server.metrics_require_admin": True, "admin.token": ADMIN})
    async with httpx.AsyncClient(base_url=gw.http, timeout=30) as client:
        assert (await client.get("/metrics")).status_code == 401
        r = await client.get("/metrics", headers={"authorization": "Bearer wrong-token-0123456789"})
        assert r.status_code == 401
    m = await scrape(gw.http, headers={"authorization": f"Bearer {ADMIN}"})
    assert m.select("speech_llm_requests_total") == []  # nothing happened yet
    assert ADMIN not in m.text


def test_requiring_the_admin_token_needs_one() -> None:
    with pytest.raises(ConfigError, match="metrics_require_admin"):
        load_settings(environ={"SPEECH_METRICS_REQUIRE_ADMIN": "true"})
    load_settings(environ={"SPEECH_METRICS_REQUIRE_ADMIN": "true", "SPEECH_METRICS": "false"})


def test_each_app_has_its_own_registry() -> None:
    settings = load_settings(environ={})
    create_app(settings)
    create_app(settings)  # on the global registry the second would be refused (duplicated timeseries)
    assert not [f.name for f in REGISTRY.collect() if f.name.startswith("speech_")]
