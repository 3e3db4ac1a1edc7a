"""Helpers of the chat-completions tests (their fixtures are in conftest.py)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from speech.metering.records import UsageRecord
from speech.settings import LLM_PROVIDERS
from tests.conftest import RunningServer
from tests.llm.fake_upstream import UPSTREAM_KEY, FakeLLM

BALANCE = 1_000_000_000  # 1000 OMCU
HELLO = [{"role": "user", "content": "Which way to the charging station?"}]


def provider_overrides(fake: FakeLLM, *, key: str | None = UPSTREAM_KEY) -> dict[str, Any]:
    over: dict[str, Any] = {}
    for name in LLM_PROVIDERS:
        over[f"llm.{name}.base_url"] = fake.url
        if key is not None and name != "ollama":
            over[f"llm.{name}.api_key"] = key
    return over


def chat_path(provider: str = "openai") -> str:
    return f"/api/core/{provider}/chat/completions"


def body(model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": HELLO, **extra}


async def post(
    client: httpx.AsyncClient, payload: Any, *, key: str | None, provider: str = "openai", **kw: Any
) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    if isinstance(payload, bytes | str):
        return await client.post(chat_path(provider), content=payload, headers=headers, **kw)
    return await client.post(chat_path(provider), json=payload, headers=headers, **kw)


async def usage(server: RunningServer) -> list[UsageRecord]:
    return await server.usage()


async def money(server: RunningServer, key: str) -> tuple[int, int]:
    """(balance, available) of the key's account, in µOMCU."""
    ledger = await server.ledger()
    try:
        account = (await ledger.authenticate(key)).account_id
        return await ledger.balance(account), await ledger.available(account)
    finally:
        await ledger.close()


def sse_events(text: str) -> list[Any]:
    """The decoded data of each event; "[DONE]" stays a string."""
    out: list[Any] = []
    for block in text.split("\n\n"):
        data = [line[5:].strip() for line in block.splitlines() if line.startswith("data:")]
        if data:
            joined = "\n".join(data)
            out.append(joined if joined == "[DONE]" else json.loads(joined))
    return out
