"""The ledger's logic, written once in SQL both backends understand.

:class:`SqlLedger` implements every :class:`~speech.metering.ledger.Ledger`
method on top of three primitives a backend provides:

* :meth:`SqlLedger._transact`: run an async function in one write
  transaction (SQLite ``BEGIN IMMEDIATE``; PostgreSQL ``READ COMMITTED``
  with row locks, retried on a deadlock or serialisation failure);
* :meth:`SqlLedger._reading`: a connection for single-statement reads;
* a few dialect strings: the row-lock suffix (``FOR NO KEY UPDATE``), the
  skip-locked suffix for clean-up deletes and an "in this list" predicate.

Statements use ``?`` placeholders; the PostgreSQL backend numbers them.
Because the SQL is shared, the two backends cannot drift apart in meaning.

Lock order on PostgreSQL, the same in every transaction that takes more than
one lock, so two replicas never deadlock: the account row (or key row for
stream leases) first, then reservation / lease rows, then the usage unique
index. Clean-up deletes and renewals skip rows another transaction holds
(``FOR UPDATE SKIP LOCKED``): expired rows cost nothing while they linger,
because every sum and count only looks at live ones.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import math
import secrets
from collections.abc import Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from speech.errors import PaymentRequired, SpeechError
from speech.metering import keys as keymod
from speech.metering.ledger import (
    ACCOUNT_PREFIX,
    KINDS,
    KINDS_TEXT,
    MAX_ID_LENGTH,
    MAX_LABEL_LENGTH,
    MAX_RPM_LIMIT,
    MAX_STREAMS_LIMIT,
    MAX_USAGE_LIMIT,
    MIN_BALANCE_UOMCU,
    UNSET,
    Account,
    ApiKey,
    Clock,
    DailyUsage,
    Kind,
    Ledger,
    UsageIn,
    UsageRecord,
    _Unset,
    check_ids,
    check_int,
    check_label,
    check_name,
    check_ttl,
    format_timestamp,
    parse_timestamp,
    utc_now,
)
from speech.metering.prices import MAX_UOMCU

log = logging.getLogger("speech.metering.ledger")

T = TypeVar("T")

PAYMENT_REQUIRED_MESSAGE = "insufficient balance: top up this API key to continue"

ACCOUNT_COLUMNS = "account_id, name, balance_uomcu, created"
KEY_COLUMNS = "key_id, account_id, name, created, revoked, expires, max_streams, rpm"
USAGE_COLUMNS = (
    "id, idempotency_key, key_id, account_id, kind, provider, engine, audio_ms, received_ms, characters, "
    "unit_price_uomcu, cost_uomcu, created, upstream_characters, model, input_tokens, output_tokens, "
    "output_unit_price_uomcu, estimated"
)


class Tx(Protocol):
    """One connection inside a transaction (or a read-only connection)."""

    async def one(self, sql: str, params: Sequence[Any] = ()) -> Any | None:
        """The first row, or ``None``."""

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Every row."""

    async def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute; the number of rows changed."""


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


def row_to_usage(row: Any) -> UsageRecord:
    values = list(row)
    if values[-1] is not None:  # SQLite stores the flag as 0 / 1
        values[-1] = bool(values[-1])
    return UsageRecord(*values)


def _check_limit(value: Any, what: str, maximum: int) -> int | None:
    return None if value is None else check_int(value, what, minimum=0, maximum=maximum)


def _check_expires(value: Any) -> str | None:
    return None if value is None else parse_timestamp(value)


def _log_orphan_failure(task: asyncio.Task[Any]) -> None:
    if task.cancelled():  # pragma: no cover - the inner task is never cancelled by us
        return
    exc = task.exception()
    if exc is None or isinstance(exc, SpeechError | ValueError):
        return
    log.error("ledger write failed after its caller was cancelled", exc_info=exc)


class SqlLedger(Ledger):
    """Every ledger operation, in SQL shared by the SQLite and PostgreSQL backends."""

    # Dialect: appended to a SELECT of the row that serialises a
    # transaction (the account, or the key for stream leases).
    LOCK_ROW = ""
    # Appended to the sub-select of clean-up deletes and renewals.
    SKIP_LOCKED = ""

    def __init__(self, clock: Clock | None) -> None:
        self._clock: Clock = clock or utc_now
        self._pending: set[asyncio.Task[Any]] = set()
        self._closed = False

    # ------------------------------------------------------------ backend

    @abc.abstractmethod
    async def _transact(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        """Run ``fn`` in one write transaction: committed if it returns,
        rolled back if it raises. ``fn`` may run more than once (retries)."""

    @abc.abstractmethod
    def _reading(self) -> AbstractAsyncContextManager[Tx]:
        """A connection for reads that sees committed data."""

    @abc.abstractmethod
    def _in(self, column: str) -> str:
        """``column`` is one of the list bound to the next placeholder."""

    @abc.abstractmethod
    def _list(self, values: Sequence[str]) -> Any:
        """The parameter value for :meth:`_in`."""

    @abc.abstractmethod
    async def _close_backend(self) -> None:
        """Release the connections."""

    # ------------------------------------------------------------ plumbing

    def _now(self) -> str:
        return format_timestamp(self._clock())

    def _in_seconds(self, seconds: float) -> str:
        return format_timestamp(self._clock() + timedelta(seconds=seconds))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self._close_backend()

    async def _write(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        """:meth:`_transact`, shielded: once started the transaction runs to
        its end even if the caller is cancelled, and :meth:`close` waits."""
        if self._closed:
            raise RuntimeError("ledger is closed")
        task = asyncio.ensure_future(self._transact(fn))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_log_orphan_failure)
            raise

    async def _read_one(self, sql: str, params: Sequence[Any] = ()) -> Any | None:
        async with self._reading() as tx:
            return await tx.one(sql, params)

    async def _read_all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._reading() as tx:
            return await tx.all(sql, params)

    async def _account_of(self, tx: Tx, key_id: str) -> str:
        row = await tx.one("SELECT account_id FROM api_keys WHERE key_id = ?", (key_id,))
        if row is None:
            raise ValueError(f"unknown key_id {key_id!r}")
        return str(row[0])

    async def _lock_account(self, tx: Tx, account_id: str) -> int | None:
        row = await tx.one(f"SELECT balance_uomcu FROM accounts WHERE account_id = ?{self.LOCK_ROW}", (account_id,))
        return None if row is None else int(row[0])

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

    # ------------------------------------------------------------ money

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

    async def _renew(self, table: str, column: str, ids_in: Collection[str], ttl_s: float) -> None:
        """Push the live rows' expiry to now + ttl (never shortening it); expired rows stay expired."""
        ids = check_ids(ids_in, column)
        ttl = check_ttl(ttl_s)
        if not ids:
            return

        async def fn(tx: Tx) -> None:
            expires = self._in_seconds(ttl)
            await tx.run(
                f"UPDATE {table} SET expires = ? WHERE {column} IN (SELECT {column} FROM {table} "
                f"WHERE {self._in(column)} AND expires > ? AND expires < ?{self.SKIP_LOCKED})",
                (expires, self._list(ids), self._now(), expires),
            )

        await self._write(fn)

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
        row = await tx.one(
            "INSERT INTO usage (idempotency_key, key_id, account_id, kind, provider, engine, audio_ms, received_ms, "
            "characters, unit_price_uomcu, cost_uomcu, created, upstream_characters, model, input_tokens, "
            "output_tokens, output_unit_price_uomcu, estimated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
            (
                u.idempotency_key,
                u.key_id,
                account_id,
                u.kind,
                u.provider,
                u.engine,
                u.audio_ms,
                u.received_ms,
                u.characters,
                u.unit_price_uomcu,
                u.cost_uomcu,
                created,
                u.upstream_characters,
                u.model,
                u.input_tokens,
                u.output_tokens,
                u.output_unit_price_uomcu,
                u.estimated,
            ),
        )
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
        record = UsageRecord(
            id=int(row[0]),
            idempotency_key=u.idempotency_key,
            key_id=u.key_id,
            account_id=account_id,
            kind=u.kind,
            provider=u.provider,
            engine=u.engine,
            audio_ms=u.audio_ms,
            received_ms=u.received_ms,
            characters=u.characters,
            unit_price_uomcu=u.unit_price_uomcu,
            cost_uomcu=u.cost_uomcu,
            created=created,
            upstream_characters=u.upstream_characters,
            model=u.model,
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            output_unit_price_uomcu=u.output_unit_price_uomcu,
            estimated=u.estimated,
        )
        return record, True

    async def usage(
        self,
        *,
        account_id: str | None = None,
        key_id: str | None = None,
        kind: Kind | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        limit: int = 100,
    ) -> list[UsageRecord]:
        check_int(limit, "limit", minimum=1, maximum=MAX_USAGE_LIMIT)
        where: list[str] = []
        params: list[Any] = []
        if account_id is not None:
            where.append("account_id = ?")
            params.append(account_id)
        if key_id is not None:
            where.append("key_id = ?")
            params.append(key_id)
        if kind is not None:
            if kind not in KINDS:
                raise ValueError(f"kind must be {KINDS_TEXT}, got {kind!r}")
            where.append("kind = ?")
            params.append(kind)
        if since is not None:
            where.append("created >= ?")
            params.append(parse_timestamp(since))
        if until is not None:
            where.append("created < ?")
            params.append(parse_timestamp(until))
        sql = f"SELECT {USAGE_COLUMNS} FROM usage"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return [row_to_usage(r) for r in await self._read_all(sql, params)]

    async def usage_by_day(
        self, *, account_id: str, since: str | datetime, until: str | datetime | None = None
    ) -> list[DailyUsage]:
        check_label(account_id, "account_id", MAX_ID_LENGTH)
        # Timestamps are fixed-width ISO text, so the UTC day is their first 10 characters.
        sql = (
            "SELECT SUBSTR(created, 1, 10) AS day, kind, COUNT(*), SUM(audio_ms), SUM(characters), SUM(cost_uomcu) "
            "FROM usage WHERE account_id = ? AND created >= ?"
        )
        params: list[Any] = [account_id, parse_timestamp(since)]
        if until is not None:
            sql += " AND created < ?"
            params.append(parse_timestamp(until))
        sql += " GROUP BY SUBSTR(created, 1, 10), kind ORDER BY day, kind"
        return [
            DailyUsage(
                day=str(r[0]),
                kind=str(r[1]),
                records=int(r[2]),
                audio_ms=None if r[3] is None else int(r[3]),
                characters=None if r[4] is None else int(r[4]),
                cost_uomcu=int(r[5]),
            )
            for r in await self._read_all(sql, params)
        ]

    # ------------------------------------------------------------ limits

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


__all__ = ["PAYMENT_REQUIRED_MESSAGE", "SqlLedger", "Tx"]
