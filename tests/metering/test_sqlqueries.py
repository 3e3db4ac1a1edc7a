"""Usage queries: filtered records, and usage summed per UTC day and kind (the console's chart).

Every test taking ``ledger`` or ``backend`` runs once per backend (see
``conftest.py``); a second ledger opened with ``backend.open()`` is another
replica on the same database, with its own connections.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from speech.metering.ledger import Ledger
from tests.metering.conftest import Backend, FakeClock, asr, llm, tts

NO_KEY = "000000000000"


# ---------------------------------------------------------------- records


async def test_usage_filters_and_ordering(ledger: Ledger, clock: FakeClock) -> None:
    _, a = await ledger.create_key("a", 0)
    _, b = await ledger.create_key("b", 0)
    _, a2 = await ledger.create_key("a2", account_id=a.account_id)
    owners = [a, b, a2, a, b, a2]
    for i, owner in enumerate(owners):
        clock.tick(10)
        usage = tts(owner.key_id, f"r{i}", chars=i + 1, route="riva") if i % 3 else asr(owner.key_id, f"r{i}", ms=1)
        await ledger.record_usage(usage)

    async def ids(**kw: object) -> list[str]:
        return [r.idempotency_key for r in await ledger.usage(**kw)]  # type: ignore[arg-type]

    all_ = await ledger.usage()
    assert [r.idempotency_key for r in all_] == ["r5", "r4", "r3", "r2", "r1", "r0"]
    assert await ids(limit=2) == ["r5", "r4"]
    assert await ids(key_id=a.key_id) == ["r3", "r0"]
    assert await ids(account_id=a.account_id) == ["r5", "r3", "r2", "r0"]
    assert await ids(account_id=a.account_id, key_id=a2.key_id) == ["r5", "r2"]
    assert await ids(account_id=b.account_id, key_id=a2.key_id) == []
    assert await ids(key_id=b.key_id, limit=1) == ["r4"]
    assert await ids(kind="asr") == ["r3", "r0"]
    assert await ids(kind="tts", account_id=a.account_id) == ["r5", "r2"]
    since = all_[2].created  # r3's time, inclusive
    until = all_[0].created  # r5's time, exclusive
    assert await ids(since=since) == ["r5", "r4", "r3"]
    assert await ids(until=until) == ["r4", "r3", "r2", "r1", "r0"]
    assert await ids(since=since, until=until) == ["r4", "r3"]
    assert await ids(account_id=a.account_id, since=since, until=until) == ["r3"]
    # Offsets are normalised to UTC; datetimes work too.
    plus_one = datetime.fromisoformat(since.replace("Z", "+00:00")).astimezone(timezone(timedelta(hours=1)))
    assert len(await ledger.usage(since=plus_one.isoformat())) == 3
    assert len(await ledger.usage(since=plus_one)) == 3
    assert await ids(key_id=NO_KEY) == []
    assert await ledger.balance(b.account_id) == -(2 + 5) * 10_000
    for bad in (0, -1, 10_001, 1.5):
        with pytest.raises(ValueError):
            await ledger.usage(limit=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ISO-8601"):
        await ledger.usage(since="yesterday")
    with pytest.raises(ValueError, match="ISO-8601"):
        await ledger.usage(until="tomorrow")
    with pytest.raises(ValueError, match="kind"):
        await ledger.usage(kind="stt")  # type: ignore[arg-type]


async def test_llm_usage_is_recorded_with_its_tokens_and_filtered_by_kind(ledger: Ledger, backend: Backend) -> None:
    _, key = await ledger.create_key("robot", 100_000_000)
    await ledger.record_usage(tts(key.key_id, "t1"))
    rec, new = await ledger.record_usage(llm(key.key_id, "llm:1", tokens_in=1000, tokens_out=500))
    est, _ = await ledger.record_usage(
        llm(key.key_id, "llm:2", model="deepseek-chat-x", tokens_in=7, tokens_out=3, estimated=True, route="deepseek")
    )
    assert new and rec.cost_uomcu == 21_000_000  # 1000 x 7 OMCU/M + 500 x 28 OMCU/M
    assert est.cost_uomcu == 18_200  # (7 x 1400 + 3 x 2800) / 10^6 OMCU, in µOMCU
    assert await ledger.balance(key.account_id) == 100_000_000 - 330_000 - 21_000_000 - 18_200
    assert rec.to_json() == {
        "id": rec.id,
        "idempotency_key": "llm:1",
        "key_id": key.key_id,
        "account_id": key.account_id,
        "kind": "llm",
        "provider": "openai",
        "engine": "openai",
        "quantity": 1500,
        "unit": "token",
        "unit_price_uomcu": 7_000_000_000,
        "cost": 21.0,
        "cost_uomcu": 21_000_000,
        "received_seconds": None,
        "upstream_characters": None,
        "created": rec.created,
        "model": "gpt-4o-mini",
        "input_tokens": 1000,
        "output_tokens": 500,
        "output_unit_price_uomcu": 28_000_000_000,
        "estimated": False,
    }
    assert rec.quantity == 1500 and rec.unit == "token"
    stored = await ledger.usage(kind="llm")
    assert stored == [est, rec]
    assert stored[0].estimated is True and stored[1].estimated is False
    assert [r.kind for r in await ledger.usage()] == ["llm", "llm", "tts"]
    # The same event again bills once.
    again, new_again = await ledger.record_usage(llm(key.key_id, "llm:1", tokens_in=1000, tokens_out=500))
    assert not new_again and again == rec
    rows = await backend.fetch("SELECT model, input_tokens, output_tokens, estimated FROM usage ORDER BY id")
    assert [tuple(r) for r in rows][1:] == [("gpt-4o-mini", 1000, 500, False), ("deepseek-chat-x", 7, 3, True)]


# ---------------------------------------------------------------- per day


async def test_usage_is_summed_per_utc_day_and_kind(ledger: Ledger, clock: FakeClock) -> None:
    # FakeClock starts at 2025-01-31T12:00:00.123Z.
    _, key = await ledger.create_key("alice", 10**12)
    _, other = await ledger.create_key("bob", 10**12)
    await ledger.record_usage(asr(key.key_id, "a1", ms=90_000))  # 2025-01-31
    await ledger.record_usage(asr(key.key_id, "a2", ms=30_500))
    await ledger.record_usage(tts(key.key_id, "t1", chars=11))
    await ledger.record_usage(asr(other.key_id, "other", ms=60_000))  # another account: not counted
    clock.tick(12 * 3600)  # 2025-02-01T00:00:00.123Z: the next UTC day
    await ledger.record_usage(tts(key.key_id, "t2", chars=5))
    await ledger.record_usage(tts(key.key_id, "t3", chars=7))

    days = await ledger.usage_by_day(account_id=key.account_id, since="2025-01-01T00:00:00Z")
    assert [(d.day, d.kind, d.records) for d in days] == [
        ("2025-01-31", "asr", 2),
        ("2025-01-31", "tts", 1),
        ("2025-02-01", "tts", 2),
    ]
    asr_day, tts_day, next_day = days
    assert asr_day.audio_ms == 120_500 and asr_day.characters is None
    assert tts_day.characters == 11 and tts_day.audio_ms is None
    assert next_day.characters == 12
    records = await ledger.usage(account_id=key.account_id)
    assert sum(d.cost_uomcu for d in days) == sum(r.cost_uomcu for r in records) > 0
    assert asr_day.to_json() == {
        "day": "2025-01-31",
        "kind": "asr",
        "records": 2,
        "quantity": 120.5,
        "unit": "second",
        "cost": asr_day.cost_uomcu / 1e6,
        "cost_uomcu": asr_day.cost_uomcu,
    }
    assert next_day.to_json()["unit"] == "character" and next_day.to_json()["quantity"] == 12


async def test_usage_by_day_window_and_empty(ledger: Ledger, clock: FakeClock) -> None:
    _, key = await ledger.create_key("alice", 10**12)
    await ledger.record_usage(asr(key.key_id, "a1"))
    clock.tick(86_400)
    await ledger.record_usage(asr(key.key_id, "a2"))
    since_second = await ledger.usage_by_day(account_id=key.account_id, since="2025-02-01T00:00:00Z")
    assert [d.day for d in since_second] == ["2025-02-01"]
    until_second = await ledger.usage_by_day(
        account_id=key.account_id, since="2025-01-01T00:00:00Z", until="2025-02-01T00:00:00Z"
    )
    assert [d.day for d in until_second] == ["2025-01-31"]
    assert await ledger.usage_by_day(account_id="acct_nobody", since="2025-01-01T00:00:00Z") == []


async def test_usage_by_day_validates(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="ISO-8601"):
        await ledger.usage_by_day(account_id="acct_x", since="yesterday")
    with pytest.raises(ValueError, match="account_id"):
        await ledger.usage_by_day(account_id="", since="2025-01-01T00:00:00Z")
