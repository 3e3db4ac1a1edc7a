"""Limits in SQL: concurrent-stream leases, per-minute request counters and clean-up.

Part of :class:`~speech.metering.sqlcore.SqlLedger`. A stream lease is a row
with an expiry that its holder renews; acquire_stream locks the key row, so
the count of live leases holds across replicas. Request counters are one
row per key and epoch minute.
"""

from __future__ import annotations

import math
from collections.abc import Collection

from speech.metering import keys as keymod
from speech.metering.checks import (
    MAX_ID_LENGTH,
    MAX_LABEL_LENGTH,
    MAX_RPM_LIMIT,
    MAX_STREAMS_LIMIT,
    check_int,
    check_label,
    check_ttl,
)
from speech.metering.sqlbase import SqlBase, Tx


class SqlLimits(SqlBase):
    """The stream-lease, rate-counter and clean-up methods of :class:`~speech.metering.ledger.Ledger`."""

    async def acquire_stream(self, lease_id: str, *, key_id: str, max_streams: int, ttl_s: float, replica: str) -> bool:
        check_label(lease_id, "lease_id", MAX_ID_LENGTH)
        check_label(key_id, "key_id", keymod.MAX_KEY_LENGTH)
        check_int(max_streams, "max_streams", maximum=MAX_STREAMS_LIMIT)
        ttl = check_ttl(ttl_s)
        check_label(replica, "replica", MAX_LABEL_LENGTH)

        async def fn(tx: Tx) -> bool:
            now = self._now()
            expires = self._in_seconds(ttl)
            if await tx.one(f"SELECT key_id FROM api_keys WHERE key_id = ?{self.LOCK_ROW}", (key_id,)) is None:
                raise ValueError(f"unknown key_id {key_id!r}")
            await tx.run(
                "DELETE FROM stream_leases WHERE lease_id IN (SELECT lease_id FROM stream_leases "
                f"WHERE key_id = ? AND expires <= ?{self.SKIP_LOCKED})",
                (key_id, now),
            )
            if await tx.one("SELECT lease_id FROM stream_leases WHERE lease_id = ?", (lease_id,)) is not None:
                await tx.run(
                    "UPDATE stream_leases SET expires = ? WHERE lease_id = ? AND expires < ?",
                    (expires, lease_id, expires),
                )
                return True
            live = await tx.one("SELECT COUNT(*) FROM stream_leases WHERE key_id = ? AND expires > ?", (key_id, now))
            if int(live[0] if live is not None else 0) >= max_streams:
                return False
            await tx.run(
                "INSERT INTO stream_leases (lease_id, key_id, replica, expires) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (lease_id) DO NOTHING",
                (lease_id, key_id, replica, expires),
            )
            return True

        return await self._write(fn)

    async def renew_streams(self, lease_ids: Collection[str], ttl_s: float) -> None:
        await self._renew("stream_leases", "lease_id", lease_ids, ttl_s)

    async def release_stream(self, lease_id: str) -> None:
        async def fn(tx: Tx) -> None:
            await tx.run("DELETE FROM stream_leases WHERE lease_id = ?", (lease_id,))

        await self._write(fn)

    async def count_request(self, key_id: str, *, rpm: int, now_epoch_s: float | None = None) -> tuple[bool, int]:
        check_label(key_id, "key_id", keymod.MAX_KEY_LENGTH)
        check_int(rpm, "rpm", maximum=MAX_RPM_LIMIT)
        if now_epoch_s is None:
            now_epoch_s = self._clock().timestamp()
        elif (
            isinstance(now_epoch_s, bool) or not isinstance(now_epoch_s, int | float) or not math.isfinite(now_epoch_s)
        ):
            raise ValueError(f"now_epoch_s must be a finite number, got {now_epoch_s!r}")
        window = math.floor(now_epoch_s / 60)

        async def fn(tx: Tx) -> int:
            row = await tx.one(
                "INSERT INTO rate_counters (key_id, window_start, count) VALUES (?, ?, 1) "
                "ON CONFLICT (key_id, window_start) DO UPDATE SET count = rate_counters.count + 1 RETURNING count",
                (key_id, window),
            )
            assert row is not None
            return int(row[0])

        count = await self._write(fn)
        return count <= rpm, count

    async def expire_stale(self) -> int:
        async def fn(tx: Tx) -> int:
            now = self._now()
            minute = math.floor(self._clock().timestamp() / 60)
            removed = await tx.run(
                "DELETE FROM reservations WHERE reservation_id IN "
                f"(SELECT reservation_id FROM reservations WHERE expires <= ?{self.SKIP_LOCKED})",
                (now,),
            )
            removed += await tx.run(
                "DELETE FROM stream_leases WHERE lease_id IN "
                f"(SELECT lease_id FROM stream_leases WHERE expires <= ?{self.SKIP_LOCKED})",
                (now,),
            )
            removed += await tx.run(
                "DELETE FROM rate_counters WHERE (key_id, window_start) IN "
                f"(SELECT key_id, window_start FROM rate_counters WHERE window_start < ?{self.SKIP_LOCKED})",
                (minute - 1,),
            )
            return removed

        return await self._write(fn)


__all__ = ["SqlLimits"]
