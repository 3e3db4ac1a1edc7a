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
from speech.metering.schema import migrate
from speech.metering.sqlbase import Tx
from speech.metering.sqlcore import SqlLedger
from speech.metering.timestamps import Clock

BUSY_TIMEOUT_MS = 5_000
# Most write operations run together in one group commit.
MAX_BATCH = 128


class _Failed(Exception):
    """A lone operation raised: roll its transaction back, hand on its error."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


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

    **Group commit.** The fsync of each commit is what limits throughput
    (~200 commits/s here), so write operations that arrive while a commit is
    in flight are run together in the next transaction: one after the other,
    in arrival order, each inside its own ``SAVEPOINT`` (an operation that
    raises rolls back only its own statements and gets its own exception),
    then one ``COMMIT``. No caller learns its result before that commit is
    durable, and if the commit fails every operation of the batch gets the
    error and none of them happened, so exactly-once holds as before (a
    retry with the same idempotency key bills once). An idle ledger commits
    each operation at once: batching never adds a wait.
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
        self._batch: list[tuple[Callable[[Tx], Awaitable[Any]], asyncio.Future[Any]]] = []
        self._committer: asyncio.Task[None] | None = None
        self.commits = 0  # write transactions committed (operations / commits = batching)

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
                self.commits += 1
            finally:
                if not committed:
                    # aiosqlite's queue is FIFO, so the ROLLBACK follows any
                    # statement still in flight.
                    with suppress(sqlite3.Error):
                        await self._conn.execute("ROLLBACK")

    async def _transact(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._batch.append((fn, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_batches())
        return await future

    async def _commit_batches(self) -> None:
        while self._batch:
            batch, self._batch = self._batch[:MAX_BATCH], self._batch[MAX_BATCH:]
            try:
                outcomes = await self._run_batch(batch)
            except _Failed as failed:  # a lone operation raised; it was rolled back
                if not batch[0][1].done():
                    batch[0][1].set_exception(failed.error)
                continue
            except BaseException as exc:  # the commit failed: none of them happened
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, future), (result, error) in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(result)

    async def _run_batch(
        self, batch: list[tuple[Callable[[Tx], Awaitable[Any]], asyncio.Future[Any]]]
    ) -> list[tuple[Any, BaseException | None]]:
        outcomes: list[tuple[Any, BaseException | None]] = []
        async with self._write_tx() as tx:
            if len(batch) == 1:
                try:
                    outcomes.append((await batch[0][0](tx), None))
                except Exception as exc:
                    outcomes.append((None, exc))
                    raise _Failed(exc) from exc
                return outcomes
            for fn, _ in batch:
                await self._conn.execute("SAVEPOINT op")
                try:
                    result = await fn(tx)
                except Exception as exc:
                    await self._conn.execute("ROLLBACK TO op")
                    outcomes.append((None, exc))
                else:
                    outcomes.append((result, None))
                await self._conn.execute("RELEASE op")
        return outcomes


__all__ = ["BUSY_TIMEOUT_MS", "SqliteLedger"]
