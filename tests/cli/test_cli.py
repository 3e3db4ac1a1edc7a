"""The `speech` command, run as a real subprocess."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import av
import pytest

from speech.metering.factory import open_ledger
from tests.conftest import SAMPLES


def speech(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "speech", *args], capture_output=True, text=True, timeout=120, env=env)


def test_keys_create_prints_the_key_alone_on_the_last_line(tmp_path: Path) -> None:
    db = str(tmp_path / "l.db")
    out = speech("keys", "create", "--name", "robot", "--balance", "12.5", "--db", db)
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip().splitlines()[-1]
    assert key.startswith("sk_") and " " not in key

    async def check() -> None:
        ledger = await open_ledger(db)
        account = await ledger.authenticate(key)
        assert account.name == "robot" and await ledger.balance(account.account_id) == 12_500_000
        await ledger.close()

    asyncio.run(check())
    listed = speech("keys", "list", "--db", db)
    key_id = key.split("_")[1]
    assert key_id in listed.stdout and "12.5" in listed.stdout and key not in listed.stdout
    topped = speech("keys", "top-up", key_id, "--amount", "0.5", "--db", db)
    assert topped.returncode == 0 and "13 OMCU" in topped.stdout
    assert speech("keys", "revoke", key_id, "--db", db).returncode == 0
    again = speech("keys", "revoke", key_id, "--db", db)
    assert again.returncode == 1 and "no active key" in again.stdout
    assert "revoked" in speech("keys", "list", "--db", db).stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["keys", "create", "--name", "x", "--balance", "lots"], "--balance"),
        (["keys", "create", "--name", "x", "--balance", "-1"], "--balance"),
        (["keys", "create", "--name", "", "--balance", "1"], "--name"),
        (["serve", "--config", "does-not-exist.toml"], "config file not found"),
        (["usage", "--limit", "0"], "--limit"),
    ],
)
def test_bad_arguments_exit_2_with_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    out = speech(*args, "--db", str(tmp_path / "l.db"))
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_bad_environment_setting_is_named(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "SPEECH_VAD__SILENCE_MS": "soon"}
    out = speech("keys", "list", "--db", str(tmp_path / "l.db"), env=env)
    assert out.returncode == 2 and "vad.silence_ms" in out.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("name", "rate", "codec"), [("out.wav", 22050, "pcm_s16le"), ("out.mp3", 44100, "mp3")])
def test_say_writes_a_playable_file(tmp_path: Path, name: str, rate: int, codec: str) -> None:
    path = tmp_path / name
    out = speech("say", "Hello from the gateway.", "-o", str(path))
    assert out.returncode == 0, out.stderr
    with av.open(io.BytesIO(path.read_bytes())) as c:
        s = c.streams.audio[0]
        assert s.rate == rate and s.codec_context.name.startswith(codec.split("_")[0])
        assert sum(f.samples for f in c.decode(s)) / s.rate > 1.0


@pytest.mark.slow
async def test_transcribe_streams_a_file_and_prints_each_transcript(server: Any) -> None:
    key = await server.create_key()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "speech",
        "transcribe",
        str(SAMPLES / "two_commands.wav"),
        "--url",
        server.ws("/api/core/local/asr"),
        "--api-key",
        key,
        "--speed",
        "4",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, stderr.decode()
    lines = stdout.decode().strip().splitlines()
    assert lines == ["Stop right there.", "Now go back to your charging station."]
    bad = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "speech",
        "transcribe",
        str(SAMPLES / "two_commands.wav"),
        "--url",
        server.ws("/api/core/local/asr"),
        "--api-key",
        "sk_wrong",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(bad.communicate(), 60)
    assert bad.returncode == 1 and "invalid API key" in err.decode() and "4401" in err.decode()


def test_accounts_and_key_limits(tmp_path: Path) -> None:
    db = str(tmp_path / "l.db")
    out = speech("accounts", "create", "--name", "fleet", "--balance", "50", "--db", db)
    assert out.returncode == 0, out.stderr
    account_id = out.stdout.split()[2]
    assert account_id.startswith("acct_")
    k1 = speech("keys", "create", "--name", "robot-1", "--account", account_id, "--rpm", "60", "--db", db)
    k2 = speech("keys", "create", "--name", "robot-2", "--account", account_id, "--max-streams", "2", "--db", db)
    assert k1.returncode == k2.returncode == 0, k1.stderr + k2.stderr
    key_id = k1.stdout.strip().splitlines()[-1].split("_")[1]
    listed = speech("keys", "list", "--account", account_id, "--db", db)
    assert "robot-1" in listed.stdout and "robot-2" in listed.stdout and "rpm=60" in listed.stdout
    changed = speech("keys", "limits", key_id, "--rpm", "none", "--expires", "2030-01-01T00:00:00Z", "--db", db)
    assert changed.returncode == 0 and "rpm=unlimited" in changed.stdout and "2030-01-01" in changed.stdout
    assert speech("accounts", "top-up", account_id, "--amount", "-10", "--db", db).stdout.endswith("40 OMCU\n")
    assert "40" in speech("accounts", "list", "--db", db).stdout
    both = speech("keys", "create", "--name", "x", "--account", account_id, "--balance", "1", "--db", db)
    assert both.returncode == 2 and "not both" in both.stderr
    csv_out = speech("usage", "--account", account_id, "--csv", "--db", db)
    assert csv_out.returncode == 0 and csv_out.stdout.startswith("created,id,account_id,key_id,kind")


def test_usage_shows_llm_records_with_their_tokens(tmp_path: Path) -> None:
    from speech.metering.prices import PriceTable
    from speech.metering.records import UsageIn
    from speech.settings import PriceSettings

    db = str(tmp_path / "l.db")
    prices = PriceTable.from_settings(PriceSettings())

    async def record() -> str:
        ledger = await open_ledger(db)
        try:
            _, key = await ledger.create_key("robot", 10_000_000)
            for n, estimated in ((1, False), (2, True)):
                await ledger.record_usage(
                    UsageIn.llm(
                        prices,
                        idempotency_key=f"llm:{n}",
                        key_id=key.key_id,
                        provider="openai",
                        engine="openai",
                        model="gpt-4o-mini",
                        input_tokens=1000 * n,
                        output_tokens=500,
                        estimated=estimated,
                    )
                )
            await ledger.record_usage(
                UsageIn.tts(
                    prices, idempotency_key="t", key_id=key.key_id, provider="riva", engine="local", characters=3
                )
            )
            return key.account_id
        finally:
            await ledger.close()

    account_id = asyncio.run(record())
    table = speech("usage", "--kind", "llm", "--db", db)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.strip().splitlines()
    assert lines[0].split()[-1] == "MODEL" and len(lines) == 3
    assert "~2000+500tok" in lines[1] and lines[1].endswith(" 28 gpt-4o-mini")
    assert "1000+500tok" in lines[2] and "~" not in lines[2] and lines[2].endswith(" 21 gpt-4o-mini")
    everything = speech("usage", "--account", account_id, "--db", db).stdout
    assert "3ch" in everything and everything.count("gpt-4o-mini") == 2
    csv_out = speech("usage", "--kind", "llm", "--csv", "--db", db)
    rows = csv_out.stdout.strip().splitlines()
    assert rows[0].endswith(",model,input_tokens,output_tokens,output_unit_price_uomcu,estimated")
    assert ",gpt-4o-mini,2000,500," in rows[1] and rows[1].endswith(",True")
    assert ",gpt-4o-mini,1000,500," in rows[2] and rows[2].endswith(",False")
    assert speech("usage", "--kind", "stt", "--db", db).returncode == 2
