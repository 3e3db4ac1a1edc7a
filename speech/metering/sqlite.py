"""The ledger in one SQLite file (the embedded default backend)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from speech.errors import ConfigError
from speech.metering.ledger import Clock
from speech.metering.schema import migrate
from speech.metering.sqlcore import SqlLedger, Tx

BUSY_TIMEOUT_MS = 5_000

T = TypeVar("T")


class _SqliteTx:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def one(self, sql: str, params: Sequence[Any] = ()) -> Any | None:
        async with self._conn.execute(sql, tuple(params)) as cur:
            rows = await cur.fetchall()
        return rows[0] if rows else None

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._conn.execute(sql, tuple(params)) as cur:
            return list(await cur.fetchall())

    async def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self._conn.execute(sql, tuple(params)) as cur:
            return int(cur.rowcount)


class SqliteLedger(SqlLedger):
    """The ledger in one SQLite file.

    Settings applied on open:

    * ``journal_mode=WAL``: readers (``speech keys``/``usage`` from the CLI)
      never block the server's writes and vice versa;
    * ``synchronous=FULL``: every commit is fsynced before it returns. In WAL
      mode ``NORMAL`` survives application crashes but may lose the last
      commits on power loss or an OS crash; for money that means a debit the
      client was already served for could vanish, so we pay the fsync;
    * ``foreign_keys=ON``, ``busy_timeout`` of 5 s for other processes.

    aiosqlite runs the connection on one thread, so statements are
    serialised; an :class:`asyncio.Lock` additionally keeps each
    transaction's statements together (tasks would otherwise interleave on
    the shared connection), and writes use ``BEGIN IMMEDIATE`` so they take
    the write lock up front: every write transaction is serialised against
    every other, in this process and in others using the same file, which is
    what makes a reservation's "read available, then insert" safe.
    """

    def __init__(
        self, conn: aiosqlite.Connection, path: str, clock: Clock | None, reader: aiosqlite.Connection | None = None
    ) -> None:
        super().__init__(clock)
        self._conn = conn
        # Reads use their own connection: in WAL mode they see the last
        # committed state and never wait for the writer's lock. (":memory:"
        # has no second connection to the same database, so reads share.)
        self._reader = reader
        self._path = path
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, clock: Clock | None = None) -> SqliteLedger:
        """Open (creating if needed) and migrate the ledger at ``path``.

        Parent directories are created. ``clock`` (returning an aware
        datetime) is for tests. Raises :class:`~speech.errors.ConfigError` if
        the file cannot be opened or is not a ledger this version can use.
        """
        spath = os.fspath(path)
        if spath != ":memory:" and not spath.startswith("file:"):
            try:
                Path(spath).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot open database {spath}: {exc}") from exc
        try:
            conn = await aiosqlite.connect(spath, isolation_level=None)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open database {spath}: {exc}") from exc
        try:
            await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = FULL")
            await conn.execute("PRAGMA foreign_keys = ON")
            await migrate(conn)
        except BaseException as exc:
            await conn.close()
            if isinstance(exc, sqlite3.Error):
                raise ConfigError(f"cannot use database {spath}: {exc}") from exc
            raise
        reader = None
        if spath != ":memory:" and "mode=memory" not in spath:
            reader = await aiosqlite.connect(spath, isolation_level=None)
            await reader.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await reader.execute("PRAGMA query_only = ON")
        return cls(conn, spath, clock, reader)

    @property
    def path(self) -> str:
        return self._path

    async def _close_backend(self) -> None:
        if self._reader is not None:
            await self._reader.close()
        await self._conn.close()

    # ------------------------------------------------------------ dialect

    def _in(self, column: str) -> str:
        return f"{column} IN (SELECT value FROM json_each(?))"

    def _list(self, values: Sequence[str]) -> Any:
        return json.dumps(list(values))

    # ------------------------------------------------------------ plumbing

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[Tx]:
        if self._reader is not None:
            yield _SqliteTx(self._reader)
            return
        # Sharing the writer's connection: take the lock, or a read between
        # another task's statements would see its uncommitted writes.
        async with self._lock:
            yield _SqliteTx(self._conn)

    @asynccontextmanager
    async def _write_tx(self) -> AsyncIterator[Tx]:
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            committed = False
            try:
                yield _SqliteTx(self._conn)
                await self._conn.execute("COMMIT")
                committed = True
            finally:
                if not committed:
                    # aiosqlite's queue is FIFO, so the ROLLBACK follows any
                    # statement still in flight.
                    with suppress(sqlite3.Error):
                        await self._conn.execute("ROLLBACK")

    async def _transact(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        async with self._write_tx() as tx:
            return await fn(tx)


__all__ = ["BUSY_TIMEOUT_MS", "SqliteLedger"]
