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


async def test_an_hour_long_session_with_pauses_ends_with_exact_usage(server: Any) -> None:
    """One hour of stream audio, sent faster than real time: a spoken command
    at the start of every minute, silence otherwise, and KeepAlives in the
    pauses. Every minute is a whole number of VAD frames, so each utterance
    forwards the same audio give or take one 30 ms frame (webrtcvad adapts
    its noise estimate): the bill must be 60 records, each priced exactly from
    its own milliseconds, whose sum is what the summary and the ledger say."""
    key = await server.create_key(balance_uomcu=10_000_000_000)
    pcm, rate = read_wav(SAMPLES / "hello_robot.wav")
    assert rate == 16000
    minute = pcm + b"\x00" * (60 * 32000 - len(pcm))
    keepalive = json.dumps({"type": "KeepAlive"})
    frames: list[str | bytes] = []
    for _ in range(60):
        for second in range(60):
            frames.append(minute[second * 32000 : (second + 1) * 32000])
            if second % 10 == 9:
                frames.append(keepalive)
    messages, code, _ = await stream(
        server.ws("/api/core/google/asr", api_key=key, events="true"), frames, deadline_s=600
    )
    assert code == 1000
    finals = of(messages, "final")
    assert len(finals) == 60 and all(
        wer(MANIFEST["hello_robot.wav"]["transcript"], f["asr_reply"]) <= 0.2 for f in finals
    )
    assert [round(f["start"] % 60, 3) for f in finals] == [round(finals[0]["start"] % 60, 3)] * 60
    ledger = await server.ledger()
    records = await ledger.usage(limit=1000)
    await ledger.close()
    lengths = {r.audio_ms for r in records}
    assert len(records) == 60 and max(lengths) - min(lengths) <= 30
    assert all(r.cost_uomcu == -(-r.audio_ms * 50_000_000 // 60_000) for r in records)
    (summary,) = of(messages, "summary")
    total_uomcu = sum(r.cost_uomcu for r in records)
    assert summary["utterances"] == 60
    assert summary["seconds"] == pytest.approx(sum(r.audio_ms for r in records) / 1000)
    assert round(float(summary["cost_omcu"]) * 1_000_000) == total_uomcu
    assert sum(r.received_ms for r in records) <= 3600 * 1000  # every client second counted at most once
