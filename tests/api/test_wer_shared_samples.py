"""Real human recordings (../shared/samples), streamed as OM1 does: JSON frames
of 200 ms at real-time pace. The corpus WER must be 15% or less."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jiwer
import pytest

from tests.api.streaming import normalize, om1_frames, replies, stream
from tests.conftest import SHARED_SAMPLES, read_wav

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (SHARED_SAMPLES / "manifest.json").is_file(),
        reason=f"shared recordings not found at {SHARED_SAMPLES} (they sit beside the checkout in CI)",
    ),
]


async def test_real_speech_at_real_time_pace_has_low_wer(server: Any) -> None:
    manifest = json.loads((SHARED_SAMPLES / "manifest.json").read_text())
    key = await server.create_key()

    async def one(entry: dict[str, Any]) -> tuple[str, str]:
        pcm, rate = read_wav(SHARED_SAMPLES / entry["file"])
        assert rate == entry["sample_rate"]
        tail = b"\x00" * (rate * 2)  # a robot's microphone keeps sending after the words
        messages, code, _ = await stream(
            server.ws("/api/core/google/asr", api_key=key), om1_frames(pcm + tail, rate), realtime=True
        )
        assert code == 1000
        return entry["transcript"], " ".join(replies(messages))

    # All recordings at once: five concurrent real-time streams.
    results = await asyncio.gather(*(one(e) for e in manifest))
    refs = [normalize(r) for r, _ in results]
    hyps = [normalize(h) for _, h in results]
    corpus_wer = jiwer.wer(refs, hyps)
    assert corpus_wer <= 0.15, list(zip(refs, hyps, strict=True))
    # Per file only a sanity bound: tiny.en writes "coldhearted" for "cold hearted".
    for ref, hyp in zip(refs, hyps, strict=True):
        assert jiwer.wer(ref, hyp) <= 0.4, (ref, hyp)
