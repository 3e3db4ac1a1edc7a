"""Usage summed per UTC day and kind (the console's chart), on both backends."""

from __future__ import annotations

import pytest

from speech.metering.ledger import Ledger
from speech.metering.records import DailyUsage
from tests.metering.conftest import FakeClock, asr, tts


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


def test_unknown_kind_keeps_its_cost_without_a_quantity() -> None:
    day = DailyUsage(day="2025-01-31", kind="llm", records=3, audio_ms=None, characters=None, cost_uomcu=1500)
    assert day.to_json() == {
        "day": "2025-01-31",
        "kind": "llm",
        "records": 3,
        "quantity": None,
        "unit": None,
        "cost": 0.0015,
        "cost_uomcu": 1500,
    }
