"""The per-replica stream registry against a real SQLite ledger: renewal of
the credit held by running utterances and of stream leases, and revocation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from speech.api.streams import StreamRegistry
from speech.errors import AuthError
from speech.metering.factory import open_ledger
from speech.settings import LimitSettings


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class Stream:
    def __init__(self, key_id: str, reservations: list[str], lease_id: str | None = None) -> None:
        self.key_id = key_id
        self.lease_id = lease_id
        self.reservations = reservations
        self.terminated: list[str] = []

    def live_reservations(self) -> list[str]:
        return self.reservations

    async def terminate(self, error: AuthError) -> None:
        self.terminated.append(error.message)


async def test_running_utterances_keep_their_credit_and_revocation_reaches_streams(tmp_path: Path) -> None:
    clock = Clock()
    ledger = await open_ledger(str(tmp_path / "l.db"), clock=clock)
    try:
        _, key = await ledger.create_key("k", 1_000_000)
        _, other = await ledger.create_key("other", 1_000_000)
        limits = LimitSettings(reservation_ttl_s=10, stream_lease_ttl_s=3)
        assert await ledger.reserve("asr:c:0", key_id=key.key_id, want_uomcu=600_000, ttl_s=10) == 600_000
        assert await ledger.acquire_stream("lease:c", key_id=key.key_id, max_streams=1, ttl_s=3, replica="r1")
        registry = StreamRegistry(ledger, limits, "r1")
        stream, bystander = Stream(key.key_id, ["asr:c:0"], "lease:c"), Stream(other.key_id, [])
        registry.add(stream)
        registry.add(bystander)
        assert len(registry) == 2
        for _ in range(6):  # 12 s: longer than the reservation's 10 s and the lease's 3 s
            clock.now += timedelta(seconds=2)
            await registry.renew_reservations()
            await registry.renew_leases()
        assert await ledger.available(key.account_id) == 400_000  # still held by the running utterance
        assert not await ledger.acquire_stream("lease:d", key_id=key.key_id, max_streams=1, ttl_s=3, replica="r2")
        await registry.check_revocations()
        assert stream.terminated == []
        await ledger.revoke(key.key_id)
        await registry.check_revocations()
        assert stream.terminated == ["API key revoked"] and bystander.terminated == []
        registry.remove(stream)
        registry.remove(stream)  # twice is harmless
        assert len(registry) == 1
        clock.now += timedelta(seconds=11)  # nobody renews any more: the credit comes back
        assert await ledger.available(key.account_id) == 1_000_000
    finally:
        await ledger.close()
