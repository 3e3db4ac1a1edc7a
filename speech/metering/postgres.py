"""The ledger in PostgreSQL, shared by several gateway replicas (asyncpg)."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg

from speech.errors import ConfigError
from speech.metering import pg_schema
from speech.metering.dsn import redact_target, scrub_secrets
from speech.metering.sqlbase import Tx
from speech.metering.sqlcore import SqlLedger
from speech.metering.timestamps import Clock

log = logging.getLogger("speech.metering.postgres")

T = TypeVar("T")

POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 10
CONNECT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 30.0
MAX_ATTEMPTS = 5

# Raised by the server for a transaction that lost a lock race; nothing of
# it was applied, so running it again is safe.
_RETRYABLE = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)


@functools.lru_cache(maxsize=1024)
def to_pg(sql: str) -> str:
    """``?`` placeholders to PostgreSQL's ``$1, $2, ...`` (the ledger's SQL has no ``?`` in literals)."""
    parts = sql.split("?")
    out = [parts[0]]
    for number, part in enumerate(parts[1:], start=1):
        out.append(f"${number}")
        out.append(part)
    return "".join(out)


def _rowcount(status: str) -> int:
    # "UPDATE 3", "DELETE 0", "INSERT 0 1"
    try:
        return int(status.rsplit(" ", 1)[-1])
    except (ValueError, AttributeError):  # pragma: no cover - every DML status ends in a count
        return 0


class _PgTx:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def one(self, sql: str, params: Sequence[Any] = ()) -> Any | None:
        return await self._conn.fetchrow(to_pg(sql), *params)

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(await self._conn.fetch(to_pg(sql), *params))

    async def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return _rowcount(await self._conn.execute(to_pg(sql), *params))


class PostgresLedger(SqlLedger):
    """The ledger in a PostgreSQL database several gateway processes share.

    Transactions run at ``READ COMMITTED`` on a small asyncpg pool and are
    serialised where it matters by row locks: every transaction that moves
    money (reserve, settle, record_usage, top_up) first takes the account row
    ``FOR NO KEY UPDATE``, and acquire_stream takes the key row, so two
    replicas see each other's committed reservations and leases. Commits use
    the server's ``synchronous_commit`` (on by default: durable when
    acknowledged). A deadlock or serialisation failure (which the lock order
    avoids) is retried a few times; it applied nothing.

    All timestamps come from this process's clock, as with SQLite: replicas
    should run NTP, since expiries are compared across them.
    """

    LOCK_ROW = " FOR NO KEY UPDATE"
    SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"

    def __init__(self, pool: Any, dsn_shown: str, clock: Clock | None) -> None:
        super().__init__(clock)
        self._pool = pool
        self._shown = dsn_shown

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        clock: Clock | None = None,
        min_size: int = POOL_MIN_SIZE,
        max_size: int = POOL_MAX_SIZE,
        connect_timeout: float = CONNECT_TIMEOUT_S,
    ) -> PostgresLedger:
        """Connect a pool to ``dsn`` (``postgresql://user:pass@host:port/db``)
        and migrate the schema.

        Raises :class:`~speech.errors.ConfigError` if the server cannot be
        reached, refuses the login, the database does not exist or holds a
        newer schema. The message shows the URL without its password.
        """
        shown = redact_target(dsn)

        def fail(exc: BaseException) -> ConfigError:
            detail = scrub_secrets(f"{type(exc).__name__}: {exc}", dsn)
            return ConfigError(f"cannot open PostgreSQL ledger {shown}: {detail}")

        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                timeout=connect_timeout,
                command_timeout=COMMAND_TIMEOUT_S,
            )
        except (OSError, TimeoutError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # "from None": the original exception may carry the DSN.
            raise fail(exc) from None
        try:
            async with pool.acquire() as conn:
                await pg_schema.migrate(conn)
        except ConfigError:
            await pool.close()
            raise
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await pool.close()
            raise fail(exc) from None
        except BaseException:
            pool.terminate()
            raise
        return cls(pool, shown, clock)

    @property
    def target(self) -> str:
        """The database URL, password redacted."""
        return self._shown

    async def _close_backend(self) -> None:
        try:
            await asyncio.wait_for(self._pool.close(), timeout=10)
        except TimeoutError:  # pragma: no cover - a connection stuck in a query
            self._pool.terminate()

    # ------------------------------------------------------------ dialect

    def _in(self, column: str) -> str:
        return f"{column} = ANY(?::text[])"

    def _list(self, values: Sequence[str]) -> Any:
        return list(values)

    # ------------------------------------------------------------ plumbing

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[Tx]:
        async with self._pool.acquire() as conn:
            yield _PgTx(conn)

    async def _transact(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    return await fn(_PgTx(conn))
            except _RETRYABLE as exc:
                if attempt == MAX_ATTEMPTS:
                    raise
                log.warning("ledger transaction retried after %s (attempt %d)", type(exc).__name__, attempt)
                await asyncio.sleep(random.uniform(0, 0.02 * 2**attempt))
        raise AssertionError("unreachable")  # pragma: no cover


__all__ = ["PostgresLedger"]
