from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from speech.providers.google.asr import GoogleRecognizer
from tests.providers.google.fake_google import FakeGoogle, running_fake_google
from tests.providers.google.support import settings_for


@pytest.fixture
def fake() -> Iterator[FakeGoogle]:
    """The fake Google server, on its own loop in a background thread."""
    with running_fake_google() as server:
        yield server


@pytest.fixture
async def recognizer(fake: FakeGoogle) -> AsyncIterator[GoogleRecognizer]:
    rec = GoogleRecognizer(settings_for(fake.url))
    yield rec
    await rec.aclose()
