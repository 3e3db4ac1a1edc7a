"""Money in SQL: balances, reservations and recording usage, exactly once.

Part of :class:`~speech.metering.sqlcore.SqlLedger`. Every transaction that
moves money (reserve, settle, record_usage) first locks the account row, so
reservations of two replicas see each other and a usage debits its account
in the same transaction that inserts it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from speech.errors import PaymentRequired
from speech.metering import keys as keymod
from speech.metering.checks import MAX_ID_LENGTH, check_int, check_label, check_ttl
from speech.metering.records import UsageIn, UsageRecord
from speech.metering.sqlbase import USAGE_COLUMNS, USAGE_FIELDS, SqlBase, Tx, log, row_to_usage

PAYMENT_REQUIRED_MESSAGE = "insufficient balance: top up this API key to continue"

_INSERTED = USAGE_FIELDS[1:]  # every column but the id the database assigns
_FROM_USAGE_IN = tuple(field.name for field in dataclasses.fields(UsageIn))
_INSERT_USAGE = (
    f"INSERT INTO usage ({', '.join(_INSERTED)}) VALUES ({', '.join('?' * len(_INSERTED))}) "
    "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
)


class SqlMoney(SqlBase):
    """The money methods of :class:`~speech.metering.ledger.Ledger`."""

    async def balance(self, account_id: str) -> int:
        row = await self._read_one("SELECT balance_uomcu FROM accounts WHERE account_id = ?", (account_id,))
        if row is None:
            raise KeyError(account_id)
        return int(row[0])

    async def available(self, account_id: str) -> int:
        row = await self._read_one(
            "SELECT a.balance_uomcu, CAST(COALESCE((SELECT SUM(r.amount_uomcu) FROM reservations r "
            "WHERE r.account_id = a.account_id AND r.expires > ?), 0) AS BIGINT) "
            "FROM accounts a WHERE a.account_id = ?",
            (self._now(), account_id),
        )
        if row is None:
            raise KeyError(account_id)
        return int(row[0]) - int(row[1])

    async def reserve(self, reservation_id: str, *, key_id: str, want_uomcu: int, ttl_s: float) -> int:
        check_label(reservation_id, "reservation_id", MAX_ID_LENGTH)
        check_label(key_id, "key_id", keymod.MAX_KEY_LENGTH)
        check_int(want_uomcu, "want_uomcu")
        ttl = check_ttl(ttl_s)

        async def fn(tx: Tx) -> int | None:
            now = self._now()
            account_id = await self._account_of(tx, key_id)
            balance = await self._lock_account(tx, account_id)
            assert balance is not None  # api_keys.account_id is a foreign key
            await tx.run(
                "DELETE FROM reservations WHERE reservation_id IN (SELECT reservation_id FROM reservations "
                f"WHERE account_id = ? AND expires <= ?{self.SKIP_LOCKED})",
                (account_id, now),
            )
            existing = await tx.one(
                "SELECT amount_uomcu FROM reservations WHERE reservation_id = ? AND expires > ?", (reservation_id, now)
            )
            if existing is not None:
                return int(existing[0])
            held = await tx.one(
                "SELECT CAST(COALESCE(SUM(amount_uomcu), 0) AS BIGINT) FROM reservations "
                "WHERE account_id = ? AND expires > ?",
                (account_id, now),
            )
            available = balance - int(held[0] if held is not None else 0)
            if available <= 0:
                return None
            grant = min(want_uomcu, available)
            row = await tx.one(
                "INSERT INTO reservations (reservation_id, account_id, key_id, amount_uomcu, created, expires) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (reservation_id) DO NOTHING RETURNING amount_uomcu",
                (reservation_id, account_id, key_id, grant, now, self._in_seconds(ttl)),
            )
            if row is None:  # the id is taken by an expired reservation of another account
                other = await tx.one(
                    "SELECT amount_uomcu FROM reservations WHERE reservation_id = ?", (reservation_id,)
                )
                return int(other[0]) if other is not None else 0
            return grant

        granted = await self._write(fn)
        if granted is None:
            raise PaymentRequired(PAYMENT_REQUIRED_MESSAGE)
        return granted

    async def settle(self, reservation_id: str, usage: UsageIn | None) -> tuple[UsageRecord | None, bool]:
        check_label(reservation_id, "reservation_id", MAX_ID_LENGTH)

        async def fn(tx: Tx) -> tuple[UsageRecord | None, bool]:
            if usage is not None:
                account_id: str | None = await self._account_of(tx, usage.key_id)
            else:
                row = await tx.one("SELECT account_id FROM reservations WHERE reservation_id = ?", (reservation_id,))
                account_id = None if row is None else str(row[0])
            if account_id is not None:
                await self._lock_account(tx, account_id)
            await tx.run("DELETE FROM reservations WHERE reservation_id = ?", (reservation_id,))
            if usage is None:
                return None, False
            assert account_id is not None
            return await self._apply_usage(tx, usage, account_id)

        return await self._write(fn)

    async def release(self, reservation_id: str) -> None:
        async def fn(tx: Tx) -> None:
            await tx.run("DELETE FROM reservations WHERE reservation_id = ?", (reservation_id,))

        await self._write(fn)

    async def renew(self, reservation_ids: Collection[str], ttl_s: float) -> None:
        await self._renew("reservations", "reservation_id", reservation_ids, ttl_s)

    async def record_usage(self, u: UsageIn) -> tuple[UsageRecord, bool]:
        async def fn(tx: Tx) -> tuple[UsageRecord, bool]:
            account_id = await self._account_of(tx, u.key_id)
            await self._lock_account(tx, account_id)
            return await self._apply_usage(tx, u, account_id)

        return await self._write(fn)

    async def _apply_usage(self, tx: Tx, u: UsageIn, account_id: str) -> tuple[UsageRecord, bool]:
        """Insert the usage unless its idempotency key exists, and debit the
        (already locked) account in the same transaction."""
        created = self._now()
        values = {**{name: getattr(u, name) for name in _FROM_USAGE_IN}, "account_id": account_id, "created": created}
        row = await tx.one(_INSERT_USAGE, [values[name] for name in _INSERTED])
        if row is None:
            found = await tx.one(f"SELECT {USAGE_COLUMNS} FROM usage WHERE idempotency_key = ?", (u.idempotency_key,))
            assert found is not None
            existing = row_to_usage(found)
            if not existing.same_event(u):
                log.warning("usage %r recorded again with different content; kept the first record", u.idempotency_key)
            return existing, False
        await tx.run(
            "UPDATE accounts SET balance_uomcu = balance_uomcu - ? WHERE account_id = ?", (u.cost_uomcu, account_id)
        )
        return UsageRecord(id=int(row[0]), **values), True


__all__ = ["PAYMENT_REQUIRED_MESSAGE", "SqlMoney"]
