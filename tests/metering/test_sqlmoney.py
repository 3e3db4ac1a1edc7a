"""Money: reservations, settling and recording usage exactly once.

Every test taking ``ledger`` or ``backend`` runs once per backend (see
``conftest.py``); a second ledger opened with ``backend.open()`` is another
replica on the same database, with its own connections.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from speech.errors import PaymentRequired
from speech.metering.ledger import Ledger
from tests.metering.conftest import Backend, FakeClock, asr, llm, tts

NO_KEY = "000000000000"
TTS_1 = 30_000  # µOMCU of one elevenlabs character
ERROR_TEXT = "insufficient balance: top up this API key to continue"


# ---------------------------------------------------------------- reservations


async def test_reserve_grants_the_smaller_of_want_and_available(ledger: Ledger) -> None:
    _, key = await ledger.create_key("a", 100)
    assert await ledger.reserve("r1", key_id=key.key_id, want_uomcu=60, ttl_s=30) == 60
    assert await ledger.available(key.account_id) == 40
    assert await ledger.balance(key.account_id) == 100  # a reservation is not a debit
    assert await ledger.reserve("r2", key_id=key.key_id, want_uomcu=60, ttl_s=30) == 40
    assert await ledger.available(key.account_id) == 0
    with pytest.raises(PaymentRequired) as info:
        await ledger.reserve("r3", key_id=key.key_id, want_uomcu=1, ttl_s=30)
    assert info.value.message == ERROR_TEXT and info.value.status == 402
    with pytest.raises(PaymentRequired):  # a free route still needs available > 0
        await ledger.reserve("r4", key_id=key.key_id, want_uomcu=0, ttl_s=30)
    await ledger.release("r2")
    assert await ledger.available(key.account_id) == 40
    assert await ledger.reserve("r5", key_id=key.key_id, want_uomcu=0, ttl_s=30) == 0
    assert await ledger.available(key.account_id) == 40


async def test_reserve_is_per_account_across_keys(ledger: Ledger) -> None:
    _, k1 = await ledger.create_key("a", 100)
    _, k2 = await ledger.create_key("b", account_id=k1.account_id)
    _, other = await ledger.create_key("c", 100)
    assert await ledger.reserve("r1", key_id=k1.key_id, want_uomcu=70, ttl_s=30) == 70
    assert await ledger.reserve("r2", key_id=k2.key_id, want_uomcu=70, ttl_s=30) == 30
    assert await ledger.reserve("r3", key_id=other.key_id, want_uomcu=70, ttl_s=30) == 70


async def test_reserve_is_idempotent(ledger: Ledger) -> None:
    _, key = await ledger.create_key("a", 100)
    assert await ledger.reserve("r1", key_id=key.key_id, want_uomcu=60, ttl_s=30) == 60
    assert await ledger.reserve("r1", key_id=key.key_id, want_uomcu=60, ttl_s=30) == 60
    assert await ledger.reserve("r1", key_id=key.key_id, want_uomcu=5, ttl_s=30) == 60
    assert await ledger.available(key.account_id) == 40
    # Even when the account is exhausted, the existing grant is returned.
    assert await ledger.reserve("r2", key_id=key.key_id, want_uomcu=100, ttl_s=30) == 40
    assert await ledger.reserve("r1", key_id=key.key_id, want_uomcu=60, ttl_s=30) == 60


async def test_reservation_expiry_frees_credit(ledger: Ledger, clock: FakeClock) -> None:
    _, key = await ledger.create_key("a", 100)
    assert await ledger.reserve("r1", key_id=key.key_id, want_uomcu=100, ttl_s=10) == 100
    with pytest.raises(PaymentRequired):
        await ledger.reserve("r2", key_id=key.key_id, want_uomcu=1, ttl_s=10)
    clock.tick(9.999)
    assert await ledger.available(key.account_id) == 0
    clock.tick(0.001)  # a process killed mid-stream holds nothing forever
    assert await ledger.available(key.account_id) == 100
    assert await ledger.reserve("r2", key_id=key.key_id, want_uomcu=30, ttl_s=10) == 30
    assert await ledger.available(key.account_id) == 70
    # The expired reservation was dropped by reserve; its id can be granted again.
    assert await ledger.reserve("r1", key_id=key.key_id, want_uomcu=10, ttl_s=10) == 10


async def test_renew_pushes_only_live_reservations(ledger: Ledger, clock: FakeClock) -> None:
    _, key = await ledger.create_key("a", 100)
    await ledger.reserve("r1", key_id=key.key_id, want_uomcu=50, ttl_s=10)
    await ledger.reserve("r2", key_id=key.key_id, want_uomcu=50, ttl_s=5)
    clock.tick(6)  # r2 expired
    await ledger.renew(["r1", "r2", "unknown"], ttl_s=10)
    await ledger.renew([], ttl_s=10)
    assert await ledger.available(key.account_id) == 50
    clock.tick(9)  # r1 would have expired at +10 without the renewal
    assert await ledger.available(key.account_id) == 50
    await ledger.renew(["r1"], ttl_s=0.5)  # never shortens: still ends at +16
    clock.tick(0.9)
    assert await ledger.available(key.account_id) == 50
    clock.tick(0.1)
    assert await ledger.available(key.account_id) == 100
    for bad in (0, -1, 10**9, True, "5"):
        with pytest.raises(ValueError):
            await ledger.renew(["r1"], ttl_s=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await ledger.renew("r1", ttl_s=5)


async def test_reserve_validation(ledger: Ledger) -> None:
    _, key = await ledger.create_key("a", 100)
    with pytest.raises(ValueError, match="unknown key_id"):
        await ledger.reserve("r", key_id=NO_KEY, want_uomcu=1, ttl_s=5)
    for kwargs in (
        {"key_id": key.key_id, "want_uomcu": -1, "ttl_s": 5},
        {"key_id": key.key_id, "want_uomcu": 1.0, "ttl_s": 5},
        {"key_id": key.key_id, "want_uomcu": 1, "ttl_s": 0},
        {"key_id": key.key_id, "want_uomcu": 1, "ttl_s": float("nan")},
    ):
        with pytest.raises(ValueError):
            await ledger.reserve("r", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await ledger.reserve("", key_id=key.key_id, want_uomcu=1, ttl_s=5)
    assert await ledger.available(key.account_id) == 100


async def test_settle_debits_once_and_frees_the_reservation(ledger: Ledger) -> None:
    _, key = await ledger.create_key("a", 1_000_000)
    assert await ledger.reserve("r1", key_id=key.key_id, want_uomcu=500_000, ttl_s=30) == 500_000
    record, new = await ledger.settle("r1", tts(key.key_id, "u1", chars=11))
    assert new and record is not None and record.cost_uomcu == 330_000
    assert record.account_id == key.account_id and record.to_json()["account_id"] == key.account_id
    assert await ledger.balance(key.account_id) == 670_000
    assert await ledger.available(key.account_id) == 670_000
    again, new_again = await ledger.settle("r1", tts(key.key_id, "u1", chars=11))
    assert new_again is False and again == record
    assert await ledger.balance(key.account_id) == 670_000
    assert [r.idempotency_key for r in await ledger.usage()] == ["u1"]


async def test_settle_duplicate_idempotency_key_from_another_reservation(ledger: Ledger) -> None:
    _, key = await ledger.create_key("a", 1_000_000)
    await ledger.reserve("r1", key_id=key.key_id, want_uomcu=400_000, ttl_s=30)
    await ledger.reserve("r2", key_id=key.key_id, want_uomcu=400_000, ttl_s=30)
    first, new = await ledger.settle("r1", tts(key.key_id, "same"))
    second, new2 = await ledger.settle("r2", tts(key.key_id, "same", chars=1))  # different content: first wins
    assert new and not new2 and first == second
    assert await ledger.balance(key.account_id) == 1_000_000 - 330_000
    assert await ledger.available(key.account_id) == 1_000_000 - 330_000  # both reservations gone


async def test_settle_after_expiry_and_without_reservation(ledger: Ledger, clock: FakeClock) -> None:
    _, key = await ledger.create_key("a", 1_000_000)
    await ledger.reserve("r1", key_id=key.key_id, want_uomcu=400_000, ttl_s=5)
    clock.tick(60)
    assert await ledger.expire_stale() == 1
    rec, new = await ledger.settle("r1", tts(key.key_id, "late"))  # the work was done: billed
    assert new and rec is not None
    rec2, new2 = await ledger.settle("never-reserved", tts(key.key_id, "direct"))
    assert new2 and rec2 is not None
    assert await ledger.balance(key.account_id) == 1_000_000 - 2 * 330_000
    assert await ledger.settle("nothing", None) == (None, False)
    with pytest.raises(ValueError, match="unknown key_id"):
        await ledger.settle("r9", tts(NO_KEY, "ghost"))
    assert len(await ledger.usage()) == 2


async def test_settle_without_usage_releases(ledger: Ledger) -> None:
    _, key = await ledger.create_key("a", 100)
    await ledger.reserve("r1", key_id=key.key_id, want_uomcu=100, ttl_s=30)
    assert await ledger.settle("r1", None) == (None, False)
    assert await ledger.available(key.account_id) == 100
    assert await ledger.balance(key.account_id) == 100
    await ledger.release("r1")  # absent: no-op
    await ledger.release("never")


async def test_settle_can_overrun_the_grant(ledger: Ledger) -> None:
    _, key = await ledger.create_key("a", 10_000)
    assert await ledger.reserve("r1", key_id=key.key_id, want_uomcu=TTS_1, ttl_s=30) == 10_000
    await ledger.settle("r1", tts(key.key_id, "u", chars=1))
    assert await ledger.balance(key.account_id) == 10_000 - TTS_1
    with pytest.raises(PaymentRequired):
        await ledger.reserve("r2", key_id=key.key_id, want_uomcu=0, ttl_s=30)


# ---------------------------------------------------------------- usage


async def test_record_usage_debits(ledger: Ledger) -> None:
    _, key = await ledger.create_key("alice", 100_000_000)
    rec, new = await ledger.record_usage(asr(key.key_id, "s1:1", ms=1_500, received=1_730))
    assert new is True
    assert rec.cost_uomcu == 1_250_000
    assert await ledger.balance(key.account_id) == 98_750_000
    rec2, new2 = await ledger.record_usage(tts(key.key_id, "t1", chars=11))
    assert new2 and rec2.cost_uomcu == 330_000
    assert await ledger.balance(key.account_id) == 98_420_000
    assert rec.to_json() == {
        "id": rec.id,
        "idempotency_key": "s1:1",
        "key_id": key.key_id,
        "account_id": key.account_id,
        "kind": "asr",
        "provider": "google",
        "engine": "local",
        "quantity": 1.5,
        "unit": "second",
        "unit_price_uomcu": 50_000_000,
        "cost": 1.25,
        "cost_uomcu": 1_250_000,
        "received_seconds": 1.73,
        "upstream_characters": None,
        "created": "2025-01-31T12:00:00.123Z",
    }
    j = rec2.to_json()
    assert (j["kind"], j["quantity"], j["unit"], j["cost"], j["cost_uomcu"]) == ("tts", 11, "character", 0.33, 330_000)
    assert j["received_seconds"] is None
    assert j["unit_price_uomcu"] == 30_000_000_000
    assert str(rec.quantity) == "1.500" and rec2.quantity == 11
    assert str(rec.cost) == "1.250000"
    stored = await ledger.usage()
    assert stored == [rec2, rec]


async def test_record_usage_is_idempotent(ledger: Ledger) -> None:
    _, key = await ledger.create_key("alice", 100_000_000)
    first, new = await ledger.record_usage(asr(key.key_id, "s1:1"))
    assert new
    again, new_again = await ledger.record_usage(asr(key.key_id, "s1:1"))
    assert new_again is False and again == first
    # Same key, different content: the first record wins, nothing is debited.
    other, new_other = await ledger.record_usage(asr(key.key_id, "s1:1", ms=1))
    assert new_other is False and other == first
    assert await ledger.balance(key.account_id) == 50_000_000
    assert len(await ledger.usage()) == 1


async def test_record_usage_concurrent_duplicates(ledger: Ledger) -> None:
    _, key = await ledger.create_key("alice", 100_000_000)
    results = await asyncio.gather(*(ledger.record_usage(asr(key.key_id, "dup")) for _ in range(50)))
    assert sum(new for _, new in results) == 1
    assert len({rec for rec, _ in results}) == 1
    assert await ledger.balance(key.account_id) == 50_000_000
    assert len(await ledger.usage()) == 1


async def test_record_usage_concurrent_distinct(ledger: Ledger) -> None:
    _, key = await ledger.create_key("alice", 0)
    results = await asyncio.gather(*(ledger.record_usage(asr(key.key_id, f"u{i % 25}", ms=1)) for i in range(100)))
    assert sum(new for _, new in results) == 25
    assert await ledger.balance(key.account_id) == -25 * 834
    assert len(await ledger.usage(limit=1000)) == 25


async def test_record_usage_two_replicas(backend: Backend) -> None:
    a = await backend.open()
    b = await backend.open()
    _, key = await a.create_key("alice", 0)
    calls = [(a if i % 2 else b).record_usage(tts(key.key_id, f"x{i % 10}", chars=1)) for i in range(40)]
    results = await asyncio.gather(*calls)
    assert sum(new for _, new in results) == 10
    assert await a.balance(key.account_id) == await b.balance(key.account_id) == -10 * TTS_1


async def test_balance_may_go_negative(ledger: Ledger) -> None:
    _, key = await ledger.create_key("alice", 1_000)
    await ledger.record_usage(asr(key.key_id, "big", ms=60_000))
    assert await ledger.balance(key.account_id) == 1_000 - 50_000_000


async def test_free_route_records_zero(ledger: Ledger) -> None:
    _, key = await ledger.create_key("alice", 7)
    rec, new = await ledger.record_usage(asr(key.key_id, "free", ms=10_000, route="local"))
    assert new and rec.cost_uomcu == 0 and rec.unit_price_uomcu == 0
    assert await ledger.balance(key.account_id) == 7


async def test_record_usage_revoked_or_expired_key_still_billed(ledger: Ledger, clock: FakeClock) -> None:
    _, key = await ledger.create_key("alice", 0, expires=clock.now + timedelta(seconds=1))
    await ledger.revoke(key.key_id)
    clock.tick(5)
    _, new = await ledger.record_usage(tts(key.key_id, "late", chars=1, route="riva"))
    assert new
    assert await ledger.balance(key.account_id) == -10_000


async def test_record_usage_unknown_key(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="unknown key_id"):
        await ledger.record_usage(asr(NO_KEY, "x"))
    assert await ledger.usage() == []


async def test_llm_usage_settles_a_reservation(ledger: Ledger) -> None:
    _, key = await ledger.create_key("robot", 50_000_000)
    assert await ledger.reserve("llm:r", key_id=key.key_id, want_uomcu=40_000_000, ttl_s=30) == 40_000_000
    assert await ledger.available(key.account_id) == 10_000_000
    rec, new = await ledger.settle("llm:r", llm(key.key_id, "llm:r", tokens_in=100, tokens_out=10))
    assert new and rec is not None and rec.cost_uomcu == 980_000
    assert await ledger.available(key.account_id) == await ledger.balance(key.account_id) == 49_020_000


# ---------------------------------------------------------------- concurrency across replicas


async def test_concurrent_reserve_and_settle_from_two_replicas(backend: Backend) -> None:
    """50 streams on one account, spread over two gateway replicas: the
    balance never goes below minus one grant, and no record is lost."""
    a = await backend.open()
    b = await backend.open()
    cost = 11 * TTS_1
    start = 10 * cost + cost // 2  # ten full grants, then one partial one
    _, key = await a.create_key("busy", start)
    refused = 0

    async def stream(i: int) -> bool:
        nonlocal refused
        led = a if i % 2 else b
        try:
            await led.reserve(f"res-{i}", key_id=key.key_id, want_uomcu=cost, ttl_s=60)
        except PaymentRequired:
            refused += 1
            return False
        await asyncio.sleep(0)
        record, new = await led.settle(f"res-{i}", tts(key.key_id, f"use-{i}"))
        assert new and record is not None and record.cost_uomcu == cost
        return True

    served = sum(await asyncio.gather(*(stream(i) for i in range(50))))
    assert served + refused == 50
    assert 10 <= served <= 11
    balance = await a.balance(key.account_id)
    assert balance >= -cost
    assert balance == start - served * cost
    assert await b.available(key.account_id) == balance  # no reservation left behind
    assert len(await a.usage(account_id=key.account_id, limit=1000)) == served
    assert await b.usage(limit=1000) == await a.usage(limit=1000)


async def test_concurrent_duplicate_settles_are_exactly_once(backend: Backend) -> None:
    a = await backend.open()
    b = await backend.open()
    _, key = await a.create_key("dup", 10_000_000)
    await a.reserve("r", key_id=key.key_id, want_uomcu=TTS_1 * 11, ttl_s=60)
    results = await asyncio.gather(*((a if i % 2 else b).settle("r", tts(key.key_id, "once")) for i in range(50)))
    assert sum(new for _, new in results) == 1
    assert len({rec for rec, _ in results}) == 1
    assert await a.balance(key.account_id) == 10_000_000 - 11 * TTS_1
    assert await b.available(key.account_id) == 10_000_000 - 11 * TTS_1
    assert len(await b.usage()) == 1


async def test_concurrent_reservations_never_overbook(backend: Backend) -> None:
    a = await backend.open()
    b = await backend.open()
    _, key = await a.create_key("busy", 1_000)

    async def take(i: int) -> int:
        try:
            return await (a if i % 2 else b).reserve(f"r{i}", key_id=key.key_id, want_uomcu=30, ttl_s=60)
        except PaymentRequired:
            return -1

    grants = await asyncio.gather(*(take(i) for i in range(50)))
    assert sum(g for g in grants if g > 0) == 1_000
    assert sorted(g for g in grants if g >= 0)[:1] == [10]  # one partial grant of the remainder
    assert grants.count(-1) == 50 - 34
    assert await a.available(key.account_id) == 0
