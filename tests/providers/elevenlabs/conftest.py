"""Fixtures: one fake ElevenLabs per module (reset per test) and a factory of
synthesizers pointed at it, closed on the test's own loop at teardown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from speech.providers.elevenlabs import ElevenLabsSynthesizer
from speech.settings import ElevenLabsSettings, Secret
from tests.providers.elevenlabs.fake_elevenlabs import GATEWAY_KEY, FakeElevenLabs
from tests.providers.elevenlabs.support import RELAXED_TIMEOUT_S, MakeSynth


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeElevenLabs]:
    fake = FakeElevenLabs()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(fake_server: FakeElevenLabs) -> FakeElevenLabs:
    fake_server.reset()
    return fake_server


@pytest.fixture
async def make_synth(fake: FakeElevenLabs) -> AsyncIterator[MakeSynth]:
    made: list[ElevenLabsSynthesizer] = []

    def make(**overrides: Any) -> ElevenLabsSynthesizer:
        options: dict[str, Any] = {
            "url": fake.url,
            "api_key": Secret(GATEWAY_KEY),
            "connect_timeout_s": RELAXED_TIMEOUT_S,
            "first_result_timeout_s": RELAXED_TIMEOUT_S,
        }
        transport = overrides.pop("transport", None)
        options.update(overrides)
        synth = ElevenLabsSynthesizer(ElevenLabsSettings(**options), transport=transport)
        made.append(synth)
        return synth

    yield make
    for synth in made:
        await synth.aclose()
