"""Limits: concurrent-stream leases, per-minute request counters and the clean-up of stale rows.

Every test taking ``ledger`` or ``backend`` runs once per backend (see
``conftest.py``); a second ledger opened with ``backend.open()`` is another
replica on the same database, with its own connections.
"""

from __future__ import annotations

import asyncio

import pytest

from speech.metering.ledger import Ledger
from tests.metering.conftest import Backend, FakeClock

NO_KEY = "000000000000"


# ---------------------------------------------------------------- stream leases


async def test_stream_limit_holds_across_two_replicas(backend: Backend, clock: FakeClock) -> None:
    a = await backend.open()
    b = await backend.open()
    _, key = await a.create_key("streams", 1, max_streams=2)
    results = await asyncio.gather(
        *(
            (a if i % 2 else b).acquire_stream(
                f"lease-{i}", key_id=key.key_id, max_streams=2, ttl_s=30, replica="a" if i % 2 else "b"
            )
            for i in range(20)
        )
    )
    assert sum(results) == 2
    granted = [f"lease-{i}" for i, ok in enumerate(results) if ok]
    # Idempotent per lease id, even at the limit.
    assert await a.acquire_stream(granted[0], key_id=key.key_id, max_streams=2, ttl_s=30, replica="a")
    assert not await b.acquire_stream("late", key_id=key.key_id, max_streams=2, ttl_s=30, replica="b")
    await b.release_stream(granted[0])
    await b.release_stream("never-held")
    assert await b.acquire_stream("late", key_id=key.key_id, max_streams=2, ttl_s=30, replica="b")
    assert not await a.acquire_stream("later", key_id=key.key_id, max_streams=2, ttl_s=30, replica="a")
    # Another key has its own slots.
    _, other = await a.create_key("other", 1)
    assert await a.acquire_stream("o1", key_id=other.key_id, max_streams=1, ttl_s=30, replica="a")
    assert not await a.acquire_stream("o2", key_id=other.key_id, max_streams=1, ttl_s=30, replica="a")
    # A bigger limit allows more; zero allows none.
    assert await a.acquire_stream("o2", key_id=other.key_id, max_streams=2, ttl_s=30, replica="a")
    assert not await a.acquire_stream("o3", key_id=other.key_id, max_streams=0, ttl_s=30, replica="a")


async def test_stream_lease_expiry_and_renewal(ledger: Ledger, clock: FakeClock) -> None:
    _, key = await ledger.create_key("s", 1)
    assert await ledger.acquire_stream("l1", key_id=key.key_id, max_streams=1, ttl_s=10, replica="r1")
    assert not await ledger.acquire_stream("l2", key_id=key.key_id, max_streams=1, ttl_s=10, replica="r1")
    clock.tick(8)
    await ledger.renew_streams(["l1", "unknown"], ttl_s=10)
    await ledger.renew_streams([], ttl_s=10)
    clock.tick(8)  # alive thanks to the renewal
    assert not await ledger.acquire_stream("l2", key_id=key.key_id, max_streams=1, ttl_s=10, replica="r1")
    clock.tick(2)  # a crashed replica's lease runs out by itself
    assert await ledger.acquire_stream("l2", key_id=key.key_id, max_streams=1, ttl_s=10, replica="r1")
    with pytest.raises(ValueError, match="unknown key_id"):
        await ledger.acquire_stream("x", key_id=NO_KEY, max_streams=1, ttl_s=10, replica="r1")
    for kwargs in ({"max_streams": -1}, {"ttl_s": 0}, {"replica": ""}, {"max_streams": 1.5}):
        call = {"key_id": key.key_id, "max_streams": 1, "ttl_s": 10, "replica": "r1", **kwargs}
        with pytest.raises(ValueError):
            await ledger.acquire_stream("y", **call)  # type: ignore[arg-type]


# ---------------------------------------------------------------- rate counters


async def test_rate_counter_fixed_window(ledger: Ledger, clock: FakeClock) -> None:
    _, key = await ledger.create_key("r", 1)
    _, other = await ledger.create_key("o", 1)
    t0 = 1_800_000_000.0  # on a minute boundary
    assert t0 % 60 == 0
    got = [await ledger.count_request(key.key_id, rpm=3, now_epoch_s=t0 + i) for i in range(5)]
    assert got == [(True, 1), (True, 2), (True, 3), (False, 4), (False, 5)]
    assert await ledger.count_request(other.key_id, rpm=3, now_epoch_s=t0 + 59.999) == (True, 1)
    assert await ledger.count_request(key.key_id, rpm=3, now_epoch_s=t0 + 59.999) == (False, 6)
    assert await ledger.count_request(key.key_id, rpm=3, now_epoch_s=t0 + 60) == (True, 1)  # new window
    assert await ledger.count_request(key.key_id, rpm=0, now_epoch_s=t0 + 60) == (False, 2)
    # Without a time, the ledger's clock decides the window.
    assert await ledger.count_request(key.key_id, rpm=3) == (True, 1)
    clock.tick(60)
    assert await ledger.count_request(key.key_id, rpm=3) == (True, 1)
    for bad in ({"rpm": -1}, {"rpm": 1.5}, {"rpm": 1, "now_epoch_s": float("inf")}, {"rpm": 1, "now_epoch_s": "x"}):
        with pytest.raises(ValueError):
            await ledger.count_request(key.key_id, **bad)  # type: ignore[arg-type]


async def test_rate_counter_across_two_replicas(backend: Backend) -> None:
    a = await backend.open()
    b = await backend.open()
    _, key = await a.create_key("r", 1)
    t0 = 1_800_000_000.0
    results = await asyncio.gather(
        *((a if i % 2 else b).count_request(key.key_id, rpm=15, now_epoch_s=t0) for i in range(20))
    )
    assert sorted(count for _, count in results) == list(range(1, 21))
    assert sum(ok for ok, _ in results) == 15


# ---------------------------------------------------------------- clean-up


async def test_expire_stale(ledger: Ledger, clock: FakeClock) -> None:
    _, key = await ledger.create_key("a", 1_000)
    await ledger.reserve("short", key_id=key.key_id, want_uomcu=1, ttl_s=5)
    await ledger.reserve("long", key_id=key.key_id, want_uomcu=1, ttl_s=500)
    assert await ledger.acquire_stream("l1", key_id=key.key_id, max_streams=5, ttl_s=5, replica="a")
    assert await ledger.acquire_stream("l2", key_id=key.key_id, max_streams=5, ttl_s=500, replica="a")
    now = clock.now.timestamp()
    await ledger.count_request(key.key_id, rpm=10, now_epoch_s=now - 120)  # two windows back: stale
    await ledger.count_request(key.key_id, rpm=10, now_epoch_s=now - 60)  # previous window: kept
    await ledger.count_request(key.key_id, rpm=10, now_epoch_s=now)
    assert await ledger.expire_stale() == 1
    clock.tick(5)
    assert await ledger.expire_stale() == 2
    assert await ledger.expire_stale() == 0
    assert await ledger.available(key.account_id) == 999
    clock.tick(120)
    assert await ledger.expire_stale() == 2  # the two newer windows
