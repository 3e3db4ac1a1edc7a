"""SQLite group commit: concurrent writes share commits and stay exactly-once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from speech.errors import PaymentRequired
from speech.metering.sqlite import SqliteLedger
from tests.metering.conftest import asr, tts


async def test_concurrent_operations_share_commits_and_each_counts_once(tmp_path: Path) -> None:
    led = await SqliteLedger.open(tmp_path / "l.db")
    try:
        _, key = await led.create_key("a", 10**12)
        before = led.commits
        n = 200
        # Every usage twice (a client retry), plus reserve/settle pairs, all at once.
        ops = [led.record_usage(tts(key.key_id, f"t{i}")) for i in range(n)]
        ops += [led.record_usage(tts(key.key_id, f"t{i}")) for i in range(n)]
        ops += [led.reserve(f"r{i}", key_id=key.key_id, want_uomcu=1000, ttl_s=60) for i in range(n)]
        results = await asyncio.gather(*ops)
        assert sum(1 for r in results[: 2 * n] if r[1]) == n  # created exactly once each
        settles = [led.settle(f"r{i}", asr(key.key_id, f"a{i}", ms=1000)) for i in range(n)]
        await asyncio.gather(*settles)
        commits = led.commits - before
        assert commits < (4 * n) / 4, commits  # batched: far fewer commits than operations
        usage = await led.usage(key_id=key.key_id, limit=10_000)
        assert len(usage) == 2 * n
        spent = sum(u.cost_uomcu for u in usage)
        assert await led.balance(key.account_id) == 10**12 - spent
        assert await led.available(key.account_id) == 10**12 - spent  # every reservation settled
    finally:
        await led.close()
    # Durable: a fresh open sees the same.
    again = await SqliteLedger.open(tmp_path / "l.db")
    try:
        assert len(await again.usage(limit=10_000)) == 2 * n
    finally:
        await again.close()


async def test_a_failing_operation_in_a_batch_fails_alone(tmp_path: Path) -> None:
    led = await SqliteLedger.open(tmp_path / "l.db")
    try:
        _, rich = await led.create_key("rich", 10**9)
        _, broke = await led.create_key("broke", 0)
        ops = []
        for i in range(50):
            ops.append(led.record_usage(tts(rich.key_id, f"ok{i}")))
            ops.append(led.reserve(f"no{i}", key_id=broke.key_id, want_uomcu=1, ttl_s=60))
            ops.append(led.record_usage(tts("000000000000", f"bad{i}")))  # unknown key: ValueError
        results = await asyncio.gather(*ops, return_exceptions=True)
        assert all(not isinstance(r, BaseException) for r in results[0::3])
        assert all(isinstance(r, PaymentRequired) for r in results[1::3])
        assert all(isinstance(r, ValueError) for r in results[2::3])
        assert len(await led.usage(limit=1000)) == 50
        assert await led.available(broke.account_id) == 0  # no reservation leaked in
    finally:
        await led.close()


async def test_an_idle_ledger_commits_each_operation_at_once(tmp_path: Path) -> None:
    led = await SqliteLedger.open(tmp_path / "l.db")
    try:
        _, key = await led.create_key("a", 10**9)
        before = led.commits
        for i in range(5):
            await led.record_usage(tts(key.key_id, f"t{i}"))
        assert led.commits - before == 5
    finally:
        await led.close()


@pytest.mark.parametrize("n", [1, 3])
async def test_cancelled_callers_still_get_their_writes_committed(tmp_path: Path, n: int) -> None:
    led = await SqliteLedger.open(tmp_path / "l.db")
    try:
        _, key = await led.create_key("a", 10**9)
        tasks = [asyncio.create_task(led.record_usage(tts(key.key_id, f"c{i}"))) for i in range(n)]
        await asyncio.sleep(0)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await led.close()  # waits for writes in flight
    again = await SqliteLedger.open(tmp_path / "l.db")
    try:
        assert len(await again.usage()) == n
    finally:
        await again.close()
