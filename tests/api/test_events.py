"""Opt-in rich events on the ASR websocket (`?events=true` or a Config frame)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api.streaming import normalize, om1_frames, stream, wer
from tests.conftest import SAMPLES, read_wav

pytestmark = pytest.mark.slow

MANIFEST = {m["file"]: m for m in json.loads((SAMPLES / "manifest.json").read_text())}


def of(messages: list[dict[str, Any]], kind: str, utterance: int | None = None) -> list[dict[str, Any]]:
    return [m for m in messages if m.get("type") == kind and (utterance is None or m.get("utterance") == utterance)]


async def test_events_for_each_utterance_in_order(server: Any) -> None:
    key = await server.create_key()
    pcm, rate = read_wav(SAMPLES / "two_commands.wav")
    messages, code, _ = await stream(
        server.ws("/api/core/google/asr", api_key=key, events="true"), om1_frames(pcm, rate)
    )
    assert code == 1000
    for n, expected in enumerate(MANIFEST["two_commands.wav"]["utterances"]):
        kinds = [m["type"] for m in messages if m.get("utterance") == n and m["type"] != "interim"]
        assert kinds == ["speech_started", "final", "utterance_end", "usage"], kinds
        (started,) = of(messages, "speech_started", n)
        (final,) = of(messages, "final", n)
        (end,) = of(messages, "utterance_end", n)
        (usage,) = of(messages, "usage", n)
        assert wer(expected, final["asr_reply"]) <= 0.2  # OM1's key is still there
        assert final["start"] == started["start"] and final["end"] == end["end"] > final["start"]
        assert end["reason"] == "silence" and final["engine"] == "local"
        assert 0 < final["confidence"] <= 1
        words = final["words"]
        assert normalize(" ".join(w["word"] for w in words)) == normalize(final["asr_reply"])
        assert all(final["start"] <= w["start"] <= w["end"] <= final["end"] + 0.05 for w in words)
        assert [w["start"] for w in words] == sorted(w["start"] for w in words)
        assert usage["seconds"] == pytest.approx(final["end"] - final["start"], abs=0.001)
    (summary,) = of(messages, "summary")
    usages = of(messages, "usage")
    assert summary["utterances"] == 2 and summary["cost_omcu"] == usages[-1]["session_cost_omcu"]
    assert summary["seconds"] == pytest.approx(sum(u["seconds"] for u in usages))
    ledger = await server.ledger()
    records = await ledger.usage()
    await ledger.close()
    assert sum(r.cost_uomcu for r in records) / 1e6 == pytest.approx(float(summary["cost_omcu"]))


async def test_local_engine_sends_interims_while_the_person_talks(server: Any) -> None:
    key = await server.create_key()
    pcm, rate = read_wav(SAMPLES / "hello_robot.wav")
    config = json.dumps({"type": "Config", "events": True})
    messages, _, _ = await stream(server.ws(api_key=key), [config, *om1_frames(pcm, rate)], realtime=True)
    interims = of(messages, "interim", 0)
    (final,) = of(messages, "final", 0)
    assert interims, messages
    assert messages.index(interims[0]) < messages.index(final)  # before the utterance ended
    assert all(i["engine"] == "local" and i["text"] for i in interims)
    assert normalize(interims[-1]["text"]).split()[0] == "hello"


async def test_errors_carry_a_type_in_events_mode_and_om1_sees_nothing_new(server: Any) -> None:
    key = await server.create_key()
    pcm, rate = read_wav(SAMPLES / "hello_robot.wav")
    messages, _, _ = await stream(server.ws(api_key=key, events="true"), ["nonsense", *om1_frames(pcm, rate)])
    assert messages[0] == {"type": "error", "error": "text frame is not valid JSON"}
    plain, _, _ = await stream(server.ws(api_key=key), ["nonsense", *om1_frames(pcm, rate)])
    assert plain[0] == {"error": "text frame is not valid JSON"}
    assert all(set(m) <= {"asr_reply", "error"} for m in plain)  # the OM1 shape only


async def test_bad_config_options_are_reported(server: Any) -> None:
    key = await server.create_key()
    bad = [json.dumps({"type": "Config", "events": "yes"}), json.dumps({"type": "Config", "colour": "red"})]
    messages, code, _ = await stream(server.ws(api_key=key), bad)
    assert code == 1000
    assert [m["error"] for m in messages if "error" in m] == [
        "'events' must be true or false",
        "unknown Config option(s): colour",
    ]
