"""Fixtures for the Riva adapters: a fake Riva server in a background thread
(its own event loop, like the gateway's uvicorn thread) and adapter factories
pointed at it, closed at teardown."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from speech.providers.riva.asr import RivaRecognizer
from speech.providers.riva.tts import RivaSynthesizer
from speech.settings import RivaSettings
from tests.providers.riva.fake_riva import FakeRiva, fake_riva_in_thread

# Generous for a loopback server, small enough that no test waits long.
FAST = {"connect_timeout_s": 2.0, "first_result_timeout_s": 2.0}


def settings_for(url: str, **changes: Any) -> RivaSettings:
    return dataclasses.replace(RivaSettings(url=url, **FAST), **changes)


@pytest.fixture
def riva() -> Iterator[FakeRiva]:
    with fake_riva_in_thread() as fake:
        yield fake


@pytest.fixture
async def make_asr(riva: FakeRiva) -> AsyncIterator[Any]:
    made: list[RivaRecognizer] = []

    def make(**changes: Any) -> RivaRecognizer:
        rec = RivaRecognizer(settings_for(riva.url, **changes))
        made.append(rec)
        return rec

    yield make
    for rec in made:
        await rec.aclose()


@pytest.fixture
async def make_tts(riva: FakeRiva) -> AsyncIterator[Any]:
    made: list[RivaSynthesizer] = []

    def make(**changes: Any) -> RivaSynthesizer:
        syn = RivaSynthesizer(settings_for(riva.url, **changes))
        made.append(syn)
        return syn

    yield make
    for syn in made:
        await syn.aclose()
