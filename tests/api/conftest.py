"""Fixtures of the chat-completions tests: a real gateway on port 0 whose LLM
providers all point at the loopback fake upstream (``fake_llm``, from
``tests/conftest.py``). The gateway gets an empty engine set (the chat relay
never uses the speech engines), so these tests load no models."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from speech.providers.registry import Engines
from speech.settings import load_settings
from tests.api.chat_support import provider_overrides
from tests.conftest import RunningServer, start_server, stop_server
from tests.llm.fake_upstream import FakeLLM


@pytest.fixture
def make_gateway(tmp_path: Path, fake_llm: FakeLLM) -> Iterator[Any]:
    """make_gateway(overrides, engines=...) -> RunningServer relaying to the fake."""
    started: list[RunningServer] = []

    def make(overrides: dict[str, Any] | None = None, *, engines: Any = True) -> RunningServer:
        over = {"server.db": str(tmp_path / f"chat{len(started)}.db"), **provider_overrides(fake_llm)}
        over.update(overrides or {})
        settings = load_settings(environ={}, overrides=over)
        srv = start_server(settings, Engines(settings) if engines is True else engines)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        stop_server(srv)


@pytest.fixture
def gateway(make_gateway: Any) -> RunningServer:
    return make_gateway()


@pytest.fixture
async def http(gateway: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.http, timeout=30) as client:
        yield client
