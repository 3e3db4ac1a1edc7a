"""The bench harness runs on a tiny load and reports sane fields.

No timing is asserted: the numbers depend on the machine. What is checked is
that the suite runs end to end (gateway, fake upstream, echo relay, TTS) and
that its JSON and table carry what the README's performance section quotes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import websockets.frames
import websockets.streams

from bench import load, suite, wsclient

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT.parent / "shared" / "samples"
needs_samples = pytest.mark.skipif(not (SAMPLES / "goforward.wav").exists(), reason="../shared/samples is missing")


def test_client_frames_parse_as_masked_websocket_frames() -> None:
    text = json.dumps({"audio": "A" * 300, "rate": 16000})
    reader = websockets.streams.StreamReader()
    reader.feed_data(wsclient.text_frame(text))
    parser = websockets.frames.Frame.parse(reader.read_exact, mask=True)
    try:
        next(parser)
    except StopIteration as done:
        frame = done.value
    assert frame.opcode == websockets.frames.OP_TEXT and frame.fin
    assert frame.data.decode() == text


@needs_samples
def test_plan_expectations_follow_the_scripts() -> None:
    plan = load.build_plan(SAMPLES, load.DEFAULT_CLIPS, gap_s=2.0, duration_s=20.0)
    load.expect_gateway(plan)
    load.expect_echo(plan)
    assert plan.cycle_s % 0.6 < 1e-9 or abs(plan.cycle_s % 0.6 - 0.6) < 1e-9
    for script in plan.scripts:
        assert len(script.ids) == plan.chunks
        for target in ("gateway", "echo"):
            utts = script.expect[target]
            assert utts, (script.lead, target)
            for u in utts:
                assert 0 <= u.speech_end < u.decide < plan.chunks
                assert script.ids[u.speech_end] != 0  # the last voiced chunk is speech
            assert [u.decide for u in utts] == sorted(u.decide for u in utts)
        # The echo relay decides on its third all-zero frame after speech.
        for u in script.expect["echo"]:
            assert script.ids[u.decide - 2 : u.decide + 1] == [0, 0, 0]


def test_profile_summary_counts_self_and_inclusive(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "run (x/site-packages/uvicorn/server.py:1);handle (/r/speech/api/asr_ws.py:10);write (grpc/aio/_call.py:5) 3\n"
        "run (x/site-packages/uvicorn/server.py:1);handle (/r/speech/api/asr_ws.py:12) 1\n"
    )
    prof = suite.summarize_profile(raw)
    assert prof["samples"] == 4
    assert dict(prof["self"])["write (grpc/aio/_call.py)"] == 75.0
    inclusive = dict(prof["inclusive"])
    assert inclusive["handle (/r/speech/api/asr_ws.py)"] == 100.0
    assert not any("uvicorn/server.py" in f for f in inclusive)


@needs_samples
def test_quick_suite_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "suite.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--levels", "3", "--duration", "4", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| N | sustained gw / echo |" in proc.stdout
    assert "| measure | target | measured | met |" in proc.stdout
    res = json.loads(out.read_text())
    assert res["machine"]["nproc"] >= 1 and res["date"]
    [level] = res["asr"]
    assert level["streams"] == 3
    for target in ("gateway", "echo"):
        row = level[target]
        assert row["connected"] == 3, row
        assert row["checks"]["every_reply"] and row["checks"]["closed_normally"], row
        assert row["added"]["n"] > 0 and row["added"]["p50_ms"] is not None
        assert row["end_of_speech"]["p50_ms"] > row["added"]["p50_ms"]  # it holds the silence window
        assert row["cpu_s"] >= 0 and row["cpu_ms_per_audio_s"] is not None
        assert row["rss_peak_mb"] > 0
        assert set(row["generator_lateness_ms"]) == {"p99", "max"}
    # The fake upstream reports its own time through the gateway's reply.
    assert level["gateway"]["upstream_own"]["n"] == level["gateway"]["added"]["n"]
    tts = res["tts"]
    for path in ("gateway", "direct"):
        assert tts["sequential"][path]["requests"] > 0 and tts["sequential"][path]["failed"] == 0
        assert tts["burst"][path]["rps"] > 0
    assert tts["added_p50_ms"] is not None
