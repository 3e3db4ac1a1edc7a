"""The ledger: API keys, balances and usage records.

:class:`Ledger` is the interface the rest of the gateway uses;
:class:`SqliteLedger` implements it on one SQLite file through
:mod:`aiosqlite`, so database work runs on a helper thread and never blocks
the event loop. A PostgreSQL implementation can follow behind the same
interface.

Money is integer µOMCU throughout (see :mod:`speech.metering.prices`).
"""

from __future__ import annotations

import abc
import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import aiosqlite

from speech.errors import AuthError, ConfigError
from speech.metering import keys as keymod
from speech.metering.prices import (
    MAX_UOMCU,
    MICRO,
    PriceTable,
    asr_cost_from_unit,
    tts_cost_from_unit,
)
from speech.metering.schema import migrate

log = logging.getLogger(__name__)

Kind = Literal["asr", "tts"]
KINDS = ("asr", "tts")

MAX_NAME_LENGTH = 100
MAX_IDEMPOTENCY_KEY_LENGTH = 200
MAX_LABEL_LENGTH = 64  # provider / engine names
MAX_USAGE_LIMIT = 10_000
BUSY_TIMEOUT_MS = 5_000

Clock = Callable[[], datetime]


# ---------------------------------------------------------------- helpers


def _utc_now() -> datetime:
    return datetime.now(UTC)


def format_timestamp(dt: datetime) -> str:
    """ISO-8601 UTC with millisecond precision and ``Z``: ``2025-01-31T12:00:00.123Z``.

    A naive datetime is taken to be UTC.
    """
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.isoformat(timespec="milliseconds") + "Z"


def parse_timestamp(value: str | datetime) -> str:
    """Normalise an ISO-8601 time (or datetime) to the ledger's stored format.

    Offsets are converted to UTC; a time without an offset is taken as UTC.
    Raises :class:`ValueError` for text that is not an ISO-8601 time.
    """
    if isinstance(value, datetime):
        return format_timestamp(value)
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError(f"not an ISO-8601 time: {str(value)[:64]!r}")
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"not an ISO-8601 time: {value!r}") from None
    return format_timestamp(dt)


def _micro_to_float(micro: int) -> float:
    # Correctly rounded: int / int in Python is exact-then-rounded.
    return micro / MICRO


def _check_int(value: Any, what: str, *, minimum: int = 0, maximum: int = MAX_UOMCU) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{what} must be between {minimum} and {maximum}, got {value}")
    return value


def _check_label(value: Any, what: str, maximum: int) -> str:
    if not isinstance(value, str) or not value or len(value) > maximum:
        raise ValueError(f"{what} must be a non-empty string of at most {maximum} characters")
    if not value.isprintable():
        raise ValueError(f"{what} must not contain control characters")
    return value


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise ValueError("key name must be a string")
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"key name must be 1 to {MAX_NAME_LENGTH} characters")
    if not name.isprintable():
        raise ValueError("key name must not contain control characters")
    return name


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class ApiKey:
    """An API key as stored, without its secret or hash."""

    key_id: str
    name: str
    balance_uomcu: int
    created: str
    revoked: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked is None

    @property
    def balance(self) -> Decimal:
        """Balance in OMCU, exact."""
        return Decimal(self.balance_uomcu).scaleb(-6)

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "name": self.name,
            "balance": _micro_to_float(self.balance_uomcu),
            "balance_uomcu": self.balance_uomcu,
            "created": self.created,
            "revoked": self.revoked,
        }


@dataclass(frozen=True)
class UsageIn:
    """One billable event, as callers hand it to :meth:`Ledger.record_usage`.

    Build it with :meth:`asr` or :meth:`tts`, which price it from a
    :class:`~speech.metering.prices.PriceTable`. The unit price travels with
    the record so a later price change never rewrites history.

    ``idempotency_key`` names the event uniquely and stably, e.g.
    ``"<session id>:<utterance number>"``: recording the same key twice bills
    once.
    """

    idempotency_key: str
    key_id: str
    kind: Kind
    provider: str
    engine: str
    unit_price_uomcu: int
    cost_uomcu: int
    audio_ms: int | None = None
    received_ms: int | None = None
    characters: int | None = None
    upstream_characters: int | None = None  # tts: what the upstream reported billing

    def __post_init__(self) -> None:
        _check_label(self.idempotency_key, "idempotency_key", MAX_IDEMPOTENCY_KEY_LENGTH)
        _check_label(self.key_id, "key_id", keymod.MAX_KEY_LENGTH)
        if self.kind not in KINDS:
            raise ValueError(f"kind must be 'asr' or 'tts', got {self.kind!r}")
        _check_label(self.provider, "provider", MAX_LABEL_LENGTH)
        _check_label(self.engine, "engine", MAX_LABEL_LENGTH)
        _check_int(self.unit_price_uomcu, "unit_price_uomcu")
        _check_int(self.cost_uomcu, "cost_uomcu")
        if self.kind == "asr":
            if self.audio_ms is None or self.characters is not None:
                raise ValueError("an asr usage has audio_ms and no characters")
            ms = _check_int(self.audio_ms, "audio_ms")
            if self.received_ms is not None:
                _check_int(self.received_ms, "received_ms")
            expected = asr_cost_from_unit(self.unit_price_uomcu, ms)
        else:
            if self.characters is None or self.audio_ms is not None or self.received_ms is not None:
                raise ValueError("a tts usage has characters and no audio_ms or received_ms")
            chars = _check_int(self.characters, "characters")
            expected = tts_cost_from_unit(self.unit_price_uomcu, chars)
        if self.cost_uomcu != expected:
            raise ValueError(f"cost_uomcu {self.cost_uomcu} does not match the unit price and quantity ({expected})")

    @classmethod
    def asr(
        cls,
        prices: PriceTable,
        *,
        idempotency_key: str,
        key_id: str,
        provider: str,
        engine: str,
        audio_ms: int,
        received_ms: int | None = None,
    ) -> UsageIn:
        """An ASR usage of ``audio_ms`` billed milliseconds on route ``provider``."""
        unit = prices.asr_unit_price(provider)
        _check_int(audio_ms, "audio_ms")
        return cls(
            idempotency_key=idempotency_key,
            key_id=key_id,
            kind="asr",
            provider=provider,
            engine=engine,
            unit_price_uomcu=unit,
            cost_uomcu=asr_cost_from_unit(unit, audio_ms),
            audio_ms=audio_ms,
            received_ms=received_ms,
        )

    @classmethod
    def tts(
        cls,
        prices: PriceTable,
        *,
        idempotency_key: str,
        key_id: str,
        provider: str,
        engine: str,
        characters: int,
        unit_price_uomcu: int | None = None,
        upstream_characters: int | None = None,
    ) -> UsageIn:
        """A TTS usage of ``characters`` billed characters on route ``provider``,
        at the route's price unless ``unit_price_uomcu`` overrides it (the fee
        for requests that bring the caller's own upstream key)."""
        unit = prices.tts_unit_price(provider) if unit_price_uomcu is None else unit_price_uomcu
        _check_int(characters, "characters")
        return cls(
            idempotency_key=idempotency_key,
            key_id=key_id,
            kind="tts",
            provider=provider,
            engine=engine,
            unit_price_uomcu=unit,
            cost_uomcu=tts_cost_from_unit(unit, characters),
            characters=characters,
            upstream_characters=upstream_characters,
        )


@dataclass(frozen=True)
class UsageRecord:
    """A stored usage record."""

    id: int
    idempotency_key: str
    key_id: str
    kind: Kind
    provider: str
    engine: str
    audio_ms: int | None
    received_ms: int | None
    characters: int | None
    unit_price_uomcu: int
    cost_uomcu: int
    created: str
    upstream_characters: int | None = None

    @property
    def unit(self) -> str:
        return "second" if self.kind == "asr" else "character"

    @property
    def quantity(self) -> Decimal | int:
        """Seconds (exact Decimal, ms precision) for ASR, characters for TTS."""
        if self.kind == "asr":
            assert self.audio_ms is not None
            return Decimal(self.audio_ms).scaleb(-3)
        assert self.characters is not None
        return self.characters

    @property
    def received_seconds(self) -> Decimal | None:
        return None if self.received_ms is None else Decimal(self.received_ms).scaleb(-3)

    @property
    def cost(self) -> Decimal:
        """Cost in OMCU, exact."""
        return Decimal(self.cost_uomcu).scaleb(-6)

    def same_event(self, u: UsageIn) -> bool:
        """Whether ``u`` describes the same event as this record."""
        return (
            self.idempotency_key == u.idempotency_key
            and self.key_id == u.key_id
            and self.kind == u.kind
            and self.provider == u.provider
            and self.engine == u.engine
            and self.audio_ms == u.audio_ms
            and self.received_ms == u.received_ms
            and self.characters == u.characters
            and self.upstream_characters == u.upstream_characters
            and self.unit_price_uomcu == u.unit_price_uomcu
            and self.cost_uomcu == u.cost_uomcu
        )

    def to_json(self) -> dict[str, Any]:
        """The public JSON shape of a usage record.

        ``quantity`` is float seconds (millisecond precision) for ASR and int
        characters for TTS; ``cost`` is float OMCU for display while
        ``cost_uomcu`` is the exact integer that was debited.
        """
        quantity: float | int
        if self.kind == "asr":
            assert self.audio_ms is not None
            quantity = self.audio_ms / 1000
        else:
            assert self.characters is not None
            quantity = self.characters
        return {
            "id": self.id,
            "idempotency_key": self.idempotency_key,
            "key_id": self.key_id,
            "kind": self.kind,
            "provider": self.provider,
            "engine": self.engine,
            "quantity": quantity,
            "unit": self.unit,
            "unit_price_uomcu": self.unit_price_uomcu,
            "cost": _micro_to_float(self.cost_uomcu),
            "cost_uomcu": self.cost_uomcu,
            "received_seconds": None if self.received_ms is None else self.received_ms / 1000,
            "upstream_characters": self.upstream_characters,
            "created": self.created,
        }


# ---------------------------------------------------------------- interface


class Ledger(abc.ABC):
    """Storage of API keys, balances and usage. All methods are coroutines.

    Implementations are opened by an async class method (e.g.
    :meth:`SqliteLedger.open`) and must be closed with :meth:`close` (or used
    as ``async with``).
    """

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish pending writes and release the database."""

    @abc.abstractmethod
    async def create_key(self, name: str, balance_uomcu: int) -> tuple[str, ApiKey]:
        """Create a key; returns ``(secret key, ApiKey)``.

        The secret is returned this once; only its hash is stored. The name
        is stripped and must be 1-100 printable characters; the balance an
        integer ≥ 0. Raises :class:`ValueError` otherwise.
        """

    @abc.abstractmethod
    async def _lookup(self, key_id: str) -> tuple[ApiKey, str] | None:
        """The key and its stored hash, or ``None``."""

    async def authenticate(self, key: str | None) -> ApiKey:
        """The active key matching ``key``, else :class:`~speech.errors.AuthError`.

        Messages: ``"missing API key"`` for an absent or empty key;
        ``"invalid API key"`` for a malformed, unknown or wrong key (one text
        for all so the reply does not tell which); ``"API key revoked"`` for a
        correct but revoked key. The key itself never appears in a message.
        """
        if key is None or (isinstance(key, str) and not key.strip()):
            raise AuthError("missing API key")
        key_id = keymod.parse_key(key)
        if key_id is None:
            raise AuthError("invalid API key")
        found = await self._lookup(key_id)
        if found is None:
            raise AuthError("invalid API key")
        api_key, stored_hash = found
        if not keymod.verify(key, stored_hash):
            raise AuthError("invalid API key")
        if api_key.revoked is not None:
            raise AuthError("API key revoked")
        return api_key

    @abc.abstractmethod
    async def get_key(self, key_id: str) -> ApiKey | None:
        """The key with this id (active or revoked), or ``None``."""

    @abc.abstractmethod
    async def list_keys(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""

    @abc.abstractmethod
    async def revoke(self, key_id: str) -> bool:
        """Revoke a key; ``False`` if it is unknown or already revoked."""

    @abc.abstractmethod
    async def top_up(self, key_id: str, amount_uomcu: int) -> int | None:
        """Add ``amount_uomcu`` (> 0) to a key's balance.

        Returns the new balance, or ``None`` if the key is unknown. Revoked
        keys can be topped up (the balance is kept if a key is revoked).
        Raises :class:`ValueError` for a non-positive amount or a balance
        that would exceed 10^12 OMCU.
        """

    @abc.abstractmethod
    async def record_usage(self, u: UsageIn) -> tuple[UsageRecord, bool]:
        """Store a usage record and debit its cost, exactly once.

        In one transaction: insert the record and subtract ``cost_uomcu``
        from the key's balance. If a record with the same
        ``idempotency_key`` exists, nothing changes and that record is
        returned with ``False``; otherwise the new record with ``True``.

        The balance may go negative: the stream core checks the balance
        before each utterance, not during it, so overspend is bounded by the
        cost of one utterance (and one TTS request) per connection. Usage of
        a revoked key is still recorded: the work was done. Raises
        :class:`ValueError` if the key does not exist.
        """

    @abc.abstractmethod
    async def balance(self, key_id: str) -> int:
        """The key's balance in µOMCU; :class:`KeyError` if unknown."""

    @abc.abstractmethod
    async def usage(
        self, key_id: str | None = None, limit: int = 100, since: str | datetime | None = None
    ) -> list[UsageRecord]:
        """Usage records, newest first, at most ``limit`` (1-10000).

        ``key_id`` restricts to one key; ``since`` (ISO-8601, UTC if no
        offset) keeps records created at or after that time.
        """


# ---------------------------------------------------------------- SQLite


_KEY_COLUMNS = "key_id, name, balance_uomcu, created, revoked"
_USAGE_COLUMNS = (
    "id, idempotency_key, key_id, kind, provider, engine, audio_ms, received_ms, characters, "
    "unit_price_uomcu, cost_uomcu, created, upstream_characters"
)


def _row_to_key(row: Any) -> ApiKey:
    return ApiKey(key_id=row[0], name=row[1], balance_uomcu=row[2], created=row[3], revoked=row[4])


def _row_to_usage(row: Any) -> UsageRecord:
    return UsageRecord(*row)


class SqliteLedger(Ledger):
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
    the write lock up front and cannot deadlock against another process.
    """

    def __init__(
        self, conn: aiosqlite.Connection, path: str, clock: Clock, reader: aiosqlite.Connection | None = None
    ) -> None:
        self._conn = conn
        # Reads use their own connection: in WAL mode they see the last
        # committed state and never wait for the writer's lock. (":memory:"
        # has no second connection to the same database, so reads share.)
        self._reader = reader
        self._path = path
        self._clock = clock
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Task[Any]] = set()
        self._closed = False

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, clock: Clock | None = None) -> SqliteLedger:
        """Open (creating if needed) and migrate the ledger at ``path``.

        Parent directories are created. ``clock`` (returning an aware
        datetime) is for tests. Raises :class:`~speech.errors.ConfigError` if
        the file cannot be opened or is not a ledger this version can use.
        """
        spath = os.fspath(path)
        if spath != ":memory:" and not spath.startswith("file:"):
            Path(spath).parent.mkdir(parents=True, exist_ok=True)
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
        return cls(conn, spath, clock or _utc_now, reader)

    @property
    def path(self) -> str:
        return self._path

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self._reader is not None:
            await self._reader.close()
        await self._conn.close()

    # ------------------------------------------------------------ plumbing

    def _now(self) -> str:
        return format_timestamp(self._clock())

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[aiosqlite.Connection]:
        if self._reader is not None:
            yield self._reader
            return
        # Sharing the writer's connection: take the lock, or a read between
        # another task's statements would see its uncommitted writes.
        async with self._lock:
            yield self._conn

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            committed = False
            try:
                yield self._conn
                await self._conn.execute("COMMIT")
                committed = True
            finally:
                if not committed:
                    # Runs even on cancellation: aiosqlite's queue is FIFO, so
                    # the ROLLBACK follows any statement still in flight.
                    with suppress(sqlite3.Error):
                        await self._conn.execute("ROLLBACK")

    @staticmethod
    async def _fetchone(conn: aiosqlite.Connection, sql: str, params: tuple[Any, ...]) -> Any:
        async with conn.execute(sql, params) as cur:
            return await cur.fetchone()

    @staticmethod
    async def _run(conn: aiosqlite.Connection, sql: str, params: tuple[Any, ...]) -> tuple[int, int | None]:
        async with conn.execute(sql, params) as cur:
            return cur.rowcount, cur.lastrowid

    # ------------------------------------------------------------ keys

    async def create_key(self, name: str, balance_uomcu: int) -> tuple[str, ApiKey]:
        name = _check_name(name)
        _check_int(balance_uomcu, "balance_uomcu")
        for _ in range(5):
            secret = keymod.generate_key()
            key_id = keymod.parse_key(secret)
            assert key_id is not None
            created = self._now()
            try:
                async with self._write() as conn:
                    await self._run(
                        conn,
                        "INSERT INTO api_keys (key_id, key_hash, name, balance_uomcu, created) VALUES (?, ?, ?, ?, ?)",
                        (key_id, keymod.hash_key(secret), name, balance_uomcu, created),
                    )
            except sqlite3.IntegrityError:  # 48-bit key id collision: draw again
                continue
            return secret, ApiKey(key_id, name, balance_uomcu, created, None)
        raise RuntimeError("could not draw an unused key id")  # pragma: no cover

    async def _lookup(self, key_id: str) -> tuple[ApiKey, str] | None:
        async with self._read() as conn:
            row = await self._fetchone(
                conn, f"SELECT {_KEY_COLUMNS}, key_hash FROM api_keys WHERE key_id = ?", (key_id,)
            )
        return None if row is None else (_row_to_key(row), row[5])

    async def get_key(self, key_id: str) -> ApiKey | None:
        async with self._read() as conn:
            row = await self._fetchone(conn, f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,))
        return None if row is None else _row_to_key(row)

    async def list_keys(self) -> list[ApiKey]:
        async with self._read() as conn:
            rows = await conn.execute_fetchall(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created, key_id")
        return [_row_to_key(r) for r in rows]

    async def revoke(self, key_id: str) -> bool:
        async with self._write() as conn:
            count, _ = await self._run(
                conn,
                "UPDATE api_keys SET revoked = ? WHERE key_id = ? AND revoked IS NULL",
                (self._now(), key_id),
            )
        return count == 1

    async def top_up(self, key_id: str, amount_uomcu: int) -> int | None:
        _check_int(amount_uomcu, "amount_uomcu", minimum=1)
        async with self._write() as conn:
            row = await self._fetchone(conn, "SELECT balance_uomcu FROM api_keys WHERE key_id = ?", (key_id,))
            if row is None:
                return None
            new_balance = row[0] + amount_uomcu
            if new_balance > MAX_UOMCU:
                raise ValueError("balance would exceed 10^12 OMCU")
            await self._run(conn, "UPDATE api_keys SET balance_uomcu = ? WHERE key_id = ?", (new_balance, key_id))
        return new_balance

    async def balance(self, key_id: str) -> int:
        async with self._read() as conn:
            row = await self._fetchone(conn, "SELECT balance_uomcu FROM api_keys WHERE key_id = ?", (key_id,))
        if row is None:
            raise KeyError(key_id)
        return int(row[0])

    # ------------------------------------------------------------ usage

    async def record_usage(self, u: UsageIn) -> tuple[UsageRecord, bool]:
        # Shielded: if the caller is cancelled (client hung up just as its
        # last utterance is billed) the transaction still completes, so
        # work that was done is never lost. close() waits for it.
        if self._closed:
            raise RuntimeError("ledger is closed")
        task = asyncio.ensure_future(self._record_usage(u))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_log_orphan_failure)
            raise

    async def _record_usage(self, u: UsageIn) -> tuple[UsageRecord, bool]:
        async with self._write() as conn:
            row = await self._fetchone(
                conn, f"SELECT {_USAGE_COLUMNS} FROM usage WHERE idempotency_key = ?", (u.idempotency_key,)
            )
            if row is not None:
                existing = _row_to_usage(row)
                if not existing.same_event(u):
                    log.warning(
                        "usage %r recorded again with different content; kept the first record",
                        u.idempotency_key,
                    )
                return existing, False
            count, _ = await self._run(
                conn,
                "UPDATE api_keys SET balance_uomcu = balance_uomcu - ? WHERE key_id = ?",
                (u.cost_uomcu, u.key_id),
            )
            if count != 1:
                raise ValueError(f"unknown key_id {u.key_id!r}")
            created = self._now()
            _, rowid = await self._run(
                conn,
                "INSERT INTO usage (idempotency_key, key_id, kind, provider, engine, audio_ms, "
                "received_ms, characters, unit_price_uomcu, cost_uomcu, created, upstream_characters) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    u.idempotency_key,
                    u.key_id,
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
                ),
            )
        assert rowid is not None
        record = UsageRecord(
            id=rowid,
            idempotency_key=u.idempotency_key,
            key_id=u.key_id,
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
        )
        return record, True

    async def usage(
        self, key_id: str | None = None, limit: int = 100, since: str | datetime | None = None
    ) -> list[UsageRecord]:
        _check_int(limit, "limit", minimum=1, maximum=MAX_USAGE_LIMIT)
        where: list[str] = []
        params: list[Any] = []
        if key_id is not None:
            where.append("key_id = ?")
            params.append(key_id)
        if since is not None:
            where.append("created >= ?")
            params.append(parse_timestamp(since))
        sql = f"SELECT {_USAGE_COLUMNS} FROM usage"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        async with self._read() as conn:
            rows = await conn.execute_fetchall(sql, tuple(params))
        return [_row_to_usage(r) for r in rows]


def _log_orphan_failure(task: asyncio.Task[Any]) -> None:
    if task.cancelled():  # pragma: no cover - the inner task is never cancelled by us
        return
    exc = task.exception()
    if exc is not None:
        log.error("usage record failed after its caller was cancelled", exc_info=exc)


__all__ = [
    "ApiKey",
    "Kind",
    "Ledger",
    "SqliteLedger",
    "UsageIn",
    "UsageRecord",
    "format_timestamp",
    "parse_timestamp",
]
