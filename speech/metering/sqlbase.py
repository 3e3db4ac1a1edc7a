"""The plumbing under the SQL ledger: what a backend provides and what every operation shares.

A backend (:mod:`speech.metering.sqlite`, :mod:`speech.metering.postgres`)
subclasses :class:`~speech.metering.sqlcore.SqlLedger` and provides:

* :meth:`SqlBase._transact`: run an async function in one write
  transaction (SQLite ``BEGIN IMMEDIATE``; PostgreSQL ``READ COMMITTED``
  with row locks, retried on a deadlock or serialisation failure);
* :meth:`SqlBase._reading`: a connection for single-statement reads;
* a few dialect strings: the row-lock suffix (``FOR NO KEY UPDATE``), the
  skip-locked suffix for clean-up deletes and an "in this list" predicate.

:class:`SqlBase` turns those into shielded writes (:meth:`SqlBase._write`),
reads, the account lookup and lock every money transaction starts with, and
the expiry renewal reservations and stream leases share.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from speech.errors import SpeechError
from speech.metering.checks import check_ids, check_ttl
from speech.metering.ledger import Ledger
from speech.metering.records import UsageRecord
from speech.metering.timestamps import Clock, format_timestamp, utc_now

# One logger for the whole SQL ledger, named after the interface it implements.
log = logging.getLogger("speech.metering.ledger")

T = TypeVar("T")

USAGE_FIELDS = tuple(field.name for field in dataclasses.fields(UsageRecord))
"""The ``usage`` table's columns: :class:`UsageRecord`'s fields, in order (:func:`row_to_usage` relies on it)."""
USAGE_COLUMNS = ", ".join(USAGE_FIELDS)


class Tx(Protocol):
    """One connection inside a transaction (or a read-only connection)."""

    async def one(self, sql: str, params: Sequence[Any] = ()) -> Any | None:
        """The first row, or ``None``."""

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Every row."""

    async def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute; the number of rows changed."""


def row_to_usage(row: Any) -> UsageRecord:
    """A row of ``SELECT {USAGE_COLUMNS}`` as a record."""
    values = list(row)
    if values[-1] is not None:  # SQLite stores the flag as 0 / 1
        values[-1] = bool(values[-1])
    return UsageRecord(*values)


def _log_orphan_failure(task: asyncio.Task[Any]) -> None:
    if task.cancelled():  # pragma: no cover - the inner task is never cancelled by us
        return
    exc = task.exception()
    if exc is None or isinstance(exc, SpeechError | ValueError):
        return
    log.error("ledger write failed after its caller was cancelled", exc_info=exc)


class SqlBase(Ledger):
    """The backend primitives and the plumbing every SQL ledger operation uses."""

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


__all__ = ["USAGE_COLUMNS", "USAGE_FIELDS", "SqlBase", "Tx", "row_to_usage"]
