"""Accounts and API keys in SQL: create, read, top up, revoke and limit.

Part of :class:`~speech.metering.sqlcore.SqlLedger` (see there for the
lock order). An account id is ``acct_<12 hex>``; a key's secret is drawn by
:mod:`speech.metering.keys` and only its hash is stored.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from datetime import datetime
from typing import Any

from speech.metering import keys as keymod
from speech.metering.checks import (
    MAX_LABEL_LENGTH,
    MAX_RPM_LIMIT,
    MAX_STREAMS_LIMIT,
    MIN_BALANCE_UOMCU,
    check_int,
    check_label,
    check_name,
)
from speech.metering.ledger import UNSET, _Unset
from speech.metering.prices import MAX_UOMCU
from speech.metering.records import Account, ApiKey
from speech.metering.sqlbase import SqlBase, Tx
from speech.metering.timestamps import parse_timestamp

ACCOUNT_PREFIX = "acct_"

ACCOUNT_COLUMNS = "account_id, name, balance_uomcu, created"
KEY_COLUMNS = "key_id, account_id, name, created, revoked, expires, max_streams, rpm"


def row_to_account(row: Any) -> Account:
    return Account(account_id=row[0], name=row[1], balance_uomcu=int(row[2]), created=row[3])


def row_to_key(row: Any) -> ApiKey:
    return ApiKey(
        key_id=row[0],
        account_id=row[1],
        name=row[2],
        created=row[3],
        revoked=row[4],
        expires=row[5],
        max_streams=row[6],
        rpm=row[7],
    )


def _check_limit(value: Any, what: str, maximum: int) -> int | None:
    return None if value is None else check_int(value, what, minimum=0, maximum=maximum)


def _check_expires(value: Any) -> str | None:
    return None if value is None else parse_timestamp(value)


class SqlAccounts(SqlBase):
    """The accounts and API keys methods of :class:`~speech.metering.ledger.Ledger`."""

    async def _insert_account(self, tx: Tx, name: str, balance_uomcu: int, created: str) -> Account:
        for _ in range(8):
            account_id = ACCOUNT_PREFIX + secrets.token_hex(6)
            row = await tx.one(
                "INSERT INTO accounts (account_id, name, balance_uomcu, created) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (account_id) DO NOTHING RETURNING account_id",
                (account_id, name, balance_uomcu, created),
            )
            if row is not None:
                return Account(account_id, name, balance_uomcu, created)
        raise RuntimeError("could not draw an unused account id")  # pragma: no cover

    # ------------------------------------------------------------ accounts

    async def create_account(self, name: str, balance_uomcu: int) -> Account:
        name = check_name(name)
        check_int(balance_uomcu, "balance_uomcu")

        async def fn(tx: Tx) -> Account:
            return await self._insert_account(tx, name, balance_uomcu, self._now())

        return await self._write(fn)

    async def get_account(self, account_id: str) -> Account | None:
        row = await self._read_one(f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE account_id = ?", (account_id,))
        return None if row is None else row_to_account(row)

    async def list_accounts(self) -> list[Account]:
        rows = await self._read_all(f"SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY created, account_id")
        return [row_to_account(r) for r in rows]

    async def top_up(self, account_id: str, amount_uomcu: int) -> int | None:
        check_int(amount_uomcu, "amount_uomcu", minimum=-MAX_UOMCU)
        if amount_uomcu == 0:
            raise ValueError("amount_uomcu must not be zero")

        async def fn(tx: Tx) -> int | None:
            balance = await self._lock_account(tx, account_id)
            if balance is None:
                return None
            new_balance = balance + amount_uomcu
            if new_balance > MAX_UOMCU:
                raise ValueError("balance would exceed 10^12 OMCU")
            if new_balance < MIN_BALANCE_UOMCU:
                raise ValueError(f"balance would fall below {MIN_BALANCE_UOMCU} µOMCU")
            await tx.run("UPDATE accounts SET balance_uomcu = ? WHERE account_id = ?", (new_balance, account_id))
            return new_balance

        return await self._write(fn)

    # ------------------------------------------------------------ keys

    async def create_key(
        self,
        name: str,
        balance_uomcu: int | None = None,
        *,
        account_id: str | None = None,
        expires: str | datetime | None = None,
        max_streams: int | None = None,
        rpm: int | None = None,
    ) -> tuple[str, ApiKey]:
        name = check_name(name)
        if account_id is None:
            if balance_uomcu is None:
                raise ValueError("balance_uomcu is required when the key gets a new account")
            check_int(balance_uomcu, "balance_uomcu")
        else:
            check_label(account_id, "account_id", MAX_LABEL_LENGTH)
            if balance_uomcu is not None:
                raise ValueError("balance_uomcu must be None for a key in an existing account (top the account up)")
        expires_at = _check_expires(expires)
        streams = _check_limit(max_streams, "max_streams", MAX_STREAMS_LIMIT)
        per_minute = _check_limit(rpm, "rpm", MAX_RPM_LIMIT)

        async def fn(tx: Tx) -> tuple[str, ApiKey]:
            created = self._now()
            if account_id is None:
                assert balance_uomcu is not None
                owner = (await self._insert_account(tx, name, balance_uomcu, created)).account_id
            else:
                if await tx.one("SELECT account_id FROM accounts WHERE account_id = ?", (account_id,)) is None:
                    raise ValueError(f"unknown account_id {account_id!r}")
                owner = account_id
            for _ in range(8):
                secret = keymod.generate_key()
                key_id = keymod.parse_key(secret)
                assert key_id is not None
                row = await tx.one(
                    "INSERT INTO api_keys (key_id, key_hash, account_id, name, created, expires, max_streams, rpm) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key_id) DO NOTHING RETURNING key_id",
                    (key_id, keymod.hash_key(secret), owner, name, created, expires_at, streams, per_minute),
                )
                if row is not None:  # else a 48-bit key id collision: draw again
                    return secret, ApiKey(key_id, owner, name, created, None, expires_at, streams, per_minute)
            raise RuntimeError("could not draw an unused key id")  # pragma: no cover

        return await self._write(fn)

    async def _lookup(self, key_id: str) -> tuple[ApiKey, str] | None:
        row = await self._read_one(f"SELECT {KEY_COLUMNS}, key_hash FROM api_keys WHERE key_id = ?", (key_id,))
        return None if row is None else (row_to_key(row), str(row[8]))

    async def get_key(self, key_id: str) -> ApiKey | None:
        row = await self._read_one(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,))
        return None if row is None else row_to_key(row)

    async def list_keys(self, account_id: str | None = None) -> list[ApiKey]:
        if account_id is None:
            rows = await self._read_all(f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created, key_id")
        else:
            rows = await self._read_all(
                f"SELECT {KEY_COLUMNS} FROM api_keys WHERE account_id = ? ORDER BY created, key_id", (account_id,)
            )
        return [row_to_key(r) for r in rows]

    async def revoke(self, key_id: str, *, account_id: str | None = None) -> bool:
        sql = "UPDATE api_keys SET revoked = ? WHERE key_id = ? AND revoked IS NULL"
        extra: tuple[str, ...] = ()
        if account_id is not None:
            sql += " AND account_id = ?"
            extra = (account_id,)

        async def fn(tx: Tx) -> int:
            return await tx.run(sql, (self._now(), key_id, *extra))

        return await self._write(fn) == 1

    async def update_key(
        self,
        key_id: str,
        *,
        expires: str | datetime | None | _Unset = UNSET,
        max_streams: int | None | _Unset = UNSET,
        rpm: int | None | _Unset = UNSET,
    ) -> ApiKey | None:
        sets: list[str] = []
        params: list[Any] = []
        if expires is not UNSET:
            sets.append("expires = ?")
            params.append(_check_expires(expires))
        if max_streams is not UNSET:
            sets.append("max_streams = ?")
            params.append(_check_limit(max_streams, "max_streams", MAX_STREAMS_LIMIT))
        if rpm is not UNSET:
            sets.append("rpm = ?")
            params.append(_check_limit(rpm, "rpm", MAX_RPM_LIMIT))
        if not sets:
            return await self.get_key(key_id)
        sql = f"UPDATE api_keys SET {', '.join(sets)} WHERE key_id = ? RETURNING {KEY_COLUMNS}"

        async def fn(tx: Tx) -> Any | None:
            return await tx.one(sql, (*params, key_id))

        row = await self._write(fn)
        return None if row is None else row_to_key(row)

    async def inactive_keys(self, key_ids: Collection[str]) -> set[str]:
        wanted = set(key_ids)
        candidates = sorted(k for k in wanted if isinstance(k, str))
        if not candidates:
            return wanted
        rows = await self._read_all(
            f"SELECT key_id FROM api_keys WHERE {self._in('key_id')} AND revoked IS NULL "
            "AND (expires IS NULL OR expires > ?)",
            (self._list(candidates), self._now()),
        )
        return wanted - {r[0] for r in rows}


__all__ = ["ACCOUNT_COLUMNS", "ACCOUNT_PREFIX", "KEY_COLUMNS", "SqlAccounts", "row_to_account", "row_to_key"]
